//! Mesh messages of the object plane. Only ids, offsets and lengths travel here; object
//! bytes never cross the mesh.

use crate::ids::{NodeId, ObjectId};
use crate::local::msg::{ObjectSpec, StoreError};
use crate::logic::objects::ClientId;
use crate::logic::transfer::chunks::ChunkHeader;
use crate::logic::transfer::pull::PullPriority;
use crate::wire::rpc::PushRequest;
use std::net::SocketAddr;

/// A store operation a connection on another shard asks the owner shard to run.
#[derive(Debug)]
pub enum StoreOp {
    /// Create an object.
    Create {
        /// Its id.
        id: ObjectId,
        /// Data bytes.
        data_size: u64,
        /// Metadata bytes.
        metadata_size: u64,
        /// Pin as a primary copy.
        primary: bool,
        /// The whole object inline: write it, seal it, keep no client reference.
        inline: Option<Vec<u8>>,
    },
    /// Seal.
    Seal(ObjectId),
    /// Abort.
    Abort(ObjectId),
    /// Drop references.
    Release(Vec<ObjectId>),
    /// Delete.
    Delete(Vec<ObjectId>),
    /// Sealed and present?
    Contains(ObjectId),
    /// Get with a timeout in ms (-1 forever).
    Get(Vec<ObjectId>, i64),
    /// Wait for `n` of the ids; `call` names it for cancellation.
    Wait {
        /// The ids owned by this shard.
        ids: Vec<ObjectId>,
        /// How many must be ready.
        n: usize,
        /// -1 forever.
        timeout_ms: i64,
        /// The caller's id of this wait.
        call: u64,
        /// The priority of the pulls it makes (`Wait` for clients, `TaskArgs` for the
        /// arguments of a lease).
        priority: PullPriority,
    },
    /// Finish a pending wait now with whatever is ready.
    CancelWait(u64),
    /// Bring these objects here for `client` at task-argument priority: restore spilled
    /// ones, pull missing ones. The client's pull stays open (replacing its previous one)
    /// until its `ClientGone`, however long the objects take.
    Prefetch(Vec<ObjectId>),
}

/// An object-plane request between shards.
#[derive(Debug)]
pub enum ObjReq {
    /// Run a store operation for `client` (a connection on the calling shard).
    Op {
        /// The client.
        client: ClientId,
        /// The operation.
        op: StoreOp,
    },
    /// A connection that touched this shard's objects closed.
    ClientGone(ClientId),
    /// Shard 0: allocate `len` bytes of the arena.
    AllocRange(u64),
    /// Shard 0: allocate `len` bytes of the fallback range (a new fallback segment).
    AllocFallback(u64),
    /// Shard 0: give back a range allocated with `AllocRange` or `AllocFallback` (one-way).
    FreeRange(u64),
    /// Evict up to this many bytes of unreferenced secondary copies; replies `Freed`.
    Evict(u64),
    /// Spill up to this many bytes of pinned primaries; replies `SpillDone`.
    Spill(u64),
    /// Send one chunk from this shard's connection to the peer; replies `Sent`.
    SendChunk(Box<ChunkJob>),
    /// Owner: where does this incoming chunk go? Replies `Claim`.
    ChunkClaim {
        /// The object.
        id: ObjectId,
        /// The sending node.
        from: NodeId,
        /// The chunk.
        header: ChunkHeader,
    },
    /// Owner: a claimed chunk arrived; replies `ChunkDone`.
    ChunkDone {
        /// The object.
        id: ObjectId,
        /// The sending node.
        from: NodeId,
        /// The chunk.
        index: u32,
        /// Whether its checksum matched.
        crc_ok: bool,
    },
    /// Owner: a chunk transfer of `id` from `from` broke mid-chunk (one-way).
    TransferFailed {
        /// The object.
        id: ObjectId,
        /// The sending node.
        from: NodeId,
    },
    /// Owner: node `to` asked for `id` (one-way).
    PullRequested {
        /// The puller.
        to: NodeId,
        /// The object.
        id: ObjectId,
    },
    /// The alive peers' object manager addresses (one-way, from shard 0).
    Peers(Vec<(NodeId, SocketAddr)>),
    /// A node died (one-way, from shard 0).
    NodeDead(NodeId),
    /// This shard's store statistics.
    Stats,
    /// Whether this shard has pulls waiting for admission; replies `PullsQueued`.
    PullsQueued,
    /// Pin a primary copy; replies `Pinned`.
    Pin(ObjectId),
    /// Spill one object now; replies `Spilled`.
    SpillOne(ObjectId),
}

/// One chunk to send.
#[derive(Debug, Clone)]
pub struct ChunkJob {
    /// The puller's object manager.
    pub addr: SocketAddr,
    /// The header (the chunk's CRC32C goes in the frame's trailer footer).
    pub req: PushRequest,
    /// Absolute arena offset of the chunk's bytes.
    pub offset: u64,
    /// Its length.
    pub len: u64,
}

/// An object-plane reply.
#[derive(Debug)]
pub enum ObjRep {
    /// Outcome of a store operation.
    Op(OpResult),
    /// An arena range `(offset, len)`, or none free.
    Range(Option<(u64, u64)>),
    /// Bytes freed.
    Freed(u64),
    /// Bytes spilled, and the write failure spilling is backed off for, if any.
    SpillDone {
        /// Bytes spilled (now evictable).
        bytes: u64,
        /// Why spilling is paused on that shard.
        failure: Option<String>,
    },
    /// Whether a chunk was delivered.
    Sent(bool),
    /// Where a chunk goes (absolute offset) or `None` to discard.
    Claim(Result<Option<u64>, String>),
    /// Outcome of a delivered chunk.
    ChunkDone(Result<(), String>),
    /// Store statistics of one shard.
    Stats(Box<super::stats::ShardStoreStats>),
    /// Whether pulls wait for admission on one shard.
    PullsQueued(bool),
    /// Whether a pin succeeded.
    Pinned(bool),
    /// The spill URL, or why not.
    Spilled(Result<String, String>),
}

/// What a store operation returned.
#[derive(Debug)]
pub enum OpResult {
    /// Create: the placement or an error with a message.
    Created(Result<ObjectSpec, (StoreError, String)>),
    /// Seal/abort/release outcome.
    Done(Result<(), (StoreError, String)>),
    /// Per-id delete outcome.
    Deleted(Vec<StoreError>),
    /// Contains.
    Contains(bool),
    /// Get: one spec per id.
    Got(Vec<ObjectSpec>, Vec<String>),
    /// Wait: (ready, remaining).
    Waited(Vec<ObjectId>, Vec<ObjectId>),
}
