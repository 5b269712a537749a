//! Mesh requests of the object plane, served by the shard that owns the objects (or, for
//! arena ranges, by shard 0).

use super::msg::{ObjRep, ObjReq};
use crate::shard::msg::Rep;
use crate::shard::Shard;
use std::rc::Rc;

/// Handles one object-plane request on this shard.
pub async fn handle(shard: Rc<Shard>, req: ObjReq) -> Option<Rep> {
    let store = super::local_store(&shard)?;
    Some(Rep::Obj(match req {
        ObjReq::Op { client, op } => ObjRep::Op(store.execute(&shard, client, op).await),
        ObjReq::ClientGone(client) => {
            store.client_gone(&shard, client);
            return None;
        }
        ObjReq::AllocRange(len) => ObjRep::Range(store.memory.global_alloc_local(&shard, len)),
        ObjReq::AllocFallback(len) => ObjRep::Range(store.memory.fallback_alloc_local(len)),
        ObjReq::FreeRange(offset) => {
            store.memory.global_free_local(offset);
            return None;
        }
        ObjReq::Evict(bytes) => {
            ObjRep::Freed(store.evict(&shard, bytes) + store.memory.release_empty_slabs(&shard).await)
        }
        ObjReq::Spill(bytes) => {
            let (bytes, failure) = super::spilling::spill(&shard, &store, bytes).await;
            ObjRep::SpillDone { bytes, failure }
        }
        ObjReq::SendChunk(job) => {
            // A chunk another shard hands over is copied in the bulk queue, like the owner's.
            let s = shard.clone();
            ObjRep::Sent(shard.run_bulk(async move { super::chunk_io::send(&s, *job).await }).await.unwrap_or(false))
        }
        ObjReq::ChunkClaim { id, from, header } => {
            ObjRep::Claim(super::transfer::claim_chunk(&shard, id, from, header))
        }
        ObjReq::ChunkDone { id, from, index, crc_ok } => {
            ObjRep::ChunkDone(super::transfer::chunk_done(&shard, id, from, index, crc_ok))
        }
        ObjReq::TransferFailed { id, from } => {
            super::transfer::transfer_failed(&shard, id, from);
            return None;
        }
        ObjReq::PullRequested { to, id } => {
            super::transfer::push_requested(&shard, to, id).await;
            return None;
        }
        ObjReq::Peers(peers) => {
            store.transfer.set_peers(peers);
            return None;
        }
        ObjReq::NodeDead(node) => {
            super::transfer::node_dead(&shard, node);
            return None;
        }
        ObjReq::Stats => ObjRep::Stats(Box::new(super::stats::shard_store_stats(&store))),
        ObjReq::PullsQueued => ObjRep::PullsQueued(store.transfer.pulls_queued()),
        ObjReq::Pin(id) => ObjRep::Pinned(store.pin(&[id])[0]),
        ObjReq::SpillOne(id) => {
            ObjRep::Spilled(super::spilling::spill_one(&shard, &store, id).await.map(|u| u.to_string()))
        }
    }))
}
