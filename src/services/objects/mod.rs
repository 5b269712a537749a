//! The object plane: the shared-memory store, pinning, spilling and transfer.
//!
//! - [`store`]: one shard's objects and the client operations on them.
//! - [`memory`]: arena allocation (shard 0's allocator, per-shard slabs) and pressure.
//! - [`spilling`]: spill to fused files and restore.
//! - [`spill_dir`]: this node's lock and directory in the (possibly shared) spill directory.
//! - [`directory`]: reporting local copies to the GCS object directory.
//! - [`transfer`]: pulls and pushes between nodes.
//! - [`handle`]: mesh requests of the object plane.
//! - [`msg`]: those messages.
//! - [`rpc`]: the object plane's NodeManagerService handlers.
//! - [`om_rpc`]: ObjectManagerService (Pull, FreeObjects, empty Push).
//! - [`free`]: cluster-wide frees (FreeObjects to every other alive node).
//! - [`chunk_io`]: the chunk data path (send from and receive into the arena).
//! - [`stats`]: store statistics.
//! - [`pending`]: each client's gets and waits in progress, ended when it goes.

pub mod chunk_io;
pub mod directory;
pub mod free;
pub mod handle;
pub mod memory;
pub mod msg;
pub mod om_rpc;
pub mod pending;
pub mod rpc;
pub mod spill_dir;
pub mod spilling;
pub mod stats;
pub mod store;
pub mod transfer;

use crate::shard::Shard;
use std::rc::Rc;
use store::ShardStore;

/// This shard's store (after start).
pub fn local_store(shard: &Shard) -> Option<Rc<ShardStore>> {
    shard.objects.borrow().clone()
}

/// Takes the cluster's object-plane settings (from the system config the node registered
/// with): the chunk size for transfers started from now on, the spilling threshold and the
/// full-store wait.
pub fn configure(shard: &Shard, cfg: crate::config::ObjectPlaneConfig) -> Result<(), String> {
    let Some(store) = local_store(shard) else { return Ok(()) };
    store.memory.configure(cfg.spilling_threshold, cfg.full_timeout);
    store.transfer.set_chunk_size(cfg.chunk_size)
}
