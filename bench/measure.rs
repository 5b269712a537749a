//! The measurement loops every suite shares: interleaved latency loops on the calling
//! thread, a throughput runner with N client threads, and thread pinning.
//!
//! Latency: each operation runs on the caller's thread, timed with two `Instant` reads
//! (tens of ns, small against a round trip), recorded in nanoseconds in an HDR histogram
//! (3 significant digits). No IO of its own: the closures do the work.

use crate::Res;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// A fresh histogram of nanoseconds, 1 ns to 100 s.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(d.as_nanos().min(u128::from(u64::MAX)) as u64);
}

/// How long latency loops run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LatencyCfg {
    /// Untimed iterations per operation before the first round.
    pub(crate) warmup: u64,
    /// Timed iterations per operation, over all rounds.
    pub(crate) iters: u64,
    /// Rounds the operations alternate in.
    pub(crate) rounds: u32,
}

/// A named operation for [`latency_interleaved`].
pub(crate) type Op<'a> = &'a mut dyn FnMut() -> Res<()>;

/// Times every operation in `ops` on this thread: a warm-up of each, then `rounds`
/// rounds in which each runs `iters / rounds` timed iterations in turn (after a short
/// untimed re-warm, since the peer may have parked while the others ran). Returns one
/// histogram per operation, in order.
pub(crate) fn latency_interleaved(cfg: &LatencyCfg, ops: &mut [Op<'_>]) -> Res<Vec<Histogram<u64>>> {
    let rounds = u64::from(cfg.rounds.max(1));
    let per_round = cfg.iters.div_ceil(rounds).max(1);
    let rewarm = cfg.warmup.min(200);
    for op in ops.iter_mut() {
        for _ in 0..cfg.warmup {
            op()?;
        }
    }
    let mut hists: Vec<Histogram<u64>> = ops.iter().map(|_| histogram()).collect();
    for _ in 0..rounds {
        for (op, h) in ops.iter_mut().zip(hists.iter_mut()) {
            for _ in 0..rewarm {
                op()?;
            }
            for _ in 0..per_round {
                let t = Instant::now();
                op()?;
                record(h, t.elapsed());
            }
        }
    }
    Ok(hists)
}

/// How a throughput run is shaped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateCfg {
    /// Client threads, each with its own connection.
    pub(crate) clients: usize,
    /// Untimed time after all clients are connected.
    pub(crate) warmup: Duration,
    /// Measured time.
    pub(crate) duration: Duration,
    /// The CPU every client thread is pinned to (single-client runs use the latency
    /// client's CPU, so they are placed like the latency cases and their baselines).
    pub(crate) pin: Option<usize>,
}

/// What a throughput run measured.
#[derive(Debug)]
pub(crate) struct Rate {
    /// Operations completed per second in the measured window, all clients together.
    pub(crate) ops_per_s: f64,
    /// Operations completed in the window.
    pub(crate) ops: u64,
    /// Fewest and most operations one client completed (fairness).
    pub(crate) per_client: (u64, u64),
    /// Per-operation latency under this load, ns.
    pub(crate) latency: Histogram<u64>,
    /// Rate of each run merged into this one.
    pub(crate) runs: Vec<f64>,
    /// Measured time, all runs together.
    pub(crate) elapsed: Duration,
}

impl Rate {
    /// Several runs of the same case as one: total operations over total measured time.
    /// Each run starts new client threads and connections, so luck of thread placement
    /// and shard choice averages out instead of deciding the result.
    pub(crate) fn merge(runs: Vec<Self>) -> Res<Self> {
        let mut out = Self {
            ops_per_s: 0.0,
            ops: 0,
            per_client: (u64::MAX, 0),
            latency: histogram(),
            runs: Vec::new(),
            elapsed: Duration::ZERO,
        };
        for r in runs {
            out.ops += r.ops;
            out.elapsed += r.elapsed;
            out.per_client = (out.per_client.0.min(r.per_client.0), out.per_client.1.max(r.per_client.1));
            out.latency.add(&r.latency).map_err(|e| format!("merging histograms: {e}"))?;
            out.runs.extend(r.runs);
        }
        out.ops_per_s = out.ops as f64 / out.elapsed.as_secs_f64().max(1e-9);
        Ok(out)
    }
}

const WARM: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Runs `cfg.clients` threads, each making its client with `make(i)` and calling `op` in
/// a closed loop; counts the operations that complete inside the measured window.
pub(crate) fn throughput<C, M, O>(cfg: &RateCfg, make: M, op: O) -> Res<Rate>
where
    M: Fn(usize) -> Res<C> + Sync,
    O: Fn(&mut C) -> Res<()> + Sync,
{
    throughput_counted(cfg, make, |c| op(c).map(|()| 1))
}

/// Like [`throughput`] for calls that each complete several operations (a batch): `op`
/// returns how many. The latency histogram holds one sample per call, not per operation.
pub(crate) fn throughput_counted<C, M, O>(cfg: &RateCfg, make: M, op: O) -> Res<Rate>
where
    M: Fn(usize) -> Res<C> + Sync,
    O: Fn(&mut C) -> Res<u64> + Sync,
{
    let phase = AtomicU8::new(WARM);
    let start = Barrier::new(cfg.clients + 1);
    let (per, elapsed) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..cfg.clients)
            .map(|i| {
                let (phase, start, make, op) = (&phase, &start, &make, &op);
                let pin = cfg.pin;
                scope.spawn(move || -> Res<(u64, Histogram<u64>)> {
                    let client = pin.map_or(Ok(()), pin_current).and_then(|()| make(i));
                    // Everyone reaches the barrier, even a client that failed to connect,
                    // so the others are not left waiting.
                    start.wait();
                    let mut client = client?;
                    let (mut n, mut h) = (0u64, histogram());
                    while phase.load(Relaxed) != STOP {
                        let t = Instant::now();
                        let done = op(&mut client)?;
                        if phase.load(Relaxed) == MEASURE {
                            record(&mut h, t.elapsed());
                            n += done;
                        }
                    }
                    Ok((n, h))
                })
            })
            .collect();
        start.wait();
        std::thread::sleep(cfg.warmup);
        phase.store(MEASURE, Relaxed);
        let t0 = Instant::now();
        std::thread::sleep(cfg.duration);
        phase.store(STOP, Relaxed);
        let elapsed = t0.elapsed();
        let per: Vec<Res<(u64, Histogram<u64>)>> =
            workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err("a client thread panicked".into()))).collect();
        (per, elapsed)
    });
    let mut latency = histogram();
    let (mut ops, mut lo, mut hi) = (0u64, u64::MAX, 0u64);
    for r in per {
        let (n, h) = r?;
        latency.add(&h).map_err(|e| format!("merging histograms: {e}"))?;
        ops += n;
        lo = lo.min(n);
        hi = hi.max(n);
    }
    let rate = ops as f64 / elapsed.as_secs_f64();
    Ok(Rate { ops_per_s: rate, ops, per_client: (lo, hi), latency, runs: vec![rate], elapsed })
}

/// The CPUs this thread may run on.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    match sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect(),
    }
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_current(cpu: usize) -> Res<()> {
    set_affinity(&[cpu])
}

fn set_affinity(cpus: &[usize]) -> Res<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).map_err(|e| format!("cpu {c}: {e}"))?;
    }
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(|e| format!("pinning to {cpus:?}: {e}"))
}

/// Pins the calling thread to a CPU until dropped, then restores its previous CPUs (so
/// threads spawned later, e.g. throughput clients, are not confined to it).
#[derive(Debug)]
pub(crate) struct PinGuard {
    previous: Option<Vec<usize>>,
}

impl PinGuard {
    /// Pins to `cpu` if given; a no-op guard otherwise.
    pub(crate) fn new(cpu: Option<usize>) -> Res<Self> {
        let Some(cpu) = cpu else { return Ok(Self { previous: None }) };
        let previous = allowed_cpus();
        pin_current(cpu)?;
        Ok(Self { previous: Some(previous) })
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Some(p) = self.previous.take() {
            if let Err(e) = set_affinity(&p) {
                eprintln!("raylet-bench: cannot restore CPU affinity: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{Sizes, TcpEcho, UdsPingPong};

    #[test]
    fn interleaved_loops_time_every_iteration_of_every_op() {
        let sizes = Sizes { req: 64, resp: 68 };
        let mut uds = UdsPingPong::new(sizes, None).unwrap();
        let echo = TcpEcho::start(sizes, None).unwrap();
        let mut tcp = echo.connect().unwrap();
        let mut calls = 0u64;
        let cfg = LatencyCfg { warmup: 3, iters: 10, rounds: 3 };
        let mut a = || uds.rtt();
        let mut b = || tcp.rtt();
        let mut c = || {
            calls += 1;
            Ok(())
        };
        let h = latency_interleaved(&cfg, &mut [&mut a, &mut b, &mut c]).unwrap();
        // ceil(10 / 3) = 4 timed per round, 3 rounds; re-warm min(3, 200) per round.
        assert!(h.iter().all(|h| h.len() == 12));
        assert_eq!(calls, 3 + 3 * (3 + 4));
    }

    #[test]
    fn a_failing_op_stops_the_loop() {
        let cfg = LatencyCfg { warmup: 0, iters: 5, rounds: 1 };
        let mut bad = || Err("boom".to_string());
        assert_eq!(latency_interleaved(&cfg, &mut [&mut bad]).unwrap_err(), "boom");
    }
}
