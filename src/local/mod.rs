//! The local protocol: FlatBuffers over io_uring Unix sockets (DESIGN.md §3).
//!
//! - [`codec`]: pure frame and message codec, shared with `raylet::client`.
//! - [`listener`]: the socket, the acceptor and the hand-off to owner shards.
//! - [`conn`]: per-connection serving on the owner shard.

pub mod codec;
pub mod conn;
pub mod fdpass;
pub mod listener;
pub mod msg;
pub mod store_ops;
pub mod writer;
