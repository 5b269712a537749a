//! The embedded GCS (head node, shard 0): node table with heartbeat failure detection, the
//! cluster resource view, and the internal KV. Served on the GCS port by shard 0 only.
//!
//! Raylets learn of joins and deaths by long-polling `GetAllNodeInfo` with the version they
//! know; the call returns as soon as the table changes.

use super::long_poll::LongPolls;
use crate::config::GcsLimits;
use crate::ids::NodeId;
use crate::logic::gcs::kv::{Kv, KvError, KvLimits};
use crate::logic::gcs::nodes::{Check, Heartbeat, NodeState, NodeTable};
use crate::metrics::Metrics;
use crate::rpc::Status;
use crate::wire::rpc::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// KV namespace and key of the cluster's system config.
pub const CONFIG_NS: &str = "cluster";
/// See [`CONFIG_NS`].
pub const CONFIG_KEY: &str = "system_config";

/// The GCS state and its RPC handlers.
#[derive(Debug)]
pub struct GcsServer {
    nodes: RefCell<NodeTable<GcsNodeInfo>>,
    kv: RefCell<Kv>,
    resources: RefCell<HashMap<NodeId, ResourcesData>>,
    waiters: LongPolls,
    /// The GCS's own id (CheckAlive).
    pub gcs_id: NodeId,
    /// The object directory.
    pub objects: Rc<super::gcs_objects::ObjectDirectoryServer>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl GcsServer {
    /// A GCS whose failure detector declares nodes dead after `timeout` without heartbeats,
    /// counting only time in which it ran at least once per heartbeat `period`, and whose
    /// tables stay within `limits`.
    pub fn new(
        timeout: Duration,
        period: Duration,
        system_config: &str,
        limits: GcsLimits,
        gcs_id: NodeId,
        metrics: Metrics,
    ) -> Result<Rc<Self>, KvError> {
        let mut kv = Kv::new(KvLimits {
            max_entries: limits.kv_max_entries,
            max_value_bytes: limits.kv_max_value_bytes,
            max_total_bytes: limits.kv_max_total_bytes,
        });
        kv.put(CONFIG_NS, CONFIG_KEY, system_config.as_bytes().to_vec(), true)?;
        Ok(Rc::new(Self {
            nodes: RefCell::new(NodeTable::new(timeout, period, 1000)),
            kv: RefCell::new(kv),
            resources: RefCell::new(HashMap::new()),
            waiters: LongPolls::new("node table", limits.max_long_polls, metrics.clone()),
            gcs_id,
            objects: Rc::new(super::gcs_objects::ObjectDirectoryServer::new(limits, metrics)),
        }))
    }

    fn changed(&self) {
        self.waiters.notify();
    }

    /// Runs the failure detector until cancelled: a check at every node deadline and at
    /// least every half heartbeat `period`, so that a longer gap means this shard did not
    /// run (see `logic::gcs::nodes`).
    pub async fn detect_failures(self: Rc<Self>, period: Duration) {
        let tick = (period / 2).max(Duration::from_millis(1));
        // Check once at start, so a pause right after start is measured from here: with
        // no previous check there is no gap to see, and every deadline would look missed.
        let _ = self.nodes.borrow_mut().handle_timeout(Instant::now());
        loop {
            let next = self.nodes.borrow().poll_timeout();
            let wait = next.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or(tick).min(tick);
            glommio::timer::sleep(wait).await;
            let dead = match self.nodes.borrow_mut().handle_timeout(Instant::now()) {
                Check::Expired(dead) => dead,
                Check::Paused(gap) => {
                    tracing::warn!(
                        "the failure detector did not run for {gap:?} (this process was stopped or its shard \
                         stalled): every node's heartbeat deadline restarts now"
                    );
                    Vec::new()
                }
            };
            if !dead.is_empty() {
                for id in &dead {
                    tracing::warn!(node = %id, "node missed its heartbeats: marked DEAD");
                    self.mark_dead_info(id);
                }
                self.changed();
            }
        }
    }

    fn mark_dead_info(&self, id: &NodeId) {
        let reason = self.nodes.borrow().get(id).and_then(|e| e.death_reason.clone()).unwrap_or_default();
        self.nodes.borrow_mut().update_info(*id, |i| {
            i.state = crate::wire::rpc::NodeState::Dead as i32;
            i.end_time_ms = now_ms();
            i.death_reason = reason;
        });
        self.resources.borrow_mut().remove(id);
        self.objects.node_dead(*id);
    }

    /// Updates a node's resource view (from a RequestResourceReport pull).
    pub fn update_resources(&self, data: ResourcesData) {
        let Ok(id) = NodeId::from_bytes(&data.node_id) else { return };
        let alive = self.nodes.borrow().get(&id).is_some_and(|e| e.state == NodeState::Alive);
        if alive {
            self.resources.borrow_mut().insert(id, data);
        }
    }

    /// Current resource view of every alive node.
    pub fn resource_view(&self) -> Vec<ResourcesData> {
        let mut v: Vec<_> = self.resources.borrow().values().cloned().collect();
        v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        v
    }

    /// Alive nodes' infos.
    pub fn alive_nodes(&self) -> Vec<GcsNodeInfo> {
        self.nodes.borrow().iter().filter(|(_, e)| e.state == NodeState::Alive).map(|(_, e)| e.info.clone()).collect()
    }

    fn snapshot(&self) -> GetAllNodeInfoReply {
        let nodes = self.nodes.borrow();
        GetAllNodeInfoReply {
            node_info_list: nodes.iter().map(|(_, e)| e.info.clone()).collect(),
            version: nodes.version(),
            resources: self.resource_view(),
        }
    }
}

impl node_info_gcs_service::NodeInfoGcsServiceHandler for Rc<GcsServer> {
    async fn register_node(&self, req: RegisterNodeRequest) -> Result<RegisterNodeReply, Status> {
        let mut info = req.node_info.ok_or_else(|| Status::invalid_argument("node_info is required"))?;
        let id = NodeId::from_bytes(&info.node_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        info.state = crate::wire::rpc::NodeState::Alive as i32;
        if info.start_time_ms == 0 {
            info.start_time_ms = now_ms();
        }
        let total = info.resources_total.clone();
        let addr = format!("{}:{}", info.node_manager_address, info.node_manager_port);
        self.nodes
            .borrow_mut()
            .handle_register(Instant::now(), id, info)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        self.resources.borrow_mut().entry(id).or_insert_with(|| ResourcesData {
            node_id: id.to_vec(),
            resources_available: total.clone(),
            resources_total: total,
            node_manager_address: addr,
            ..Default::default()
        });
        tracing::info!(node = %id, "node registered");
        self.changed();
        let system_config =
            String::from_utf8_lossy(self.kv.borrow().get(CONFIG_NS, CONFIG_KEY).unwrap_or(b"{}")).into_owned();
        Ok(RegisterNodeReply { system_config, node_table_version: self.nodes.borrow().version() })
    }

    async fn unregister_node(&self, req: UnregisterNodeRequest) -> Result<UnregisterNodeReply, Status> {
        let id = NodeId::from_bytes(&req.node_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let reason = if req.reason.is_empty() { "unregistered".to_string() } else { req.reason };
        if self.nodes.borrow_mut().handle_unregister(id, &reason) {
            tracing::info!(node = %id, "node unregistered: {reason}");
            self.mark_dead_info(&id);
            self.changed();
        }
        Ok(UnregisterNodeReply {})
    }

    async fn get_all_node_info(&self, req: GetAllNodeInfoRequest) -> Result<GetAllNodeInfoReply, Status> {
        if req.known_version != 0 && req.known_version == self.nodes.borrow().version() && req.wait_ms > 0 {
            self.waiters.wait(Duration::from_millis(u64::from(req.wait_ms.min(60_000)))).await?;
        }
        Ok(self.snapshot())
    }

    async fn check_alive(&self, _req: CheckAliveRequest) -> Result<CheckAliveReply, Status> {
        Ok(CheckAliveReply { gcs_node_id: self.gcs_id.to_vec(), node_table_version: self.nodes.borrow().version() })
    }
}

impl heartbeat_info_gcs_service::HeartbeatInfoGcsServiceHandler for Rc<GcsServer> {
    async fn report_heartbeat(&self, req: ReportHeartbeatRequest) -> Result<ReportHeartbeatReply, Status> {
        let id = NodeId::from_bytes(&req.node_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let alive = self.nodes.borrow_mut().handle_heartbeat(Instant::now(), id) == Heartbeat::Alive;
        Ok(ReportHeartbeatReply { alive, node_table_version: self.nodes.borrow().version() })
    }
}

impl node_resource_info_gcs_service::NodeResourceInfoGcsServiceHandler for Rc<GcsServer> {
    async fn get_all_resource_usage(
        &self,
        _req: GetAllResourceUsageRequest,
    ) -> Result<GetAllResourceUsageReply, Status> {
        Ok(GetAllResourceUsageReply { resources: self.resource_view() })
    }
}

impl internal_kv_gcs_service::InternalKVGcsServiceHandler for Rc<GcsServer> {
    async fn internal_kv_get(&self, req: KvGetRequest) -> Result<KvGetReply, Status> {
        let kv = self.kv.borrow();
        Ok(match kv.get(&req.ns, &req.key) {
            Some(v) => KvGetReply { found: true, value: v.to_vec() },
            None => KvGetReply { found: false, value: Vec::new() },
        })
    }

    async fn internal_kv_put(&self, req: KvPutRequest) -> Result<KvPutReply, Status> {
        match self.kv.borrow_mut().put(&req.ns, &req.key, req.value, req.overwrite) {
            Ok(added) => Ok(KvPutReply { added }),
            Err(e @ (KvError::KeyTooLong { .. } | KvError::ValueTooLarge { .. })) => {
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e @ (KvError::TooManyEntries { .. } | KvError::TooManyBytes { .. })) => {
                Err(Status::resource_exhausted(e.to_string()))
            }
        }
    }

    async fn internal_kv_del(&self, req: KvDelRequest) -> Result<KvDelReply, Status> {
        Ok(KvDelReply { deleted_num: self.kv.borrow_mut().del(&req.ns, &req.key, req.by_prefix) as i64 })
    }

    async fn internal_kv_keys(&self, req: KvKeysRequest) -> Result<KvKeysReply, Status> {
        Ok(KvKeysReply { keys: self.kv.borrow().keys(&req.ns, &req.prefix) })
    }
}
