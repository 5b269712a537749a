//! Shared helpers for the integration tests: start the built `raylet` binary as child
//! processes in a private temp dir, parse the ready line, run CLI commands, poll an
//! observable until a condition holds (never a fixed sleep), and make sure every process a
//! test starts is killed and reaped.
//!
//! Rules the helpers enforce:
//! - Every node gets `--port 0` (and port 0 for every other listener), `--temp-dir` in the
//!   test's own [`TestDir`], and `--shards 2` unless a test asks for more.
//! - A [`Node`] SIGKILLs and waits for its process on drop. Children also get
//!   `PR_SET_PDEATHSIG(SIGKILL)`, so a test thread that dies takes its nodes with it.
//! - A child's stderr goes to a file in the temp dir; when a test fails, the guard prints
//!   the tail of it.
//! - [`with_timeout`] is each test's hard deadline: past it, the test's processes are
//!   killed (which unblocks whatever waited on them) and the test fails.

#![allow(dead_code, unreachable_pub)]

pub mod flood;
pub mod netns;
pub mod segments;
pub mod spill;

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod redis_server;

/// The binary under test.
pub const RAYLET: &str = env!("CARGO_BIN_EXE_raylet");

/// Shards every test node runs with (the issue asks for at least 2).
pub const SHARDS: usize = 2;

/// A short heartbeat for tests that watch failure detection: (period, timeout) in ms.
pub const FAST_HEARTBEAT: (u64, u64) = (100, 1000);

/// How long a node may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Hard per-test timeout and the registry of processes a test started.

type Registry = Arc<Mutex<Vec<u32>>>;

thread_local! {
    static CHILDREN: std::cell::RefCell<Option<Registry>> = const { std::cell::RefCell::new(None) };
}

fn register_child(pid: u32) {
    CHILDREN.with(|c| {
        if let Some(r) = &*c.borrow() {
            r.lock().unwrap().push(pid);
        }
    });
}

fn unregister_child(pid: u32) {
    CHILDREN.with(|c| {
        if let Some(r) = &*c.borrow() {
            r.lock().unwrap().retain(|p| *p != pid);
        }
    });
}

/// Runs `body` with a hard deadline. Past it, every process the body started (and has
/// not reaped yet) is SIGKILLed, which unblocks any read or wait on them, and the test
/// fails with a clear message.
pub fn with_timeout<F: FnOnce() + Send + 'static>(limit: Duration, body: F) {
    let registry: Registry = Arc::new(Mutex::new(Vec::new()));
    let reg = registry.clone();
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("test-body".into())
        .spawn(move || {
            CHILDREN.with(|c| *c.borrow_mut() = Some(reg));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            let _ = tx.send(());
            r
        })
        .expect("spawn test body");
    let timed_out = rx.recv_timeout(limit).is_err();
    if timed_out {
        // Unreaped children cannot have had their pid reused, so these kills are safe.
        for pid in registry.lock().unwrap().iter() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::SIGKILL);
        }
        let _ = rx.recv_timeout(Duration::from_secs(20));
    }
    let result = if handle.is_finished() || !timed_out { handle.join() } else { Ok(Ok(())) };
    if timed_out {
        panic!("test exceeded its hard timeout of {limit:?}; its processes were killed");
    }
    match result {
        Ok(Ok(())) => {}
        Ok(Err(p)) | Err(p) => std::panic::resume_unwind(p),
    }
}

// ---------------------------------------------------------------------------------------
// Polling.

/// Polls `probe` until it returns `Some`, backing off from 10 ms to 200 ms between tries;
/// panics with `what` and the last observation once `limit` has passed.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<Option<T>, String>) -> T {
    let deadline = Instant::now() + limit;
    let mut delay = Duration::from_millis(10);
    loop {
        let last = match probe() {
            Ok(Some(v)) => return v,
            Ok(None) => "condition not met yet".to_string(),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}; last observation: {last}");
        }
        std::thread::sleep(delay.min(deadline.saturating_duration_since(Instant::now())));
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------
// The ready line.

/// Every field of `raylet ready ...` (DESIGN.md §7).
#[derive(Debug, Clone)]
pub struct Ready {
    /// The whole line.
    pub line: String,
    /// Hex node id.
    pub node_id: String,
    /// The GCS this node uses (its own on the head).
    pub gcs_address: SocketAddr,
    /// NodeManagerService.
    pub node_manager_address: SocketAddr,
    /// ObjectManagerService.
    pub object_manager_address: SocketAddr,
    /// Prometheus endpoint.
    pub metrics_address: SocketAddr,
    /// Local socket.
    pub socket: PathBuf,
    /// Session directory.
    pub session_dir: PathBuf,
}

impl Ready {
    /// Parses a ready line; every field must be present and well formed, and nothing else.
    pub fn parse(line: &str) -> Result<Self, String> {
        let rest = line.strip_prefix("raylet ready ").ok_or_else(|| format!("not a ready line: {line:?}"))?;
        let mut fields = HashMap::new();
        for kv in rest.split(' ') {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("field without '=': {kv:?} in {line:?}"))?;
            if fields.insert(k.to_string(), v.to_string()).is_some() {
                return Err(format!("field {k} appears twice in {line:?}"));
            }
        }
        const KEYS: [&str; 7] = [
            "node_id",
            "gcs_address",
            "node_manager_address",
            "object_manager_address",
            "metrics_address",
            "socket",
            "session_dir",
        ];
        if fields.len() != KEYS.len() {
            return Err(format!("expected exactly the fields {KEYS:?} in {line:?}"));
        }
        let get = |k: &str| fields.get(k).cloned().ok_or_else(|| format!("missing {k} in {line:?}"));
        let addr = |k: &str| -> Result<SocketAddr, String> {
            let v = get(k)?;
            let a: SocketAddr = v.parse().map_err(|e| format!("{k}={v:?} is not ip:port: {e}"))?;
            if a.port() == 0 {
                return Err(format!("{k} has port 0"));
            }
            Ok(a)
        };
        let node_id = get("node_id")?;
        if node_id.len() != 56 || !node_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("node_id {node_id:?} is not 28 bytes of hex"));
        }
        Ok(Self {
            line: line.to_string(),
            node_id,
            gcs_address: addr("gcs_address")?,
            node_manager_address: addr("node_manager_address")?,
            object_manager_address: addr("object_manager_address")?,
            metrics_address: addr("metrics_address")?,
            socket: PathBuf::from(get("socket")?),
            session_dir: PathBuf::from(get("session_dir")?),
        })
    }

    /// The cluster auth token this node's session holds (the head writes it).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.session_dir.join("auth_token"))
            .expect("auth_token in the head session")
            .trim()
            .into()
    }
}

// ---------------------------------------------------------------------------------------
// Starting nodes.

/// Options of one `raylet start`.
#[derive(Debug, Clone)]
pub struct NodeOpts {
    /// `--head` (else `--address <gcs>` must be set).
    pub head: bool,
    /// GCS to join.
    pub address: Option<SocketAddr>,
    /// `--shards`.
    pub shards: usize,
    /// (`--heartbeat-period-ms`, `--heartbeat-timeout-ms`).
    pub heartbeat: Option<(u64, u64)>,
    /// Extra arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// A command the raylet runs under (e.g. `ip netns exec NS`); empty: none.
    pub wrap: Vec<String>,
    /// The command that runs raylet, when not the built binary alone (e.g. `prlimit
    /// --nofile=256:256 <binary>`, or another build to compare with).
    pub program: Vec<String>,
}

impl NodeOpts {
    /// A head node.
    pub fn head() -> Self {
        Self {
            head: true,
            address: None,
            shards: SHARDS,
            heartbeat: None,
            args: Vec::new(),
            env: Vec::new(),
            wrap: Vec::new(),
            program: Vec::new(),
        }
    }

    /// A node joining the GCS at `gcs`.
    pub fn join(gcs: SocketAddr) -> Self {
        Self { head: false, address: Some(gcs), ..Self::head() }
    }

    /// With the short test heartbeat.
    pub fn fast_heartbeat(mut self) -> Self {
        self.heartbeat = Some(FAST_HEARTBEAT);
        self
    }

    /// With extra arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    fn command(&self, dir: &Path) -> Command {
        let program = if self.program.is_empty() { vec![RAYLET.to_string()] } else { self.program.clone() };
        let argv: Vec<&String> = self.wrap.iter().chain(program.iter()).collect();
        let mut c = match argv.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest);
                c
            }
            None => Command::new(RAYLET),
        };
        c.arg("start");
        if self.head {
            c.arg("--head");
        }
        if let Some(a) = self.address {
            c.args(["--address", &a.to_string()]);
        }
        // Port 0 for every listener the test does not pin itself.
        for flag in ["--port", "--node-manager-port", "--object-manager-port", "--metrics-export-port"] {
            if !self.args.iter().any(|a| a == flag) && (flag != "--port" || self.head) {
                c.args([flag, "0"]);
            }
        }
        c.args(["--shards", &self.shards.to_string()]);
        c.args(["--temp-dir", &dir.display().to_string()]);
        // Keep the store small: tests run several nodes at once on a small machine.
        c.args(["--object-store-memory", &(32u64 << 20).to_string()]);
        if !self.args.iter().any(|a| a == "--num-cpus") {
            c.args(["--num-cpus", "2"]);
        }
        if let Some((p, t)) = self.heartbeat {
            c.args(["--heartbeat-period-ms", &p.to_string(), "--heartbeat-timeout-ms", &t.to_string()]);
        }
        c.args(&self.args);
        base_env(&mut c);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

fn base_env(c: &mut Command) {
    c.env_remove("RAYLET_AUTH_TOKEN");
    c.env("RAYLET_LOG", "info");
    c.env("RUST_BACKTRACE", "1");
}

/// Spawns `c` with stdin closed, stdout piped, stderr to `stderr_path`, dying with the
/// thread that started it, and registered for the hard timeout.
fn spawn_registered(mut c: Command, stderr_path: &Path) -> Child {
    let err = std::fs::File::create(stderr_path).expect("create stderr file");
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = c.spawn().expect("spawn raylet");
    register_child(child.id());
    child
}

/// A private temp dir for one test: sessions, sockets and the children's stderr files.
#[derive(Debug)]
pub struct TestDir {
    dir: tempfile::TempDir,
    counter: std::cell::Cell<u32>,
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDir {
    /// A fresh directory under the system temp dir.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("rl").tempdir().expect("temp dir");
        Self { dir, counter: std::cell::Cell::new(0) }
    }

    /// Its path (the `--temp-dir` of every node and CLI call of the test).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn next_log(&self, what: &str) -> PathBuf {
        let n = self.counter.get();
        self.counter.set(n + 1);
        self.path().join(format!("{what}-{n}.stderr"))
    }

    /// Starts a node and waits for its ready line.
    pub fn start(&self, opts: &NodeOpts) -> Node {
        let stderr_path = self.next_log(if opts.head { "head" } else { "node" });
        let child = spawn_registered(opts.command(self.path()), &stderr_path);
        Node::wait_ready(child, stderr_path)
    }

    /// Starts a head with default options.
    pub fn start_head(&self) -> Node {
        self.start(&NodeOpts::head())
    }

    /// Runs `raylet start` expecting it to fail before it gets ready; returns its exit
    /// status, stdout and stderr.
    pub fn start_expect_failure(&self, opts: &NodeOpts, limit: Duration) -> (ExitStatus, String, String) {
        let stderr_path = self.next_log("failed-start");
        let child = spawn_registered(opts.command(self.path()), &stderr_path);
        let (status, out) = wait_child(child, limit);
        (status, out, std::fs::read_to_string(&stderr_path).unwrap_or_default())
    }

    /// Runs a CLI command (`raylet <args...> --temp-dir <dir>`) to completion.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        self.cli_with_env(args, &[])
    }

    /// Runs a CLI command with extra environment variables.
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let stderr_path = self.next_log(&format!("cli-{}", args.first().copied().unwrap_or("none")));
        let mut c = Command::new(RAYLET);
        c.args(args).args(["--temp-dir", &self.path().display().to_string()]);
        base_env(&mut c);
        c.env("RAYLET_LOG", "warn");
        for (k, v) in env {
            c.env(k, v);
        }
        let child = spawn_registered(c, &stderr_path);
        let (status, stdout) = wait_child(child, Duration::from_secs(60));
        CliOutput { status, stdout, stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default() }
    }

    /// `raylet status --format json`, parsed; an error if the command failed.
    pub fn try_status(&self) -> Result<Value, String> {
        let out = self.cli(&["status", "--format", "json"]);
        if !out.status.success() {
            return Err(format!("raylet status failed ({}): {}", out.status, out.stderr));
        }
        serde_json::from_str(out.stdout.trim()).map_err(|e| format!("status is not JSON ({e}): {:?}", out.stdout))
    }

    /// `raylet status --format json`; panics if it fails.
    pub fn status(&self) -> Value {
        self.try_status().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Polls status until `node_id` is in `state` ("ALIVE" or "DEAD").
    pub fn wait_state(&self, node_id: &str, state: &str, limit: Duration) -> Value {
        wait_for(&format!("node {node_id} to be {state} in status"), limit, || {
            let s = self.try_status()?;
            let found = node_entry(&s, node_id).map(|n| n["state"].as_str().unwrap_or("").to_string());
            Ok(match found {
                Some(st) if st == state => Some(s),
                _ => None,
            })
        })
    }
}

/// What a CLI command did.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Waits for a short-lived child, killing it past `limit`; returns its status and stdout.
fn wait_child(mut child: Child, limit: Duration) -> (ExitStatus, String) {
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let mut delay = Duration::from_millis(5);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let st = child.wait().expect("wait");
            unregister_child(pid);
            panic!("`raylet` child {pid} did not finish within {limit:?} (killed: {st})");
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    };
    unregister_child(pid);
    (status, reader.join().unwrap_or_default())
}

/// The status entry of `node_id`, if listed.
pub fn node_entry<'a>(status: &'a Value, node_id: &str) -> Option<&'a Value> {
    status["nodes"].as_array()?.iter().find(|n| n["node_id"].as_str() == Some(node_id))
}

/// One running `raylet start`. SIGKILLed and reaped on drop if still running.
#[derive(Debug)]
pub struct Node {
    child: Option<Child>,
    exit: Option<ExitStatus>,
    /// Its pid.
    pub pid: u32,
    /// Its ready line.
    pub ready: Ready,
    stderr_path: PathBuf,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    stdout_reader: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn wait_ready(mut child: Child, stderr_path: PathBuf) -> Self {
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let l = lines.clone();
        // Drains stdout for the node's whole life so it can never block on a full pipe.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut node = Self {
            child: Some(child),
            exit: None,
            pid,
            ready: Ready::placeholder(),
            stderr_path,
            stdout_lines: lines,
            stdout_reader: Some(reader),
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.starts_with("raylet ready ") => {
                node.ready = Ready::parse(&line).unwrap_or_else(|e| panic!("{e}"));
                node
            }
            Ok(line) => panic!("unexpected stdout line before the ready line: {line:?}\n{}", node.stderr_tail()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("node {pid} printed no ready line within {READY_TIMEOUT:?}\n{}", node.stderr_tail())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let st = node.wait_exit(Duration::from_secs(10));
                panic!("node {pid} exited ({st}) before its ready line\n{}", node.stderr_tail())
            }
        }
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn stderr_tail(&self) -> String {
        let s = self.stderr();
        let lines: Vec<&str> = s.lines().collect();
        let from = lines.len().saturating_sub(60);
        format!("--- stderr of node {} ({}) ---\n{}", self.pid, self.stderr_path.display(), lines[from..].join("\n"))
    }

    /// Every stdout line so far (a node prints exactly one: the ready line).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.lock().unwrap().clone()
    }

    /// Panics if the node's stderr reports a panic.
    pub fn assert_no_panic(&self) {
        let s = self.stderr();
        assert!(!s.contains("panicked"), "node {} panicked:\n{}", self.pid, self.stderr_tail());
    }

    /// Sends `sig` to the node.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        assert!(self.exit.is_none(), "node {} already exited", self.pid);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), sig).expect("kill");
    }

    /// The exit status if the node has exited (reaps it), else `None`.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait().expect("try_wait") {
                    self.reaped(st);
                }
            }
        }
        self.exit
    }

    /// Waits (polling) for the node to exit; panics past `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.pid;
        let st = wait_for(&format!("node {pid} to exit"), limit, || Ok(self.try_exit()));
        if let Some(r) = self.stdout_reader.take() {
            let _ = r.join();
        }
        st
    }

    /// SIGKILLs the node and reaps it.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(st) = self.exit {
            return st;
        }
        // Leave the watchdog's registry first: after the wait below the pid may be reused.
        unregister_child(self.pid);
        let c = self.child.as_mut().expect("child");
        let _ = c.kill();
        let st = c.wait().expect("wait");
        self.reaped(st);
        st
    }

    fn reaped(&mut self, st: ExitStatus) {
        self.exit = Some(st);
        self.child = None;
        unregister_child(self.pid);
    }

    /// The exit status once exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// A `BlockingClient` to its node manager port.
    pub fn node_manager(&self, token: &str) -> raylet::rpc::BlockingClient {
        raylet::rpc::BlockingClient::new(self.ready.node_manager_address, token)
    }
}

impl Ready {
    fn placeholder() -> Self {
        let zero: SocketAddr = "0.0.0.0:0".parse().unwrap();
        Self {
            line: String::new(),
            node_id: String::new(),
            gcs_address: zero,
            node_manager_address: zero,
            object_manager_address: zero,
            metrics_address: zero,
            socket: PathBuf::new(),
            session_dir: PathBuf::new(),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unregister_child(self.pid);
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.stderr_tail());
        }
    }
}

/// Whether any process with this pid exists (zombies count).
pub fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Every descendant of `pid` (children, grandchildren...), read from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// Whether `st` is a clean exit 0 (not a signal).
pub fn assert_exit_code(st: ExitStatus, code: i32, what: &str) {
    assert_eq!(st.code(), Some(code), "{what}: expected exit code {code}, got {st} (signal {:?})", st.signal());
}

// ---------------------------------------------------------------------------------------
// Metrics.

/// `GET path` on the metrics endpoint: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read metrics response");
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

/// Sum over shards of one metric family member whose labels contain `label_filter`
/// (e.g. `kind="rpc_bad_token"`).
pub fn metric_sum(text: &str, name: &str, label_filter: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (lhs, v) = l.rsplit_once(' ')?;
            let (n, labels) = lhs.split_once('{').unwrap_or((lhs, ""));
            (n == name && labels.contains(label_filter)).then(|| v.parse::<f64>().ok()).flatten()
        })
        .map(|v| v as u64)
        .sum()
}

/// The current sum of `raylet_errors_total{kind=...}` over shards.
pub fn errors_of(node: &Node, kind: &str) -> u64 {
    let (code, body) = http_get(node.ready.metrics_address, "/metrics");
    assert_eq!(code, 200);
    metric_sum(&body, "raylet_errors_total", &format!("kind=\"{kind}\""))
}

/// Polls the metrics endpoint until the error counter of `kind` reaches at least `want`.
pub fn wait_errors(node: &Node, kind: &str, want: u64) {
    wait_for(&format!("raylet_errors_total{{kind={kind:?}}} >= {want}"), Duration::from_secs(20), || {
        let have = errors_of(node, kind);
        if have >= want {
            Ok(Some(()))
        } else {
            Err(format!("the counter is at {have}"))
        }
    })
}

// ---------------------------------------------------------------------------------------
// Raw RPC connections (for bad input).

/// A raw TCP connection speaking (or abusing) the RPC framing.
#[derive(Debug)]
pub struct RawRpc {
    /// The socket.
    pub stream: std::net::TcpStream,
    decoder: raylet::rpc::frame::FrameDecoder,
}

/// What reading from a raw connection ended with.
#[derive(Debug)]
pub enum Read2 {
    /// A complete frame.
    Frame(raylet::rpc::frame::Frame),
    /// The server closed the connection (EOF or reset).
    Closed,
}

impl RawRpc {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.set_nodelay(true).unwrap();
        Self { stream, decoder: raylet::rpc::frame::FrameDecoder::new(Default::default()) }
    }

    /// Writes raw bytes (errors ignored: the server may already have closed).
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Sends a hello with this version and token.
    pub fn send_hello(&mut self, version: u32, token: &str) {
        use prost::Message;
        use raylet::rpc::frame::{encode_frame, FrameHeader, FrameKind};
        let hello = raylet::wire::rpc::Hello { protocol_version: version, auth_token: token.into() };
        let f = encode_frame(FrameHeader::control(FrameKind::Hello), &hello.encode_to_vec(), 0);
        self.send(&f);
    }

    /// Says hello properly and checks the ack.
    pub fn handshake(addr: SocketAddr, token: &str) -> Self {
        Self::handshake_ack(addr, token).0
    }

    /// Says hello properly, checks the ack and returns it (it names the serving shard).
    pub fn handshake_ack(addr: SocketAddr, token: &str) -> (Self, raylet::wire::rpc::HelloAck) {
        use prost::Message;
        let mut c = Self::connect(addr);
        c.send_hello(raylet::rpc::frame::PROTOCOL_VERSION, token);
        match c.read(Duration::from_secs(10)) {
            Read2::Frame(f) => {
                let ack = raylet::wire::rpc::HelloAck::decode(f.payload.as_slice()).expect("hello ack");
                assert!(ack.ok, "hello refused: {}", ack.message);
                (c, ack)
            }
            Read2::Closed => panic!("server closed the connection after a good hello"),
        }
    }

    /// Sends a request frame.
    pub fn send_request(&mut self, service: u16, method: u16, call_id: u64, payload: &[u8]) {
        use raylet::rpc::frame::{encode_frame, FrameHeader};
        self.send(&encode_frame(FrameHeader::request(service, method, call_id, 10_000), payload, 0));
    }

    /// Reads the next frame, or learns that the server closed; panics past `limit`.
    pub fn read(&mut self, limit: Duration) -> Read2 {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 8192];
        loop {
            match self.decoder.next_frame() {
                Ok(Some(f)) => return Read2::Frame(f),
                Ok(None) => {}
                Err(e) => panic!("the server sent a malformed frame: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no frame and no close within {limit:?}");
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return Read2::Closed,
                Ok(n) => self.decoder.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Read2::Closed,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    panic!("no frame and no close within {limit:?}")
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Reads until the server closes (frames before the close are returned); panics if it
    /// stays open past `limit`.
    pub fn expect_closed(&mut self, limit: Duration) -> Vec<raylet::rpc::frame::Frame> {
        let deadline = Instant::now() + limit;
        let mut frames = Vec::new();
        loop {
            match self.read(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))) {
                Read2::Frame(f) => frames.push(f),
                Read2::Closed => return frames,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw local connections (for bad input).

/// Connects a raw Unix stream to a node's local socket.
pub fn raw_local(node: &Node) -> std::os::unix::net::UnixStream {
    std::os::unix::net::UnixStream::connect(&node.ready.socket).expect("connect local socket")
}

/// Reads from a local stream until EOF; returns the bytes read before it. Panics if the
/// server keeps the connection open past `limit`.
pub fn local_expect_closed(s: &mut std::os::unix::net::UnixStream, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the raylet kept the local connection open past {limit:?}");
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("the raylet kept the local connection open past {limit:?}")
            }
            Err(e) => panic!("local read failed: {e}"),
        }
    }
}

/// Registers a driver on a fresh connection and disconnects: proof the socket still serves.
pub fn local_still_serves(node: &Node) {
    let mut c = raylet::client::LocalClient::connect(&node.ready.socket).expect("connect");
    let id = c.register_driver(raylet::ids::JobId([0, 0, 0, 7])).expect("a good driver registers");
    assert_eq!(id.to_string(), node.ready.node_id);
    c.disconnect().expect("disconnect");
}

/// GetNodeStats over the node manager port.
pub fn node_stats(node: &Node, token: &str) -> raylet::wire::rpc::GetNodeStatsReply {
    let mut c = node.node_manager(token);
    raylet::wire::rpc::node_manager_service::blocking::get_node_stats(
        &mut c,
        &raylet::wire::rpc::GetNodeStatsRequest::default(),
        raylet::rpc::CallOpts::idempotent(Duration::from_secs(10)),
    )
    .expect("GetNodeStats")
}
