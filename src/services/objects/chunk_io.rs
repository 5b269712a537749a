//! The chunk data path: sending a chunk straight from the mapped store as a frame trailer,
//! and receiving one straight into the destination object (ObjectManagerService.Push).

use super::msg::{ChunkJob, ObjRep, ObjReq};
use crate::ids::{NodeId, ObjectId};
use crate::logic::transfer::chunks::ChunkHeader;
use crate::rpc::conn::Trailer;
use crate::rpc::server::TrailerSink;
use crate::rpc::Status;
use crate::rpc::{Code, RpcError};
use crate::shard::msg::{Rep, Req};
use crate::shard::route::owner_of_object;
use crate::shard::Shard;
use crate::store::arena::Arena;
use crate::wire::rpc::{object_manager_service, PushReply, PushRequest};
use futures_lite::future::BoxedLocal;
use prost::Message;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A range of the arena sent as a trailer; the object stays pinned by the push meanwhile.
struct ArenaChunk {
    arena: Arc<Arena>,
    offset: u64,
    len: u64,
}

impl Trailer for ArenaChunk {
    fn bytes(&self) -> &[u8] {
        // Validated when the chunk was built.
        self.arena.bytes(self.offset, self.len).unwrap_or(&[])
    }
}

/// Sends one chunk from this shard; true unless the send failed. A chunk the puller read
/// and turned down as not wanted (already received, being received from another source,
/// or no longer pulled) counts as sent: ending the push there would strand a pull resumed
/// from this node, whose new push starts at chunk 0 with chunks the puller already has.
pub async fn send(shard: &Rc<Shard>, job: ChunkJob) -> bool {
    let Some(store) = super::local_store(shard) else { return false };
    if store.arena.bytes(job.offset, job.len).is_err() {
        return false;
    }
    // The chunk's CRC32C goes in the frame's trailer footer, computed as it is written.
    let trailer = Box::new(ArenaChunk { arena: store.arena.clone(), offset: job.offset, len: job.len });
    let client = shard.clients.get(job.addr);
    let method = object_manager_service::method::PUSH;
    let r = client
        .call_with_trailer(
            object_manager_service::SERVICE_ID,
            method,
            job.req.encode_to_vec(),
            trailer,
            Duration::from_secs(30),
        )
        .await;
    if let Err(e) = &r {
        tracing::debug!(addr = %job.addr, "chunk push failed: {e}");
    }
    match r {
        Ok(_) => true,
        Err(RpcError::Status(s)) => s.code == Code::FailedPrecondition,
        Err(_) => false,
    }
}

async fn claim(shard: &Rc<Shard>, id: ObjectId, from: NodeId, header: ChunkHeader) -> Result<Option<u64>, String> {
    let owner = owner_of_object(&id, shard.n);
    if owner == shard.id {
        return super::transfer::claim_chunk(shard, id, from, header);
    }
    match shard.mesh.call(owner, Req::Obj(ObjReq::ChunkClaim { id, from, header })).await {
        Ok(Rep::Obj(ObjRep::Claim(r))) => r,
        other => Err(format!("owner shard did not answer a chunk claim: {other:?}")),
    }
}

async fn done(shard: &Rc<Shard>, id: ObjectId, from: NodeId, index: u32, crc_ok: bool) -> Result<(), String> {
    let owner = owner_of_object(&id, shard.n);
    if owner == shard.id {
        return super::transfer::chunk_done(shard, id, from, index, crc_ok);
    }
    match shard.mesh.call(owner, Req::Obj(ObjReq::ChunkDone { id, from, index, crc_ok })).await {
        Ok(Rep::Obj(ObjRep::ChunkDone(r))) => r,
        other => Err(format!("owner shard did not answer a chunk report: {other:?}")),
    }
}

/// The parsed, validated parts of a Push header.
struct Incoming {
    id: ObjectId,
    from: NodeId,
    header: ChunkHeader,
}

fn parse(req: &PushRequest, len: u64, chunk_size: u64) -> Result<Incoming, Status> {
    let id = ObjectId::from_bytes(&req.object_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let from = NodeId::from_bytes(&req.node_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if req.chunk_size != chunk_size {
        return Err(Status::invalid_argument(format!(
            "chunk size {} differs from this node's {chunk_size}",
            req.chunk_size
        )));
    }
    Ok(Incoming { id, from, header: ChunkHeader { index: req.chunk_index, total_size: req.data_size, len } })
}

/// Where an accepted chunk is read into. Dropped unfinished (the connection failed in the
/// middle of the chunk, or was cut at its idle deadline because the sender stalled), it
/// releases its claim so the pull retries, and ends its write into the buffer.
struct ChunkSink {
    shard: Rc<Shard>,
    arena: Arc<Arena>,
    offset: u64,
    inc: Incoming,
    finished: bool,
}

impl Drop for ChunkSink {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (shard, id, from) = (self.shard.clone(), self.inc.id, self.inc.from);
        glommio::spawn_local(async move {
            let owner = owner_of_object(&id, shard.n);
            if owner == shard.id {
                super::transfer::transfer_failed(&shard, id, from);
            } else {
                let _ = shard.mesh.tell(owner, Req::Obj(ObjReq::TransferFailed { id, from })).await;
            }
        })
        .detach();
    }
}

impl TrailerSink for ChunkSink {
    fn buf(&mut self) -> &mut [u8] {
        // Claimed for this connection alone by the pull queue; validated in `accept`.
        self.arena.bytes_mut(self.offset, self.inc.header.len).unwrap_or(&mut [])
    }

    fn finish(mut self: Box<Self>, crc_ok: bool) -> BoxedLocal<Result<Vec<u8>, Status>> {
        self.finished = true;
        Box::pin(async move {
            let r = done(&self.shard, self.inc.id, self.inc.from, self.inc.header.index, crc_ok).await;
            if owner_of_object(&self.inc.id, self.shard.n) == self.shard.id {
                // A last chunk has this shard's pull driver (queued behind this task) seal
                // the object and wake the gets waiting for it, in the latency queue: let
                // both run before this reply wakes the pusher, which may share this CPU.
                futures_lite::future::yield_now().await;
                glommio::executor().yield_task_queue_now().await;
            }
            match (r, crc_ok) {
                (Ok(()), true) => Ok(PushReply {}.encode_to_vec()),
                (Ok(()), false) => Err(Status::invalid_argument(format!(
                    "chunk {} of {} failed its CRC32C check",
                    self.inc.header.index, self.inc.id
                ))),
                (Err(e), _) => Err(Status::failed_precondition(e)),
            }
        })
    }
}

/// Accepts the trailer of a Push: claims the chunk with the object's owner and reads it
/// straight into the destination buffer; refuses (and the server discards the bytes) a
/// chunk nobody pulls, out of range, of the wrong size, or already received.
pub fn accept(shard: Rc<Shard>, len: u64, payload: Vec<u8>) -> BoxedLocal<Result<Box<dyn TrailerSink>, Status>> {
    Box::pin(async move {
        let req = PushRequest::decode(payload.as_slice()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let store = super::local_store(&shard).ok_or_else(|| Status::unavailable("store not started"))?;
        let inc = parse(&req, len, store.transfer.chunk_size())?;
        let arena = store.arena.clone();
        match claim(&shard, inc.id, inc.from, inc.header).await {
            Ok(Some(offset)) => {
                // The sink owns the claim from here: dropped unfinished (also on the check
                // below), it releases it.
                let sink = ChunkSink { shard, arena, offset, inc, finished: false };
                sink.arena.bytes(offset, len).map_err(|e| Status::internal(e.to_string()))?;
                Ok(Box::new(sink) as Box<dyn TrailerSink>)
            }
            Ok(None) => Err(Status::failed_precondition(format!(
                "chunk {} of {} is not wanted (not pulled, already received or in progress)",
                inc.header.index, inc.id
            ))),
            Err(e) => Err(Status::invalid_argument(e)),
        }
    })
}

/// A Push whose chunk is empty (a zero-byte object) arrives without a trailer.
pub async fn push_empty(shard: &Rc<Shard>, req: PushRequest) -> Result<PushReply, Status> {
    let store = super::local_store(shard).ok_or_else(|| Status::unavailable("store not started"))?;
    let inc = parse(&req, 0, store.transfer.chunk_size())?;
    match claim(shard, inc.id, inc.from, inc.header).await {
        Ok(Some(_)) => {
            // Nothing to check: an empty chunk has no trailer and so no footer.
            done(shard, inc.id, inc.from, inc.header.index, true).await.map_err(Status::failed_precondition)?;
            Ok(PushReply {})
        }
        Ok(None) => Err(Status::failed_precondition(format!("chunk of {} is not wanted", inc.id))),
        Err(e) => Err(Status::invalid_argument(e)),
    }
}
