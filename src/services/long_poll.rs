//! Readers long-polling one GCS table (the node table, the object directory) for its next
//! change. Shard 0 of the head only.
//!
//! A waiter is listed only while its call waits: it leaves when the table changes, when
//! its wait times out, and when its call is dropped (its connection closed). Before, a
//! waiter whose wait timed out stayed listed until the next change, so a stable cluster
//! grew the list by one entry per node every poll period. At most `max` wait at once per
//! table (`gcs_max_long_polls`); one more is refused with `ResourceExhausted`. The
//! `raylet_long_poll_waiters` gauge counts the waiters of every table of the node.

use crate::metrics::Metrics;
use crate::rpc::Status;
use futures_channel::oneshot;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// The waiters of one table.
#[derive(Debug)]
pub struct LongPolls {
    table: &'static str,
    max: usize,
    next: Cell<u64>,
    waiting: RefCell<HashMap<u64, oneshot::Sender<()>>>,
    metrics: Metrics,
}

/// Takes a waiter off the list when its call ends, however it ends.
struct Listed<'a> {
    polls: &'a LongPolls,
    id: u64,
}

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        if self.polls.waiting.borrow_mut().remove(&self.id).is_some() {
            self.polls.metrics.shard(0).long_poll_waiters.fetch_sub(1, Relaxed);
        }
    }
}

impl LongPolls {
    /// Waiters of `table` (named in errors), at most `max` at once, counted in `metrics`.
    pub fn new(table: &'static str, max: usize, metrics: Metrics) -> Self {
        Self { table, max, next: Cell::new(0), waiting: RefCell::new(HashMap::new()), metrics }
    }

    /// The table changed: wakes every waiter.
    pub fn notify(&self) {
        let woken: Vec<_> = self.waiting.borrow_mut().drain().map(|(_, w)| w).collect();
        self.metrics.shard(0).long_poll_waiters.fetch_sub(woken.len() as u64, Relaxed);
        for w in woken {
            let _ = w.send(());
        }
    }

    /// Waits for the next change, or `wait` at most.
    pub async fn wait(&self, wait: Duration) -> Result<(), Status> {
        if self.waiting.borrow().len() >= self.max {
            return Err(Status::resource_exhausted(format!(
                "{} long-polls already wait on the {} (limit gcs_max_long_polls = {})",
                self.max, self.table, self.max
            )));
        }
        let id = self.next.get();
        self.next.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().insert(id, tx);
        self.metrics.shard(0).long_poll_waiters.fetch_add(1, Relaxed);
        let _listed = Listed { polls: self, id };
        let _ = glommio::timer::timeout(wait, async {
            rx.await.map_err(|_| glommio::GlommioError::Closed(glommio::ResourceType::Channel(())))
        })
        .await;
        Ok(())
    }

    /// Waiters now.
    pub fn len(&self) -> usize {
        self.waiting.borrow().len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.waiting.borrow().is_empty()
    }
}
