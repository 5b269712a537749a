//! `PlacementGroupInfoGcsService` on the head's GCS (shard 0): drives
//! `logic::gcs::pgs::PgTable` — performs its Prepare / Commit / CancelResourceReserve RPCs
//! on the raylets, feeds the results back, wakes `WaitPlacementGroupUntilReady` callers,
//! and tells the table about node deaths and joins (long-polling the GCS node table
//! in-process) and fresh resource reports (from `gcs_sync`).
//!
//! `RemovePlacementGroup` replies once every raylet has confirmed its cancel, so a client
//! that removes and creates back to back sees the resources free again. Steps for the
//! head's own node are direct calls into its scheduling plane (same shard), not RPCs.

use super::convert;
use super::timer::{self, Rearm};
use crate::ids::{NodeId, PlacementGroupId};
use crate::logic::bundles::{BundleKey, BundleSpec};
use crate::logic::gcs::pgs::{PgAction, PgConfig, PgError, PgInfo, PgSpec, PgState, PgTable};
use crate::logic::lease::policy::NodeView;
use crate::logic::pg_placement::PgStrategy;
use crate::rpc::{CallOpts, RpcError, Status};
use crate::services::gcs::GcsServer;
use crate::shard::Shard;
use crate::wire::rpc::node_info_gcs_service::NodeInfoGcsServiceHandler;
use crate::wire::rpc::*;
use futures_channel::oneshot;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// Deadline of one 2PC RPC to a raylet.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Default and longest wait of `WaitPlacementGroupUntilReady`.
const WAIT_DEFAULT: Duration = Duration::from_secs(30);

type Waiters = HashMap<PlacementGroupId, Vec<oneshot::Sender<Result<(), String>>>>;

/// The GCS placement-group service.
#[derive(Debug)]
pub struct GcsPlacementGroups {
    gcs: Rc<GcsServer>,
    table: RefCell<PgTable>,
    waiters: RefCell<Waiters>,
    timer: Rearm,
    shard: Weak<Shard>,
}

impl GcsPlacementGroups {
    /// The service over `gcs` (head, shard 0).
    pub fn new(gcs: Rc<GcsServer>, shard: &Rc<Shard>, limits: crate::config::GcsLimits) -> Rc<Self> {
        let cfg = PgConfig {
            max_groups: limits.max_placement_groups,
            max_bundles: limits.max_bundles_per_group,
            ..PgConfig::default()
        };
        Rc::new(Self {
            gcs,
            table: RefCell::new(PgTable::new(cfg)),
            waiters: RefCell::new(HashMap::new()),
            timer: Rearm::default(),
            shard: Rc::downgrade(shard),
        })
    }

    /// Starts the retry timer and the node-table watch.
    pub fn start(self: &Rc<Self>, shard: &Rc<Shard>) {
        let fire: fn(&Rc<Self>, Instant) = |s, now| {
            let view = s.view();
            s.table.borrow_mut().handle_timeout(now, &view);
            s.drive();
        };
        shard.keep(glommio::spawn_local(timer::run(Rc::downgrade(self), |s| &s.timer, fire)).detach());
        shard.keep(glommio::spawn_local(watch_nodes(Rc::downgrade(self))).detach());
    }

    /// A report of `node` requested at `requested_at` reached the GCS's view.
    pub fn report_received(&self, node: NodeId, requested_at: Instant) {
        self.table.borrow_mut().handle_report(node, requested_at);
    }

    /// The reported cluster view (alive nodes only).
    fn view(&self) -> BTreeMap<NodeId, NodeView> {
        let rs = |m: &HashMap<String, f64>| convert::resource_set(m, "report").unwrap_or_default();
        self.gcs
            .resource_view()
            .iter()
            .filter_map(|d| {
                let id = NodeId::from_bytes(&d.node_id).ok()?;
                let mut v = NodeView::new(rs(&d.resources_total));
                v.available = rs(&d.resources_available);
                Some((id, v))
            })
            .collect()
    }

    fn addr_of(&self, node: NodeId) -> Option<SocketAddr> {
        self.gcs.alive_nodes().iter().find(|n| n.node_id == node.as_bytes()).and_then(super::gcs_sync::addr_of)
    }

    /// Performs the table's actions; returns the completions of the cancels it sent.
    fn drive(self: &Rc<Self>) -> Vec<oneshot::Receiver<()>> {
        let mut cancels = Vec::new();
        loop {
            let action = self.table.borrow_mut().poll_action();
            let Some(action) = action else { break };
            match action {
                PgAction::Ready { pg } => self.wake(pg, Ok(())),
                PgAction::Removed { pg } => self.wake(pg, Err(format!("placement group {pg} was removed"))),
                other => cancels.extend(self.send(other)),
            }
        }
        self.timer.rearm(self.table.borrow().poll_timeout());
        cancels
    }

    fn wake(&self, pg: PlacementGroupId, r: Result<(), String>) {
        for w in self.waiters.borrow_mut().remove(&pg).unwrap_or_default() {
            let _ = w.send(r.clone());
        }
    }

    /// The scheduling plane of this node when `node` is this node (the GCS and the node's
    /// ledger share shard 0, so 2PC steps for this node are direct calls).
    fn local_sched(&self, node: NodeId) -> Option<Rc<super::SchedService>> {
        let shard = self.shard.upgrade()?;
        if node != shard.node_id {
            return None;
        }
        shard.node().map(|n| n.sched.clone())
    }

    /// Runs one 2PC step on this node's own ledger and feeds the result back at once.
    fn run_local(&self, sched: &Rc<super::SchedService>, action: PgAction) {
        let specs =
            |pg: PlacementGroupId, bundles: &[(i64, crate::logic::resources::ResourceSet)]| -> Vec<BundleSpec> {
                bundles
                    .iter()
                    .map(|(index, r)| BundleSpec { key: BundleKey { pg, index: *index }, unit_resources: r.clone() })
                    .collect()
            };
        match action {
            PgAction::Prepare { pg, attempt, node, bundles } => {
                let ok = sched.prepare_bundles(&specs(pg, &bundles));
                self.table.borrow_mut().handle_prepare_reply(Instant::now(), pg, attempt, node, ok);
            }
            PgAction::Commit { pg, attempt, node, bundles } => {
                sched.commit_bundles(&specs(pg, &bundles));
                self.table.borrow_mut().handle_commit_reply(Instant::now(), pg, attempt, node, true);
            }
            PgAction::CancelReserve { op, pg, bundle, .. } => {
                sched.cancel_bundle(BundleKey { pg, index: bundle.0 });
                self.table.borrow_mut().handle_cancel_reply(Instant::now(), op);
            }
            PgAction::Ready { .. } | PgAction::Removed { .. } => {}
        }
    }

    /// Starts one 2PC RPC (or runs it in place for this node); a remote cancel's
    /// completion is returned.
    fn send(self: &Rc<Self>, action: PgAction) -> Option<oneshot::Receiver<()>> {
        let node = match &action {
            PgAction::Prepare { node, .. } | PgAction::Commit { node, .. } | PgAction::CancelReserve { node, .. } => {
                *node
            }
            PgAction::Ready { .. } | PgAction::Removed { .. } => return None,
        };
        if let Some(sched) = self.local_sched(node) {
            self.run_local(&sched, action);
            return None;
        }
        let (done_tx, done_rx) = oneshot::channel();
        let is_cancel = matches!(action, PgAction::CancelReserve { .. });
        let me = self.clone();
        let addr = self.addr_of(node);
        glommio::spawn_local(async move {
            let client = match (addr, me.shard.upgrade()) {
                (Some(a), Some(s)) => Some(s.clients.get(a)),
                _ => None,
            };
            let now_ok = |r: Result<(), RpcError>| match r {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(%node, "placement-group RPC failed: {e}");
                    false
                }
            };
            let opts = CallOpts::once(RPC_TIMEOUT);
            match action {
                PgAction::Prepare { pg, attempt, node, bundles } => {
                    let ok = match &client {
                        Some(c) => {
                            let req = PrepareBundleResourcesRequest { bundle_specs: wire_bundles(pg, node, &bundles) };
                            node_manager_service::client::prepare_bundle_resources(&**c, &req, opts)
                                .await
                                .is_ok_and(|r| r.success)
                        }
                        None => false,
                    };
                    me.table.borrow_mut().handle_prepare_reply(Instant::now(), pg, attempt, node, ok);
                }
                PgAction::Commit { pg, attempt, node, bundles } => {
                    let ok = match &client {
                        Some(c) => {
                            let req = CommitBundleResourcesRequest { bundle_specs: wire_bundles(pg, node, &bundles) };
                            now_ok(
                                node_manager_service::client::commit_bundle_resources(&**c, &req, opts)
                                    .await
                                    .map(|_| ()),
                            )
                        }
                        None => false,
                    };
                    me.table.borrow_mut().handle_commit_reply(Instant::now(), pg, attempt, node, ok);
                }
                PgAction::CancelReserve { op, pg, node, bundle } => {
                    if let Some(c) = &client {
                        let spec = wire_bundles(pg, node, std::slice::from_ref(&bundle)).pop();
                        let req = CancelResourceReserveRequest { bundle_spec: spec };
                        now_ok(
                            node_manager_service::client::cancel_resource_reserve(&**c, &req, opts).await.map(|_| ()),
                        );
                    }
                    me.table.borrow_mut().handle_cancel_reply(Instant::now(), op);
                }
                PgAction::Ready { .. } | PgAction::Removed { .. } => {}
            }
            drop(me.drive());
            let _ = done_tx.send(());
        })
        .detach();
        is_cancel.then_some(done_rx)
    }
}

fn wire_bundles(
    pg: PlacementGroupId,
    node: NodeId,
    bundles: &[(i64, crate::logic::resources::ResourceSet)],
) -> Vec<Bundle> {
    bundles
        .iter()
        .map(|(i, r)| Bundle {
            bundle_id: Some(BundleId { placement_group_id: pg.to_vec(), bundle_index: *i }),
            unit_resources: r.iter().map(|(k, v)| (k.to_string(), v.to_f64())).collect(),
            node_id: node.to_vec(),
        })
        .collect()
}

/// Long-polls the GCS node table in-process; deaths reschedule bundles, joins retry
/// waiting groups.
async fn watch_nodes(me: Weak<GcsPlacementGroups>) {
    let mut version = 0;
    let mut alive: BTreeSet<Vec<u8>> = BTreeSet::new();
    loop {
        let Some(s) = me.upgrade() else { return };
        let gcs = s.gcs.clone();
        drop(s);
        let req = GetAllNodeInfoRequest { known_version: version, wait_ms: 5_000 };
        let Ok(reply) = gcs.get_all_node_info(req).await else { return };
        version = reply.version;
        let Some(s) = me.upgrade() else { return };
        let now = Instant::now();
        let mut joined = false;
        let current: BTreeSet<Vec<u8>> = reply
            .node_info_list
            .iter()
            .filter(|n| n.state == NodeState::Alive as i32)
            .map(|n| n.node_id.clone())
            .collect();
        for dead in alive.difference(&current) {
            if let Ok(id) = NodeId::from_bytes(dead) {
                s.table.borrow_mut().handle_node_dead(now, id);
            }
        }
        joined |= current.difference(&alive).next().is_some();
        if joined {
            s.table.borrow_mut().handle_nodes_changed(now);
        }
        alive = current;
        drop(s.drive());
    }
}

fn strategy_from(v: i32) -> Result<PgStrategy, Status> {
    Ok(match PlacementStrategy::try_from(v) {
        Ok(PlacementStrategy::Pack) => PgStrategy::Pack,
        Ok(PlacementStrategy::Spread) => PgStrategy::Spread,
        Ok(PlacementStrategy::StrictPack) => PgStrategy::StrictPack,
        Ok(PlacementStrategy::StrictSpread) => PgStrategy::StrictSpread,
        Err(_) => return Err(Status::invalid_argument(format!("unknown placement strategy {v}"))),
    })
}

fn strategy_to(s: PgStrategy) -> PlacementStrategy {
    match s {
        PgStrategy::Pack => PlacementStrategy::Pack,
        PgStrategy::Spread => PlacementStrategy::Spread,
        PgStrategy::StrictPack => PlacementStrategy::StrictPack,
        PgStrategy::StrictSpread => PlacementStrategy::StrictSpread,
    }
}

fn table_data(info: PgInfo) -> PlacementGroupTableData {
    let pg = info.spec.id;
    PlacementGroupTableData {
        placement_group_id: pg.to_vec(),
        name: info.spec.name,
        bundles: info
            .spec
            .bundles
            .iter()
            .zip(&info.nodes)
            .enumerate()
            .map(|(i, (r, n))| Bundle {
                bundle_id: Some(BundleId { placement_group_id: pg.to_vec(), bundle_index: i as i64 }),
                unit_resources: r.iter().map(|(k, v)| (k.to_string(), v.to_f64())).collect(),
                node_id: n.map(|n| n.to_vec()).unwrap_or_default(),
            })
            .collect(),
        strategy: strategy_to(info.spec.strategy) as i32,
        state: match info.state {
            PgState::Pending => PlacementGroupState::Pending,
            PgState::Created => PlacementGroupState::Created,
            PgState::Removed => PlacementGroupState::Removed,
            PgState::Rescheduling => PlacementGroupState::Rescheduling,
        } as i32,
        state_message: info.message,
    }
}

fn pg_id(b: &[u8]) -> Result<PlacementGroupId, Status> {
    PlacementGroupId::from_bytes(b).map_err(|e| Status::invalid_argument(e.to_string()))
}

impl placement_group_info_gcs_service::PlacementGroupInfoGcsServiceHandler for Rc<GcsPlacementGroups> {
    async fn create_placement_group(
        &self,
        req: CreatePlacementGroupRequest,
    ) -> Result<CreatePlacementGroupReply, Status> {
        let s = req.placement_group_spec.ok_or_else(|| Status::invalid_argument("placement_group_spec is missing"))?;
        let max = self.table.borrow().config().max_bundles;
        if s.bundles.len() > max {
            // Refused before converting (and allocating) every bundle.
            return Err(Status::invalid_argument(PgError::TooManyBundles { got: s.bundles.len(), max }.to_string()));
        }
        let bundles = s
            .bundles
            .iter()
            .map(|b| convert::resource_set(&b.unit_resources, "bundle"))
            .collect::<Result<Vec<_>, _>>()?;
        let spec =
            PgSpec { id: pg_id(&s.placement_group_id)?, name: s.name, strategy: strategy_from(s.strategy)?, bundles };
        let now = Instant::now();
        self.table.borrow_mut().handle_create(now, spec).map_err(|e| match e {
            PgError::TooManyGroups(_) => Status::resource_exhausted(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        })?;
        let view = self.view();
        self.table.borrow_mut().handle_timeout(now, &view);
        drop(self.drive());
        Ok(CreatePlacementGroupReply {})
    }

    async fn remove_placement_group(
        &self,
        req: RemovePlacementGroupRequest,
    ) -> Result<RemovePlacementGroupReply, Status> {
        let pg = pg_id(&req.placement_group_id)?;
        if self.table.borrow().get(pg).is_none() {
            return Err(Status::not_found(format!("placement group {pg} does not exist")));
        }
        self.table.borrow_mut().handle_remove(pg);
        for done in self.drive() {
            let _ = glommio::timer::timeout(RPC_TIMEOUT + Duration::from_secs(1), async {
                let _ = done.await;
                Ok(())
            })
            .await;
        }
        Ok(RemovePlacementGroupReply {})
    }

    async fn get_placement_group(&self, req: GetPlacementGroupRequest) -> Result<GetPlacementGroupReply, Status> {
        let pg = pg_id(&req.placement_group_id)?;
        Ok(GetPlacementGroupReply { placement_group_table_data: self.table.borrow().get(pg).map(table_data) })
    }

    async fn get_all_placement_group(
        &self,
        req: GetAllPlacementGroupRequest,
    ) -> Result<GetAllPlacementGroupReply, Status> {
        let t = self.table.borrow();
        let total = t.all().count() as i64;
        let limit = if req.limit > 0 { req.limit as usize } else { usize::MAX };
        Ok(GetAllPlacementGroupReply {
            placement_group_table_data: t.all().take(limit).map(table_data).collect(),
            total,
        })
    }

    async fn wait_placement_group_until_ready(
        &self,
        req: WaitPlacementGroupUntilReadyRequest,
    ) -> Result<WaitPlacementGroupUntilReadyReply, Status> {
        let pg = pg_id(&req.placement_group_id)?;
        let state = self.table.borrow().get(pg).map(|i| i.state);
        match state {
            None => return Err(Status::not_found(format!("placement group {pg} does not exist"))),
            Some(PgState::Created) => return Ok(WaitPlacementGroupUntilReadyReply {}),
            Some(PgState::Removed) => {
                return Err(Status::failed_precondition(format!("placement group {pg} was removed")))
            }
            Some(PgState::Pending | PgState::Rescheduling) => {}
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().entry(pg).or_default().push(tx);
        let wait = if req.timeout_ms == 0 {
            WAIT_DEFAULT
        } else {
            Duration::from_millis(req.timeout_ms).min(WAIT_DEFAULT * 10)
        };
        let r = glommio::timer::timeout(wait, async { Ok(rx.await) }).await;
        match r {
            Ok(Ok(Ok(()))) => Ok(WaitPlacementGroupUntilReadyReply {}),
            Ok(Ok(Err(e))) => Err(Status::failed_precondition(e)),
            Ok(Err(_)) => Err(Status::unavailable("the GCS is shutting down")),
            Err(_) => {
                if let Some(w) = self.waiters.borrow_mut().get_mut(&pg) {
                    w.retain(|tx| !tx.is_canceled());
                }
                let msg = self.table.borrow().get(pg).map(|i| i.message).unwrap_or_default();
                Err(Status::deadline_exceeded(format!("placement group {pg} is not ready after {wait:?}: {msg}")))
            }
        }
    }
}
