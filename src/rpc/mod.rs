//! RPC between processes: prost messages in our own framing over TCP (DESIGN.md §4).
//! Not Ray's gRPC wire format.
//!
//! - [`frame`]: the pure frame codec (fuzzed by property tests).
//! - [`conn`]: framed reads and a writer task over glommio streams.
//! - [`readahead`]: one `recv` per small frame (read-ahead over an eager `recv`).
//! - [`idle`]: the idle deadline of a connection and its watchdog.
//! - [`sockopt`]: keepalive and user timeout (socket2), and the watchdog's cut.
//! - [`server`]: per-shard listener, hello/auth, dispatch.
//! - [`admission`]: node-wide caps on connections before their hello; accept pacing.
//! - [`client`]: async per-peer client with reconnect and retry.
//! - [`blocking`]: the same protocol for non-executor programs.

pub mod admission;
pub mod blocking;
pub mod client;
pub mod conn;
pub mod frame;
pub mod http;
pub mod idle;
pub mod readahead;
pub mod scope;
pub mod server;
pub mod sockopt;
pub mod status;

pub use blocking::BlockingClient;
pub use client::{AsyncCaller, ClientPool, RpcClient};
pub use status::{CallOpts, Code, RpcError, Status};
