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
use crate::metrics::{Listener, Metrics};
use crate::rpc::server::ServerConfig;
use crate::rpc::ClientPool;
use crate::store::arena::Arena;
use futures_channel::{mpsc, oneshot};
use futures_lite::StreamExt;
use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
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
    /// This shard's admission of TCP connections (node-wide caps).
    pub admission: Rc<crate::rpc::admission::ShardAdmission>,
    /// Node-wide services (shard 0 only).
    pub node: RefCell<Option<Rc<crate::services::node::NodeServices>>>,
    /// This shard's object store (after start).
    pub objects: RefCell<Option<Rc<crate::services::objects::store::ShardStore>>>,
    bulk: Cell<Option<glommio::TaskQueueHandle>>,
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

    /// Runs `fut` in this shard's bulk task queue (chunk copies, spilling), below the
    /// latency-sensitive default queue.
    pub fn spawn_bulk(&self, fut: impl std::future::Future<Output = ()> + 'static) {
        match self.bulk.get().map(|tq| glommio::spawn_local_into(fut, tq)) {
            Some(Ok(t)) => {
                t.detach();
            }
            Some(Err(e)) => tracing::error!("cannot spawn bulk work: {e}"),
            None => tracing::error!("bulk queue used before start"),
        };
    }

    /// Runs `fut` in the bulk queue and returns its result (`None` if it cannot be spawned
    /// there), for bulk work asked for by a request served in the latency queue.
    pub async fn run_bulk<T: 'static>(&self, fut: impl std::future::Future<Output = T> + 'static) -> Option<T> {
        match glommio::spawn_local_into(fut, self.bulk.get()?) {
            Ok(t) => Some(t.await),
            Err(e) => {
                tracing::error!("cannot spawn bulk work: {e}");
                None
            }
        }
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
        let bulk =
            glommio::executor().create_task_queue(glommio::Shares::Static(250), glommio::Latency::NotImportant, "bulk");
        self.bulk.set(Some(bulk));
        let server = |listener: Listener, task_queue| {
            Rc::new(ServerConfig {
                label: listener.label(),
                auth_token: self.token.clone(),
                limits: crate::rpc::frame::FrameLimits {
                    max_payload: self.cfg.max_rpc_frame,
                    max_trailer: self.cfg.max_rpc_frame,
                },
                hello_timeout: Duration::from_secs(5),
                max_in_flight: 1024,
                idle_timeout: self.cfg.rpc_idle_timeout,
                shard: self.id.index(),
                shards: self.n,
                metrics: self.metrics.clone(),
                task_queue,
                listener,
                admission: self.admission.clone(),
            })
        };
        let nm_router = Rc::new(crate::services::routes::node_manager(self));
        let om_router = Rc::new(crate::services::routes::object_manager(self));
        self.keep(
            glommio::spawn_local(crate::rpc::server::serve(nm, nm_router, server(Listener::NodeManager, None)))
                .detach(),
        );
        self.keep(
            glommio::spawn_local(crate::rpc::server::serve(om, om_router, server(Listener::ObjectManager, Some(bulk))))
                .detach(),
        );
        crate::local::listener::start_shard_socket(self)?;
        Ok(())
    }

    /// Starts the periodic jobs of this shard (the one list of them).
    fn start_periodic(self: &Rc<Self>) {
        self.keep(glommio::spawn_local(crate::services::objects::transfer::tick(self.clone())).detach());
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
    admission: Arc<crate::rpc::admission::NodeAdmission>,
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
        clients: ClientPool::new(cfg.auth_token.clone().into(), index as u32).with_idle_timeout(cfg.rpc_idle_timeout),
        cfg,
        admission: crate::rpc::admission::ShardAdmission::new(admission, metrics.clone(), index),
        metrics,
        mesh: mesh.clone(),
        started_at: Instant::now(),
        ports: Cell::new(None),
        system_config: RefCell::new("{}".into()),
        gcs_address: Cell::new(None),
        local: crate::local::conn::LocalConns::default(),
        node: RefCell::new(None),
        objects: RefCell::new(None),
        bulk: Cell::new(None),
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
pub(crate) fn handle_start(shard: &Rc<Shard>, info: StartInfo, arena: Arc<Arena>) -> Rep {
    shard.ports.set(Some(info));
    *shard.objects.borrow_mut() = Some(crate::services::objects::store::ShardStore::new(shard, arena));
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
    let arena = create_arena(shard).await.map_err(|e| (0, e))?;
    *shard.objects.borrow_mut() = Some(crate::services::objects::store::ShardStore::new(shard, arena.clone()));
    let node = crate::services::node::NodeServices::create(shard).await.map_err(|e| (0, e))?;
    *shard.node.borrow_mut() = Some(node.clone());
    let info = StartInfo { gcs_address: node.gcs_addr(), ..info };
    shard.ports.set(Some(info));
    shard.start_listeners(info).map_err(|e| (0, format!("listeners: {e}")))?;
    for i in 1..shard.n {
        match shard.mesh.call(ShardId(i as u16), Req::Start(info, arena.clone())).await {
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

/// Creates the store's shared memory and prefaults it on every CPU's blocking thread so
/// no put ever pays a first touch; the cost is logged here, at start-up. The fallback
/// directory is created too, and the fallback range of address space reserved.
async fn create_arena(shard: &Rc<Shard>) -> Result<Arc<Arena>, String> {
    let cfg = &shard.cfg;
    let fallback_directory = cfg.fallback_dir();
    let fallback_limit = prepare_fallback(&fallback_directory, cfg.fallback_allocation_limit)?;
    let opts = crate::store::arena::ArenaOptions {
        len: cfg.object_store_memory,
        plasma_directory: cfg.plasma_directory.clone(),
        fallback_limit,
        fallback_directory,
    };
    let arena = Arc::new(Arena::create(&opts).map_err(|e| e.to_string())?);
    let started = Instant::now();
    let parts = crate::config::available_cpus().max(1) as u64;
    let step = arena.len().div_ceil(parts).div_ceil(2 << 20) * (2 << 20);
    let jobs: Vec<_> = (0..parts)
        .map(|i| (i * step, step.min(arena.len().saturating_sub(i * step))))
        .filter(|(_, len)| *len > 0)
        .map(|(off, len)| {
            let a = arena.clone();
            std::thread::Builder::new().name("prefault".into()).spawn(move || a.prefault(off, len).map(|_| ()))
        })
        .collect();
    let waiter = glommio::executor().spawn_blocking(move || {
        let mut res = Ok(());
        for j in jobs {
            match j
                .map_err(|e| e.to_string())
                .and_then(|h| h.join().map_err(|_| "prefault thread panicked".to_string()))
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => res = Err(e.to_string()),
                Err(e) => res = Err(e),
            }
        }
        res
    });
    waiter.await?;
    let took = started.elapsed();
    let gbps = arena.len() as f64 / took.as_secs_f64().max(1e-9) / 1e9;
    tracing::info!(
        "object store: {} bytes of shared memory in {}, prefaulted in {took:?} ({gbps:.2} GB/s, {:.2} us per 4 KiB page); \
         fallback segments up to {} bytes in {}",
        arena.len(),
        cfg.plasma_directory.as_ref().map_or("a sealed memfd".to_string(), |d| d.display().to_string()),
        took.as_secs_f64() * 1e6 / (arena.len() as f64 / 4096.0).max(1.0),
        arena.fallback_limit(),
        arena.fallback.dir.display(),
    );
    Ok(arena)
}

/// Creates the fallback directory (0700) unless fallback is off, and returns the limit:
/// `limit`, or by default the size of the directory's filesystem, as nothing larger could
/// ever be written there.
fn prepare_fallback(dir: &std::path::Path, limit: Option<u64>) -> Result<u64, String> {
    use std::os::unix::fs::DirBuilderExt;
    if limit == Some(0) {
        return Ok(0);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("fallback directory {}: {e}", dir.display()))?;
    if let Some(limit) = limit {
        return Ok(limit);
    }
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| format!("fallback directory {}: {e}", dir.display()))?;
    Ok(st.blocks() as u64 * st.fragment_size() as u64)
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
