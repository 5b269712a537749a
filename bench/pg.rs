//! The `pg` suite (DESIGN.md §7, issue 4 item 9).
//!
//! - `pg_create_remove`: placement groups created and removed per second by one client
//!   (`raylet::client::PlacementGroups`, one GCS connection) in a closed loop of:
//!   `CreatePlacementGroup` of one bundle `{CPU: 1}` PACK, `WaitPlacementGroupUntilReady`
//!   (the GCS replies once the bundle is prepared and committed on the node), and
//!   `RemovePlacementGroup` (the GCS replies once the node has released the bundle). One
//!   operation = all three; per-step p50s are in its note.
//! - `pg_create_remove_2nodes` (extra, when this bench starts the node and
//!   `--two-nodes true`): the same with two bundles `{CPU: 1}` STRICT_SPREAD over the head
//!   and a second node started here, so every group commits and releases on both.
//!
//! Baseline: `raw_tcp_throughput_c1`, one thread ping-ponging the bytes of a
//! CreatePlacementGroup request and its (empty) reply over loopback TCP against an echo
//! thread, in the same run, alternating with the real runs in rounds. A group is three
//! client round trips plus the GCS's round trips to the raylets (two-phase commit, then
//! the release), so the ratio is the rate against single raw round trips.

use crate::baseline::{Sizes, TcpEcho};
use crate::cluster::{raylet_bin, LocalNode, Target};
use crate::lease::p50_us;
use crate::measure::{histogram, throughput, Rate, RateCfg};
use crate::report::{Measured, Report};
use crate::{Opts, Res};
use hdrhistogram::Histogram;
use prost::Message;
use raylet::client::{PlacementGroups, PlacementStrategy};
use raylet::ids::PlacementGroupId;
use raylet::rpc::{frame, BlockingClient};
use raylet::wire::rpc::{
    Bundle, BundleId, CreatePlacementGroupReply, CreatePlacementGroupRequest, NodeState, PlacementGroupSpec,
};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a group may take to become ready before the run fails.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A group's shape.
#[derive(Debug, Clone, Copy)]
struct Shape {
    strategy: PlacementStrategy,
    bundles: usize,
}

impl Shape {
    fn bundles(&self) -> Vec<Vec<(String, f64)>> {
        vec![vec![("CPU".to_string(), 1.0)]; self.bundles]
    }
}

/// Per-step times of the runs (shared by the client threads).
#[derive(Debug)]
struct Steps {
    create: Histogram<u64>,
    ready: Histogram<u64>,
    remove: Histogram<u64>,
}

impl Steps {
    fn new() -> Self {
        Self { create: histogram(), ready: histogram(), remove: histogram() }
    }

    fn note(&self) -> String {
        format!(
            "step p50s incl. warm-up: create {:.1} us, wait ready {:.1} us, remove {:.1} us",
            p50_us(&self.create),
            p50_us(&self.ready),
            p50_us(&self.remove)
        )
    }
}

/// One create, wait until ready, remove.
fn create_remove(pgs: &mut PlacementGroups, shape: Shape, steps: &Mutex<Steps>) -> Res<()> {
    let t0 = Instant::now();
    let id = pgs.create(shape.strategy, &shape.bundles()).map_err(|e| format!("CreatePlacementGroup: {e}"))?;
    let t1 = Instant::now();
    pgs.wait_ready(id, READY_TIMEOUT).map_err(|e| format!("WaitPlacementGroupUntilReady: {e}"))?;
    let t2 = Instant::now();
    pgs.remove(id).map_err(|e| format!("RemovePlacementGroup: {e}"))?;
    let t3 = Instant::now();
    let mut guard = steps.lock().unwrap_or_else(|p| p.into_inner());
    let s = &mut *guard;
    for (h, d) in [(&mut s.create, t1 - t0), (&mut s.ready, t2 - t1), (&mut s.remove, t3 - t2)] {
        h.saturating_record(d.as_nanos() as u64);
    }
    Ok(())
}

/// Bytes on the wire of a one-bundle CreatePlacementGroup request and its reply.
fn create_sizes() -> Sizes {
    let id = PlacementGroupId::random();
    let spec = PlacementGroupSpec {
        placement_group_id: id.to_vec(),
        name: String::new(),
        bundles: vec![Bundle {
            bundle_id: Some(BundleId { placement_group_id: id.to_vec(), bundle_index: 0 }),
            unit_resources: [("CPU".to_string(), 1.0)].into_iter().collect(),
            node_id: Vec::new(),
        }],
        strategy: PlacementStrategy::Pack as i32,
        creator_job_id: Vec::new(),
    };
    let req = CreatePlacementGroupRequest { placement_group_spec: Some(spec) };
    Sizes {
        req: frame::HEADER_LEN + req.encoded_len(),
        resp: frame::HEADER_LEN + CreatePlacementGroupReply {}.encoded_len(),
    }
}

/// Waits until the GCS lists `want` alive nodes with resources reported.
fn wait_nodes(target: &Target, want: usize) -> Res<()> {
    let mut gcs = BlockingClient::new(target.gcs, target.token.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = cpu_view(&mut gcs)?;
        let alive = view.len();
        if alive >= want && view.iter().all(|(a, _)| a.is_some()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {alive} of {want} nodes alive after 30 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A warmed-up client: one group created and removed (so resources are known to the
/// GCS and the connection is open).
fn warm_client(target: &Target, shape: Shape, steps: &Mutex<Steps>) -> Res<PlacementGroups> {
    let mut pgs = PlacementGroups::new(target.gcs, target.token.clone());
    create_remove(&mut pgs, shape, steps)?;
    Ok(pgs)
}

/// Runs the suite.
pub(crate) fn run(opts: &Opts, report: &mut Report) -> Res<()> {
    let target = Target::obtain(opts)?;
    report.note(target.describe());
    report.note(format!("GCS at {}", target.gcs));
    let sizes = create_sizes();
    report.note(format!(
        "one op = CreatePlacementGroup + WaitPlacementGroupUntilReady + RemovePlacementGroup from one client in a closed loop (placed like the latency client, see pinning); raw_tcp_throughput_c1 uses the one-bundle create sizes {} / {} B; rounds: {} interleaved, {:.1} s measured per case, each run after {:.1} s warm-up",
        sizes.req, sizes.resp, opts.rounds, opts.duration_s, opts.warmup_s
    ));
    let joiner = if opts.two_nodes && target.started_here {
        let parent = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let mut args: Vec<String> = vec!["--address".into(), target.gcs.to_string()];
        if let Some(s) = &target.session {
            args.extend(["--auth-token-file".into(), s.join("auth_token").display().to_string()]);
        }
        args.extend(["--shards".into(), opts.shards.to_string()]);
        args.extend(opts.node_args.iter().cloned());
        let n = LocalNode::start(&raylet_bin(opts)?, &parent, &args, opts.keep_temp)?;
        report.note(format!("second node: started here, args [{}], temp dir {}", args.join(" "), n.dir.path.display()));
        Some(n)
    } else {
        report.note("pg_create_remove_2nodes skipped: needs a node started here and --two-nodes true");
        None
    };
    wait_nodes(&target, if joiner.is_some() { 2 } else { 1 })?;

    let place = target.placement(opts.pin)?;
    report.note(&place.describe);
    let echo = TcpEcho::start(sizes, place.server)?;
    let rounds = opts.rounds.max(1);
    let cfg = RateCfg { clients: 1, warmup: opts.warmup_time(), duration: opts.duration() / rounds, pin: place.client };
    let mut cases = vec![("pg_create_remove", Shape { strategy: PlacementStrategy::Pack, bundles: 1 })];
    if joiner.is_some() {
        cases.push(("pg_create_remove_2nodes", Shape { strategy: PlacementStrategy::StrictSpread, bundles: 2 }));
    }
    let mut raw = Vec::new();
    let mut real: Vec<Vec<Rate>> = cases.iter().map(|_| Vec::new()).collect();
    let steps: Vec<Mutex<Steps>> = cases.iter().map(|_| Mutex::new(Steps::new())).collect();
    for _ in 0..rounds {
        eprintln!("pg: raw_tcp_throughput_c1 ...");
        raw.push(throughput(&cfg, |_| echo.connect(), |c| c.rtt())?);
        for (i, (name, shape)) in cases.iter().enumerate() {
            eprintln!("pg: {name} ...");
            let steps = &steps[i];
            real[i].push(throughput(
                &cfg,
                |_| warm_client(&target, *shape, steps),
                |c| create_remove(c, *shape, steps),
            )?);
        }
    }
    let base = Measured::rate("raw_tcp_throughput_c1", &Rate::merge(raw)?);
    for (((name, shape), runs), steps) in cases.iter().zip(real).zip(steps) {
        let steps = steps.into_inner().unwrap_or_else(|p| p.into_inner());
        let what = format!("{} bundle(s) {{CPU: 1}} {:?}", shape.bundles, shape.strategy);
        report.push(
            Measured::rate(*name, &Rate::merge(runs)?).with_note(&format!("{what}; {}", steps.note())),
            base.clone(),
        );
    }
    report.note(resources_back(&target)?);
    drop(joiner);
    Ok(())
}

/// Per alive node, (CPU available, CPU total) in the GCS's view; `None` for available
/// when the node has not reported yet.
fn cpu_view(gcs: &mut BlockingClient) -> Res<Vec<(Option<f64>, f64)>> {
    let table = raylet::cli::status::fetch(gcs)?;
    Ok(table
        .node_info_list
        .iter()
        .filter(|n| n.state == NodeState::Alive as i32)
        .map(|n| {
            let avail = table
                .resources
                .iter()
                .find(|r| r.node_id == n.node_id)
                .map(|r| r.resources_available.get("CPU").copied().unwrap_or(0.0));
            (avail, n.resources_total.get("CPU").copied().unwrap_or(0.0))
        })
        .collect())
}

/// After the suite: whether every alive node shows all its CPUs available again (the GCS
/// learns availability with its next resource pull, so this waits up to 5 s for it).
fn resources_back(target: &Target) -> Res<String> {
    let mut gcs = BlockingClient::new(target.gcs, target.token.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view = cpu_view(&mut gcs)?;
        let back = view.iter().all(|&(a, t)| a.is_some_and(|a| (a - t).abs() < 1e-4));
        if back || Instant::now() > deadline {
            let shown: Vec<String> =
                view.iter().map(|(a, t)| format!("{}/{t}", a.map(|a| a.to_string()).unwrap_or("?".into()))).collect();
            return Ok(format!(
                "after the suite: CPU available/total per alive node (GCS view) [{}]{}",
                shown.join(", "),
                if back { "" } else { " -- WARNING: not everything came back" }
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
