//! [`WorkerPool`]: the state and transitions described in the parent module.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use super::{
    Action, DriverInfo, ExitedProcess, PoolConfig, RegisterError, StartingInfo, TransitionError, WorkerInfo,
    WorkerState,
};
use crate::ids::{JobId, LeaseId, WorkerId};
use crate::logic::timers::TimerTable;

/// Periodic and backoff timers of the pool; startup deadlines are kept per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PoolTimer {
    /// The next idle-reaping pass.
    Reap,
    /// End of the pause after a spawn failure.
    StartRetry,
}

/// A spawned (or spawning) process that has not registered.
#[derive(Debug, Clone, Copy)]
struct Starting {
    pid: Option<u32>,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Worker {
    pid: u32,
    token: i64,
    state: WorkerState,
    job: Option<JobId>,
    port: Option<u16>,
    /// `Some` exactly while `Registered`: the startup deadline it still holds.
    startup_deadline: Option<Instant>,
    /// `Some` exactly while `Idle`: its key in `WorkerPool::idle`.
    idle_key: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct PendingPop {
    lease: LeaseId,
    job: JobId,
}

/// The worker-pool state machine of one node. See the module docs for the protocol.
#[derive(Debug)]
pub struct WorkerPool {
    config: PoolConfig,
    available_cpus: usize,
    next_token: i64,
    starting: BTreeMap<i64, Starting>,
    /// Deadlines of every process in startup (Starting and Registered), by token.
    startup_deadlines: BTreeSet<(Instant, i64)>,
    workers: BTreeMap<WorkerId, Worker>,
    token_to_worker: BTreeMap<i64, WorkerId>,
    /// Idle workers in the order they became idle (key: monotonic sequence), with the time.
    idle: BTreeMap<u64, (WorkerId, Instant)>,
    next_idle_key: u64,
    leases: BTreeMap<LeaseId, WorkerId>,
    /// Pops waiting for a worker, oldest first. No idle worker fits any of them.
    pending: VecDeque<PendingPop>,
    drivers: BTreeMap<WorkerId, DriverInfo>,
    first_driver_seen: bool,
    timers: TimerTable<PoolTimer>,
    actions: VecDeque<Action>,
}

fn fits(worker_job: Option<JobId>, job: JobId) -> bool {
    worker_job.is_none_or(|j| j == job)
}

impl WorkerPool {
    /// A pool with no processes; `available_cpus` feeds the default soft limit.
    pub fn new(config: PoolConfig, now: Instant, available_cpus: usize) -> Self {
        let mut timers = TimerTable::new();
        if !config.kill_idle_interval.is_zero() {
            timers.set(PoolTimer::Reap, now + config.kill_idle_interval);
        }
        Self {
            config,
            available_cpus,
            next_token: 1,
            starting: BTreeMap::new(),
            startup_deadlines: BTreeSet::new(),
            workers: BTreeMap::new(),
            token_to_worker: BTreeMap::new(),
            idle: BTreeMap::new(),
            next_idle_key: 0,
            leases: BTreeMap::new(),
            pending: VecDeque::new(),
            drivers: BTreeMap::new(),
            first_driver_seen: false,
            timers,
            actions: VecDeque::new(),
        }
    }

    // ----- outputs -----

    /// The next action to perform; drain until `None` after every input.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let startup = self.startup_deadlines.first().map(|&(at, _)| at);
        match (startup, self.timers.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- lease side -----

    /// A lease wants a worker of `job`: assign the most recently idled fitting worker, else
    /// queue the request and start a process if startup concurrency allows.
    pub fn handle_pop_worker(&mut self, now: Instant, lease: LeaseId, job: JobId) -> Result<(), TransitionError> {
        if self.leases.contains_key(&lease) || self.pending.iter().any(|p| p.lease == lease) {
            return Err(TransitionError::DuplicateLease(lease));
        }
        let found = self
            .idle
            .iter()
            .rev()
            .find(|(_, (id, _))| self.workers.get(id).is_some_and(|w| fits(w.job, job)))
            .map(|(&key, &(id, _))| (key, id));
        match found {
            Some((key, id)) => {
                self.idle.remove(&key);
                self.assign(id, lease, job);
            }
            None => {
                self.pending.push_back(PendingPop { lease, job });
                self.start_for_waiting(now);
            }
        }
        Ok(())
    }

    /// The lease was cancelled before a worker arrived. Returns whether it was waiting; a
    /// lease that already holds a worker must be returned with [`Self::handle_return`].
    pub fn handle_cancel_pop(&mut self, lease: LeaseId) -> bool {
        let before = self.pending.len();
        self.pending.retain(|p| p.lease != lease);
        self.pending.len() != before
    }

    /// The lease holding `worker` gave it back: it becomes available again, or is killed
    /// when `kill` is asked or the worker said it is `exiting`.
    pub fn handle_return(
        &mut self,
        now: Instant,
        worker: WorkerId,
        kill: bool,
        exiting: bool,
    ) -> Result<(), TransitionError> {
        let w = self.worker_in(worker, "Leased", |s| matches!(s, WorkerState::Leased(_)))?;
        let (pid, state) = (w.pid, w.state);
        if kill || exiting {
            // Dead until the IO layer reports the exit; the lease itself ended normally.
            w.state = WorkerState::Dead;
            self.actions.push_back(Action::Kill { pid, worker: Some(worker) });
        }
        if let WorkerState::Leased(lease) = state {
            self.leases.remove(&lease);
        }
        if !(kill || exiting) {
            self.make_available(now, worker);
        }
        Ok(())
    }

    // ----- process side -----

    /// The IO layer spawned the process for `token`. A process whose token is no longer
    /// wanted (timed out, never issued) is killed.
    pub fn handle_process_started(&mut self, token: i64, pid: u32) {
        if let Some(s) = self.starting.get_mut(&token) {
            s.pid = Some(pid);
        } else if !self.token_to_worker.contains_key(&token) {
            // A registered token means the worker registered before the spawn report
            // arrived; anything else is a process nobody waits for.
            self.actions.push_back(Action::Kill { pid, worker: None });
        }
    }

    /// Spawning the process for `token` failed: its slot is freed and starting pauses for
    /// `start_retry_delay`, after which waiting pops get new processes.
    pub fn handle_start_failed(&mut self, now: Instant, token: i64) {
        if let Some(s) = self.starting.remove(&token) {
            self.startup_deadlines.remove(&(s.deadline, token));
            self.timers.set(PoolTimer::StartRetry, now + self.config.start_retry_delay);
        }
    }

    /// A process registered as `worker` with its startup token. On error the IO layer
    /// replies failure and closes the connection.
    pub fn handle_register(&mut self, token: i64, worker: WorkerId, pid: u32) -> Result<(), RegisterError> {
        if token < 1 || token >= self.next_token {
            return Err(RegisterError::UnknownToken(token));
        }
        if self.workers.contains_key(&worker) || self.drivers.contains_key(&worker) {
            return Err(RegisterError::DuplicateWorker(worker));
        }
        let s = self.starting.remove(&token).ok_or(RegisterError::TokenNotPending(token))?;
        self.token_to_worker.insert(token, worker);
        self.workers.insert(
            worker,
            Worker {
                pid,
                token,
                state: WorkerState::Registered,
                job: None,
                port: None,
                startup_deadline: Some(s.deadline),
                idle_key: None,
            },
        );
        Ok(())
    }

    /// A registered worker announced its port: its startup ends and it becomes available.
    pub fn handle_port_announced(&mut self, now: Instant, worker: WorkerId, port: u16) -> Result<(), TransitionError> {
        let w = self.worker_in(worker, "Registered", |s| s == WorkerState::Registered)?;
        w.port = Some(port);
        let (token, deadline) = (w.token, w.startup_deadline.take());
        if let Some(at) = deadline {
            self.startup_deadlines.remove(&(at, token));
        }
        self.make_available(now, worker);
        self.start_for_waiting(now);
        Ok(())
    }

    /// A process exited or a worker's connection closed. Unknown or already forgotten
    /// processes are ignored, so reporting both the pidfd and the socket is safe.
    pub fn handle_exit(&mut self, now: Instant, who: ExitedProcess) {
        let worker = match who {
            ExitedProcess::Worker(id) => Some(id),
            ExitedProcess::Token(token) => {
                if let Some(s) = self.starting.remove(&token) {
                    self.startup_deadlines.remove(&(s.deadline, token));
                }
                self.token_to_worker.get(&token).copied()
            }
        };
        if let Some(id) = worker {
            if let Some(WorkerState::Leased(lease)) = self.forget_worker(id).map(|w| w.state) {
                self.actions.push_back(Action::LeaseLost { lease, worker: id });
            }
        }
        self.start_for_waiting(now);
    }

    /// Reply to a reaping `RequestExit`. `accepted` (also on RPC failure) marks the worker
    /// dead until its exit; a refusal puts it back at the newest end of the idle queue.
    pub fn handle_exit_reply(&mut self, now: Instant, worker: WorkerId, accepted: bool) -> Result<(), TransitionError> {
        let w = self.worker_in(worker, "Exiting", |s| s == WorkerState::Exiting)?;
        if accepted {
            w.state = WorkerState::Dead;
        } else {
            self.make_available(now, worker);
        }
        Ok(())
    }

    // ----- drivers -----

    /// A driver registered. The first driver ever triggers `num_prestart` starts (as many as
    /// startup concurrency allows).
    pub fn handle_driver_register(
        &mut self,
        now: Instant,
        job: JobId,
        worker: WorkerId,
        pid: u32,
    ) -> Result<(), RegisterError> {
        if self.workers.contains_key(&worker) || self.drivers.contains_key(&worker) {
            return Err(RegisterError::DuplicateWorker(worker));
        }
        self.drivers.insert(worker, DriverInfo { id: worker, job, pid });
        if !self.first_driver_seen {
            self.first_driver_seen = true;
            self.start_up_to(now, self.config.num_prestart);
        }
        Ok(())
    }

    /// A driver disconnected or exited. Returns whether it was registered.
    pub fn handle_driver_exit(&mut self, worker: WorkerId) -> bool {
        self.drivers.remove(&worker).is_some()
    }

    // ----- starting, prestart, timers -----

    /// Ray's prestart rule on a lease request: start
    /// `min(backlog, available_cpus) - (idle + starting)` processes if positive, within
    /// startup concurrency. Also records `available_cpus` for the soft limit.
    pub fn handle_prestart(&mut self, now: Instant, backlog: usize, available_cpus: usize) {
        self.available_cpus = available_cpus;
        let desired = backlog.min(available_cpus);
        let have = self.idle.len() + self.num_starting();
        self.start_up_to(now, desired.saturating_sub(have));
    }

    /// Records the node's current floor(available CPUs), the soft limit when the config
    /// has none.
    pub fn set_available_cpus(&mut self, available_cpus: usize) {
        self.available_cpus = available_cpus;
    }

    /// Fires what is due at `now`: startup deadlines (kill, forget, replace), the reaping
    /// pass, and the end of a spawn-failure pause.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_startups(now);
        for timer in self.timers.expired(now) {
            match timer {
                PoolTimer::Reap => {
                    self.reap(now);
                    self.timers.set(PoolTimer::Reap, now + self.config.kill_idle_interval);
                }
                // Nothing to do but end the pause; start_for_waiting below resumes.
                PoolTimer::StartRetry => {}
            }
        }
        self.start_for_waiting(now);
    }

    /// Kills every process whose startup deadline has passed and forgets its token.
    fn expire_startups(&mut self, now: Instant) {
        while let Some(&(at, token)) = self.startup_deadlines.first() {
            if at > now {
                break;
            }
            self.startup_deadlines.pop_first();
            if let Some(s) = self.starting.remove(&token) {
                // Not spawned yet: the late spawn report finds no token and kills it.
                if let Some(pid) = s.pid {
                    self.actions.push_back(Action::Kill { pid, worker: None });
                }
            } else if let Some(&id) = self.token_to_worker.get(&token) {
                if let Some(w) = self.workers.get_mut(&id) {
                    debug_assert_eq!(w.state, WorkerState::Registered);
                    w.state = WorkerState::Dead;
                    w.startup_deadline = None;
                    self.actions.push_back(Action::Kill { pid: w.pid, worker: Some(id) });
                }
            }
        }
    }

    /// One reaping pass: oldest idle first, while more than the soft limit run and the
    /// worker has been idle at least the threshold.
    fn reap(&mut self, now: Instant) {
        let soft_limit = self.config.soft_limit.unwrap_or(self.available_cpus);
        // Running: registered workers that are neither dead nor already asked to exit.
        let mut running =
            self.workers.values().filter(|w| !matches!(w.state, WorkerState::Exiting | WorkerState::Dead)).count();
        let mut chosen = Vec::new();
        for (&key, &(id, since)) in &self.idle {
            if running <= soft_limit || now.saturating_duration_since(since) < self.config.idle_kill_threshold {
                break;
            }
            chosen.push((key, id));
            running -= 1;
        }
        for (key, id) in chosen {
            self.idle.remove(&key);
            if let Some(w) = self.workers.get_mut(&id) {
                w.state = WorkerState::Exiting;
                w.idle_key = None;
            }
            self.actions.push_back(Action::RequestExit { worker: id });
        }
    }

    /// Starts processes for pops that no process in startup will serve.
    fn start_for_waiting(&mut self, now: Instant) {
        let want = self.pending.len().saturating_sub(self.num_starting());
        self.start_up_to(now, want);
    }

    /// Starts up to `n` processes, within startup concurrency and outside a spawn pause.
    fn start_up_to(&mut self, now: Instant, n: usize) {
        if self.timers.is_armed(PoolTimer::StartRetry) {
            return;
        }
        let room = self.config.max_startup_concurrency.saturating_sub(self.num_starting());
        for _ in 0..n.min(room) {
            let token = self.next_token;
            self.next_token += 1;
            let deadline = now + self.config.register_timeout;
            self.starting.insert(token, Starting { pid: None, deadline });
            self.startup_deadlines.insert((deadline, token));
            self.actions.push_back(Action::StartProcess { token });
        }
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Every registered worker (all states), in id order.
    pub fn workers(&self) -> impl Iterator<Item = WorkerInfo> + '_ {
        self.workers.iter().map(|(&id, w)| info(id, w))
    }

    /// One worker.
    pub fn worker(&self, id: WorkerId) -> Option<WorkerInfo> {
        self.workers.get(&id).map(|w| info(id, w))
    }

    /// Started processes that have not registered, by token.
    pub fn starting_processes(&self) -> impl Iterator<Item = StartingInfo> + '_ {
        self.starting.iter().map(|(&token, s)| StartingInfo { token, pid: s.pid, deadline: s.deadline })
    }

    /// Registered drivers, in id order.
    pub fn drivers(&self) -> impl Iterator<Item = DriverInfo> + '_ {
        self.drivers.values().copied()
    }

    /// Processes in startup: started or registered, port not yet announced.
    pub fn num_starting(&self) -> usize {
        self.startup_deadlines.len()
    }

    /// Idle workers.
    pub fn num_idle(&self) -> usize {
        self.idle.len()
    }

    /// Leased workers.
    pub fn num_leased(&self) -> usize {
        self.leases.len()
    }

    /// Pops waiting for a worker.
    pub fn num_pending_pops(&self) -> usize {
        self.pending.len()
    }

    /// Whether `worker` is a registered, not dead worker or a registered driver (messages
    /// from anything else are ignored by the IO layer).
    pub fn is_registered(&self, worker: WorkerId) -> bool {
        self.drivers.contains_key(&worker) || self.workers.get(&worker).is_some_and(|w| w.state != WorkerState::Dead)
    }

    /// The lease holding `worker`.
    pub fn lease_of(&self, worker: WorkerId) -> Option<LeaseId> {
        self.worker(worker).and_then(|w| w.lease())
    }

    /// The worker held by `lease`.
    pub fn worker_of_lease(&self, lease: LeaseId) -> Option<WorkerId> {
        self.leases.get(&lease).copied()
    }

    // ----- internals -----

    /// The worker in a state `ok` accepts, or the matching error.
    fn worker_in(
        &mut self,
        id: WorkerId,
        expected: &'static str,
        ok: impl Fn(WorkerState) -> bool,
    ) -> Result<&mut Worker, TransitionError> {
        let w = self.workers.get_mut(&id).ok_or(TransitionError::UnknownWorker(id))?;
        if !ok(w.state) {
            return Err(TransitionError::WrongState { worker: id, state: w.state, expected });
        }
        Ok(w)
    }

    /// Gives the worker to the oldest waiting pop it fits, else makes it the newest idle one.
    fn make_available(&mut self, now: Instant, id: WorkerId) {
        let Some(job) = self.workers.get(&id).map(|w| w.job) else {
            debug_assert!(false, "make_available on unknown worker {id}");
            return;
        };
        if let Some(pos) = self.pending.iter().position(|p| fits(job, p.job)) {
            if let Some(pop) = self.pending.remove(pos) {
                self.assign(id, pop.lease, pop.job);
            }
            return;
        }
        let key = self.next_idle_key;
        self.next_idle_key += 1;
        self.idle.insert(key, (id, now));
        if let Some(w) = self.workers.get_mut(&id) {
            w.state = WorkerState::Idle;
            w.idle_key = Some(key);
        }
    }

    /// Binds `id` (out of the idle queue, not held by another lease) to `lease` and its job.
    fn assign(&mut self, id: WorkerId, lease: LeaseId, job: JobId) {
        let Some(w) = self.workers.get_mut(&id) else {
            debug_assert!(false, "assign of unknown worker {id}");
            return;
        };
        debug_assert_ne!(w.state, WorkerState::Dead);
        // A worker coming back from a lease still shows it; the index must be cleared.
        if let WorkerState::Leased(old) = w.state {
            debug_assert!(!self.leases.contains_key(&old), "worker {id} still holds {old}");
        }
        w.state = WorkerState::Leased(lease);
        w.job = Some(job);
        w.idle_key = None;
        self.leases.insert(lease, id);
        self.actions.push_back(Action::Assign { lease, worker: id });
    }

    /// Removes a worker and every index entry pointing at it.
    fn forget_worker(&mut self, id: WorkerId) -> Option<Worker> {
        let w = self.workers.remove(&id)?;
        self.token_to_worker.remove(&w.token);
        if let Some(key) = w.idle_key {
            self.idle.remove(&key);
        }
        if let Some(at) = w.startup_deadline {
            self.startup_deadlines.remove(&(at, w.token));
        }
        if let WorkerState::Leased(lease) = w.state {
            self.leases.remove(&lease);
        }
        Some(w)
    }
}

fn info(id: WorkerId, w: &Worker) -> WorkerInfo {
    WorkerInfo { id, pid: w.pid, token: w.token, state: w.state, job: w.job, port: w.port }
}

#[cfg(test)]
impl WorkerPool {
    /// Panics if an internal index disagrees with the worker table.
    pub(super) fn check_invariants(&self) {
        assert!(self.num_starting() <= self.config.max_startup_concurrency);
        for (&lease, id) in &self.leases {
            assert_eq!(self.workers[id].state, WorkerState::Leased(lease));
        }
        let leased = self.workers.values().filter(|w| matches!(w.state, WorkerState::Leased(_)));
        assert_eq!(leased.count(), self.leases.len(), "a worker leased outside the index");
        for (&key, (id, _)) in &self.idle {
            let w = &self.workers[id];
            assert_eq!((w.state, w.idle_key), (WorkerState::Idle, Some(key)));
        }
        let idle = self.workers.values().filter(|w| w.state == WorkerState::Idle);
        assert_eq!(idle.count(), self.idle.len());
        let mut startup: BTreeSet<(Instant, i64)> = self.starting.iter().map(|(&t, s)| (s.deadline, t)).collect();
        for w in self.workers.values() {
            assert_eq!(w.startup_deadline.is_some(), w.state == WorkerState::Registered);
            startup.extend(w.startup_deadline.map(|at| (at, w.token)));
        }
        assert_eq!(startup, self.startup_deadlines);
        for p in &self.pending {
            assert!(!self.leases.contains_key(&p.lease));
            let fitting_idle = self.idle.values().any(|(id, _)| fits(self.workers[id].job, p.job));
            assert!(!fitting_idle, "an idle worker fits a waiting pop");
        }
    }
}
