//! The typed messages shards exchange. One enum per direction; each domain adds variants
//! here and handles them in `shard::dispatch`. Messages carry owned data, ids and offsets,
//! never object bytes and never references.

use crate::ids::ShardId;
use crate::local::codec::{Register, RegisterReply};
use crate::wire::rpc::{GetNodeStatsReply, ShardStats, WorkerStats};
use std::os::unix::io::RawFd;

/// Ports shard 0 bound, which every other shard binds too (`SO_REUSEPORT`).
#[derive(Debug, Clone, Copy)]
pub struct StartInfo {
    /// NodeManagerService port.
    pub node_manager_port: u16,
    /// ObjectManagerService port.
    pub object_manager_port: u16,
    /// The GCS this node uses (the head's own once bound), so every shard can answer
    /// GetGcsServerAddress.
    pub gcs_address: Option<std::net::SocketAddr>,
}

/// A request from one shard to another.
#[derive(Debug)]
pub enum Req {
    /// Shard 0 → i: bind your listeners and start your services over the store's memory.
    Start(StartInfo, std::sync::Arc<crate::store::arena::Arena>),
    /// Shard 0 → i: stop everything (reverse start order).
    Stop,
    /// Anyone → shard 0: begin a graceful node shutdown with this exit code.
    Shutdown {
        /// Why.
        reason: String,
        /// Process exit code.
        code: i32,
    },
    /// Acceptor → owner shard: serve this local connection (raw fd, already checked).
    AdoptLocal(RawFd),
    /// Connection shard → shard 0: register a worker or driver.
    RegisterClient {
        /// The connection's shard.
        shard: ShardId,
        /// What it sent.
        req: Register,
    },
    /// Connection shard → shard 0: is this client registered (per-shard attach)?
    IsClient(crate::ids::WorkerId),
    /// Connection shard → shard 0: a registered client announced its port.
    ClientPort {
        /// Which client.
        worker_id: crate::ids::WorkerId,
        /// Its port.
        port: i32,
    },
    /// Connection shard → shard 0: a registered client went away.
    ClientGone {
        /// Which client.
        worker_id: crate::ids::WorkerId,
        /// Graceful or not, and why.
        detail: String,
    },
    /// Shard 0 → all: the system config JSON from the GCS, the GCS address, and the
    /// object-plane settings that config sets.
    Config {
        /// The cluster's system config (JSON object).
        json: String,
        /// The GCS.
        gcs: std::net::SocketAddr,
        /// Chunk size, spilling threshold, full-store wait.
        objects: crate::config::ObjectPlaneConfig,
    },
    /// Gather this shard's statistics.
    Stats,
    /// Any shard → shard 0: produce the node's GetNodeStats reply.
    NodeStats,
    /// Any shard → shard 0: the node manager addresses of every alive node (this one too).
    PeerAddrs,
    /// Any shard → shard 0: the object manager addresses of every other alive node.
    PeerObjectManagers,
    /// The scheduling plane's messages.
    Sched(crate::services::sched::msg::SchedReq),
    /// The object plane's messages.
    Obj(crate::services::objects::msg::ObjReq),
}

/// A reply.
#[derive(Debug)]
pub enum Rep {
    /// Start result.
    Started(Result<(), String>),
    /// Stop finished.
    Stopped,
    /// Registration verdict.
    Registered(RegisterReply),
    /// Whether a client is registered.
    IsClient(bool),
    /// Port announcement verdict.
    PortAnnounced(Result<(), String>),
    /// One shard's statistics.
    Stats(ShardStats, Vec<WorkerStats>),
    /// The node's statistics.
    NodeStats(Box<GetNodeStatsReply>),
    /// Addresses of alive nodes (node or object managers, as asked).
    PeerAddrs(Vec<(crate::ids::NodeId, std::net::SocketAddr)>),
    /// Plain acknowledgement.
    Ack,
    /// The scheduling plane's replies.
    Sched(crate::services::sched::msg::SchedRep),
    /// The object plane's replies.
    Obj(crate::services::objects::msg::ObjRep),
}
