//! The node-wide services of shard 0: the GCS (on the head), this node's GCS session,
//! the client table, the local socket's acceptor, and the metrics endpoint. Each is its own
//! type; this struct only holds them together and runs the start/stop steps that touch
//! several of them.

use super::clients::ClientTable;
use super::gcs::GcsServer;
use super::session::{GcsSession, PeerChange};
use crate::ids::NodeId;
use crate::local::codec::Register;
use crate::shard::msg::Req;
use crate::shard::Shard;
use crate::wire::rpc::*;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;

/// The node id a configuration names.
pub fn node_id_of(cfg: &crate::config::NodeConfig) -> NodeId {
    cfg.node_id
}

/// Shard 0's node-wide services.
#[derive(Debug)]
pub struct NodeServices {
    /// Registered workers and drivers.
    pub clients: ClientTable,
    /// The GCS (head only).
    pub gcs: Option<Rc<GcsServer>>,
    /// The GCS's placement groups (head only).
    pub gcs_pgs: Option<Rc<super::sched::gcs_pg::GcsPlacementGroups>>,
    /// The scheduling plane: worker pool, leases, resources, bundles, agent.
    pub sched: Rc<super::sched::SchedService>,
    session: RefCell<Option<Rc<GcsSession>>>,
    gcs_addr: Cell<Option<SocketAddr>>,
    metrics_addr: Cell<Option<SocketAddr>>,
}

impl NodeServices {
    /// Creates the services and binds what shard 0 alone serves (GCS port on the head,
    /// metrics endpoint, local socket).
    pub async fn create(shard: &Rc<Shard>) -> Result<Rc<Self>, String> {
        let cfg = &shard.cfg;
        let limits = crate::config::GcsLimits::of(&cfg.system_config).map_err(|e| e.to_string())?;
        let gcs = match cfg.head {
            true => {
                let (timeout, period, id) = (cfg.heartbeat_timeout, cfg.heartbeat_period, shard.node_id);
                let gcs = GcsServer::new(timeout, period, &cfg.system_config, limits, id, shard.metrics.clone())
                    .map_err(|e| format!("--system-config: {e}"))?;
                Some(gcs)
            }
            false => None,
        };
        let gcs_pgs = gcs.as_ref().map(|g| super::sched::gcs_pg::GcsPlacementGroups::new(g.clone(), shard, limits));
        let node = Rc::new(Self {
            clients: ClientTable::new(shard.node_id),
            gcs,
            gcs_pgs,
            sched: super::sched::SchedService::new(shard)?,
            session: RefCell::new(None),
            gcs_addr: Cell::new(cfg.gcs_address),
            metrics_addr: Cell::new(None),
        });
        if let (Some(gcs), Some(pgs)) = (&node.gcs, &node.gcs_pgs) {
            let addr = SocketAddr::new(cfg.node_ip, cfg.gcs_port);
            let listener = glommio::net::TcpListener::bind(addr).map_err(|e| format!("GCS port {addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            node.gcs_addr.set(Some(bound));
            let router = Rc::new(super::routes::gcs(gcs, pgs));
            let server = Rc::new(crate::rpc::server::ServerConfig {
                label: crate::metrics::Listener::Gcs.label(),
                auth_token: shard.token.clone(),
                limits: crate::rpc::frame::FrameLimits { max_payload: cfg.max_rpc_frame, max_trailer: 0 },
                hello_timeout: std::time::Duration::from_secs(5),
                max_in_flight: 4096,
                idle_timeout: cfg.rpc_idle_timeout,
                shard: 0,
                shards: 1,
                metrics: shard.metrics.clone(),
                task_queue: None,
                listener: crate::metrics::Listener::Gcs,
                admission: shard.admission.clone(),
            });
            shard.keep(glommio::spawn_local(crate::rpc::server::serve(listener, router, server)).detach());
        }
        let maddr = SocketAddr::new(cfg.metrics_bind, cfg.metrics_port);
        let ml = glommio::net::TcpListener::bind(maddr).map_err(|e| format!("metrics port {maddr}: {e}"))?;
        node.metrics_addr.set(Some(ml.local_addr().map_err(|e| e.to_string())?));
        let metrics = shard.metrics.clone();
        let render = Rc::new(move || metrics.render(super::routes::method_name));
        let serve = crate::rpc::http::serve_metrics(ml, render, shard.admission.clone());
        shard.keep(glommio::spawn_local(serve).detach());
        crate::local::listener::start(shard)
            .map_err(|e| format!("local socket {}: {e}", cfg.socket_path().display()))?;
        Ok(node)
    }

    /// The GCS session (after `join_cluster`).
    pub fn session(&self) -> Option<Rc<GcsSession>> {
        self.session.borrow().clone()
    }

    /// The GCS address this node uses.
    pub fn gcs_addr(&self) -> Option<SocketAddr> {
        self.gcs_addr.get()
    }

    /// Registers the node with the GCS and hands the system config to every shard.
    pub async fn join_cluster(&self, shard: &Rc<Shard>) -> Result<(), String> {
        let gcs_addr = self.gcs_addr.get().ok_or("no GCS address")?;
        shard.gcs_address.set(Some(gcs_addr));
        let session = GcsSession::new(shard, gcs_addr);
        let ports = shard.ports.get().ok_or("ports unknown")?;
        let cfg = &shard.cfg;
        let info = GcsNodeInfo {
            node_id: shard.node_id.to_vec(),
            node_manager_address: cfg.node_ip.to_string(),
            raylet_socket_name: cfg.socket_path().display().to_string(),
            node_manager_port: i32::from(ports.node_manager_port),
            object_manager_port: i32::from(ports.object_manager_port),
            state: NodeState::Alive as i32,
            node_manager_hostname: hostname(),
            metrics_export_port: self.metrics_addr.get().map(|a| i32::from(a.port())).unwrap_or(0),
            start_time_ms: super::gcs::now_ms(),
            resources_total: cfg.resources.iter().cloned().collect(),
            node_name: cfg.node_name.clone(),
            is_head_node: cfg.head,
            end_time_ms: 0,
            death_reason: String::new(),
            num_shards: shard.n as u32,
        };
        let system_config = session.register(info).await?;
        let objects = cfg.object_plane_of(&system_config).map_err(|e| format!("the cluster's {e}"))?;
        *self.session.borrow_mut() = Some(session);
        let config = |_| Req::Config { json: system_config.clone(), gcs: gcs_addr, objects };
        for r in shard.mesh.call_all(config).await {
            r.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Writes the session files and prints the one ready line.
    pub fn announce_ready(&self, shard: &Shard) {
        let cfg = &shard.cfg;
        let ports = shard.ports.get().expect("ports are bound before the node is ready");
        let gcs = self.gcs_addr.get().map(|a| a.to_string()).unwrap_or_default();
        if cfg.head {
            crate::cli::session::publish_head(cfg, &gcs);
        }
        let line = format!(
            "raylet ready node_id={} gcs_address={} node_manager_address={}:{} object_manager_address={}:{} metrics_address={} socket={} session_dir={}",
            shard.node_id,
            gcs,
            cfg.node_ip,
            ports.node_manager_port,
            cfg.node_ip,
            ports.object_manager_port,
            self.metrics_addr.get().map(|a| a.to_string()).unwrap_or_default(),
            cfg.socket_path().display(),
            cfg.session_dir.display()
        );
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        tracing::info!("{line}");
    }

    /// Starts shard 0's periodic jobs: heartbeats, the node-table watch, and on the head
    /// the GCS failure detector.
    pub fn start_periodic(self: &Rc<Self>, shard: &Rc<Shard>) {
        if let Some(gcs) = &self.gcs {
            let period = shard.cfg.heartbeat_period;
            shard.keep(glommio::spawn_local(gcs.clone().detect_failures(period)).detach());
            let period = shard.cfg.sched.gcs_resource_poll_period;
            let sync = super::sched::gcs_sync::poll_and_broadcast(gcs.clone(), shard.clone(), period);
            shard.keep(glommio::spawn_local(sync).detach());
        }
        if let Some(pgs) = &self.gcs_pgs {
            pgs.start(shard);
        }
        if let Some(session) = self.session() {
            let period = shard.cfg.heartbeat_period;
            shard.keep(glommio::spawn_local(session.clone().heartbeat_loop(shard.clone(), period)).detach());
            let sched = Rc::downgrade(&self.sched);
            let (s, sess) = (shard.clone(), session.clone());
            let on_change = move |change: PeerChange| {
                if let Some(sched) = sched.upgrade() {
                    sched.peer_changed(change.clone());
                }
                let (s, sess) = (s.clone(), sess.clone());
                glommio::spawn_local(async move { broadcast_peers(&s, &sess, change).await }).detach();
            };
            shard.keep(glommio::spawn_local(session.watch_nodes(shard.clone(), on_change)).detach());
        }
        self.sched.start(shard);
    }

    /// Graceful stop: unregister from the GCS and remove the socket.
    pub async fn stop(&self, shard: &Shard, reason: &str) {
        self.sched.stop();
        if let Some(s) = self.session() {
            s.set_stopping();
            s.unregister(shard.node_id, reason).await;
        }
        let _ = std::fs::remove_file(shard.cfg.socket_path());
    }

    /// Node manager addresses of every alive node, this one included.
    pub fn peer_node_managers(&self, shard: &Shard) -> Vec<(NodeId, SocketAddr)> {
        let mut out: Vec<(NodeId, SocketAddr)> = self
            .session()
            .map(|s| {
                s.peers()
                    .into_iter()
                    .filter(|(_, p)| p.alive)
                    .filter_map(|(id, p)| Some((id, p.node_manager_addr()?)))
                    .collect()
            })
            .unwrap_or_default();
        if !out.iter().any(|(id, _)| *id == shard.node_id) {
            if let Some(p) = shard.ports.get() {
                out.push((shard.node_id, SocketAddr::new(shard.cfg.node_ip, p.node_manager_port)));
            }
        }
        out
    }

    /// Object manager addresses of every other alive node.
    pub fn peer_object_managers(&self, shard: &Shard) -> Vec<(NodeId, SocketAddr)> {
        self.session().map(|s| other_object_managers(&s, shard.node_id)).unwrap_or_default()
    }

    /// Whether a worker's startup token is one this node's pool issued and still waits
    /// for (the pool records the registration when it is).
    pub fn check_worker_token(&self, req: &Register) -> Result<(), String> {
        self.sched.admit_worker(req)
    }

    /// Registers a local client and tells the pool about drivers.
    pub fn register_client(
        &self,
        shard: &crate::shard::Shard,
        conn_shard: crate::ids::ShardId,
        req: Register,
    ) -> crate::local::codec::RegisterReply {
        let (id, kind, job, pid) = (req.worker_id, req.kind, req.job_id, req.pid);
        let reply = self.clients.register(shard, conn_shard, req);
        if reply.success && kind == crate::local::codec::ClientKind::Driver {
            self.sched.driver_registered(id, job, pid);
        }
        reply
    }

    /// A registered client announced its port.
    pub fn announce_port(&self, id: crate::ids::WorkerId, port: i32) -> Result<(), String> {
        self.clients.announce_port(id, port)?;
        self.sched.port_announced(id, port);
        Ok(())
    }

    /// A registered client's connection closed.
    pub fn client_gone(&self, id: crate::ids::WorkerId, detail: &str) {
        if let Some(rec) = self.clients.gone(id, detail) {
            self.sched.client_gone(id, rec.kind);
        }
    }

    /// A child process of this node ended (reaped by the signal thread).
    pub fn child_exited(&self, _shard: &Rc<Shard>, exit: crate::shard::bootstrap::ChildExit) {
        self.sched.child_exited(exit);
    }

    /// The node's GetNodeStats: gathers every shard.
    pub async fn node_stats(&self, shard: &Rc<Shard>) -> GetNodeStatsReply {
        super::node_stats::gather(self, shard).await
    }
}

/// Tells every shard the current object manager addresses of alive peers, and of a death.
async fn broadcast_peers(shard: &Rc<Shard>, session: &GcsSession, change: PeerChange) {
    use crate::services::objects::msg::ObjReq;
    let peers = other_object_managers(session, shard.node_id);
    for i in 0..shard.n {
        let to = crate::ids::ShardId(i as u16);
        let _ = shard.mesh.tell(to, Req::Obj(ObjReq::Peers(peers.clone()))).await;
        if let PeerChange::Died(node) = &change {
            let _ = shard.mesh.tell(to, Req::Obj(ObjReq::NodeDead(*node))).await;
        }
    }
}

/// Object manager addresses of the alive nodes other than `me`.
fn other_object_managers(session: &GcsSession, me: NodeId) -> Vec<(NodeId, SocketAddr)> {
    session
        .peers()
        .into_iter()
        .filter(|(id, p)| p.alive && *id != me)
        .filter_map(|(id, p)| Some((id, p.object_manager_addr()?)))
        .collect()
}

fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}
