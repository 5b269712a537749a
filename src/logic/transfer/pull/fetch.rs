//! Fetching one object: allocating its buffer, choosing a source, re-sending on failure or
//! stall, and giving up.
//!
//! A second `impl` block of [`PullQueue`] (split off to keep files small); the rules are
//! documented in the parent module under "Retries and failures".

use std::time::{Duration, Instant};

use super::{after, sync_timer, Fetch, Phase, PullAction, PullConfig, PullFailure, PullQueue};
use crate::ids::{NodeId, ObjectId};
use crate::logic::transfer::chunks::{ChunkLayout, Reassembly};

/// Retry delay after `retries` consecutive attempts without progress.
pub(super) fn backoff(config: &PullConfig, retries: u32) -> Duration {
    let exp = retries.min(config.max_backoff_exponent).min(31);
    config.pull_retry.saturating_mul(1u32 << exp)
}

/// A uniformly random copy, avoiding `avoid` when another exists.
fn pick_source(rng: &mut fastrand::Rng, locations: &[NodeId], avoid: Option<NodeId>) -> Option<NodeId> {
    let preferred: Vec<NodeId> = locations.iter().copied().filter(|n| Some(*n) != avoid).collect();
    let pool = if preferred.is_empty() { locations } else { &preferred };
    if pool.is_empty() {
        None
    } else {
        Some(pool[rng.usize(..pool.len())])
    }
}

impl PullQueue {
    /// Idle ∧ active ∧ size known → allocate the buffer and send the first pull.
    pub(super) fn start_fetch(&mut self, now: Instant, id: ObjectId) {
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        if !e.active || !matches!(e.phase, Phase::Idle) {
            return;
        }
        let Some(size) = e.size else { return };
        match ChunkLayout::new(size, self.config.chunk_size) {
            Ok(layout) => {
                e.phase = Phase::Fetching(Fetch { chunks: Reassembly::new(layout), source: None });
                self.actions.push_back(PullAction::AllocateBuffer { id, size });
                self.send_pull(now, id, None);
            }
            Err(error) => self.fail(id, PullFailure::InvalidSize { size, error }),
        }
    }

    /// Sends the pull of a fetching object to a random copy, avoiding `avoid` if possible.
    pub(super) fn send_pull(&mut self, now: Instant, id: ObjectId, avoid: Option<NodeId>) {
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        let Phase::Fetching(f) = &mut e.phase else {
            return;
        };
        f.source = pick_source(&mut self.rng, &e.locations, avoid);
        e.retry_at = match f.source {
            Some(node) => {
                self.actions.push_back(PullAction::SendPull { node, id });
                after(now, backoff(&self.config, e.retries))
            }
            None => None,
        };
        sync_timer(&mut self.timers, id, e);
    }

    /// `node` stopped serving `id` (failure, death, bad chunk). Only acts if it was the
    /// current source: another copy at once, else back off on the same one.
    pub(super) fn source_failed(&mut self, now: Instant, id: ObjectId, node: NodeId) {
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        let Phase::Fetching(f) = &mut e.phase else {
            return;
        };
        if f.source != Some(node) {
            return;
        }
        if e.locations.iter().any(|n| *n != node) {
            self.send_pull(now, id, Some(node));
            return;
        }
        e.retries = e.retries.saturating_add(1);
        if e.locations.contains(&node) {
            e.retry_at = after(now, backoff(&self.config, e.retries));
        } else {
            // No copy left to retry; a location update resumes the fetch.
            f.source = None;
            e.retry_at = None;
        }
        sync_timer(&mut self.timers, id, e);
    }

    pub(super) fn fire(&mut self, now: Instant, id: ObjectId) {
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        if e.expires_at.is_some_and(|t| t <= now) {
            let waited = self.config.fetch_timeout;
            self.fail(id, PullFailure::NoLocation(waited));
            return;
        }
        if e.retry_at.is_none_or(|t| t > now) {
            sync_timer(&mut self.timers, id, e);
            return;
        }
        e.retry_at = None;
        match &e.phase {
            Phase::AllocBackoff => {
                e.phase = Phase::Idle;
                sync_timer(&mut self.timers, id, e);
                self.start_fetch(now, id);
            }
            Phase::Fetching(f) => {
                let avoid = f.source;
                e.retries = e.retries.saturating_add(1);
                self.send_pull(now, id, avoid);
            }
            _ => sync_timer(&mut self.timers, id, e),
        }
    }

    pub(super) fn fail(&mut self, id: ObjectId, reason: PullFailure) {
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        if e.resolved() {
            return;
        }
        if e.fetching() {
            self.actions.push_back(PullAction::AbortBuffer { id });
        }
        e.phase = Phase::Failed;
        e.retry_at = None;
        e.expires_at = None;
        sync_timer(&mut self.timers, id, e);
        self.actions.push_back(PullAction::Failed { id, reason });
        self.complete_bundles_of(id);
    }
}
