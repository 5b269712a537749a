//! The worker pool of one node: which worker processes exist, which are free, which lease
//! holds which worker, and when to start or reap processes.
//!
//! Owned by the node-wide shard (shard 0); `services::workers` feeds it events and performs
//! its [`Action`]s (spawn, kill, Exit RPC, lease hand-over). It decides only: it must not
//! spawn, signal, read the clock or talk to workers itself. Port allocation for registering
//! workers, runtime environments, IO (spill/restore) workers and job-finished reaping are not
//! modelled here.
//!
//! # Call protocol
//!
//! 1. Feed one input: a `handle_*` method (process and registration events from the IO
//!    layer, pops and returns from the lease layer, [`WorkerPool::handle_timeout`] when the
//!    deadline from [`WorkerPool::poll_timeout`] passes).
//! 2. Drain [`WorkerPool::poll_action`] until `None`; perform the actions in that order.
//! 3. Re-arm the single driver timer at [`WorkerPool::poll_timeout`].
//!
//! The IO layer must report exactly one of `handle_process_started` / `handle_start_failed`
//! for every `StartProcess`, and an exit (`handle_exit`) for every process it started or
//! killed, so that `Dead` workers are eventually forgotten.
//!
//! # States
//!
//! A process is identified by its startup token until it registers, then by its
//! `WorkerId`.
//!
//! ```text
//!  pop / prestart / first driver
//!        │ StartProcess{token}
//!        ▼
//!    Starting ──start failed / exit──────────────────────────────▶ (forgotten)
//!        │    ──startup timeout: Kill{pid} if spawned─────────────▶ (forgotten)
//!        │ register(token)
//!        ▼
//!   Registered ──startup timeout: Kill──▶ Dead ──exit──▶ (forgotten)
//!        │ port announced
//!        ▼
//!   (available) ──a waiting pop fits──▶ Leased(lease) ──return──▶ (available)
//!        │                               │  │ return(kill | exiting): Kill ──▶ Dead
//!        │ no pop fits                    │  └ exit: LeaseLost{lease} ──▶ (forgotten)
//!        ▼                               │
//!      Idle ──pop (LIFO, same job)───────┘
//!        │ reap tick, oldest first, above soft limit: RequestExit
//!        ▼
//!    Exiting ──exit reply: accepted──▶ Dead
//!            ──exit reply: refused──▶ (available), at the back of the idle queue
//!
//!  Registered, Idle and Exiting also go straight to (forgotten) on exit.
//! ```
//!
//! "Startup" covers Starting and Registered: the startup slot (bounded by
//! `max_startup_concurrency`) and the startup deadline (`register_timeout`, armed when
//! `StartProcess` is emitted) last until the port is announced, as in Ray where a process
//! counts as starting until `OnWorkerStarted`.
//!
//! A worker that has run a lease stays bound to that lease's job; a fresh worker fits any
//! job. Drivers are tracked separately and are never leased.

mod pool;
#[cfg(test)]
mod tests;

pub use pool::WorkerPool;

use std::time::{Duration, Instant};

use crate::ids::{JobId, LeaseId, WorkerId};

/// Tunables of the pool (Ray's `ray_config_def.h` worker-pool options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most processes in startup (started, port not yet announced) at once. 0 starts none;
    /// resolve "0 = number of CPUs" before building the pool.
    pub max_startup_concurrency: usize,
    /// How long a process may take from `StartProcess` to announcing its port.
    pub register_timeout: Duration,
    /// Idle workers are reaped while more than this many run; `None` = the current
    /// available CPU count (see [`WorkerPool::set_available_cpus`]).
    pub soft_limit: Option<usize>,
    /// A worker must have been idle this long before it may be reaped.
    pub idle_kill_threshold: Duration,
    /// Period of the reaping pass; zero disables reaping.
    pub kill_idle_interval: Duration,
    /// Processes started when the first driver registers.
    pub num_prestart: usize,
    /// After a spawn failure, no process is started for this long.
    pub start_retry_delay: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_startup_concurrency: 1,
            register_timeout: Duration::from_secs(60),
            soft_limit: None,
            idle_kill_threshold: Duration::from_secs(1),
            kill_idle_interval: Duration::from_millis(200),
            num_prestart: 0,
            start_retry_delay: Duration::from_secs(1),
        }
    }
}

/// State of a registered worker (a started process before registration is only a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Registered, port not yet announced; still holds its startup slot.
    Registered,
    /// Available for a lease.
    Idle,
    /// Held by a lease.
    Leased(LeaseId),
    /// Asked to exit by the reaper; waiting for its reply.
    Exiting,
    /// Given up on (killed or exit accepted); forgotten when its exit is reported.
    Dead,
}

/// One worker as seen by stats and the IO layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its id.
    pub id: WorkerId,
    /// Process id given at registration.
    pub pid: u32,
    /// Startup token of the process that registered it.
    pub token: i64,
    /// Current state.
    pub state: WorkerState,
    /// Job it is bound to (`None` until its first lease).
    pub job: Option<JobId>,
    /// Announced port.
    pub port: Option<u16>,
}

impl WorkerInfo {
    /// The lease holding it, if leased.
    pub fn lease(&self) -> Option<LeaseId> {
        match self.state {
            WorkerState::Leased(lease) => Some(lease),
            _ => None,
        }
    }
}

/// A started process that has not registered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartingInfo {
    /// Its startup token.
    pub token: i64,
    /// Its pid, once the spawn was reported.
    pub pid: Option<u32>,
    /// When it is killed unless it has announced its port.
    pub deadline: Instant,
}

/// A registered driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverInfo {
    /// Its id.
    pub id: WorkerId,
    /// Its job.
    pub job: JobId,
    /// Its process id.
    pub pid: u32,
}

/// Which process exited, as the IO layer knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitedProcess {
    /// A process the pool started, by startup token (pidfd of a spawned child).
    Token(i64),
    /// A registered worker (its connection closed or its pid exited).
    Worker(WorkerId),
}

/// What the pool asks the IO and lease layers to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Spawn a worker process with this startup token.
    StartProcess {
        /// Passed to the worker as `--startup-token`.
        token: i64,
    },
    /// Hand `worker` to `lease`.
    Assign {
        /// The popping lease.
        lease: LeaseId,
        /// The worker it now holds.
        worker: WorkerId,
    },
    /// Kill a process (SIGTERM then SIGKILL); report its exit afterwards.
    Kill {
        /// The process.
        pid: u32,
        /// The worker it registered as, if it did.
        worker: Option<WorkerId>,
    },
    /// Send `Exit{force_exit: false}` and report the reply with `handle_exit_reply`.
    RequestExit {
        /// The idle worker to reap.
        worker: WorkerId,
    },
    /// A leased worker died: return the lease's resources and fail it.
    LeaseLost {
        /// The lease that held it.
        lease: LeaseId,
        /// The dead worker.
        worker: WorkerId,
    },
}

/// A registration was refused; the IO layer replies failure to the registering process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The pool never issued this startup token.
    #[error("unknown startup token {0}")]
    UnknownToken(i64),
    /// The token was issued but is no longer waiting: already registered, timed out, failed
    /// or exited.
    #[error("startup token {0} is not pending registration")]
    TokenNotPending(i64),
    /// A worker or driver with this id is already registered.
    #[error("worker {0} is already registered")]
    DuplicateWorker(WorkerId),
}

/// An input named a worker or lease in a state that does not allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// No such worker.
    #[error("unknown worker {0}")]
    UnknownWorker(WorkerId),
    /// The worker is not in the state the input needs.
    #[error("worker {worker} is {state:?}, expected {expected}")]
    WrongState {
        /// The worker.
        worker: WorkerId,
        /// Its actual state.
        state: WorkerState,
        /// The state the input needs.
        expected: &'static str,
    },
    /// The lease is already waiting for or holding a worker.
    #[error("lease {0} already popped a worker")]
    DuplicateLease(LeaseId),
}
