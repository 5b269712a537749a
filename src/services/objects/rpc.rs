//! NodeManagerService handlers of the object plane: PinObjectIDs, RequestObjectSpillage
//! and FormatGlobalMemoryInfo.

use super::msg::{ObjRep, ObjReq};
use crate::ids::{NodeId, ObjectId, ShardId};
use crate::rpc::{CallOpts, Status};
use crate::shard::msg::{Rep, Req};
use crate::shard::route::owner_of_object;
use crate::shard::Shard;
use crate::wire::rpc::*;
use std::rc::Rc;
use std::time::Duration;

fn ids_of(raw: &[Vec<u8>]) -> Result<Vec<ObjectId>, Status> {
    raw.iter()
        .map(|b| ObjectId::from_bytes(b))
        .collect::<Result<_, _>>()
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// `PinObjectIDs`: pin primary copies held here; false for objects not here and sealed.
pub async fn pin_object_i_ds(shard: &Rc<Shard>, req: PinObjectIDsRequest) -> Result<PinObjectIDsReply, Status> {
    let ids = ids_of(&req.object_ids)?;
    let mut successes = Vec::with_capacity(ids.len());
    for id in ids {
        let owner = owner_of_object(&id, shard.n);
        let ok = if owner == shard.id {
            super::local_store(shard).map(|s| s.pin(&[id])[0]).unwrap_or(false)
        } else {
            matches!(shard.mesh.call(owner, Req::Obj(ObjReq::Pin(id))).await, Ok(Rep::Obj(ObjRep::Pinned(true))))
        };
        successes.push(ok);
    }
    Ok(PinObjectIDsReply { successes })
}

/// `RequestObjectSpillage`: spill one pinned primary now; replies after it is written.
pub async fn request_object_spillage(
    shard: &Rc<Shard>,
    req: RequestObjectSpillageRequest,
) -> Result<RequestObjectSpillageReply, Status> {
    let id = ObjectId::from_bytes(&req.object_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let owner = owner_of_object(&id, shard.n);
    let r = if owner == shard.id {
        match super::local_store(shard) {
            Some(st) => super::spilling::spill_one(shard, &st, id).await.map(|u| u.to_string()),
            None => Err("store not started".into()),
        }
    } else {
        match shard.mesh.call(owner, Req::Obj(ObjReq::SpillOne(id))).await {
            Ok(Rep::Obj(ObjRep::Spilled(r))) => r,
            other => Err(format!("owner shard did not answer: {other:?}")),
        }
    };
    Ok(match r {
        Ok(url) => {
            RequestObjectSpillageReply { success: true, object_url: url, spilled_node_id: shard.node_id.to_vec() }
        }
        Err(e) => {
            tracing::debug!(%id, "RequestObjectSpillage refused: {e}");
            RequestObjectSpillageReply { success: false, object_url: String::new(), spilled_node_id: Vec::new() }
        }
    })
}

/// `FormatGlobalMemoryInfo`: GetNodeStats from every alive node (this one included),
/// aggregated: time fields by max, counters summed, `object_pulls_queued` OR'ed; failed
/// nodes contribute nothing. With `include_memory_info` the summary lists every object.
pub async fn format_global_memory_info(
    shard: &Rc<Shard>,
    req: FormatGlobalMemoryInfoRequest,
) -> Result<FormatGlobalMemoryInfoReply, Status> {
    let peers: Vec<(NodeId, std::net::SocketAddr)> = match shard.mesh.call(ShardId::NODE, Req::PeerAddrs).await {
        Ok(Rep::PeerAddrs(p)) => p,
        _ => Vec::new(),
    };
    let stats_req = GetNodeStatsRequest { include_memory_info: req.include_memory_info };
    let mut calls = Vec::new();
    for (node, addr) in peers {
        let (s, r) = (shard.clone(), stats_req);
        calls.push((
            node,
            glommio::spawn_local(async move {
                let client = s.clients.get(addr);
                node_manager_service::client::get_node_stats(
                    &*client,
                    &r,
                    CallOpts::idempotent(Duration::from_secs(10)),
                )
                .await
            }),
        ));
    }
    let mut nodes = Vec::new();
    for (node, call) in calls {
        match call.await {
            Ok(r) => nodes.push(r),
            Err(e) => tracing::warn!(%node, "GetNodeStats failed: {e}"),
        }
    }
    let mut total = ObjectStoreStats::default();
    for n in &nodes {
        let s = n.store_stats.unwrap_or_default();
        total.spill_time_total_s = total.spill_time_total_s.max(s.spill_time_total_s);
        total.restore_time_total_s = total.restore_time_total_s.max(s.restore_time_total_s);
        total.spilled_bytes_total += s.spilled_bytes_total;
        total.spilled_objects_total += s.spilled_objects_total;
        total.restored_bytes_total += s.restored_bytes_total;
        total.restored_objects_total += s.restored_objects_total;
        total.object_store_bytes_used += s.object_store_bytes_used;
        total.object_store_bytes_avail += s.object_store_bytes_avail;
        total.object_store_bytes_primary_copy += s.object_store_bytes_primary_copy;
        total.num_local_objects += s.num_local_objects;
        total.consumed_bytes += s.consumed_bytes;
        total.object_pulls_queued |= s.object_pulls_queued;
        total.cumulative_created_objects += s.cumulative_created_objects;
        total.cumulative_created_bytes += s.cumulative_created_bytes;
        total.evicted_objects_total += s.evicted_objects_total;
        total.evicted_bytes_total += s.evicted_bytes_total;
    }
    let memory_summary = crate::cli::memory::render_table(&nodes, req.include_memory_info);
    Ok(FormatGlobalMemoryInfoReply { memory_summary, store_stats: Some(total), node_stats: nodes })
}
