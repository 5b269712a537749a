//! Helpers for the scheduling-plane integration tests: start the built `raylet` as child
//! processes (port 0, 2 shards, a private temp dir), parse the ready line, poll an
//! observable with a deadline (never a fixed sleep), read `raylet status`, and kill every
//! process a test started — also when the test's hard timeout fires.

#![allow(dead_code)]

use raylet::client::Driver;
use raylet::wire::rpc::GetNodeStatsReply;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const RAYLET: &str = env!("CARGO_BIN_EXE_raylet");

type Registry = Arc<Mutex<Vec<u32>>>;

thread_local! {
    static REGISTRY: std::cell::RefCell<Option<Registry>> = const { std::cell::RefCell::new(None) };
}

/// Runs `body` with a hard deadline; past it every node the body started is SIGKILLed
/// (their workers die with them) and the test fails.
pub(crate) fn with_timeout<F: FnOnce() + Send + 'static>(limit: Duration, body: F) {
    let registry: Registry = Arc::default();
    let reg = registry.clone();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        REGISTRY.with(|r| *r.borrow_mut() = Some(reg));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let _ = tx.send(());
        r
    });
    if rx.recv_timeout(limit).is_err() {
        for pid in registry.lock().unwrap().iter() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::SIGKILL);
        }
        let _ = rx.recv_timeout(Duration::from_secs(20));
        panic!("test exceeded its hard timeout of {limit:?}; its processes were killed");
    }
    if let Err(p) = h.join().unwrap_or_else(Err) {
        std::panic::resume_unwind(p);
    }
}

/// Polls `probe` until it yields `Some`, backing off 5 ms → 100 ms; panics with the last
/// observation after `limit`.
pub(crate) fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<Option<T>, String>) -> T {
    let deadline = Instant::now() + limit;
    let mut delay = Duration::from_millis(5);
    loop {
        let last = match probe() {
            Ok(Some(v)) => return v,
            Ok(None) => "condition not met".to_string(),
            Err(e) => e,
        };
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}; last: {last}");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// One running node.
pub(crate) struct Node {
    child: Child,
    /// Its temp dir (sessions, logs).
    pub(crate) dir: tempfile::TempDir,
    /// NodeManagerService address.
    pub(crate) node_manager: SocketAddr,
    /// The GCS it uses.
    pub(crate) gcs: SocketAddr,
    /// Hex node id.
    pub(crate) node_id: String,
    /// Local socket.
    pub(crate) socket: PathBuf,
    /// Session directory.
    pub(crate) session_dir: PathBuf,
    /// The cluster auth token.
    pub(crate) token: String,
}

impl Node {
    /// The raylet's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the raylet (its workers die with it) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A driver whose leases start at this node.
    pub(crate) fn driver(&self) -> Driver {
        Driver::new(self.node_manager, self.token.clone()).with_timeout(Duration::from_secs(20))
    }

    /// GetNodeStats of this node.
    pub(crate) fn stats(&self) -> Result<GetNodeStatsReply, String> {
        self.driver().node_stats(self.node_manager).map_err(|e| e.to_string())
    }

    /// The tail of this node's stderr.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- node {} stderr (tail) ---\n{}", self.node_id, self.log_tail(60));
        }
    }
}

/// Starts a head node with `extra` flags.
pub(crate) fn head(extra: &[&str]) -> Node {
    start(None, extra)
}

/// Starts a node joining `head`'s cluster.
pub(crate) fn join(head: &Node, extra: &[&str]) -> Node {
    start(Some(head), extra)
}

fn start(head: Option<&Node>, extra: &[&str]) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(RAYLET);
    cmd.arg("start").args(["--shards", "2", "--node-manager-port", "0", "--object-manager-port", "0"]);
    cmd.args(["--metrics-export-port", "0", "--object-store-memory", "67108864", "--temp-dir"]).arg(dir.path());
    match head {
        None => {
            cmd.args(["--head", "--port", "0"]);
        }
        Some(h) => {
            cmd.args(["--address", &h.gcs.to_string()]).env("RAYLET_AUTH_TOKEN", &h.token);
        }
    }
    cmd.args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr file"));
    let mut child = cmd.spawn().expect("spawn raylet");
    REGISTRY.with(|r| {
        if let Some(r) = &*r.borrow() {
            r.lock().unwrap().push(child.id());
        }
    });
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    if !line.starts_with("raylet ready ") {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        panic!("no ready line ({line:?}); stderr:\n{log}");
    }
    let field = |k: &str| {
        line.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{k}="))).map(str::to_string).expect(k)
    };
    let session_dir = PathBuf::from(field("session_dir"));
    let token = match head {
        Some(h) => h.token.clone(),
        None => std::fs::read_to_string(session_dir.join("auth_token")).expect("auth token").trim().to_string(),
    };
    Node {
        node_manager: field("node_manager_address").parse().expect("node manager address"),
        gcs: field("gcs_address").parse().expect("gcs address"),
        node_id: field("node_id"),
        socket: PathBuf::from(field("socket")),
        session_dir,
        token,
        child,
        dir,
    }
}

/// `raylet status --format json` against `head`'s GCS.
pub(crate) fn status(head: &Node) -> Result<Value, String> {
    let out = Command::new(RAYLET)
        .args(["status", "--format", "json", "--address", &head.gcs.to_string()])
        .env("RAYLET_AUTH_TOKEN", &head.token)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// A status resource map; zero entries (a resource the node has none of) are dropped.
fn resources(v: &Value) -> BTreeMap<String, f64> {
    v.as_object()
        .map(|m| {
            m.iter().map(|(k, q)| (k.clone(), q.as_f64().unwrap_or(f64::NAN))).filter(|(_, q)| *q != 0.0).collect()
        })
        .unwrap_or_default()
}

/// Waits until `raylet status` shows `alive` ALIVE nodes, each with available == total.
pub(crate) fn wait_all_available(head: &Node, alive: usize, limit: Duration) {
    wait_for("every node's available resources to equal its totals", limit, || {
        let s = status(head)?;
        let nodes: Vec<&Value> =
            s["nodes"].as_array().into_iter().flatten().filter(|n| n["state"] == "ALIVE").collect();
        if nodes.len() != alive {
            return Err(format!("{} alive nodes: {s}", nodes.len()));
        }
        for n in nodes {
            let (total, avail) = (resources(&n["resources_total"]), resources(&n["resources_available"]));
            if total != avail {
                return Err(format!("node {}: total {total:?} != available {avail:?}", n["node_id"]));
            }
        }
        Ok(Some(()))
    })
}

/// GetNodeStats' available == total on `node` (no lease or bundle holds anything).
pub(crate) fn wait_node_idle(node: &Node, limit: Duration) {
    wait_for("the node's resources to be all available", limit, || {
        let s = node.stats()?;
        if s.resources_available != s.resources_total || s.num_granted_leases != 0 {
            return Err(format!(
                "available {:?} total {:?} granted {}",
                s.resources_available, s.resources_total, s.num_granted_leases
            ));
        }
        Ok(Some(()))
    });
}

/// Pids of live processes whose parent is `pid` (from /proc).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        // Fields after the command (which may contain spaces) start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let ppid = f.next().and_then(|x| x.parse::<u32>().ok());
        if ppid == Some(pid) && state != Some("Z") {
            out.push(p);
        }
    }
    out
}

/// Whether a process exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}
