//! The writer thread and the handle the GCS writes through.
//!
//! One thread per open store (`gcs-storage`) owns the backend and a copy of every table
//! (the mirror). [`Storage`] handles (cheap clones, `Send`) put messages on a bounded
//! crossbeam channel with `try_send`, so the GCS's executor never blocks on storage; a
//! full queue is an error the caller sees ([`WriteError::Full`]), never a wait.
//!
//! # The loop (group commit)
//!
//! ```text
//!   wait for a message (up to the probe or retry interval)
//!   take every message already queued (up to max_batch_ops changes)
//!   store them as one transaction (backend.apply), add them to the mirror
//!   complete every durable write of the group with the one result
//! ```
//!
//! # Health
//!
//! ```text
//!   Up ──apply fails, and the immediate restore fails too──► Down
//!   Up ──idle probe: store lost our data / unreachable──► restore ──ok──► Up
//!   Down ──every retry_interval (or next write after it): restore ──ok──► Up
//! ```
//!
//! A restore writes the whole mirror back in one transaction (it wipes the store first),
//! so it also repairs a Redis that restarted empty. While Down, writes are added to the
//! mirror (they will be stored by the next restore) and durable ones fail at once with
//! [`WriteError::Unavailable`]: nothing is acknowledged that is not stored. A failed
//! apply followed by a successful restore acknowledges the group: the restore stored it.

use super::meta;
use super::records::{Batch, Op, Snapshot, Tables};
use super::OpenError;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use futures_channel::oneshot;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A store the writer thread drives. Called only from the writer thread.
pub trait Backend: Send + std::fmt::Debug {
    /// Where it is, for messages.
    fn location(&self) -> String;
    /// Stores `ops` in order as one transaction: all of them or none.
    fn apply(&mut self, ops: &[Op]) -> Result<(), BackendError>;
    /// Replaces everything stored by `all`, in one transaction, reconnecting first if it
    /// must.
    fn restore(&mut self, all: &Tables) -> Result<(), BackendError>;
    /// Whether the store still holds our data (`false`: it lost it, e.g. Redis restarted
    /// empty). Called when the writer is idle and healthy.
    fn probe(&mut self) -> Result<bool, BackendError> {
        Ok(true)
    }
}

/// A backend's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The store cannot be reached (Redis connection refused, reset or timed out).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The store refused or failed the operation (disk full, I/O error, Redis error reply).
    #[error("{0}")]
    Failed(String),
}

/// Why a write was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The store is lost; the write is kept in memory and stored when the store returns,
    /// but must not be acknowledged as durable.
    #[error("GCS storage {location} unavailable: {reason}")]
    Unavailable {
        /// The store.
        location: String,
        /// Its last error.
        reason: String,
    },
    /// The writer's queue is full (the store is far behind); the write was not taken.
    #[error("GCS storage queue full ({0} batches waiting); the write was not taken")]
    Full(usize),
    /// The writer has stopped (after [`Storage::close`] or [`Storage::clear`]).
    #[error("GCS storage writer has stopped")]
    Stopped,
}

/// The writer's tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Batches that may wait in the queue.
    pub queue_capacity: usize,
    /// Changes coalesced into one transaction at most.
    pub max_batch_ops: usize,
    /// How often a lost store is retried.
    pub retry_interval: Duration,
    /// How often an idle, healthy writer checks that the store still holds our data.
    pub probe_interval: Duration,
    /// At most one log line per this interval while the store is lost.
    pub log_interval: Duration,
    /// Connect, read and write timeout of one Redis call.
    pub io_timeout: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            max_batch_ops: 16_384,
            retry_interval: Duration::from_millis(500),
            probe_interval: Duration::from_secs(1),
            log_interval: Duration::from_secs(10),
            io_timeout: Duration::from_secs(2),
        }
    }
}

type Reply = oneshot::Sender<Result<(), WriteError>>;

#[derive(Debug)]
struct Msg {
    ops: Vec<Op>,
    done: Option<Reply>,
    /// The writer stops after this message (close, clear).
    last: bool,
}

/// The handle the GCS writes through. Clones share one writer; the writer stops when
/// every handle is gone (after storing what was queued) or at [`Storage::close`] /
/// [`Storage::clear`]. After that, the thread stays parked only to answer
/// [`WriteError::Stopped`] to writes that raced with the stop, until the last handle goes.
#[derive(Debug, Clone)]
pub struct Storage {
    /// `None` for the memory backend: every write completes at once.
    tx: Option<Sender<Msg>>,
    location: Arc<str>,
    /// Set by the writer once it closed the store.
    stopped: Arc<AtomicBool>,
}

impl Storage {
    pub(crate) fn memory() -> Self {
        Self { tx: None, location: "memory".into(), stopped: Arc::default() }
    }

    /// Where the tables are stored, for messages and `raylet status`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Queues `batch`; the future resolves once it is stored (durable). Never blocks.
    pub fn write(&self, batch: Batch) -> Durable {
        self.submit(batch.ops, false)
    }

    /// Queues `batch` without waiting for it: it is stored in order with every other
    /// write, and a failure is only logged by the writer. `Err` when it was not taken.
    pub fn write_nowait(&self, batch: Batch) -> Result<(), WriteError> {
        let Some(tx) = &self.tx else { return Ok(()) };
        if self.stopped.load(Ordering::Acquire) {
            return Err(WriteError::Stopped);
        }
        tx.try_send(Msg { ops: batch.ops, done: None, last: false }).map_err(|e| refused(tx, e))
    }

    /// Deletes every stored table (`raylet stop --all`), after storing what was queued;
    /// then the writer stops, and later writes fail with [`WriteError::Stopped`].
    pub fn clear(&self) -> Durable {
        self.submit(vec![Op::ClearAll], true)
    }

    /// Stores what was queued, then stops the writer and closes the store (the embedded
    /// file's lock is released when this resolves).
    pub fn close(&self) -> Durable {
        self.submit(Vec::new(), true)
    }

    fn submit(&self, ops: Vec<Op>, last: bool) -> Durable {
        let Some(tx) = &self.tx else { return Durable::ready(Ok(())) };
        if self.stopped.load(Ordering::Acquire) {
            return Durable::ready(Err(WriteError::Stopped));
        }
        let (done, rx) = oneshot::channel();
        match tx.try_send(Msg { ops, done: Some(done), last }) {
            Ok(()) => Durable(State::Waiting(rx)),
            Err(e) => Durable::ready(Err(refused(tx, e))),
        }
    }
}

fn refused(tx: &Sender<Msg>, e: TrySendError<Msg>) -> WriteError {
    match e {
        TrySendError::Full(_) => WriteError::Full(tx.len()),
        TrySendError::Disconnected(_) => WriteError::Stopped,
    }
}

/// Resolves when a write is stored (`Ok`) or cannot be (`Err`). Wakes across threads, so
/// a glommio task may await it; [`Durable::wait`] blocks, for threads that may block.
#[derive(Debug)]
#[must_use = "a durable write is only durable once this resolves Ok"]
pub struct Durable(State);

#[derive(Debug)]
enum State {
    Ready(Option<Result<(), WriteError>>),
    Waiting(oneshot::Receiver<Result<(), WriteError>>),
}

impl Durable {
    fn ready(r: Result<(), WriteError>) -> Self {
        Self(State::Ready(Some(r)))
    }

    /// Blocks the calling thread until the write is stored or failed. Never on an executor.
    pub fn wait(self) -> Result<(), WriteError> {
        futures_lite::future::block_on(self)
    }
}

impl Future for Durable {
    type Output = Result<(), WriteError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            State::Ready(r) => Poll::Ready(r.take().unwrap_or(Err(WriteError::Stopped))),
            // A dropped sender means the writer thread ended without answering.
            State::Waiting(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or(Err(WriteError::Stopped))),
        }
    }
}

/// Checks the loaded tables ([`meta`]), records this open in the store, and starts the
/// writer thread.
pub(crate) fn start(
    mut backend: Box<dyn Backend>,
    mut tables: Tables,
    opts: WriterOptions,
) -> Result<(Storage, Snapshot), OpenError> {
    let location = backend.location();
    let opened = meta::check_and_bump(&tables).map_err(|e| meta::open_error(location.clone(), e))?;
    backend.apply(&opened.ops).map_err(|e| OpenError::Backend { location: location.clone(), reason: e.to_string() })?;
    opened.ops.iter().for_each(|op| tables.apply(op));
    let snapshot = Snapshot { tables: tables.clone(), incarnation: opened.incarnation };
    let (tx, rx) = crossbeam_channel::bounded(opts.queue_capacity.max(1));
    let writer = Writer { backend, mirror: tables, opts, health: Health::Up, log: LogGate::default() };
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    std::thread::Builder::new()
        .name("gcs-storage".into())
        .spawn(move || writer.run(rx, &flag))
        .map_err(|e| OpenError::Backend { location: location.clone(), reason: format!("writer thread: {e}") })?;
    Ok((Storage { tx: Some(tx), location: location.into(), stopped }, snapshot))
}

#[derive(Debug)]
enum Health {
    Up,
    Down {
        since: Instant,
        last_try: Instant,
        reason: String,
        /// Durable writes refused since the last log line.
        refused: u64,
    },
}

/// At most one line per interval.
#[derive(Debug, Default)]
struct LogGate {
    last: Option<Instant>,
}

impl LogGate {
    fn allow(&mut self, now: Instant, every: Duration) -> bool {
        let ok = self.last.is_none_or(|t| now.duration_since(t) >= every);
        if ok {
            self.last = Some(now);
        }
        ok
    }
}

#[derive(Debug)]
struct Writer {
    backend: Box<dyn Backend>,
    mirror: Tables,
    opts: WriterOptions,
    health: Health,
    log: LogGate,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>, stopped: &AtomicBool) {
        loop {
            let first = match rx.recv_timeout(self.idle_wait(Instant::now())) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.idle(Instant::now());
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut last = first.last;
            let mut ops = first.ops;
            let mut done: Vec<Reply> = first.done.into_iter().collect();
            while !last && ops.len() < self.opts.max_batch_ops {
                let Ok(m) = rx.try_recv() else { break };
                ops.extend(m.ops);
                done.extend(m.done);
                last = m.last;
            }
            let result = self.store(ops, !done.is_empty());
            if let Err(e) = &result {
                if done.is_empty() && self.log.allow(Instant::now(), self.opts.log_interval) {
                    tracing::warn!("GCS storage: writes not stored yet: {e}");
                }
            }
            if last {
                // Close the store (redb's file lock goes) before anyone hears it is closed.
                drop(self);
                stopped.store(true, Ordering::Release);
                done.into_iter().for_each(|d| drop(d.send(result.clone())));
                // A bounded channel keeps what was sent until every sender is gone, so
                // writes that raced with the flag must be answered here, not dropped.
                for m in rx.iter() {
                    m.done.into_iter().for_each(|d| drop(d.send(Err(WriteError::Stopped))));
                }
                return;
            }
            done.into_iter().for_each(|d| drop(d.send(result.clone())));
        }
    }

    fn idle_wait(&self, now: Instant) -> Duration {
        match &self.health {
            Health::Up => self.opts.probe_interval,
            Health::Down { last_try, .. } => (*last_try + self.opts.retry_interval).saturating_duration_since(now),
        }
    }

    /// Stores one group. `durable`: someone waits for the result (counted when refused).
    fn store(&mut self, ops: Vec<Op>, durable: bool) -> Result<(), WriteError> {
        let now = Instant::now();
        if matches!(self.health, Health::Up) {
            let applied = if ops.is_empty() { Ok(()) } else { self.backend.apply(&ops) };
            ops.into_iter().for_each(|op| self.mirror.apply_owned(op));
            match applied {
                Ok(()) => return Ok(()),
                Err(e) => self.went_down(now, e),
            }
            // The store may be back at once (a Redis that restarted between two writes).
            return self.restore(now);
        }
        ops.into_iter().for_each(|op| self.mirror.apply_owned(op));
        let Health::Down { last_try, reason, refused, .. } = &mut self.health else { unreachable!() };
        if now.duration_since(*last_try) >= self.opts.retry_interval {
            return self.restore(now);
        }
        *refused += durable as u64;
        Err(WriteError::Unavailable { location: self.backend.location(), reason: reason.clone() })
    }

    fn idle(&mut self, now: Instant) {
        if matches!(self.health, Health::Down { .. }) {
            let _ = self.restore(now);
            return;
        }
        match self.backend.probe() {
            Ok(true) => {}
            Ok(false) => {
                let e = BackendError::Failed("the store lost our data (restarted empty?)".into());
                self.went_down(now, e);
                let _ = self.restore(now);
            }
            Err(e) => {
                self.went_down(now, e);
                let _ = self.restore(now);
            }
        }
    }

    fn went_down(&mut self, now: Instant, e: BackendError) {
        tracing::warn!(
            "GCS storage {} lost: {e}; durable writes fail until it returns, retrying every {:?}",
            self.backend.location(),
            self.opts.retry_interval
        );
        self.log.last = Some(now);
        // `last_try` in the past: the caller's immediate restore is allowed.
        self.health = Health::Down { since: now, last_try: now, reason: e.to_string(), refused: 0 };
    }

    fn restore(&mut self, now: Instant) -> Result<(), WriteError> {
        let result = self.backend.restore(&self.mirror);
        let Health::Down { since, last_try, reason, refused } = &mut self.health else {
            return result
                .map_err(|e| WriteError::Unavailable { location: self.backend.location(), reason: e.to_string() });
        };
        *last_try = now;
        match result {
            Ok(()) => {
                tracing::info!(
                    "GCS storage {} is back after {:?}: wrote the whole state ({} records) back",
                    self.backend.location(),
                    now.duration_since(*since),
                    self.mirror.len()
                );
                self.health = Health::Up;
                Ok(())
            }
            Err(e) => {
                *reason = e.to_string();
                if self.log.allow(now, self.opts.log_interval) {
                    tracing::warn!(
                        "GCS storage {} still unavailable after {:?}: {e} ({} durable writes refused since the last report)",
                        self.backend.location(),
                        now.duration_since(*since),
                        refused
                    );
                    *refused = 0;
                }
                Err(WriteError::Unavailable { location: self.backend.location(), reason: reason.clone() })
            }
        }
    }
}
