//! One re-armable timer per state machine (STYLE.md §6.2): a deadline and a wake-up for
//! the single task that sleeps on it. The owner calls [`Rearm::rearm`] with its machine's
//! `poll_timeout()` after every input; [`run`] calls `fire` when the deadline passes.

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// A deadline and its wake-up channel.
#[derive(Debug)]
pub struct Rearm {
    deadline: Cell<Option<Instant>>,
    wake: LocalSender<()>,
    rx: RefCell<Option<LocalReceiver<()>>>,
}

impl Default for Rearm {
    fn default() -> Self {
        let (wake, rx) = local_channel::new_bounded(1);
        Self { deadline: Cell::new(None), wake, rx: RefCell::new(Some(rx)) }
    }
}

impl Rearm {
    /// Moves the deadline; wakes the timer task only when the deadline came earlier. A
    /// later or cleared deadline needs no wake-up: the task wakes at the old one, finds it
    /// not due, and sleeps again until the new one (no timer churn on every input).
    pub fn rearm(&self, at: Option<Instant>) {
        let old = self.deadline.replace(at);
        if let Some(at) = at {
            if old.is_none_or(|old| at < old) {
                let _ = self.wake.try_send(());
            }
        }
    }
}

/// The timer task of `owner`: sleeps until the deadline of `timer(owner)` (re-reading it
/// on every re-arm) and calls `fire(owner, now)` when it passes. Ends when the owner is
/// dropped. Only one task may run per timer.
pub async fn run<T: 'static>(owner: Weak<T>, timer: fn(&T) -> &Rearm, fire: fn(&Rc<T>, Instant)) {
    let Some(rx) = owner.upgrade().and_then(|o| timer(&o).rx.borrow_mut().take()) else { return };
    loop {
        let Some(o) = owner.upgrade() else { return };
        let wait = match timer(&o).deadline.get() {
            Some(at) => at.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        drop(o);
        let woken = futures_lite::future::or(
            async {
                glommio::timer::sleep(wait).await;
                false
            },
            async { rx.recv().await.is_some() },
        )
        .await;
        if woken {
            continue;
        }
        let Some(o) = owner.upgrade() else { return };
        let now = Instant::now();
        if timer(&o).deadline.get().is_some_and(|at| at <= now) {
            fire(&o, now);
        }
    }
}
