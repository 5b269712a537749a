//! The domain form of every local-protocol message (both directions). The codec converts
//! these to and from the FlatBuffers tables; nothing else sees the wire types.

use crate::ids::{JobId, NodeId, ObjectId, WorkerId};

/// Kind of client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// A pool worker.
    Worker,
    /// A driver.
    Driver,
}

/// Why a client disconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectKind {
    /// It meant to.
    Intended,
    /// Something broke.
    SystemError,
    /// User code failed.
    UserError,
}

/// A registration request.
#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    /// Worker or driver.
    pub kind: ClientKind,
    /// Its id.
    pub worker_id: WorkerId,
    /// Its pid.
    pub pid: i64,
    /// The token the pool gave a worker it started; -1 for drivers.
    pub startup_token: i64,
    /// Its job.
    pub job_id: JobId,
    /// Its address.
    pub ip_address: String,
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterReply {
    /// Accepted.
    pub success: bool,
    /// Why not.
    pub failure_reason: String,
    /// This node.
    pub node_id: NodeId,
    /// Port to bind the worker's server to (0 = any).
    pub port: i32,
    /// The shard serving the connection.
    pub shard: u16,
    /// Number of shards.
    pub num_shards: u16,
    /// Per-shard socket paths, by shard.
    pub shard_sockets: Vec<String>,
}

/// Every local message, both directions.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalMessage {
    /// Client → raylet.
    Register(Register),
    /// Raylet → client.
    RegisterReply(RegisterReply),
    /// Client → raylet: its WorkerService port is open.
    AnnounceWorkerPort {
        /// The port.
        port: i32,
    },
    /// Raylet → client.
    AnnounceWorkerPortReply {
        /// Accepted.
        success: bool,
        /// Why not.
        failure_reason: String,
    },
    /// Client → raylet: graceful goodbye.
    Disconnect {
        /// Why.
        kind: DisconnectKind,
        /// Details.
        detail: String,
    },
    /// Raylet → client: goodbye acknowledged; the raylet closes next.
    DisconnectReply,
    /// Client → raylet, first message on a per-shard socket.
    Attach {
        /// The registered client this connection belongs to.
        worker_id: WorkerId,
    },
    /// Raylet → client.
    AttachReply {
        /// Accepted.
        success: bool,
        /// Why not.
        failure_reason: String,
        /// The shard serving it.
        shard: u16,
    },
    /// Create an object (unsealed, writable by this client).
    Create {
        /// Its id.
        id: ObjectId,
        /// Data bytes.
        data_size: u64,
        /// Metadata bytes (after the data).
        metadata_size: u64,
        /// Pin as this node's primary copy until deleted.
        primary: bool,
        /// The whole object inline (small puts): written and sealed by the raylet.
        inline: Option<Vec<u8>>,
    },
    /// Where to write it, or why not.
    CreateReply {
        /// Outcome.
        error: StoreError,
        /// Details of a failure.
        message: String,
        /// The placement (when `error` is `Ok`).
        spec: ObjectSpec,
        /// Size of the segment mapping.
        mmap_size: u64,
    },
    /// Seal an object.
    Seal {
        /// Its id.
        id: ObjectId,
    },
    /// Seal outcome.
    SealReply {
        /// Outcome.
        error: StoreError,
        /// Details.
        message: String,
    },
    /// Abort an unsealed object this client created.
    Abort {
        /// Its id.
        id: ObjectId,
    },
    /// Abort outcome.
    AbortReply {
        /// Outcome.
        error: StoreError,
        /// Details.
        message: String,
    },
    /// Drop this client's references (no reply).
    Release {
        /// The objects.
        ids: Vec<ObjectId>,
    },
    /// Delete objects (deferred while in use).
    Delete {
        /// The objects.
        ids: Vec<ObjectId>,
        /// This node's copies only; false also frees them on every other alive node.
        local_only: bool,
    },
    /// Per-object delete outcome.
    DeleteReply {
        /// One per id, for this node's copies.
        errors: Vec<StoreError>,
        /// One line per other node the free could not reach.
        peer_failures: Vec<String>,
    },
    /// Whether a sealed copy is here.
    Contains {
        /// Its id.
        id: ObjectId,
    },
    /// Answer.
    ContainsReply {
        /// Sealed and present.
        has_object: bool,
    },
    /// Get objects, waiting for them to be sealed (or to arrive) up to a timeout.
    Get {
        /// The objects.
        ids: Vec<ObjectId>,
        /// -1 forever, 0 no wait.
        timeout_ms: i64,
    },
    /// Where they are (found ones gained a reference for this client).
    GetReply {
        /// One per requested id, in order.
        objects: Vec<ObjectSpec>,
        /// Size of the segment mapping.
        mmap_size: u64,
        /// Why each missing object could not be fetched ("" when found or merely not here
        /// yet); empty when there is nothing to say.
        errors: Vec<String>,
    },
    /// Wait until `num_required` of the ids are ready or the timeout passes.
    Wait {
        /// The objects.
        ids: Vec<ObjectId>,
        /// How many must be ready.
        num_required: i32,
        /// -1 forever.
        timeout_ms: i64,
    },
    /// Which are ready.
    WaitReply {
        /// Ready ids.
        ready: Vec<ObjectId>,
        /// The others.
        remaining: Vec<ObjectId>,
    },
}

/// Store operation outcomes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Success.
    Ok,
    /// The id is taken.
    ObjectExists,
    /// No such object.
    ObjectNonexistent,
    /// Nothing could be freed in time.
    ObjectStoreFull,
    /// Not sealed yet.
    ObjectNotSealed,
    /// Referenced by a client.
    ObjectInUse,
    /// Something unexpected.
    Unexpected,
    /// Already sealed.
    ObjectSealed,
    /// The object belongs to another shard's connection.
    WrongShard,
    /// The request was malformed.
    InvalidRequest,
}

/// An object's placement in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjectSpec {
    /// Its id.
    pub id: ObjectId,
    /// Whether it was found (Get).
    pub found: bool,
    /// Segment index (its fd is passed once per connection).
    pub segment: u32,
    /// Offset of the data in the segment.
    pub offset: u64,
    /// Data bytes.
    pub data_size: u64,
    /// Metadata bytes, right after the data.
    pub metadata_size: u64,
}
