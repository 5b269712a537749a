//! GetNodeStats: each shard reports its own counters and clients; shard 0 merges them
//! with node-wide state.

use super::node::NodeServices;
use crate::local::codec::ClientKind;
use crate::shard::msg::{Rep, Req};
use crate::shard::Shard;
use crate::wire::rpc::*;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

/// This shard's part of the node statistics.
pub fn shard_stats(shard: &Shard) -> Rep {
    let m = shard.metrics.shard(shard.id.index());
    let stats = ShardStats {
        shard: u32::from(shard.id.0),
        local_connections: m.local_connections.load(Relaxed),
        rpc_connections: m.rpc_connections.load(Relaxed),
        objects: 0,
        bytes_allocated: 0,
    };
    Rep::Stats(stats, Vec::new())
}

/// The node's statistics, gathered from every shard (shard 0 only).
pub async fn gather(node: &NodeServices, shard: &Rc<Shard>) -> GetNodeStatsReply {
    let mut reply = GetNodeStatsReply {
        node_id: shard.node_id.to_vec(),
        num_shards: shard.n as u32,
        uptime_s: shard.started_at.elapsed().as_secs_f64(),
        ..Default::default()
    };
    for r in shard.mesh.call_all(|_| Req::Stats).await {
        if let Ok(Rep::Stats(s, workers)) = r {
            reply.shards.push(s);
            reply.core_workers_stats.extend(workers);
        }
    }
    // Pool workers (state and lease) come from the scheduling plane; other clients
    // (drivers, and workers the pool does not know) from the client table.
    node.sched.fill_node_stats(&mut reply);
    let pooled: std::collections::HashSet<Vec<u8>> =
        reply.core_workers_stats.iter().map(|w| w.worker_id.clone()).collect();
    for (id, c) in node.clients.snapshot() {
        if pooled.contains(id.as_bytes()) {
            continue;
        }
        reply.core_workers_stats.push(WorkerStats {
            worker_id: id.to_vec(),
            pid: c.pid as u32,
            worker_type: match c.kind {
                ClientKind::Driver => "DRIVER".into(),
                ClientKind::Worker => "WORKER".into(),
            },
            state: if c.port > 0 { "IDLE".into() } else { "REGISTERED".into() },
            port: c.port,
            shard: u32::from(c.shard.0),
            job_id: c.job.to_vec(),
            ..Default::default()
        });
    }
    let mut parts = Vec::new();
    for r in shard.mesh.call_all(|_| Req::Obj(crate::services::objects::msg::ObjReq::Stats)).await {
        if let Ok(Rep::Obj(crate::services::objects::msg::ObjRep::Stats(s))) = r {
            parts.push(*s);
        }
    }
    reply.store_stats = Some(crate::services::objects::stats::merge(&parts, shard.cfg.object_store_memory));
    for (i, p) in parts.iter().enumerate() {
        if let Some(s) = reply.shards.get_mut(i) {
            s.objects = p.num_objects;
            s.bytes_allocated = p.held_bytes;
        }
    }
    reply.objects = parts
        .into_iter()
        .flat_map(|p| p.objects)
        .map(|mut o| {
            o.node_id = shard.node_id.to_vec();
            o
        })
        .collect();
    let (workers, drivers) = node.clients.counts();
    reply.num_workers = workers as u32;
    reply.num_drivers = drivers as u32;
    reply
}
