//! The `lease` suite (DESIGN.md §7, issue 4 item 9), and the scheduling helpers the
//! `tasks` suite shares.
//!
//! The node started here offers `--num-cpus N` and prestarts N idle workers (N = the
//! largest `--concurrency`, 16 by default; `--num-workers-soft-limit N` so none is
//! reaped); the suite waits until GetNodeStats shows them all idle before measuring.
//! Every lease asks for `{CPU: 1}` with the default (hybrid) strategy through
//! `raylet::client::Driver::request_lease`; a single node never spills back.
//!
//! - `lease_return_c1`: one `RequestWorkerLease` until granted plus one acknowledged
//!   `ReturnWorker`, one after another on one driver connection (two RPC round trips),
//!   timed on the calling thread (pinned like the baseline, `--pin`), with the driver's
//!   raylet connection served by shard 0 (the scheduler's owner) when one can be found.
//!   Per-step p50s (grant, return) are in its note.
//! - `lease_return_nowait_c1` (extra): the same with `return_worker_nowait`, as Ray's
//!   owners return workers: the return is written and not waited for; the raylet applies
//!   it before the next request on the connection.
//! - `lease_return_c<N>` for N > 1: per-operation latency (lease + acknowledged return)
//!   with N client threads in closed loops, each its own `Driver` and connections
//!   (wherever SO_REUSEPORT puts them), unpinned.
//! - `lease_throughput_c<N>` for N > 1: the rate of those same runs (lease + return
//!   pairs per second, all threads together).
//!
//! Baselines: `raw_tcp_rtt` (a raw loopback TCP ping-pong with the bytes of a
//! RequestWorkerLease request and its granted reply, same run, same pinning) for every
//! latency; `raw_tcp_throughput_c<N>` (N threads ping-ponging those sizes against a
//! thread-per-connection echo server, interleaved in rounds with the real runs) for the
//! throughputs. The raw per-round-trip latency at c<N> is in each `lease_return_c<N>`
//! note.

use crate::baseline::{Sizes, TcpEcho};
use crate::cluster::{Placement, Target};
use crate::measure::{histogram, latency_interleaved, throughput, LatencyCfg, Op, PinGuard, Rate, RateCfg};
use crate::report::{Measured, Report};
use crate::{Opts, Res};
use hdrhistogram::Histogram;
use prost::Message;
use raylet::client::{Driver, LeaseOptions};
use raylet::ids::{JobId, LeaseId, WorkerId};
use raylet::rpc::frame;
use raylet::wire::rpc::{
    node_manager_service, Address, LeaseSpec, RequestWorkerLeaseReply, RequestWorkerLeaseRequest, ReturnWorkerReply,
    ReturnWorkerRequest, SchedulingStrategyKind,
};
use std::time::{Duration, Instant};

/// What every lease of the bench asks for.
pub(crate) fn lease_opts() -> LeaseOptions {
    LeaseOptions::cpus(1.0)
}

/// `raylet start` flags for a node that can lease `workers` workers at once, all
/// prestarted and never reaped during the run.
pub(crate) fn sched_node_args(workers: usize) -> Vec<String> {
    let n = workers.max(1).to_string();
    vec![
        "--num-cpus".into(),
        n.clone(),
        "--num-prestart-workers".into(),
        n.clone(),
        "--num-workers-soft-limit".into(),
        n,
    ]
}

/// A driver of the bench: leases start at the target's node.
pub(crate) fn driver(target: &Target) -> Driver {
    Driver::new(target.node_manager, target.token.clone()).with_timeout(Duration::from_secs(30))
}

/// Microseconds of a nanosecond quantile.
pub(crate) fn p50_us(h: &Histogram<u64>) -> f64 {
    h.value_at_quantile(0.5) as f64 / 1000.0
}

/// Records the time since `t` and returns now.
pub(crate) fn lap(h: &mut Histogram<u64>, t: Instant) -> Instant {
    let now = Instant::now();
    h.saturating_record(now.duration_since(t).as_nanos() as u64);
    now
}

/// Waits until the node has `want` idle workers and none starting (GetNodeStats). A node
/// started here must get there within a minute; an external one is given 5 s, after
/// which the suite goes on (its warm-up then starts workers) and says so.
pub(crate) fn wait_idle_workers(target: &Target, want: usize) -> Res<String> {
    let mut d = driver(target);
    let t0 = Instant::now();
    let patience = if target.started_here { Duration::from_secs(60) } else { Duration::from_secs(5) };
    loop {
        let s = d.node_stats(target.node_manager).map_err(|e| format!("GetNodeStats: {e}"))?;
        let (idle, starting) = (s.num_idle_workers as usize, s.num_starting_workers);
        if idle >= want && starting == 0 {
            return Ok(format!(
                "workers: {idle} idle, 0 starting, {} leased before measuring (waited {:.1} s for {want})",
                s.num_granted_leases,
                t0.elapsed().as_secs_f64()
            ));
        }
        if t0.elapsed() > patience {
            let line = format!(
                "workers: only {idle} idle and {starting} starting after {:.0} s (wanted {want} idle)",
                patience.as_secs_f64()
            );
            if target.started_here {
                return Err(line);
            }
            return Ok(format!("{line}; WARNING: the warm-up starts the rest, cold starts may remain in the tails"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Bytes on the wire of a RequestWorkerLease request as the driver sends it and of a
/// granted reply, from one real grant (returned at once).
pub(crate) fn lease_sizes(target: &Target) -> Res<Sizes> {
    let mut d = driver(target);
    let id = LeaseId::random();
    // The same fields `Driver::request_lease` fills for `lease_opts()`.
    let req = RequestWorkerLeaseRequest {
        lease_spec: Some(LeaseSpec {
            lease_id: id.to_vec(),
            job_id: JobId([0, 0, 0, 1]).to_vec(),
            caller_address: Some(Address { worker_id: WorkerId::random().to_vec(), ..Default::default() }),
            required_resources: lease_opts().resources.into_iter().collect(),
            strategy: SchedulingStrategyKind::Default as i32,
            ..Default::default()
        }),
        backlog_size: 0,
        grant_or_reject: false,
        is_selected_based_on_locality: false,
    };
    let nm = node_manager_service::SERVICE_ID;
    let reply: RequestWorkerLeaseReply = d
        .call(target.node_manager, nm, node_manager_service::method::REQUEST_WORKER_LEASE, &req)
        .map_err(|e| format!("RequestWorkerLease: {e}"))?;
    let w = reply
        .worker_address
        .clone()
        .filter(|w| !w.worker_id.is_empty())
        .ok_or_else(|| format!("the first lease was not granted on the node (spilled or cancelled): {reply:?}"))?;
    let ret = ReturnWorkerRequest {
        worker_port: w.port,
        worker_id: w.worker_id,
        disconnect_worker: false,
        worker_exiting: false,
        disconnect_worker_error_detail: String::new(),
        lease_id: id.to_vec(),
    };
    let _: ReturnWorkerReply = d
        .call(target.node_manager, nm, node_manager_service::method::RETURN_WORKER, &ret)
        .map_err(|e| format!("ReturnWorker: {e}"))?;
    Ok(Sizes { req: frame::HEADER_LEN + req.encoded_len(), resp: frame::HEADER_LEN + reply.encoded_len() })
}

/// A driver connected to the target's raylet, and the raylet shard serving it (drivers
/// prefer shard 0, the scheduler's owner; see `RpcConn::connect_to_shard0`).
pub(crate) fn driver_on_shard0(target: &Target) -> Res<(Driver, Option<usize>)> {
    let mut d = driver(target);
    d.node_stats(target.node_manager).map_err(|e| format!("GetNodeStats: {e}"))?;
    let shard = d.connected_shard(target.node_manager).map(|s| s as usize);
    Ok((d, shard))
}

/// After the suite: whether every lease came back (nothing granted, all CPUs available).
pub(crate) fn leak_check(target: &Target) -> Res<String> {
    let s = driver(target).node_stats(target.node_manager).map_err(|e| format!("GetNodeStats: {e}"))?;
    let total = s.resources_total.get("CPU").copied().unwrap_or(0.0);
    let avail = s.resources_available.get("CPU").copied().unwrap_or(0.0);
    let clean = s.num_granted_leases == 0 && (total - avail).abs() < 1e-4;
    Ok(format!(
        "after the suite: {} granted leases, CPU {avail} of {total} available, {} idle workers{}",
        s.num_granted_leases,
        s.num_idle_workers,
        if clean { "" } else { " -- WARNING: not everything came back" }
    ))
}

/// A driver connected to the node (one lease and return done), for a throughput client.
fn warm_driver(target: &Target) -> Res<Driver> {
    let mut d = driver(target);
    lease_return(&mut d)?;
    Ok(d)
}

/// One lease until granted, one acknowledged return.
fn lease_return(d: &mut Driver) -> Res<()> {
    let l = d.request_lease(&lease_opts()).map_err(|e| format!("RequestWorkerLease: {e}"))?;
    d.return_worker(&l).map_err(|e| format!("ReturnWorker: {e}"))
}

/// Runs the suite.
pub(crate) fn run(opts: &Opts, report: &mut Report) -> Res<()> {
    let mut conc: Vec<usize> = opts.concurrency.iter().map(|&c| c.max(1)).collect();
    conc.sort_unstable();
    conc.dedup();
    let workers = conc.last().copied().unwrap_or(1);
    let target = Target::obtain_with(opts, &sched_node_args(workers))?;
    report.note(target.describe());
    report.note(wait_idle_workers(&target, workers)?);
    let place = target.placement(opts.pin)?;
    report.note(&place.describe);
    let sizes = lease_sizes(&target)?;
    let cfg = LatencyCfg { warmup: opts.warmup, iters: opts.iters, rounds: opts.rounds };
    report.note(format!(
        "each lease: RequestWorkerLease {{CPU: 1}} (default strategy) until granted, then ReturnWorker acknowledged (nowait: not waited for); request {} B, granted reply {} B on the wire, the raw baselines use these sizes",
        sizes.req, sizes.resp
    ));
    report.note(format!(
        "rounds: {r} interleaved with the baseline; c1: {} warm-up + {} timed iterations per case; c<N>: {:.1} s measured per case, each run after {:.1} s warm-up",
        cfg.warmup,
        cfg.iters,
        opts.duration_s,
        opts.warmup_s,
        r = cfg.rounds
    ));
    let raw_rtt = single_client(&target, sizes, &cfg, &place, conc.contains(&1), report)?;
    concurrent(&target, sizes, opts, &conc, &raw_rtt, report)?;
    report.note(leak_check(&target)?);
    Ok(())
}

/// `raw_tcp_rtt`, and with `with_lease` the c1 cases beside it.
fn single_client(
    target: &Target,
    sizes: Sizes,
    cfg: &LatencyCfg,
    place: &Placement,
    with_lease: bool,
    report: &mut Report,
) -> Res<Measured> {
    let echo = TcpEcho::start(sizes, place.server)?;
    let mut raw = echo.connect()?;
    if !with_lease {
        let _pin = PinGuard::new(place.client)?;
        let mut raw_op = || raw.rtt();
        let h = latency_interleaved(cfg, &mut [&mut raw_op as Op<'_>])?;
        return Ok(Measured::latency("raw_tcp_rtt", &h[0]));
    }
    eprintln!("lease: lease_return_c1 vs raw_tcp_rtt ...");
    let (mut d, shard) = driver_on_shard0(target)?;
    let (mut nowait, _) = driver_on_shard0(target)?;
    let (mut grant, mut ret, mut nowait_grant) = (histogram(), histogram(), histogram());
    let hists = {
        let _pin = PinGuard::new(place.client)?;
        let mut raw_op = || raw.rtt();
        let mut lease_op = || -> Res<()> {
            let t = Instant::now();
            let l = d.request_lease(&lease_opts()).map_err(|e| format!("RequestWorkerLease: {e}"))?;
            let t = lap(&mut grant, t);
            d.return_worker(&l).map_err(|e| format!("ReturnWorker: {e}"))?;
            lap(&mut ret, t);
            Ok(())
        };
        let mut nowait_op = || -> Res<()> {
            let t = Instant::now();
            let l = nowait.request_lease(&lease_opts()).map_err(|e| format!("RequestWorkerLease: {e}"))?;
            lap(&mut nowait_grant, t);
            nowait.return_worker_nowait(&l).map_err(|e| format!("ReturnWorker (nowait): {e}"))
        };
        latency_interleaved(cfg, &mut [&mut raw_op, &mut lease_op, &mut nowait_op])?
    };
    // A call on the same connection orders it after the last unawaited return.
    nowait.node_stats(target.node_manager).map_err(|e| format!("GetNodeStats: {e}"))?;
    if let Some(e) = nowait.take_errors().first() {
        return Err(format!("a ReturnWorker sent without waiting failed: {e}"));
    }
    let base = Measured::latency("raw_tcp_rtt", &hists[0]);
    let on = shard.map(|s| format!("raylet connection on shard {s}")).unwrap_or_else(|| "raylet shard unknown".into());
    report.push(
        Measured::latency("lease_return_c1", &hists[1]).with_note(&format!(
            "{on}; step p50s incl. warm-up: grant {:.1} us, acked return {:.1} us",
            p50_us(&grant),
            p50_us(&ret)
        )),
        base.clone(),
    );
    report.push(
        Measured::latency("lease_return_nowait_c1", &hists[2])
            .with_note(&format!("return not awaited; grant step p50 {:.1} us", p50_us(&nowait_grant))),
        base.clone(),
    );
    Ok(base)
}

/// `lease_return_c<N>` and `lease_throughput_c<N>` for every N > 1.
fn concurrent(
    target: &Target,
    sizes: Sizes,
    opts: &Opts,
    conc: &[usize],
    raw_rtt: &Measured,
    report: &mut Report,
) -> Res<()> {
    let echo = TcpEcho::start(sizes, None)?;
    let rounds = opts.rounds.max(1);
    for &n in conc.iter().filter(|&&n| n > 1) {
        let cfg = RateCfg { clients: n, warmup: opts.warmup_time(), duration: opts.duration() / rounds, pin: None };
        eprintln!("lease: lease_return_c{n} / lease_throughput_c{n} vs raw TCP at c{n} ...");
        let (mut raw, mut real) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            raw.push(throughput(&cfg, |_| echo.connect(), |c| c.rtt())?);
            real.push(throughput(&cfg, |_| warm_driver(target), lease_return)?);
        }
        let (raw, real) = (Rate::merge(raw)?, Rate::merge(real)?);
        report.push(
            Measured::latency(format!("lease_return_c{n}"), &real.latency).with_note(&format!(
                "{n} threads in closed loops, {:.0} lease+return/s; raw TCP round trip at c{n}: p50 {:.1} us",
                real.ops_per_s,
                p50_us(&raw.latency)
            )),
            raw_rtt.clone(),
        );
        report.push(
            Measured::rate(format!("lease_throughput_c{n}"), &real),
            Measured::rate(format!("raw_tcp_throughput_c{n}"), &raw),
        );
    }
    Ok(())
}
