//! # raylet
//!
//! A re-implementation of Ray's per-node daemon as a thread-per-core, shared-nothing
//! runtime on glommio. See `DESIGN.md` (architecture and contracts) and `STYLE.md`.
//!
//! ## Ownership (one owning shard per piece of state)
//!
//! | state | owner |
//! |---|---|
//! | an object's metadata and allocation | `hash(ObjectId) % N` ([`shard::route`]) |
//! | a local connection and its client | the shard it was handed to at accept |
//! | node-wide: clients, GCS session, peer directory, (head) GCS tables | shard 0 |
//! | scheduling: resource ledger, lease queues, worker pool, bundles, agent ([`services::sched`]) | shard 0 |
//! | RPC connections | the shard that accepted or opened them |
//!
//! ## Cross-shard call graph (a DAG)
//!
//! Shards 1..N call shard 0 (registration, node stats, shutdown, every scheduling-plane
//! RPC as a typed `Req::Sched`); shard 0 calls every
//! shard only from its own tasks (start/stop, stats gathering), never while serving a
//! request that a shard i is awaiting, so no cycle of awaits can form.
//!
//! ## Modules
//! - [`logic`]: pure state machines (no IO, no clock).
//! - [`shard`]: executors, mesh, start/stop.
//! - [`services`]: per-shard services driving the logic.
//! - [`local`], [`rpc`]: the two protocols.
//! - [`client`]: what drivers and workers link.
//! - [`process`]: spawning and signalling worker and agent processes.
//! - [`worker`]: the default worker process (`raylet worker`).
//! - [`gcs_storage`]: where the GCS tables are stored (redb, Redis or memory), written
//!   through one writer thread with group commit.
//! - [`cli`], [`config`], [`telemetry`], [`metrics`], [`ids`], [`wire`].
//! - [`failpoint`]: test-only fault triggers (the `failpoints` feature).

#![warn(missing_docs)]

pub mod checksum;
pub mod cli;
pub mod client;
pub mod config;
pub mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod gcs_storage;
pub mod ids;
pub mod local;
pub mod logic;
pub mod metrics;
pub mod process;
pub mod rpc;
pub mod services;
pub mod shard;
pub mod store;
pub mod telemetry;
pub mod wire;
pub mod worker;
