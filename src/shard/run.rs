//! One shard: its context ([`Shard`]), its ordered start and reverse-order stop.
//!
//! Shard 0 coordinates: it binds the TCP ports first (learning them when the config says
//! 0), starts shards 1..N one after another with those ports, then registers the node with
//! the GCS and prints the ready line. A shard that fails to start makes shard 0 stop the
//! ones already started, in reverse order, and exit non-zero. Stopping is the same reverse
//! walk. Every periodic job of a shard is started in one place: [`Shard::start_periodic`].

use super::mesh::{run_receivers, Mesh, ShardMsg};
use super::msg::{Rep, Req, StartInfo};
use crate::config::NodeConfig;
use crate::ids::{NodeId, ShardId};
use crate::metrics::Metrics;
use crate::rpc::server::ServerConfig;
use crate::rpc::ClientPool;
use futures_channel::{mpsc, oneshot};
use futures_lite::StreamExt;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What only shard 0 receives from the process: signals and child exits.
#[derive(Debug)]
pub struct ProcessInputs {
    /// SIGTERM / SIGINT numbers from the signal thread.
    pub signals: mpsc::Receiver<i32>,
    /// Reaped child processes (worker pool, agent).
    pub child_exits: mpsc::Receiver<super::bootstrap::ChildExit>,
}

/// The per-shard context every service of this shard hangs off.
pub struct Shard {
    /// This shard.
    pub id: ShardId,
    /// Number of shards.
    pub n: usize,
    /// The node's configuration.
    pub cfg: NodeConfig,
    /// This node.
    pub node_id: NodeId,
    /// Counters.
    pub metrics: Metrics,
    /// The mesh.
    pub mesh: Rc<Mesh>,
    /// When the node started.
    pub started_at: Instant,
    /// RPC clients to peers, owned by this shard.
    pub clients: ClientPool,
    /// The cluster auth token.
    pub token: Rc<str>,
    /// Ports shard 0 bound.
    pub ports: Cell<Option<StartInfo>>,
    /// The system config JSON received from the GCS at registration.
    pub system_config: RefCell<String>,
    /// The GCS address this node talks to.
    pub gcs_address: Cell<Option<SocketAddr>>,
    /// Local connections served by this shard.
    pub local: crate::local::conn::LocalConns,
    /// Node-wide services (shard 0 only).
    pub node: RefCell<Option<Rc<crate::services::node::NodeServices>>>,
    tasks: RefCell<Vec<glommio::task::JoinHandle<()>>>,
    shutdown: RefCell<Option<oneshot::Sender<(String, i32)>>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("id", &self.id).field("n", &self.n).finish()
    }
}

impl Shard {
    /// The node-wide services; only valid on shard 0 after start.
    pub fn node(&self) -> Option<Rc<crate::services::node::NodeServices>> {
        self.node.borrow().clone()
    }

    /// Keeps a task alive until this shard stops.
    pub fn keep(&self, t: glommio::task::JoinHandle<()>) {
        self.tasks.borrow_mut().push(t);
    }

    /// Asks shard 0 to shut the node down gracefully with `code`.
    pub async fn request_shutdown(&self, reason: String, code: i32) {
        let _ = self.mesh.tell(ShardId::NODE, Req::Shutdown { reason, code }).await;
    }

    /// Called on shard 0 for a `Shutdown` request.
    pub(crate) fn trigger_shutdown(&self, reason: String, code: i32) {
        if let Some(tx) = self.shutdown.borrow_mut().take() {
            let _ = tx.send((reason, code));
        }
    }

    /// Binds this shard's TCP listeners and starts serving them.
    fn start_listeners(self: &Rc<Self>, info: StartInfo) -> std::io::Result<()> {
        let ip = self.cfg.node_ip;
        // Name the port in the error: "address in use" alone does not say which one.
        let bind = |what: &str, port: u16| {
            let addr = SocketAddr::new(ip, port);
            TcpListener::bind(addr).map_err(|e| std::io::Error::other(format!("{what} port {addr}: {e}")))
        };
        let nm = bind("node manager", info.node_manager_port)?;
        let om = bind("object manager", info.object_manager_port)?;
        let server = |label| {
            Rc::new(ServerConfig {
                label,
                auth_token: self.token.clone(),
                limits: crate::rpc::frame::FrameLimits {
                    max_payload: self.cfg.max_rpc_frame,
                    max_trailer: self.cfg.max_rpc_frame,
                },
                hello_timeout: Duration::from_secs(5),
                max_in_flight: 1024,
                shard: self.id.index(),
                metrics: self.metrics.clone(),
            })
        };
        let nm_router = Rc::new(crate::services::routes::node_manager(self));
        let om_router = Rc::new(crate::services::routes::object_manager(self));
        self.keep(glommio::spawn_local(crate::rpc::server::serve(nm, nm_router, server("node_manager"))).detach());
        self.keep(glommio::spawn_local(crate::rpc::server::serve(om, om_router, server("object_manager"))).detach());
        Ok(())
    }

    /// Starts the periodic jobs of this shard (the one list of them).
    fn start_periodic(self: &Rc<Self>) {
        if let Some(node) = self.node() {
            node.start_periodic(self);
        }
    }

    /// Stops this shard's tasks (listeners, connections, timers).
    fn stop_tasks(&self) {
        for t in self.tasks.borrow_mut().drain(..) {
            t.cancel();
        }
        self.local.close_all();
    }
}

/// Picks a free port for `ip` when `port` is 0: bind without `SO_REUSEPORT` so the kernel
/// hands out a port nobody holds, then release it for the shards to bind together.
fn resolve_port(ip: std::net::IpAddr, port: u16) -> std::io::Result<u16> {
    if port != 0 {
        return Ok(port);
    }
    let probe = std::net::TcpListener::bind(SocketAddr::new(ip, 0))?;
    Ok(probe.local_addr()?.port())
}

/// The future each executor runs.
pub async fn run_shard(
    index: usize,
    cfg: NodeConfig,
    mesh: MeshBuilder<ShardMsg, Full>,
    metrics: Metrics,
    process: Option<ProcessInputs>,
) -> i32 {
    let joined = glommio::timer::timeout(Duration::from_secs(20), async {
        mesh.join().await.map_err(|e| glommio::GlommioError::IoError(std::io::Error::other(format!("{e:?}"))))
    })
    .await;
    let (senders, receivers) = match joined {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(shard = index, "cannot join the shard mesh: {e}");
            return 1;
        }
    };
    if senders.peer_id() != index {
        tracing::error!(shard = index, peer = senders.peer_id(), "mesh peer id does not match the shard index");
        return 1;
    }
    let mesh = Mesh::new(senders);
    let shard = Rc::new(Shard {
        id: mesh.me(),
        n: mesh.len(),
        node_id: crate::services::node::node_id_of(&cfg),
        token: cfg.auth_token.clone().into(),
        clients: ClientPool::new(cfg.auth_token.clone().into()),
        cfg,
        metrics,
        mesh: mesh.clone(),
        started_at: Instant::now(),
        ports: Cell::new(None),
        system_config: RefCell::new("{}".into()),
        gcs_address: Cell::new(None),
        local: crate::local::conn::LocalConns::default(),
        node: RefCell::new(None),
        tasks: RefCell::new(Vec::new()),
        shutdown: RefCell::new(None),
    });
    let weak = Rc::downgrade(&shard);
    mesh.set_handler(Rc::new(move |from, req| {
        let shard = weak.upgrade();
        Box::pin(async move {
            match shard {
                Some(s) => super::dispatch::handle(s, from, req).await,
                None => None,
            }
        })
    }));
    // Register for `Stop` before the receivers exist: glommio's `spawn_local` polls a new
    // task at once, so a receiver may serve a queued `Start` and `Stop` before this task
    // runs another line, and a `Stop` seen with no one registered would be lost.
    let stopped = (index != 0).then(|| mesh.on_stopped());
    let receivers = run_receivers(&mesh, receivers);
    let code = match stopped {
        None => run_coordinator(&shard, process).await,
        Some(stopped) => {
            let _ = stopped.await;
            0
        }
    };
    shard.stop_tasks();
    mesh.close();
    drop(receivers);
    code
}

/// Handles `Start` on shards 1..N.
pub(crate) fn handle_start(shard: &Rc<Shard>, info: StartInfo) -> Rep {
    shard.ports.set(Some(info));
    shard.gcs_address.set(info.gcs_address);
    match shard.start_listeners(info) {
        Ok(()) if shard.cfg.fail_start_on_shard == Some(shard.id.index()) => {
            Rep::Started(Err(format!("shard {}: start failed (fail_start_on_shard test knob)", shard.id)))
        }
        Ok(()) => {
            shard.start_periodic();
            Rep::Started(Ok(()))
        }
        Err(e) => Rep::Started(Err(format!("shard {}: {e}", shard.id))),
    }
}

/// Handles `Stop` on shards 1..N.
pub(crate) fn handle_stop(shard: &Rc<Shard>) -> Rep {
    shard.stop_tasks();
    Rep::Stopped
}

/// Shard 0: start everything, serve until told to stop, stop everything.
async fn run_coordinator(shard: &Rc<Shard>, process: Option<ProcessInputs>) -> i32 {
    let (tx, rx) = oneshot::channel();
    *shard.shutdown.borrow_mut() = Some(tx);
    let started = match start_node(shard).await {
        Ok(n) => n,
        Err((started, e)) => {
            eprintln!("raylet: start failed: {e}");
            tracing::error!("start failed: {e}");
            stop_shards(shard, started).await;
            return 1;
        }
    };
    if let Some(p) = process {
        let (mut signals, mut exits) = (p.signals, p.child_exits);
        let s = shard.clone();
        shard.keep(
            glommio::spawn_local(async move {
                if let Some(sig) = signals.next().await {
                    s.trigger_shutdown(format!("received signal {sig}"), 0);
                }
            })
            .detach(),
        );
        let s = shard.clone();
        shard.keep(
            glommio::spawn_local(async move {
                while let Some(exit) = exits.next().await {
                    if let Some(node) = s.node() {
                        node.child_exited(&s, exit);
                    }
                }
            })
            .detach(),
        );
    }
    let (reason, code) = rx.await.unwrap_or_else(|_| ("shutdown channel dropped".into(), 1));
    tracing::info!("shutting down: {reason}");
    if let Some(node) = shard.node() {
        node.stop(shard, &reason).await;
    }
    stop_shards(shard, started).await;
    code
}

/// Ordered start. On failure returns how many shards (after 0) were started.
async fn start_node(shard: &Rc<Shard>) -> Result<usize, (usize, String)> {
    let ip = shard.cfg.node_ip;
    let info = StartInfo {
        node_manager_port: resolve_port(ip, shard.cfg.node_manager_port)
            .map_err(|e| (0, format!("node manager port: {e}")))?,
        object_manager_port: resolve_port(ip, shard.cfg.object_manager_port)
            .map_err(|e| (0, format!("object manager port: {e}")))?,
        gcs_address: shard.cfg.gcs_address,
    };
    shard.ports.set(Some(info));
    let node = crate::services::node::NodeServices::create(shard).await.map_err(|e| (0, e))?;
    *shard.node.borrow_mut() = Some(node.clone());
    let info = StartInfo { gcs_address: node.gcs_addr(), ..info };
    shard.ports.set(Some(info));
    shard.start_listeners(info).map_err(|e| (0, format!("listeners: {e}")))?;
    for i in 1..shard.n {
        match shard.mesh.call(ShardId(i as u16), Req::Start(info)).await {
            Ok(Rep::Started(Ok(()))) => {}
            Ok(Rep::Started(Err(e))) => return Err((i - 1, e)),
            Ok(other) => return Err((i - 1, format!("shard {i}: unexpected reply {other:?}"))),
            Err(e) => return Err((i - 1, e.to_string())),
        }
    }
    node.join_cluster(shard).await.map_err(|e| (shard.n - 1, e))?;
    shard.start_periodic();
    node.announce_ready(shard);
    Ok(shard.n - 1)
}

/// Stops shards `started..=1` in reverse order, then this shard's own tasks.
async fn stop_shards(shard: &Rc<Shard>, started: usize) {
    for i in (1..=started).rev() {
        if let Err(e) = shard.mesh.call(ShardId(i as u16), Req::Stop).await {
            tracing::debug!("stop of shard {i}: {e}");
        }
    }
    // Shards never started are waiting for Start; tell them to exit.
    for i in started + 1..shard.n {
        let _ = shard.mesh.call(ShardId(i as u16), Req::Stop).await;
    }
    shard.stop_tasks();
}
