//! Named deadlines of one state machine (quinn's `connection/timer.rs` idea).
//!
//! Owns a small table from a timer name (usually a fieldless enum) to the instant it fires.
//! The machine that embeds it arms and cancels timers while handling inputs, reports
//! [`TimerTable::next_deadline`] from its `poll_timeout`, and in `handle_timeout(now)` takes
//! [`TimerTable::expired`] to learn which ones fired. It never reads the clock and never
//! calls anything back: the caller passes `now` and acts on the returned names.
//!
//! Each name holds at most one deadline; setting it again replaces the earlier one.

use std::collections::BTreeMap;
use std::time::Instant;

/// Deadlines keyed by timer name; at most one per name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerTable<T: Copy + Eq + Ord> {
    deadlines: BTreeMap<T, Instant>,
}

impl<T: Copy + Eq + Ord> Default for TimerTable<T> {
    fn default() -> Self {
        Self { deadlines: BTreeMap::new() }
    }
}

impl<T: Copy + Eq + Ord> TimerTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms `timer` to fire at `at`, replacing any earlier deadline for it.
    pub fn set(&mut self, timer: T, at: Instant) {
        self.deadlines.insert(timer, at);
    }

    /// Disarms `timer`; a no-op when it is not armed.
    pub fn cancel(&mut self, timer: T) {
        self.deadlines.remove(&timer);
    }

    /// When `timer` fires, if it is armed.
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.deadlines.get(&timer).copied()
    }

    /// Whether `timer` is armed.
    pub fn is_armed(&self, timer: T) -> bool {
        self.deadlines.contains_key(&timer)
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Disarms and returns every timer whose deadline is at or before `now`, earliest
    /// first (ties in name order).
    pub fn expired(&mut self, now: Instant) -> Vec<T> {
        let mut fired: Vec<(Instant, T)> =
            self.deadlines.iter().filter(|(_, &at)| at <= now).map(|(&t, &at)| (at, t)).collect();
        fired.sort();
        for (_, t) in &fired {
            self.deadlines.remove(t);
        }
        fired.into_iter().map(|(_, t)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Timer {
        A,
        B,
        C,
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_table_has_no_deadline_and_nothing_expires() {
        let mut t = TimerTable::<Timer>::new();
        assert_eq!(t.next_deadline(), None);
        assert!(t.expired(Instant::now()).is_empty());
    }

    #[test]
    fn next_deadline_is_the_earliest_armed_timer() {
        let t0 = Instant::now();
        let mut t = TimerTable::new();
        t.set(Timer::A, t0 + ms(30));
        t.set(Timer::B, t0 + ms(10));
        t.set(Timer::C, t0 + ms(20));
        assert_eq!(t.next_deadline(), Some(t0 + ms(10)));
    }

    #[test]
    fn setting_again_replaces_the_deadline() {
        let t0 = Instant::now();
        let mut t = TimerTable::new();
        t.set(Timer::A, t0 + ms(10));
        t.set(Timer::A, t0 + ms(50));
        assert_eq!(t.get(Timer::A), Some(t0 + ms(50)));
        assert!(t.expired(t0 + ms(20)).is_empty());
    }

    #[test]
    fn cancel_disarms_and_is_idempotent() {
        let t0 = Instant::now();
        let mut t = TimerTable::new();
        t.set(Timer::A, t0);
        t.cancel(Timer::A);
        t.cancel(Timer::A);
        assert!(!t.is_armed(Timer::A));
        assert!(t.expired(t0 + ms(1)).is_empty());
    }

    #[test]
    fn expired_returns_due_timers_earliest_first_and_removes_them() {
        let t0 = Instant::now();
        let mut t = TimerTable::new();
        t.set(Timer::A, t0 + ms(20));
        t.set(Timer::B, t0 + ms(5));
        t.set(Timer::C, t0 + ms(40));
        assert_eq!(t.expired(t0 + ms(20)), vec![Timer::B, Timer::A]);
        assert_eq!(t.next_deadline(), Some(t0 + ms(40)));
        assert!(t.expired(t0 + ms(20)).is_empty());
    }

    #[test]
    fn timer_due_exactly_now_expires() {
        let t0 = Instant::now();
        let mut t = TimerTable::new();
        t.set(Timer::C, t0);
        assert_eq!(t.expired(t0), vec![Timer::C]);
    }
}
