//! The `soak` suite (`scripts/soak.sh MINUTES`): a head and a joiner started here from the
//! release binary (private temp dirs, port 0 everywhere), under mixed traffic for
//! `--minutes`, with every raylet's resident memory and open fds printed every
//! `--sample-s`, then a summary per node: first, last and max, the slope after warm-up,
//! and a verdict.
//!
//! Traffic, one thread each, all through the real client library and the CLI:
//! - objects: `LocalClient::put` on one node (1 KiB to 4 MiB, contents from a seed),
//!   `get` on the other (a pull across nodes) with the bytes checked, and `free` of the
//!   oldest once 16 are live (deleted on both nodes);
//! - leases and tasks: `Driver` leases of `{CPU: 1}` (default and SPREAD, so some spill
//!   to the joiner), a `noop`, `sleep` or `produce` task, and the return;
//! - placement groups: `PlacementGroups` create (PACK or SPREAD, two bundles of half a
//!   CPU), wait ready, a lease and a task in a bundle, and remove;
//! - status: `raylet status --format json` and `raylet memory` (the CLI binary) every
//!   two seconds, checking that both nodes are ALIVE.
//!
//! Verdict: the least-squares slope over the samples after warm-up (the first fifth of
//! the run, at most a minute) is "growing" when it would add more than
//! max(8 MiB, 5% of the mean) of RSS, or 8 fds, over the whole run; else "flat". A failed
//! operation is counted and the first ones printed; any makes the suite fail at the end.
//! Ctrl-C (SIGINT) or SIGTERM ends the traffic early and still stops both nodes (their
//! children die with them) and prints the summary.

use crate::cluster::{raylet_bin, LocalNode, Target};
use crate::report::Report;
use crate::{Opts, Res};
use raylet::client::{tasks, Driver, LeaseOptions, LocalClient, PlacementGroups, PlacementStrategy, Strategy, Task};
use raylet::ids::ObjectId;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: f64 = (1 << 20) as f64;

/// Counters of the traffic threads.
#[derive(Default)]
struct Ops {
    names: [&'static str; 7],
    counts: [AtomicU64; 7],
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

const PUT: usize = 0;
const GET: usize = 1;
const FREE: usize = 2;
const LEASE: usize = 3;
const TASK: usize = 4;
const PG: usize = 5;
const STATUS: usize = 6;

impl Ops {
    fn new() -> Self {
        Self { names: ["put", "get", "free", "lease", "task", "pg", "status"], ..Self::default() }
    }

    fn add(&self, op: usize) {
        self.counts[op].fetch_add(1, Relaxed);
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(|p| p.into_inner());
        if first.len() < 10 {
            let line = format!("{what}: {e}");
            eprintln!("soak: error: {line}");
            first.push(line);
        }
    }

    fn line(&self) -> String {
        let mut s: Vec<String> =
            self.names.iter().zip(&self.counts).map(|(n, c)| format!("{n}={}", c.load(Relaxed))).collect();
        s.push(format!("errors={}", self.errors.load(Relaxed)));
        s.join(" ")
    }
}

/// Everything the traffic threads share.
struct Shared {
    stop: Arc<AtomicBool>,
    deadline: Instant,
    ops: Ops,
    gcs: std::net::SocketAddr,
    token: String,
    head_nm: std::net::SocketAddr,
    sockets: [PathBuf; 2],
    raylet: PathBuf,
}

impl Shared {
    fn running(&self) -> bool {
        !self.stop.load(Relaxed) && Instant::now() < self.deadline
    }

    /// Sleeps up to `d`, returning early when the soak ends.
    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while self.running() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
        }
    }
}

/// One sample of one raylet.
#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    rss: f64,
    fds: f64,
}

fn sample(pid: u32, t: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as f64;
    Some(Sample { t, rss: kb * 1024.0, fds })
}

/// Runs the suite.
pub(crate) fn run(opts: &Opts, report: &mut Report) -> Res<()> {
    if opts.address.is_some() {
        return Err("soak starts its own two nodes; --address is not supported".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }
    let store = (256u64 << 20).to_string();
    let node_args: Vec<String> =
        ["--num-cpus", "4", "--num-prestart-workers", "2", "--object-store-memory", &store].map(String::from).to_vec();
    let head = Target::obtain_with(opts, &node_args)?;
    let session = head.session.clone().ok_or("the head's session dir is unknown")?;
    let mut args: Vec<String> = vec!["--address".into(), head.gcs.to_string()];
    args.extend(["--auth-token-file".into(), session.join("auth_token").display().to_string()]);
    args.extend(["--shards".into(), opts.shards.to_string()]);
    args.extend(node_args.iter().cloned());
    args.extend(opts.node_args.iter().cloned());
    let parent = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let joiner = LocalNode::start(&raylet_bin(opts)?, &parent, &args, opts.keep_temp)?;
    report.note(head.describe());
    report.note(format!("joiner: args [{}], temp dir {}", args.join(" "), joiner.dir.path.display()));
    let pids = [("head", head.pid().ok_or("head pid unknown")?), ("joiner", joiner.pid())];
    let minutes = opts.minutes.max(0.05);
    let run_for = Duration::from_secs_f64(minutes * 60.0);
    let shared = Arc::new(Shared {
        stop: stop.clone(),
        deadline: Instant::now() + run_for,
        ops: Ops::new(),
        gcs: head.gcs,
        token: head.token.clone(),
        head_nm: head.node_manager,
        sockets: [
            head.socket.clone().ok_or("head socket unknown")?,
            PathBuf::from(joiner.ready.get("socket").ok_or("joiner socket unknown")?),
        ],
        raylet: raylet_bin(opts)?,
    });
    eprintln!("soak: {minutes} min, sampling every {} s; Ctrl-C ends it early", opts.sample_s);
    let threads: Vec<std::thread::JoinHandle<()>> = [objects as fn(&Shared), leases, groups, status]
        .into_iter()
        .map(|f| {
            let s = shared.clone();
            std::thread::spawn(move || f(&s))
        })
        .collect();
    let out = |line: String| if opts.json { eprintln!("{line}") } else { println!("{line}") };
    let t0 = Instant::now();
    let mut series: Vec<Vec<Sample>> = vec![Vec::new(); pids.len()];
    let every = Duration::from_secs_f64(opts.sample_s.max(1.0));
    loop {
        let t = t0.elapsed().as_secs_f64();
        let mut line = format!("t={t:>6.0}s");
        for (i, (name, pid)) in pids.iter().enumerate() {
            match sample(*pid, t) {
                Some(s) => {
                    line.push_str(&format!("  {name} rss={:.1}MiB fds={}", s.rss / MIB, s.fds));
                    series[i].push(s);
                }
                None => line.push_str(&format!("  {name} GONE")),
            }
        }
        out(format!("{line}  {}", shared.ops.line()));
        if !shared.running() {
            break;
        }
        shared.pause(every);
    }
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    out(format!("soak: ran {:.1} min; totals {}", t0.elapsed().as_secs_f64() / 60.0, shared.ops.line()));
    for ((name, _), s) in pids.iter().zip(&series) {
        for line in summarize(name, s, t0.elapsed().as_secs_f64()) {
            out(line);
        }
    }
    drop(joiner);
    drop(head);
    let errors = shared.ops.errors.load(Relaxed);
    if errors > 0 {
        let first = shared.ops.first_errors.lock().unwrap_or_else(|p| p.into_inner()).join("\n  ");
        return Err(format!("{errors} operations failed; the first:\n  {first}"));
    }
    Ok(())
}

/// Summary lines of one node's samples.
fn summarize(name: &str, s: &[Sample], total_s: f64) -> Vec<String> {
    let Some((first, last)) = s.first().zip(s.last()) else {
        return vec![format!("{name}: no samples")];
    };
    let warm = (total_s / 5.0).min(60.0);
    let after: Vec<Sample> = s.iter().copied().filter(|x| x.t >= warm).collect();
    let mut out = Vec::new();
    for (what, get, unit, scale, floor) in [
        ("rss", (|x: &Sample| x.rss) as fn(&Sample) -> f64, " MiB", MIB, 8.0 * MIB),
        ("fds", |x: &Sample| x.fds, "", 1.0, 8.0),
    ] {
        let max = s.iter().map(get).fold(f64::MIN, f64::max);
        let p = if what == "rss" { 1 } else { 0 };
        let verdict = if after.len() < 3 {
            "too short to tell (fewer than 3 samples after warm-up)".to_string()
        } else {
            let slope = slope(&after, get);
            let mean = after.iter().map(get).sum::<f64>() / after.len() as f64;
            let limit = if what == "rss" { floor.max(0.05 * mean) } else { floor };
            let growth = slope * total_s;
            let kind = if growth > limit { "GROWING" } else { "flat" };
            format!(
                "{kind}: slope {:+.3}{unit}/min after {warm:.0} s of warm-up, {:+.1}{unit} over the run (growing above {:.1})",
                slope * 60.0 / scale,
                growth / scale,
                limit / scale
            )
        };
        out.push(format!(
            "{name} {what}: first {:.p$} last {:.p$} max {:.p$}{unit}; {verdict}",
            get(first) / scale,
            get(last) / scale,
            max / scale
        ));
    }
    out
}

/// Least-squares slope of `get` against time, per second.
fn slope(s: &[Sample], get: fn(&Sample) -> f64) -> f64 {
    let n = s.len() as f64;
    let (mt, mv) = (s.iter().map(|x| x.t).sum::<f64>() / n, s.iter().map(get).sum::<f64>() / n);
    let cov: f64 = s.iter().map(|x| (x.t - mt) * (get(x) - mv)).sum();
    let var: f64 = s.iter().map(|x| (x.t - mt).powi(2)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var
    }
}

/// Puts on one node, gets (pulls) on the other, frees the oldest beyond 16 live objects.
fn objects(s: &Shared) {
    let mut clients = Vec::new();
    for p in &s.sockets {
        match LocalClient::connect_driver(p) {
            Ok(c) => clients.push(c),
            Err(e) => return s.ops.fail("connect to the local socket", e),
        }
    }
    let mut live: VecDeque<ObjectId> = VecDeque::new();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut n = 0u64;
    while s.running() {
        n += 1;
        let (from, to) = if n.is_multiple_of(2) { (0, 1) } else { (1, 0) };
        let size = [1 << 10, 64 << 10, 1 << 20, 4 << 20][rng.usize(..4)];
        let mut data = vec![0u8; size];
        tasks::fill(&mut data, n);
        let id = match clients[from].put(&data) {
            Ok(id) => id,
            Err(e) => {
                s.ops.fail("put", e);
                s.pause(Duration::from_secs(1));
                continue;
            }
        };
        s.ops.add(PUT);
        live.push_back(id);
        match clients[to].get(&[id], Some(Duration::from_secs(30))) {
            Ok(v) => match v.into_iter().next().flatten() {
                Some(view) if view.data() == &data[..] => s.ops.add(GET),
                Some(_) => s.ops.fail("get", format!("object {id} came back with other bytes")),
                None => s.ops.fail("get", format!("object {id} not available on the other node within 30 s")),
            },
            Err(e) => s.ops.fail("get", e),
        }
        while live.len() > 16 {
            let old = live.pop_front().expect("non-empty");
            match clients[0].free(&[old]) {
                Ok(f) if f.peer_failures.is_empty() => s.ops.add(FREE),
                Ok(f) => s.ops.fail("free", format!("{:?}", f.peer_failures)),
                Err(e) => s.ops.fail("free", e),
            }
        }
        s.pause(Duration::from_millis(20));
    }
    let ids: Vec<ObjectId> = live.into_iter().collect();
    if let Err(e) = clients[0].free(&ids) {
        s.ops.fail("free at the end", e);
    }
    for c in clients {
        let _ = c.disconnect();
    }
}

/// Leases a worker (default or SPREAD), runs one task on it, returns it.
fn leases(s: &Shared) {
    let mut d = Driver::new(s.head_nm, s.token.clone()).with_timeout(Duration::from_secs(30));
    let mut n = 0u64;
    while s.running() {
        n += 1;
        let mut opts = LeaseOptions::cpus(1.0);
        if n.is_multiple_of(2) {
            opts.strategy = Strategy::Spread;
        }
        let task = match n % 3 {
            0 => Task::Noop,
            1 => Task::Sleep(Duration::from_millis(5)),
            _ => Task::Produce { bytes: 64 << 10, seed: n },
        };
        lease_and_run(s, &mut d, &opts, &task);
        s.pause(Duration::from_millis(10));
    }
}

fn lease_and_run(s: &Shared, d: &mut Driver, opts: &LeaseOptions, task: &Task) {
    match d.request_lease(opts) {
        Ok(lease) => {
            s.ops.add(LEASE);
            match d.push_task(&lease, task) {
                Ok(_) => s.ops.add(TASK),
                Err(e) => s.ops.fail("push task", e),
            }
            if let Err(e) = d.return_worker(&lease) {
                s.ops.fail("return worker", e);
            }
        }
        Err(e) => s.ops.fail("lease", e),
    }
}

/// Creates a two-bundle group, waits for it, runs a task in it, removes it.
fn groups(s: &Shared) {
    let mut pgs = PlacementGroups::new(s.gcs, s.token.clone());
    let mut d = Driver::new(s.head_nm, s.token.clone()).with_timeout(Duration::from_secs(30));
    let mut n = 0u64;
    while s.running() {
        n += 1;
        let strategy = if n.is_multiple_of(2) { PlacementStrategy::Pack } else { PlacementStrategy::Spread };
        let bundles = vec![vec![("CPU".to_string(), 0.5)]; 2];
        let pg = match pgs.create(strategy, &bundles) {
            Ok(pg) => pg,
            Err(e) => {
                s.ops.fail("create placement group", e);
                s.pause(Duration::from_secs(1));
                continue;
            }
        };
        match pgs.wait_ready(pg, Duration::from_secs(30)) {
            Ok(()) => {
                let mut opts = LeaseOptions::cpus(0.5);
                opts.bundle = Some((pg, -1));
                lease_and_run(s, &mut d, &opts, &Task::Noop);
                s.ops.add(PG);
            }
            Err(e) => s.ops.fail("placement group ready", e),
        }
        if let Err(e) = pgs.remove(pg) {
            s.ops.fail("remove placement group", e);
        }
        s.pause(Duration::from_millis(200));
    }
}

/// `raylet status` and `raylet memory` through the CLI binary.
fn status(s: &Shared) {
    while s.running() {
        match cli(&s.raylet, &["status", "--format", "json"], s) {
            Ok(out) => {
                let alive = out.matches("\"ALIVE\"").count();
                if alive == 2 {
                    s.ops.add(STATUS);
                } else {
                    s.ops.fail("status", format!("{alive} nodes ALIVE, expected 2: {out}"));
                }
            }
            Err(e) => s.ops.fail("status", e),
        }
        if let Err(e) = cli(&s.raylet, &["memory"], s) {
            s.ops.fail("memory", e);
        }
        s.pause(Duration::from_secs(2));
    }
}

fn cli(bin: &Path, args: &[&str], s: &Shared) -> Res<String> {
    let out = std::process::Command::new(bin)
        .args(args)
        .args(["--address", &s.gcs.to_string()])
        .env("RAYLET_AUTH_TOKEN", &s.token)
        .env("RAYLET_LOG", "warn")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!("raylet {} exited {}: {}", args[0], out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
