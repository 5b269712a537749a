//! This node's session with the GCS (shard 0): registration, heartbeats, and the peer
//! directory kept current by long-polling the node table.
//!
//! A raylet that learns the GCS considers it dead (a heartbeat answered `alive = false`,
//! or its own entry DEAD in the node table) exits non-zero with a message naming the GCS
//! and the recorded reason, unless it is already shutting down. It never re-registers:
//! the GCS refuses a node id it has declared dead, as Ray's does.

use crate::ids::NodeId;
use crate::rpc::{CallOpts, RpcClient};
use crate::shard::Shard;
use crate::wire::rpc::*;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// What this node knows about another node.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its description from the GCS.
    pub info: GcsNodeInfo,
    /// ALIVE or DEAD.
    pub alive: bool,
}

impl Peer {
    /// Its NodeManagerService address.
    pub fn node_manager_addr(&self) -> Option<SocketAddr> {
        format!("{}:{}", self.info.node_manager_address, self.info.node_manager_port).parse().ok()
    }

    /// Its ObjectManagerService address.
    pub fn object_manager_addr(&self) -> Option<SocketAddr> {
        format!("{}:{}", self.info.node_manager_address, self.info.object_manager_port).parse().ok()
    }
}

/// The GCS session of this node.
#[derive(Debug)]
pub struct GcsSession {
    client: Rc<RpcClient>,
    gcs_addr: SocketAddr,
    peers: RefCell<BTreeMap<NodeId, Peer>>,
    version: Cell<u64>,
    stopping: Cell<bool>,
    /// The latest resource view of every node, as the GCS last reported it.
    pub resources: RefCell<Vec<ResourcesData>>,
}

/// Peer-directory changes, for services that react to joins and deaths.
#[derive(Debug, Clone)]
pub enum PeerChange {
    /// A node joined.
    Joined(NodeId),
    /// A node died.
    Died(NodeId),
}

impl GcsSession {
    /// A session with the GCS at `addr`.
    pub fn new(shard: &Shard, addr: SocketAddr) -> Rc<Self> {
        Rc::new(Self {
            client: shard.clients.get(addr),
            gcs_addr: addr,
            peers: RefCell::new(BTreeMap::new()),
            version: Cell::new(0),
            stopping: Cell::new(false),
            resources: RefCell::new(Vec::new()),
        })
    }

    /// The GCS address.
    pub fn gcs_addr(&self) -> SocketAddr {
        self.gcs_addr
    }

    /// The RPC client to the GCS.
    pub fn client(&self) -> &Rc<RpcClient> {
        &self.client
    }

    /// Registers this node; returns the cluster's system config. Retries while the GCS is
    /// unreachable, up to 30 s.
    pub async fn register(&self, info: GcsNodeInfo) -> Result<String, String> {
        let req = RegisterNodeRequest { node_info: Some(info) };
        let reply = node_info_gcs_service::client::register_node(
            &*self.client,
            &req,
            CallOpts::idempotent(Duration::from_secs(30)),
        )
        .await
        .map_err(|e| format!("cannot register with the GCS at {}: {e}", self.gcs_addr))?;
        Ok(reply.system_config)
    }

    /// Tells the GCS this node is leaving (best effort, bounded).
    pub async fn unregister(&self, node: NodeId, reason: &str) {
        self.stopping.set(true);
        let req = UnregisterNodeRequest { node_id: node.to_vec(), reason: reason.to_string() };
        if let Err(e) = node_info_gcs_service::client::unregister_node(
            &*self.client,
            &req,
            CallOpts::idempotent(Duration::from_secs(3)),
        )
        .await
        {
            tracing::warn!("cannot unregister from the GCS: {e}");
        }
    }

    /// Marks the session as shutting down: "you are dead" is then expected.
    pub fn set_stopping(&self) {
        self.stopping.set(true);
    }

    /// Every known peer.
    pub fn peers(&self) -> Vec<(NodeId, Peer)> {
        self.peers.borrow().iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// One peer.
    pub fn peer(&self, id: &NodeId) -> Option<Peer> {
        self.peers.borrow().get(id).cloned()
    }

    /// Sends heartbeats every `period` until cancelled; exits the node if the GCS says it
    /// is not alive.
    pub async fn heartbeat_loop(self: Rc<Self>, shard: Rc<Shard>, period: Duration) {
        let req = ReportHeartbeatRequest { node_id: shard.node_id.to_vec() };
        loop {
            glommio::timer::sleep(period).await;
            match heartbeat_info_gcs_service::client::report_heartbeat(
                &*self.client,
                &req,
                CallOpts::once(period.max(Duration::from_millis(500))),
            )
            .await
            {
                Ok(r) if !r.alive => {
                    let why = self.death_notice(shard.node_id).await;
                    self.died(&shard, &why).await;
                    return;
                }
                Ok(r) if r.node_table_version != self.version.get() => {}
                Ok(_) => {}
                Err(e) => tracing::warn!("heartbeat to the GCS failed: {e}"),
            }
        }
    }

    /// What to say when the GCS answered a heartbeat with "not alive": the death reason
    /// from its node table when it can still be read.
    async fn death_notice(&self, me: NodeId) -> String {
        let req = GetAllNodeInfoRequest { known_version: 0, wait_ms: 0 };
        let opts = CallOpts::once(Duration::from_secs(2));
        let entry = node_info_gcs_service::client::get_all_node_info(&*self.client, &req, opts)
            .await
            .ok()
            .and_then(|r| r.node_info_list.into_iter().find(|n| n.node_id == me.to_vec()));
        match entry {
            Some(info) => self.declared_dead(&info.death_reason),
            None => format!(
                "the GCS at {} does not know this node (it may have restarted without its tables)",
                self.gcs_addr
            ),
        }
    }

    fn declared_dead(&self, reason: &str) -> String {
        let reason = if reason.is_empty() { "no reason recorded" } else { reason };
        format!("the GCS at {} declared this node DEAD ({reason}) and refuses it under the same node id", self.gcs_addr)
    }

    async fn died(&self, shard: &Shard, why: &str) {
        if self.stopping.get() {
            return;
        }
        eprintln!("raylet: {why}; exiting");
        tracing::error!("{why}; exiting");
        self.stopping.set(true);
        shard.request_shutdown(why.to_string(), 1).await;
    }

    /// Long-polls the node table and applies changes until cancelled. `on_change` is told
    /// of joins and deaths.
    pub async fn watch_nodes(self: Rc<Self>, shard: Rc<Shard>, on_change: impl Fn(PeerChange) + 'static) {
        loop {
            let req = GetAllNodeInfoRequest { known_version: self.version.get(), wait_ms: 5_000 };
            match node_info_gcs_service::client::get_all_node_info(
                &*self.client,
                &req,
                CallOpts::idempotent(Duration::from_secs(10)),
            )
            .await
            {
                Ok(reply) => {
                    if let Some(reason) = self.apply(&shard, reply, &on_change) {
                        let why = self.declared_dead(&reason);
                        self.died(&shard, &why).await;
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot read the node table: {e}");
                    glommio::timer::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Applies a node-table snapshot; returns this node's death reason if it is dead in it.
    fn apply(&self, shard: &Shard, reply: GetAllNodeInfoReply, on_change: &dyn Fn(PeerChange)) -> Option<String> {
        self.version.set(reply.version);
        *self.resources.borrow_mut() = reply.resources;
        let mut self_dead = None;
        let mut peers = self.peers.borrow_mut();
        let mut changes = Vec::new();
        for info in reply.node_info_list {
            let Ok(id) = NodeId::from_bytes(&info.node_id) else { continue };
            let alive = info.state == crate::wire::rpc::NodeState::Alive as i32;
            if id == shard.node_id && !alive {
                self_dead = Some(info.death_reason.clone());
            }
            let before = peers.get(&id).map(|p| p.alive);
            match (before, alive) {
                (None, true) => changes.push(PeerChange::Joined(id)),
                (Some(true), false) | (None, false) => changes.push(PeerChange::Died(id)),
                _ => {}
            }
            peers.insert(id, Peer { info, alive });
        }
        drop(peers);
        for c in changes {
            if let PeerChange::Died(id) = &c {
                if let Some(addr) = self.peer(id).and_then(|p| p.node_manager_addr()) {
                    shard.clients.remove(addr);
                }
            }
            on_change(c);
        }
        self_dead
    }
}
