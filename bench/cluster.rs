//! The node a suite measures: a head node this bench starts from the `raylet` binary next
//! to its own executable (`--port 0 --temp-dir <fresh dir>`, ready line parsed, stopped
//! on drop), or a running cluster given by `--address` (token as the CLI finds it).
//!
//! Starting more nodes (a joiner for `transfer`) is [`LocalNode::start`] with
//! `--address <gcs>` among the arguments.

use crate::measure::allowed_cpus;
use crate::{Opts, Pin, Res};
use raylet::rpc::{BlockingClient, CallOpts};
use raylet::wire::rpc::{node_manager_service, NodeState, ShutdownRayletRequest};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a suite talks to.
#[derive(Debug)]
pub(crate) struct Target {
    /// The node's NodeManagerService.
    pub(crate) node_manager: SocketAddr,
    /// The cluster's GCS.
    pub(crate) gcs: SocketAddr,
    /// Its local socket, when reachable from here.
    pub(crate) socket: Option<PathBuf>,
    /// The cluster auth token.
    pub(crate) token: String,
    /// The session directory of a node started here (its `auth_token` lets joiners in).
    pub(crate) session: Option<PathBuf>,
    /// Its shard count, when known.
    pub(crate) shards: Option<usize>,
    /// Whether this bench started the node (so it knows the node's CPU placement).
    pub(crate) started_here: bool,
    describe: String,
    /// Stops the node on drop; `None` for `--address`.
    _node: Option<LocalNode>,
}

impl Target {
    /// Starts a head node, or finds the one `--address` names.
    pub(crate) fn obtain(opts: &Opts) -> Res<Self> {
        Self::obtain_with(opts, &[])
    }

    /// Like [`Self::obtain`], with `node_args` for a node started here (before the
    /// `--node-arg` ones, which thus win); ignored with `--address`.
    pub(crate) fn obtain_with(opts: &Opts, node_args: &[String]) -> Res<Self> {
        match &opts.address {
            Some(a) => Self::external(a, opts),
            None => Self::start_local(opts, node_args),
        }
    }

    /// The pid of a node started here.
    pub(crate) fn pid(&self) -> Option<u32> {
        self._node.as_ref().map(LocalNode::pid)
    }

    /// One line for the report header.
    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }

    fn start_local(opts: &Opts, node_args: &[String]) -> Res<Self> {
        let bin = raylet_bin(opts)?;
        let parent = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let mut args: Vec<String> = vec!["--head".into(), "--port".into(), "0".into()];
        args.extend(["--shards".into(), opts.shards.to_string()]);
        args.extend(node_args.iter().cloned());
        args.extend(opts.node_args.iter().cloned());
        let node = LocalNode::start(&bin, &parent, &args, opts.keep_temp)?;
        let ready = &node.ready;
        let node_manager = parse_addr(ready.get("node_manager_address"), "node_manager_address")?;
        let gcs = parse_addr(ready.get("gcs_address"), "gcs_address")?;
        let session = PathBuf::from(ready.get("session_dir").ok_or("ready line lacks session_dir")?);
        let token = match std::env::var("RAYLET_AUTH_TOKEN") {
            Ok(t) if !t.is_empty() => t,
            _ => raylet::cli::session::read_token(&session.join("auth_token"))?,
        };
        let describe = format!(
            "node: started here, {} shard(s), args [{}], temp dir {}",
            opts.shards,
            args.join(" "),
            node.dir.path.display()
        );
        Ok(Self {
            node_manager,
            gcs,
            socket: ready.get("socket").map(PathBuf::from),
            token,
            session: Some(session),
            shards: Some(opts.shards),
            started_here: true,
            describe,
            _node: Some(node),
        })
    }

    fn external(address: &str, opts: &Opts) -> Res<Self> {
        let temp = opts.temp_dir.clone().unwrap_or_else(|| PathBuf::from("/tmp/raylet"));
        let cluster = raylet::cli::session::find_cluster(Some(address), &temp, opts.auth_token_file.as_deref())?;
        let mut gcs = BlockingClient::new(cluster.gcs, cluster.token.clone());
        let table = raylet::cli::status::fetch(&mut gcs)?;
        let mut alive: Vec<_> =
            table.node_info_list.into_iter().filter(|n| n.state == NodeState::Alive as i32).collect();
        alive.sort_by_key(|n| !n.is_head_node);
        let n = alive.into_iter().next().ok_or_else(|| format!("no alive node in the cluster at {address}"))?;
        let node_manager =
            raylet::cli::session::resolve_addr(&format!("{}:{}", n.node_manager_address, n.node_manager_port))?;
        let socket = Some(PathBuf::from(&n.raylet_socket_name)).filter(|p| p.exists());
        let describe = format!(
            "node: external {} (head: {}), {} shard(s), node manager {node_manager}, socket {}",
            raylet::ids::hex_encode(&n.node_id),
            n.is_head_node,
            n.num_shards,
            socket.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "not reachable".into())
        );
        Ok(Self {
            node_manager,
            gcs: cluster.gcs,
            socket,
            token: cluster.token,
            session: None,
            shards: Some(n.num_shards as usize).filter(|&s| s > 0),
            started_here: false,
            describe,
            _node: None,
        })
    }
}

/// Where the bench's latency threads run.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    /// CPU of the thread running latency loops.
    pub(crate) client: Option<usize>,
    /// CPU of the baseline echo threads of latency cases.
    pub(crate) server: Option<usize>,
    /// One line for the report header.
    pub(crate) describe: String,
}

impl Target {
    /// Resolves `--pin` against the node's placement, which is known only when this bench
    /// started it (glommio pins shard i to allowed CPU i when shards <= CPUs).
    pub(crate) fn placement(&self, pin: Pin) -> Res<Placement> {
        placement(self.shards.unwrap_or(0), self.started_here, pin)
    }
}

/// Where latency threads go for a node of `n` shards (pinned to the first `n` allowed
/// CPUs when `started_here`).
pub(crate) fn placement(n: usize, started_here: bool, pin: Pin) -> Res<Placement> {
    {
        let cpus = allowed_cpus();
        let known = started_here && n >= 1 && n <= cpus.len();
        let pin = match pin {
            Pin::Auto if known => Pin::Shared,
            Pin::Auto => Pin::Off,
            p => p,
        };
        let (client, server) = match pin {
            Pin::Off | Pin::Auto => (None, None),
            _ if !known => {
                return Err(format!("--pin {pin:?} needs a node started here with at most {} shards", cpus.len()))
            }
            Pin::Shared => (Some(cpus[0]), Some(cpus[0])),
            Pin::Split if n < cpus.len() => (Some(cpus[n]), Some(cpus[0])),
            Pin::Split => return Err(format!("--pin split needs a CPU free of shards: {n} shard(s) on CPUs {cpus:?}")),
        };
        let shard_cpus = if known { format!("{:?}", &cpus[..n]) } else { "unknown".into() };
        let describe = match (client, server) {
            (Some(c), Some(s)) => format!(
                "pinning ({pin:?}): shards on CPUs {shard_cpus}; latency client on CPU {c}, baseline echo threads on CPU {s}; single-client throughput runs placed the same; multi-client runs unpinned"
            ),
            _ => format!("pinning: none on the bench side; node shards on CPUs {shard_cpus}"),
        };
        Ok(Placement { client, server, describe })
    }
}

fn parse_addr(v: Option<&str>, what: &str) -> Res<SocketAddr> {
    let v = v.ok_or_else(|| format!("ready line lacks {what}"))?;
    v.parse().map_err(|e| format!("bad {what} {v:?}: {e}"))
}

/// The `raylet` binary: `--raylet`, else the one next to this executable.
pub(crate) fn raylet_bin(opts: &Opts) -> Res<PathBuf> {
    match &opts.raylet {
        Some(b) => Ok(b.clone()),
        None => sibling_raylet(),
    }
}

/// The `raylet` binary in the same target dir as this executable.
fn sibling_raylet() -> Res<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin = exe.with_file_name("raylet");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("{} not found; build it (cargo build --release) or pass --raylet", bin.display()))
    }
}

/// A directory removed on drop unless kept.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    /// Its path.
    pub(crate) path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    fn new(parent: &Path, keep: bool) -> Res<Self> {
        let mut b = [0u8; 4];
        raylet::ids::os_random(&mut b);
        let path = parent.join(format!("raylet-bench-{}-{}", std::process::id(), raylet::ids::hex_encode(&b)));
        std::fs::create_dir_all(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("raylet-bench: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The `key=value` fields of a `raylet ready ...` line.
#[derive(Debug, Clone)]
pub(crate) struct Ready(BTreeMap<String, String>);

impl Ready {
    fn parse(line: &str) -> Option<Self> {
        let rest = line.trim_end().strip_prefix("raylet ready ")?;
        Some(Self(
            rest.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ))
    }

    /// A field, e.g. `node_manager_address`, `socket`, `session_dir`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// A `raylet start` child of this process, stopped (and its temp dir removed) on drop.
#[derive(Debug)]
pub(crate) struct LocalNode {
    child: Child,
    /// `--auth-token-file` among its arguments (a joiner keeps no token of its own).
    token_file: Option<PathBuf>,
    /// Its ready line.
    pub(crate) ready: Ready,
    /// Its temp dir (stderr in `raylet.stderr`, sessions under it).
    pub(crate) dir: ScratchDir,
}

impl LocalNode {
    /// The node's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `bin start --temp-dir <fresh dir under parent> <args>` and waits for its ready
    /// line. The child's stderr goes to `<dir>/raylet.stderr`.
    pub(crate) fn start(bin: &Path, parent: &Path, args: &[String], keep: bool) -> Res<Self> {
        let dir = ScratchDir::new(parent, keep)?;
        let stderr_path = dir.path.join("raylet.stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("start").arg("--temp-dir").arg(&dir.path).args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the ready line, then keeps draining so the child never blocks on stdout.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                match Ready::parse(&line) {
                    Some(r) => {
                        let _ = tx.send(r);
                    }
                    None => eprintln!("[raylet stdout] {line}"),
                }
            }
        });
        let token_file =
            args.iter().position(|a| a == "--auth-token-file").and_then(|i| args.get(i + 1)).map(PathBuf::from);
        let mut node = Self { child, token_file, ready: Ready(BTreeMap::new()), dir };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(r) => node.ready = r,
            Err(_) => {
                let tail = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!("raylet printed no ready line; its stderr ends:\n{}", tail.join("\n")));
            }
        }
        Ok(node)
    }

    /// Graceful stop: ShutdownRaylet, then SIGTERM, then SIGKILL, each with a grace period.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let own = self.ready.get("session_dir").map(|s| Path::new(s).join("auth_token"));
        let token = own
            .iter()
            .chain(self.token_file.iter())
            .find_map(|f| raylet::cli::session::read_token(f).ok())
            .or_else(|| std::env::var("RAYLET_AUTH_TOKEN").ok());
        let nm = self.ready.get("node_manager_address").and_then(|a| a.parse::<SocketAddr>().ok());
        if let (Some(token), Some(nm)) = (token, nm) {
            let mut c = BlockingClient::new(nm, token);
            let _ = node_manager_service::blocking::shutdown_raylet(
                &mut c,
                &ShutdownRayletRequest { graceful: true },
                CallOpts::once(Duration::from_secs(2)),
            );
        }
        if self.wait(Duration::from_secs(10)) {
            return;
        }
        eprintln!("raylet-bench: node ignored ShutdownRaylet; sending SIGTERM");
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if self.wait(Duration::from_secs(5)) {
            return;
        }
        eprintln!("raylet-bench: node ignored SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait(&mut self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("raylet-bench: node exited with {status}");
                    }
                    return true;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return true,
            }
        }
        false
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Asks the kernel to SIGTERM the child if this process dies first (e.g. `kill -9` of
/// the bench), so no node is left behind.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // Its own process group: a Ctrl-C at the terminal reaches the bench alone, which
    // then stops the node itself (gracefully, after its traffic ended).
    cmd.process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl,
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_fields_are_parsed() {
        let r = Ready::parse(
            "raylet ready node_id=ab gcs_address=127.0.0.1:1 node_manager_address=127.0.0.1:2 \
             object_manager_address=127.0.0.1:3 metrics_address=127.0.0.1:4 socket=/t/s/sockets/raylet session_dir=/t/s\n",
        )
        .unwrap();
        assert_eq!(r.get("node_id"), Some("ab"));
        assert_eq!(r.get("node_manager_address"), Some("127.0.0.1:2"));
        assert_eq!(r.get("socket"), Some("/t/s/sockets/raylet"));
        assert_eq!(r.get("session_dir"), Some("/t/s"));
        assert!(Ready::parse("some log line").is_none());
    }
}
