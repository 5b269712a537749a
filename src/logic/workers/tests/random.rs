//! Randomized event sequences against a fake IO and lease layer: every invariant of the
//! pool must hold after every input, for many seeds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{drain, job, lid, ms, wid};
use crate::ids::{LeaseId, WorkerId};
use crate::logic::workers::{Action, ExitedProcess, PoolConfig, WorkerPool};

/// A process the fake IO layer spawned.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: u32,
    worker: Option<WorkerId>,
    announced: bool,
    /// Killed or told to exit: it will exit soon.
    doomed: bool,
}

/// The pool plus fake IO and lease layers that react to its actions and check them.
struct Sim {
    rng: fastrand::Rng,
    now: Instant,
    pool: WorkerPool,
    spawning: Vec<i64>,
    procs: BTreeMap<i64, Proc>,
    waiting: Vec<LeaseId>,
    cancelled: BTreeSet<LeaseId>,
    held: BTreeMap<WorkerId, LeaseId>,
    assigned: BTreeSet<LeaseId>,
    lost: BTreeSet<LeaseId>,
    exit_requests: Vec<WorkerId>,
    last_token: i64,
    next_lease: u32,
    /// Actions seen per kind, in `Action` declaration order.
    seen: [usize; 5],
}

fn pick<T: Copy>(rng: &mut fastrand::Rng, v: &[T]) -> Option<T> {
    (!v.is_empty()).then(|| v[rng.usize(..v.len())])
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let now = Instant::now();
        let cfg = PoolConfig {
            max_startup_concurrency: 1 + rng.usize(..4),
            register_timeout: Duration::from_secs(5),
            soft_limit: Some(rng.usize(..3)),
            ..Default::default()
        };
        Self {
            pool: WorkerPool::new(cfg, now, 2),
            rng,
            now,
            spawning: Vec::new(),
            procs: BTreeMap::new(),
            waiting: Vec::new(),
            cancelled: BTreeSet::new(),
            held: BTreeMap::new(),
            assigned: BTreeSet::new(),
            lost: BTreeSet::new(),
            exit_requests: Vec::new(),
            last_token: 0,
            next_lease: 0,
            seen: [0; 5],
        }
    }

    /// Drains the pool and plays the actions on the fake layers, checking each.
    fn apply(&mut self) {
        for a in drain(&mut self.pool) {
            match a {
                Action::StartProcess { token } => {
                    self.seen[0] += 1;
                    assert_eq!(token, self.last_token + 1);
                    self.last_token = token;
                    self.spawning.push(token);
                }
                Action::Assign { lease, worker } => {
                    self.seen[1] += 1;
                    assert!(!self.cancelled.contains(&lease), "cancelled pop got a worker");
                    assert!(self.assigned.insert(lease), "lease assigned twice");
                    assert!(self.held.insert(worker, lease).is_none(), "worker leased twice");
                    self.waiting.retain(|l| *l != lease);
                }
                Action::Kill { pid, .. } => {
                    self.seen[2] += 1;
                    self.procs.values_mut().filter(|p| p.pid == pid).for_each(|p| p.doomed = true);
                }
                Action::RequestExit { worker } => {
                    self.seen[3] += 1;
                    self.exit_requests.push(worker);
                }
                Action::LeaseLost { lease, worker } => {
                    self.seen[4] += 1;
                    assert_eq!(self.held.remove(&worker), Some(lease));
                    assert!(self.lost.insert(lease), "lease lost twice");
                }
            }
        }
    }

    fn step(&mut self) {
        match self.rng.u8(..10) {
            0 => self.pop(),
            1 => self.cancel(),
            2 => self.report_spawn(),
            3 => self.register(),
            4 => self.announce(),
            5 => self.give_back(),
            6 => self.exit_one(),
            7 => self.reply_exit(),
            8 => self.tick(),
            _ => {
                let (backlog, cpus) = (self.rng.usize(..6), self.rng.usize(..6));
                self.pool.handle_prestart(self.now, backlog, cpus);
            }
        }
        self.apply();
        let max = self.pool.config().max_startup_concurrency;
        assert!(self.pool.num_starting() <= max);
        assert_eq!(self.pool.num_leased(), self.held.len());
    }

    fn pop(&mut self) {
        self.next_lease += 1;
        let lease = lid(self.next_lease);
        self.pool.handle_pop_worker(self.now, lease, job(self.rng.u32(..2))).unwrap();
        self.waiting.push(lease);
    }

    fn cancel(&mut self) {
        if let Some(lease) = pick(&mut self.rng, &self.waiting) {
            assert!(self.pool.handle_cancel_pop(lease));
            self.waiting.retain(|l| *l != lease);
            self.cancelled.insert(lease);
        }
    }

    fn report_spawn(&mut self) {
        let Some(token) = pick(&mut self.rng, &self.spawning) else {
            return;
        };
        self.spawning.retain(|t| *t != token);
        if self.rng.u8(..10) == 0 {
            self.pool.handle_start_failed(self.now, token);
        } else {
            let pid = 1000 + token as u32;
            self.pool.handle_process_started(token, pid);
            let p = Proc { pid, worker: None, announced: false, doomed: false };
            self.procs.insert(token, p);
        }
    }

    fn register(&mut self) {
        let cands: Vec<i64> = self.procs.iter().filter(|(_, p)| p.worker.is_none()).map(|(t, _)| *t).collect();
        let Some(token) = pick(&mut self.rng, &cands) else {
            return;
        };
        let w = wid(token as u32);
        let proc = self.procs.get_mut(&token).unwrap();
        match self.pool.handle_register(token, w, proc.pid) {
            Ok(()) => proc.worker = Some(w),
            // The IO layer closes a refused connection; the process exits.
            Err(_) => proc.doomed = true,
        }
    }

    fn announce(&mut self) {
        let cands: Vec<(i64, WorkerId)> =
            self.procs.iter().filter(|(_, p)| !p.announced).filter_map(|(t, p)| p.worker.map(|w| (*t, w))).collect();
        let Some((token, w)) = pick(&mut self.rng, &cands) else {
            return;
        };
        self.procs.get_mut(&token).unwrap().announced = true;
        // Fails when the worker was already killed at its startup deadline.
        let _ = self.pool.handle_port_announced(self.now, w, 1);
    }

    fn give_back(&mut self) {
        let held: Vec<WorkerId> = self.held.keys().copied().collect();
        let Some(w) = pick(&mut self.rng, &held) else {
            return;
        };
        self.held.remove(&w);
        let kill = self.rng.u8(..5) == 0;
        self.pool.handle_return(self.now, w, kill, false).unwrap();
    }

    /// A doomed process, or occasionally any process, exits; reported by token or worker.
    fn exit_one(&mut self) {
        let crash = self.rng.u8(..4) == 0;
        let cands: Vec<i64> = self.procs.iter().filter(|(_, p)| p.doomed || crash).map(|(t, _)| *t).collect();
        let Some(token) = pick(&mut self.rng, &cands) else {
            return;
        };
        let proc = self.procs.remove(&token).unwrap();
        let lease = proc.worker.and_then(|w| self.held.get(&w).copied());
        let who = match (proc.worker, self.rng.bool()) {
            (Some(w), true) => ExitedProcess::Worker(w),
            _ => ExitedProcess::Token(token),
        };
        self.pool.handle_exit(self.now, who);
        self.apply();
        if let Some(lease) = lease {
            assert!(self.lost.contains(&lease), "leased worker died without LeaseLost");
        }
    }

    fn reply_exit(&mut self) {
        let Some(w) = pick(&mut self.rng, &self.exit_requests) else {
            return;
        };
        self.exit_requests.retain(|x| *x != w);
        let accepted = self.rng.bool();
        if self.pool.handle_exit_reply(self.now, w, accepted).is_ok() && accepted {
            let mine = self.procs.values_mut().filter(|p| p.worker == Some(w));
            mine.for_each(|p| p.doomed = true);
        }
    }

    fn tick(&mut self) {
        self.now += ms(self.rng.u64(..3000));
        if self.pool.poll_timeout().is_some_and(|at| at <= self.now) {
            self.pool.handle_timeout(self.now);
        }
    }
}

#[test]
fn random_event_sequences_keep_every_invariant() {
    let mut seen = [0; 5];
    for seed in 0..40 {
        let mut sim = Sim::new(seed);
        for _ in 0..400 {
            sim.step();
        }
        for (total, n) in seen.iter_mut().zip(sim.seen) {
            *total += n;
        }
    }
    assert!(seen.iter().all(|&n| n > 20), "every action kind is exercised: {seen:?}");
}
