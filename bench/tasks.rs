//! The `tasks` suite (DESIGN.md §7, issue 4 item 9).
//!
//! The node started here offers `--num-cpus N` with N idle workers prestarted (N =
//! `--held-leases`, at least 1) and the suite waits for them to be idle first. Tasks are
//! the default worker's built-in `noop`; leases ask for `{CPU: 1}`.
//!
//! - `task_sync`: `request_lease` until granted, `push_task(noop)` to the leased worker
//!   and its reply read, `return_worker` acknowledged: three RPC round trips one after
//!   another on the calling thread (pinned like the baseline, `--pin`), the driver's
//!   raylet connection on shard 0 when one is found; the worker connection is kept across
//!   iterations (the pool hands back the most recently returned worker). Per-step p50s
//!   are in its note.
//! - `task_sync_return_nowait` (extra): the same with `return_worker_nowait` (Ray's owners
//!   do not wait for the return's reply).
//! - `task_held_lease`: noop tasks per second on `--held-leases` leases held for the
//!   whole run, one client thread and driver per lease, each in a closed loop of
//!   `push_tasks(lease, [noop; --batch], --window)` (up to `--window` tasks in flight on
//!   the worker's connection, every reply read and decoded).
//! - `task_held_lease_sync_c1` (extra): one held lease, one `push_task(noop)` at a time.
//!
//! Baselines: `raw_tcp_rtt` (loopback TCP ping-pong with a RequestWorkerLease request's
//! and grant's sizes, same run, same pinning) for the latencies; for `task_held_lease`,
//! `raw_tcp_pipelined_c<L>_w<W>`: L threads each pipelining W requests of a noop
//! PushTask's sizes against a thread-per-connection echo server (the same shape as the
//! real case); for the sync rate, `raw_tcp_throughput_c1` with those sizes. Throughputs
//! alternate with their baselines in rounds.

use crate::baseline::{Sizes, TcpEcho};
use crate::cluster::Target;
use crate::lease::{
    driver, driver_on_shard0, lap, leak_check, lease_opts, lease_sizes, p50_us, sched_node_args, wait_idle_workers,
};
use crate::measure::{histogram, latency_interleaved, throughput, throughput_counted, LatencyCfg, Op, PinGuard};
use crate::measure::{Rate, RateCfg};
use crate::report::{Measured, Report};
use crate::{Opts, Res};
use prost::Message;
use raylet::client::{Driver, Lease, Task};
use raylet::ids::LeaseId;
use raylet::rpc::frame;
use raylet::wire::rpc::{push_task_request, NoopTask, PushTaskReply, PushTaskRequest};
use std::time::Instant;

/// A lease held by one throughput client, returned when the client is dropped.
struct Held {
    d: Driver,
    lease: Lease,
}

impl Held {
    fn new(target: &Target) -> Res<Self> {
        let mut d = driver(target);
        let lease = d.request_lease(&lease_opts()).map_err(|e| format!("RequestWorkerLease: {e}"))?;
        let mut h = Self { d, lease };
        // Connects to the worker and checks it answers.
        h.d.push_task(&h.lease, &Task::Noop).map_err(|e| format!("PushTask: {e}"))?;
        Ok(h)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Err(e) = self.d.return_worker(&self.lease) {
            eprintln!("raylet-bench: returning a held lease: {e}");
        }
    }
}

/// Bytes on the wire of a noop PushTask request and its reply.
fn push_sizes() -> Sizes {
    let req = PushTaskRequest {
        lease_id: LeaseId::random().to_vec(),
        task: Some(push_task_request::Task::Noop(NoopTask {})),
    };
    Sizes {
        req: frame::HEADER_LEN + req.encoded_len(),
        resp: frame::HEADER_LEN + PushTaskReply::default().encoded_len(),
    }
}

/// Runs the suite.
pub(crate) fn run(opts: &Opts, report: &mut Report) -> Res<()> {
    let leases = opts.held_leases.max(1);
    let (window, batch) = (opts.window.max(1), opts.batch.max(1));
    let target = Target::obtain_with(opts, &sched_node_args(leases))?;
    report.note(target.describe());
    report.note(wait_idle_workers(&target, leases)?);
    let place = target.placement(opts.pin)?;
    report.note(&place.describe);
    let sizes = lease_sizes(&target)?;
    let push = push_sizes();
    let cfg = LatencyCfg { warmup: opts.warmup, iters: opts.iters, rounds: opts.rounds };
    report.note(format!(
        "task_sync = RequestWorkerLease {{CPU: 1}} until granted + PushTask noop (reply read) + ReturnWorker acked; raw_tcp_rtt uses the lease request/grant sizes {} / {} B; noop PushTask {} / {} B",
        sizes.req, sizes.resp, push.req, push.resp
    ));
    report.note(format!(
        "task_held_lease = noop tasks/s on {leases} held lease(s), one thread each, push_tasks of {batch} tasks with {window} in flight; rounds: {r} interleaved with the baselines; {:.1} s measured per case, runs after {:.1} s warm-up; task_sync: {} warm-up + {} timed",
        opts.duration_s,
        opts.warmup_s,
        cfg.warmup,
        cfg.iters,
        r = cfg.rounds
    ));

    // task_sync and its nowait variant beside raw_tcp_rtt.
    eprintln!("tasks: task_sync vs raw_tcp_rtt ...");
    let echo = TcpEcho::start(sizes, place.server)?;
    let mut raw = echo.connect()?;
    let (mut d, shard) = driver_on_shard0(&target)?;
    let (mut nowait, _) = driver_on_shard0(&target)?;
    let (mut grant, mut pushed, mut ret) = (histogram(), histogram(), histogram());
    let hists = {
        let _pin = PinGuard::new(place.client)?;
        let mut raw_op = || raw.rtt();
        let mut sync_op = || -> Res<()> {
            let t = Instant::now();
            let l = d.request_lease(&lease_opts()).map_err(|e| format!("RequestWorkerLease: {e}"))?;
            let t = lap(&mut grant, t);
            d.push_task(&l, &Task::Noop).map_err(|e| format!("PushTask: {e}"))?;
            let t = lap(&mut pushed, t);
            d.return_worker(&l).map_err(|e| format!("ReturnWorker: {e}"))?;
            lap(&mut ret, t);
            Ok(())
        };
        let mut nowait_op = || -> Res<()> {
            let l = nowait.request_lease(&lease_opts()).map_err(|e| format!("RequestWorkerLease: {e}"))?;
            nowait.push_task(&l, &Task::Noop).map_err(|e| format!("PushTask: {e}"))?;
            nowait.return_worker_nowait(&l).map_err(|e| format!("ReturnWorker (nowait): {e}"))
        };
        latency_interleaved(&cfg, &mut [&mut raw_op as Op<'_>, &mut sync_op, &mut nowait_op])?
    };
    nowait.node_stats(target.node_manager).map_err(|e| format!("GetNodeStats: {e}"))?;
    if let Some(e) = nowait.take_errors().first() {
        return Err(format!("a ReturnWorker sent without waiting failed: {e}"));
    }
    drop((d, nowait, raw, echo));
    let base = Measured::latency("raw_tcp_rtt", &hists[0]);
    let on = shard.map(|s| format!("raylet connection on shard {s}")).unwrap_or_else(|| "raylet shard unknown".into());
    report.push(
        Measured::latency("task_sync", &hists[1]).with_note(&format!(
            "{on}; step p50s incl. warm-up: grant {:.1} us, noop push+reply {:.1} us, acked return {:.1} us",
            p50_us(&grant),
            p50_us(&pushed),
            p50_us(&ret)
        )),
        base.clone(),
    );
    report.push(Measured::latency("task_sync_return_nowait", &hists[2]).with_note("return not awaited"), base);

    // Throughputs on held leases.
    let echo = TcpEcho::start(push, None)?;
    let rounds = opts.rounds.max(1);
    let per_run = opts.duration() / rounds;
    let tasks = vec![Task::Noop; batch];
    eprintln!("tasks: task_held_lease vs raw_tcp_pipelined_c{leases}_w{window} ...");
    let cfg = RateCfg { clients: leases, warmup: opts.warmup_time(), duration: per_run, pin: None };
    let (mut raw, mut real) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        raw.push(throughput_counted(&cfg, |_| echo.connect(), |c| c.pipelined(batch, window).map(|()| batch as u64))?);
        real.push(throughput_counted(
            &cfg,
            |_| Held::new(&target),
            |h| {
                let out = h.d.push_tasks(&h.lease, &tasks, window).map_err(|e| format!("push_tasks: {e}"))?;
                if out.len() != tasks.len() {
                    return Err(format!("push_tasks returned {} results for {} tasks", out.len(), tasks.len()));
                }
                Ok(out.len() as u64)
            },
        )?);
    }
    let batch_note = format!("per-op = one push_tasks call of {batch} tasks");
    report.push(
        Measured::rate("task_held_lease", &Rate::merge(real)?).with_note(&batch_note),
        Measured::rate(format!("raw_tcp_pipelined_c{leases}_w{window}"), &Rate::merge(raw)?)
            .with_note(&format!("per-op = {batch} pipelined round trips")),
    );

    eprintln!("tasks: task_held_lease_sync_c1 vs raw_tcp_throughput_c1 ...");
    let cfg = RateCfg { clients: 1, warmup: opts.warmup_time(), duration: per_run, pin: place.client };
    let echo = TcpEcho::start(push, place.server)?;
    let (mut raw, mut real) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        raw.push(throughput(&cfg, |_| echo.connect(), |c| c.rtt())?);
        real.push(throughput(
            &cfg,
            |_| Held::new(&target),
            |h| h.d.push_task(&h.lease, &Task::Noop).map(drop).map_err(|e| format!("PushTask: {e}")),
        )?);
    }
    report.push(
        Measured::rate("task_held_lease_sync_c1", &Rate::merge(real)?),
        Measured::rate("raw_tcp_throughput_c1", &Rate::merge(raw)?),
    );
    report.note(leak_check(&target)?);
    Ok(())
}
