//! Admission of TCP peers that have not authenticated yet: the caps, whom to drop when
//! one is reached, how long an accept loop pauses when the process is out of fds, and
//! the rate limit of the log lines about refused peers.
//!
//! Owns: decisions only. The counts come from the caller (node-wide atomics in
//! `rpc::admission`), the queue holds whatever handle the caller closes a connection
//! with. Called by: `rpc::admission` (the node's listeners) and the default worker's
//! server. Must not: touch sockets, read the clock or log; every `now` is passed in.
//!
//! # Call protocol
//! - A new connection: count it in (open and unauthenticated both +1), then ask
//!   [`admit`] with the [`Counts`] after the increment and whether this shard's
//!   [`PendingQueue`] has a connection to give up. [`Admit::DropOldest`] means: take
//!   [`PendingQueue::pop_oldest`], move it from unauthenticated to closing (its place is
//!   the newcomer's) and close it; [`Admit::Refuse`] means: count the newcomer out again
//!   and close it.
//! - Its hello passes: [`PendingQueue::remove`] it and count it out of unauthenticated
//!   (a key already gone means it was dropped: it is closing).
//! - Its task ends: remove it (if still pending) and count it out of whatever it is in,
//!   closing included.
//! - Refusals go through [`RefusalLog::handle_refusal`]; a [`LogAction::Suppress`] with a
//!   flush time arms one timer that calls [`RefusalLog::handle_flush`].
//! - Accept failures go through [`AcceptBackoff`]: [`AcceptBackoff::handle_failure`]
//!   gives the pause, [`AcceptBackoff::handle_success`] resets it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The node-wide caps on TCP connections (all listeners and shards together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Connections that have not finished their hello (metrics scrapes count here for
    /// their whole life: they never authenticate).
    pub max_unauthenticated: usize,
    /// Every accepted connection, authenticated or not.
    pub max_connections: usize,
}

/// Fewest fds kept for everything but TCP peers (store segments, workers and their
/// pipes, local clients, spill files, outbound connections, logs).
pub const MIN_RESERVED_FDS: u64 = 64;
/// A node never caps connections below this, however low the fd limit.
pub const MIN_CONNECTIONS: usize = 8;

impl AdmissionLimits {
    /// The configured caps fitted to an fd limit of `nofile`: TCP peers get at most what
    /// is left after a reserve of a quarter of the fds (at least [`MIN_RESERVED_FDS`]),
    /// as Redis lowers `maxclients` to the fd limit; the unauthenticated cap never
    /// exceeds the total. Returns the caps and whether the total was lowered.
    pub fn fitted(self, nofile: u64) -> (Self, bool) {
        let reserve = (nofile / 4).max(MIN_RESERVED_FDS);
        let room = usize::try_from(nofile.saturating_sub(reserve)).unwrap_or(usize::MAX).max(MIN_CONNECTIONS);
        let max_connections = self.max_connections.min(room).max(1);
        let max_unauthenticated = self.max_unauthenticated.min(max_connections).max(1);
        (Self { max_unauthenticated, max_connections }, max_connections < self.max_connections)
    }
}

/// What to do with a connection just accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Serve it.
    Accept,
    /// Serve it, and close this listener's oldest unauthenticated connection, whose slot
    /// it takes.
    DropOldest,
    /// Close it: a cap is reached and nothing here can make room.
    Refuse,
}

/// The node-wide counts a decision on a new connection looks at, the newcomer included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Connections holding an fd: serving, before their hello, or dropped and closing.
    pub open: usize,
    /// Connections before their hello.
    pub unauthenticated: usize,
    /// Connections dropped for a newer peer whose fd is not closed yet.
    pub closing: usize,
}

/// Decides on a new connection, given the node-wide counts with it included and whether
/// the caller has an unauthenticated connection it can drop. An authenticated connection
/// is never dropped for a newcomer: over either cap the oldest unauthenticated peer of the
/// caller's queue goes and the newcomer takes its place.
///
/// Over the unauthenticated cap alone, a caller with nothing to drop accepts the newcomer
/// anyway: the cap's peers may all sit in another shard's queue (a flood of the GCS port,
/// served by shard 0 only), and refusing here would lock every other shard's listeners
/// out. Its queue then holds the newcomer, which the next one over the cap drops, so the
/// unauthenticated count passes its cap by at most one per shard. Over the total cap a
/// newcomer with nothing to drop is refused. Since a dropped connection holds its fd until
/// its task has ended, a node over the total cap with drops still closing refuses
/// newcomers until those fds are free; so the fds of TCP peers never exceed the total cap
/// by more than one per shard either.
pub fn admit(limits: &AdmissionLimits, c: Counts, can_drop: bool) -> Admit {
    let over_total = c.open > limits.max_connections;
    if !over_total && c.unauthenticated <= limits.max_unauthenticated {
        Admit::Accept
    } else if over_total && c.closing > 0 {
        Admit::Refuse
    } else if can_drop {
        Admit::DropOldest
    } else if over_total {
        Admit::Refuse
    } else {
        Admit::Accept
    }
}

/// One shard's (or one worker's) unauthenticated connections, oldest first. `T` is what the caller
/// closes a connection with.
#[derive(Debug)]
pub struct PendingQueue<T> {
    next: u64,
    pending: BTreeMap<u64, T>,
}

impl<T> Default for PendingQueue<T> {
    fn default() -> Self {
        Self { next: 0, pending: BTreeMap::new() }
    }
}

impl<T> PendingQueue<T> {
    /// Adds a connection as the newest; returns its key.
    pub fn push(&mut self, handle: T) -> u64 {
        let key = self.next;
        self.next += 1;
        self.pending.insert(key, handle);
        key
    }

    /// Removes a connection (its hello passed, or it closed); `None` if it was dropped.
    pub fn remove(&mut self, key: u64) -> Option<T> {
        self.pending.remove(&key)
    }

    /// Takes the oldest connection, to drop it.
    pub fn pop_oldest(&mut self) -> Option<(u64, T)> {
        self.pending.pop_first()
    }

    /// The connection under `key`, if still pending.
    pub fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        self.pending.get_mut(&key)
    }

    /// Every pending connection, oldest first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut T)> {
        self.pending.iter_mut().map(|(k, v)| (*k, v))
    }

    /// Connections pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// What to do with one refusal's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAction {
    /// Write a line now, covering `count` refusals (this one and those held back since
    /// the last line).
    Emit {
        /// Refusals the line reports.
        count: u64,
    },
    /// Hold it back. `flush_at`: arm the flush timer for then (set once per interval).
    Suppress {
        /// When to call [`RefusalLog::handle_flush`], if a timer must be armed.
        flush_at: Option<Instant>,
    },
}

/// At most one line per interval about refused peers, each with the number of refusals
/// it stands for. The first refusal after a quiet interval is logged at once; the rest of
/// the interval's are counted and reported by the flush at its end.
#[derive(Debug, Clone)]
pub struct RefusalLog {
    interval: Duration,
    last_line: Option<Instant>,
    held: u64,
    flush_armed: bool,
}

impl RefusalLog {
    /// A limiter writing at most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, last_line: None, held: 0, flush_armed: false }
    }

    /// A peer was refused at `now`.
    pub fn handle_refusal(&mut self, now: Instant) -> LogAction {
        match self.last_line {
            Some(t) if now < t + self.interval => {
                self.held += 1;
                if self.flush_armed {
                    LogAction::Suppress { flush_at: None }
                } else {
                    self.flush_armed = true;
                    LogAction::Suppress { flush_at: Some(t + self.interval) }
                }
            }
            _ => {
                let count = self.held + 1;
                self.held = 0;
                self.last_line = Some(now);
                LogAction::Emit { count }
            }
        }
    }

    /// The flush timer fired at `now`: the count of refusals held back, if a line is due.
    pub fn handle_flush(&mut self, now: Instant) -> Option<u64> {
        self.flush_armed = false;
        if self.held == 0 {
            return None;
        }
        if let Some(t) = self.last_line {
            if now < t + self.interval {
                // Early (a timer never fires early, but a caller may): keep waiting.
                self.flush_armed = true;
                return None;
            }
        }
        let count = self.held;
        self.held = 0;
        self.last_line = Some(now);
        Some(count)
    }

    /// Refusals counted but not yet reported.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The events stopped (an accept loop accepts again): takes the count held back, for
    /// a closing line, without starting a new interval.
    pub fn take_held(&mut self) -> u64 {
        std::mem::take(&mut self.held)
    }
}

/// The pause of an accept loop after a failure: out of fds (EMFILE, ENFILE) or memory
/// (ENOBUFS, ENOMEM) it doubles from [`AcceptBackoff::FIRST`] to [`AcceptBackoff::MAX`],
/// so a loop whose listener stays readable does not spin; an error that concerns only the
/// connection being accepted (it was reset before the accept, or a signal) costs no pause.
#[derive(Debug, Clone, Default)]
pub struct AcceptBackoff {
    next: Option<Duration>,
}

/// Why an accept failed, as far as the back-off cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailure {
    /// The process or system is out of fds or buffer memory: retrying at once fails again.
    Exhausted,
    /// Only that connection failed (ECONNABORTED, EINTR, EPROTO...): accept the next.
    Transient,
    /// Anything else: pause as for exhaustion, since it may repeat.
    Other,
}

impl AcceptBackoff {
    /// The first pause.
    pub const FIRST: Duration = Duration::from_millis(10);
    /// The longest pause.
    pub const MAX: Duration = Duration::from_secs(1);

    /// An accept failed: how long to pause before the next.
    pub fn handle_failure(&mut self, failure: AcceptFailure) -> Duration {
        if failure == AcceptFailure::Transient {
            return Duration::ZERO;
        }
        let pause = self.next.unwrap_or(Self::FIRST);
        self.next = Some((pause * 2).min(Self::MAX));
        pause
    }

    /// An accept succeeded: the next failure starts from the first pause again.
    pub fn handle_success(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests;
