//! On the head: the GCS side of resource reporting (RAY-NOTES.md §4, E1/E2 scheme). Every
//! period it pulls `RequestResourceReport` from each alive raylet (one call in flight per
//! node; a slow node never delays the others), stores the reports in the GCS resource view
//! (`GcsServer::update_resources`, what `raylet status` shows), and broadcasts the entries
//! that changed since the last broadcast — every entry every tenth round, so a node that
//! missed one catches up — as one `ResourceUsageBroadcastData` with an increasing sequence
//! number, serialized once and sent to every alive raylet with `UpdateResourceUsage`.

use crate::ids::NodeId;
use crate::rpc::CallOpts;
use crate::services::gcs::GcsServer;
use crate::shard::Shard;
use crate::wire::rpc::*;
use prost::Message;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Every this many rounds the whole view is broadcast.
const FULL_EVERY: u64 = 10;
/// Most entries per broadcast message (Ray's `resource_broadcast_batch_size`).
const BATCH: usize = 512;

/// A node's NodeManagerService address from its node-table entry.
pub(super) fn addr_of(n: &GcsNodeInfo) -> Option<SocketAddr> {
    format!("{}:{}", n.node_manager_address, n.node_manager_port).parse().ok()
}

/// Runs until cancelled.
pub async fn poll_and_broadcast(gcs: Rc<GcsServer>, shard: Rc<Shard>, period: Duration) {
    let in_flight: Rc<RefCell<HashSet<Vec<u8>>>> = Rc::default();
    let mut last_sent: HashMap<Vec<u8>, ResourcesData> = HashMap::new();
    let (mut seq, mut round) = (0i64, 0u64);
    loop {
        glommio::timer::sleep(period).await;
        round += 1;
        let nodes = gcs.alive_nodes();
        broadcast(&gcs, &shard, &nodes, &mut last_sent, &mut seq, round % FULL_EVERY == 0);
        for n in &nodes {
            let Some(addr) = addr_of(n) else { continue };
            if !in_flight.borrow_mut().insert(n.node_id.clone()) {
                continue;
            }
            let (gcs, shard, in_flight, id) = (gcs.clone(), shard.clone(), in_flight.clone(), n.node_id.clone());
            let timeout = (period * 10).max(Duration::from_secs(1));
            glommio::spawn_local(async move {
                let requested_at = Instant::now();
                let client = shard.clients.get(addr);
                let r = node_manager_service::client::request_resource_report(
                    &*client,
                    &RequestResourceReportRequest {},
                    CallOpts::once(timeout),
                )
                .await;
                match r {
                    Ok(RequestResourceReportReply { resources: Some(data) }) if data.node_id == id => {
                        gcs.update_resources(data);
                        let pgs = shard.node().and_then(|n| n.gcs_pgs.clone());
                        if let (Some(pgs), Ok(node)) = (pgs, NodeId::from_bytes(&id)) {
                            pgs.report_received(node, requested_at);
                        }
                    }
                    Ok(_) => tracing::warn!(%addr, "resource report for another node or empty; ignored"),
                    Err(e) => tracing::debug!(%addr, "resource report failed: {e}"),
                }
                in_flight.borrow_mut().remove(&id);
            })
            .detach();
        }
    }
}

/// Sends the changed (or, when `full`, all) entries of the view to every alive node.
fn broadcast(
    gcs: &GcsServer,
    shard: &Rc<Shard>,
    nodes: &[GcsNodeInfo],
    last_sent: &mut HashMap<Vec<u8>, ResourcesData>,
    seq: &mut i64,
    full: bool,
) {
    let view = gcs.resource_view();
    let alive: HashSet<&Vec<u8>> = view.iter().map(|d| &d.node_id).collect();
    last_sent.retain(|id, _| alive.contains(id));
    let changed: Vec<ResourcesData> =
        view.into_iter().filter(|d| full || last_sent.get(&d.node_id) != Some(d)).collect();
    if changed.is_empty() || nodes.is_empty() {
        return;
    }
    for d in &changed {
        last_sent.insert(d.node_id.clone(), d.clone());
    }
    for chunk in changed.chunks(BATCH) {
        *seq += 1;
        let batch = ResourceUsageBroadcastData {
            seq_no: *seq,
            batch: chunk
                .iter()
                .map(|d| ResourceUpdate { update: Some(resource_update::Update::Data(d.clone())) })
                .collect(),
        };
        let req = Rc::new(UpdateResourceUsageRequest { serialized_resource_usage_batch: batch.encode_to_vec() });
        for n in nodes {
            let Some(addr) = addr_of(n) else { continue };
            let (client, req) = (shard.clients.get(addr), req.clone());
            glommio::spawn_local(async move {
                let r = node_manager_service::client::update_resource_usage(
                    &*client,
                    &req,
                    CallOpts::once(Duration::from_secs(2)),
                )
                .await;
                if let Err(e) = r {
                    tracing::debug!(%addr, "resource broadcast failed: {e}");
                }
            })
            .detach();
        }
    }
}
