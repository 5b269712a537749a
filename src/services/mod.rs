//! Per-shard services: each feeds inputs to its logic and performs the resulting IO.
//!
//! - [`node`]: shard 0's node-wide services (GCS, session, clients, acceptor, metrics).
//! - [`gcs`]: the embedded GCS (head only).
//! - [`gcs_objects`]: its object directory.
//! - [`long_poll`]: readers long-polling a GCS table.
//! - [`session`]: this node's registration, heartbeats and peer directory.
//! - [`clients`]: registered workers and drivers.
//! - [`node_rpc`]: the NodeManagerService handler.
//! - [`node_stats`]: GetNodeStats gathering.
//! - [`routes`]: which services each port serves.
//! - [`sched`]: the scheduling plane (pool, leases, resources, bundles).
//! - [`objects`]: the object plane (store, pins, spilling, transfer).

pub mod clients;
pub mod gcs;
pub mod gcs_objects;
pub mod long_poll;
pub mod node;
pub mod node_rpc;
pub mod node_stats;
pub mod objects;
pub mod routes;
pub mod sched;
pub mod session;
