//! Mesh messages of the object plane. Only ids, offsets and lengths travel here; object
//! bytes never cross the mesh.

use crate::ids::ObjectId;
use crate::local::msg::{ObjectSpec, StoreError};
use crate::logic::objects::ClientId;

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
    },
    /// Finish a pending wait now with whatever is ready.
    CancelWait(u64),
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
    /// Shard 0: give back a range allocated with `AllocRange` (one-way).
    FreeRange(u64),
    /// Evict up to this many bytes of unreferenced secondary copies; replies `Freed`.
    Evict(u64),
    /// Spill up to this many bytes of pinned primaries; replies `Freed` with what spilled.
    Spill(u64),
}

/// An object-plane reply.
#[derive(Debug)]
pub enum ObjRep {
    /// Outcome of a store operation.
    Op(OpResult),
    /// An arena range `(offset, len)`, or none free.
    Range(Option<(u64, u64)>),
    /// Bytes freed (or spilled).
    Freed(u64),
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
    Got(Vec<ObjectSpec>),
    /// Wait: (ready, remaining).
    Waited(Vec<ObjectId>, Vec<ObjectId>),
}
