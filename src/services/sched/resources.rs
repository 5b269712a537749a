//! Resource reporting and the cluster view on shard 0 (RAY-NOTES.md §4, E1/E2 scheme):
//! the GCS pulls this node's report with `RequestResourceReport` and broadcasts every
//! node's report with `UpdateResourceUsage` (sequence-numbered; older batches are
//! discarded; entries for this node are skipped, so the local view is never overwritten).
//! Joins and deaths from the node table add and remove nodes from the view.
//!
//! GlobalGC travels the same way: the node that receives `GlobalGC` runs LocalGC on its
//! own workers and sets `should_global_gc` in its next report; every other node runs
//! LocalGC on its workers when a broadcast carries that flag for another node.

use super::msg::RemoteUpdate;
use super::SchedService;
use crate::ids::NodeId;
use crate::logic::lease::policy::NodeView;
use crate::logic::resources::ResourceSet;
use crate::logic::workers::WorkerState;
use crate::rpc::{CallOpts, RpcClient};
use crate::services::session::PeerChange;
use crate::wire::rpc::{worker_service, LocalGcRequest, ResourceDemand, ResourceLoad, ResourcesData};
use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Broadcast sequence and the pending global-GC flag.
#[derive(Debug, Default)]
pub struct SyncState {
    last_seq: Cell<Option<i64>>,
    global_gc: Cell<bool>,
}

fn to_map(s: &ResourceSet) -> HashMap<String, f64> {
    s.iter().map(|(k, v)| (k.to_string(), v.to_f64())).collect()
}

impl SchedService {
    /// This node's report for the GCS.
    pub(super) fn resource_report(&self) -> ResourcesData {
        let core = self.core.borrow();
        let q = core.queue();
        let mut demands: Vec<ResourceDemand> = q
            .load()
            .into_iter()
            .map(|l| ResourceDemand {
                shape: to_map(&l.shape),
                num_ready_requests_queued: l.ready as i64,
                num_infeasible_requests_queued: l.infeasible as i64,
                backlog_size: 0,
            })
            .collect();
        for (shape, n) in self.replies.backlog_by_shape() {
            let map = to_map(&shape);
            match demands.iter_mut().find(|d| d.shape == map) {
                Some(d) => d.backlog_size = d.backlog_size.saturating_add(n),
                None => demands.push(ResourceDemand { shape: map, backlog_size: n, ..Default::default() }),
            }
        }
        let mut load = ResourceSet::new();
        for d in &demands {
            let n = d.num_ready_requests_queued + d.num_infeasible_requests_queued;
            for (k, v) in &d.shape {
                let add = ResourceSet::from_f64_map([(k.clone(), v * n as f64)]);
                load.add(&add);
            }
        }
        let port = self.shard().and_then(|s| s.ports.get()).map(|p| p.node_manager_port).unwrap_or(0);
        ResourcesData {
            node_id: self.env.node_id.to_vec(),
            resources_available: to_map(&q.resources().available()),
            resources_available_changed: true,
            resources_total: to_map(&q.resources().total()),
            resource_load: to_map(&load),
            resource_load_by_shape: Some(ResourceLoad { resource_demands: demands }),
            should_global_gc: self.sync.global_gc.take(),
            node_manager_address: SocketAddr::new(self.env.node_ip, port).to_string(),
            // Filled in by the RPC handler from every shard's pull queue.
            object_pulls_queued: false,
        }
    }

    /// Applies an `UpdateResourceUsage` batch.
    pub(super) fn apply_broadcast(self: &Rc<Self>, seq: i64, updates: Vec<RemoteUpdate>) {
        if let Some(last) = self.sync.last_seq.get() {
            if seq <= last {
                if seq < last {
                    tracing::warn!(seq, last, "discarding an out-of-order resource broadcast");
                }
                return;
            }
            if seq != last + 1 {
                tracing::debug!(seq, last, "resource broadcasts were skipped");
            }
        }
        self.sync.last_seq.set(Some(seq));
        let now = Instant::now();
        let mut gc = false;
        for u in updates {
            match u {
                RemoteUpdate::Data { node, total, available, pulls_queued, should_global_gc } => {
                    if node == self.env.node_id || !self.peer_alive(node) {
                        continue;
                    }
                    gc |= should_global_gc;
                    let view =
                        NodeView { total, available, alive: true, draining: false, object_pulls_queued: pulls_queued };
                    self.core.borrow_mut().handle_node_update(now, node, view);
                }
                RemoteUpdate::Change { node, updated, deleted } => {
                    if node == self.env.node_id {
                        continue;
                    }
                    let current = self.core.borrow().queue().view().nodes.get(&node).cloned();
                    let Some(mut view) = current else { continue };
                    for (k, v) in updated.iter() {
                        view.total.set(k, v);
                        view.available.set(k, v);
                    }
                    for k in deleted {
                        view.total.set(k.clone(), Default::default());
                        view.available.set(k, Default::default());
                    }
                    self.core.borrow_mut().handle_node_update(now, node, view);
                }
            }
        }
        self.drive();
        if gc {
            self.local_gc(true);
        }
    }

    fn peer_alive(&self, node: NodeId) -> bool {
        let session = self.shard().and_then(|s| s.node()).and_then(|n| n.session());
        session.and_then(|s| s.peer(&node)).is_some_and(|p| p.alive)
    }

    /// The node manager address of a known node.
    pub(super) fn peer_address(&self, node: NodeId) -> Option<SocketAddr> {
        let session = self.shard().and_then(|s| s.node()).and_then(|n| n.session())?;
        session.peer(&node).and_then(|p| p.node_manager_addr())
    }

    /// A node joined or died (node table).
    pub fn peer_changed(self: &Rc<Self>, change: PeerChange) {
        let now = Instant::now();
        match change {
            PeerChange::Joined(id) if id != self.env.node_id => {
                let known = self.core.borrow().queue().view().nodes.contains_key(&id);
                let session = self.shard().and_then(|s| s.node()).and_then(|n| n.session());
                let total = session.and_then(|s| s.peer(&id)).map(|p| p.info.resources_total);
                if let (false, Some(total)) = (known, total) {
                    let total =
                        ResourceSet::from_f64_map(total.into_iter().filter(|(_, v)| v.is_finite() && *v >= 0.0));
                    self.core.borrow_mut().handle_node_update(now, id, NodeView::new(total));
                }
            }
            PeerChange::Died(id) => self.core.borrow_mut().handle_node_removed(now, id),
            PeerChange::Joined(_) => {}
        }
        self.drive();
    }

    /// `GlobalGC`: LocalGC here now, and every other node through the next report.
    pub(super) fn global_gc(self: &Rc<Self>) {
        self.sync.global_gc.set(true);
        self.local_gc(true);
    }

    /// Sends `LocalGC` to every live worker of this node that has announced its port.
    pub(super) fn local_gc(self: &Rc<Self>, triggered_by_global_gc: bool) {
        let targets: Vec<SocketAddr> = self
            .core
            .borrow()
            .pool()
            .workers()
            .filter(|w| !matches!(w.state, WorkerState::Dead))
            .filter_map(|w| w.port.map(|p| SocketAddr::new(self.env.node_ip, p)))
            .collect();
        for addr in targets {
            let token: Rc<str> = self.env.auth_token.clone().into();
            glommio::spawn_local(async move {
                let client = RpcClient::new(addr, token);
                let req = LocalGcRequest { triggered_by_global_gc };
                if let Err(e) =
                    worker_service::client::local_gc(&client, &req, CallOpts::once(Duration::from_secs(5))).await
                {
                    tracing::debug!(%addr, "LocalGC failed: {e}");
                }
            })
            .detach();
        }
    }
}
