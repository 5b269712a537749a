//! Admission of pull bundles under the memory budget, and bundle completion/removal.
//!
//! A second `impl` block of [`PullQueue`] (split off to keep files small); the rule itself
//! is documented in the parent module under "Admission". Everything here runs inside a
//! public handler of the queue; nothing here is called by the driver.

use std::collections::HashSet;
use std::time::Instant;

use super::{sync_timer, Bundle, BundleId, ObjectEntry, Phase, PullAction, PullPriority, PullQueue};
use crate::ids::ObjectId;

impl PullQueue {
    /// Re-runs admission until no bundle completes as a side effect.
    pub(super) fn settle(&mut self, now: Instant) {
        loop {
            self.dirty = false;
            self.rebalance(now);
            if !self.dirty {
                break;
            }
        }
    }

    /// Recomputes which bundles are active and applies the change to every object.
    fn rebalance(&mut self, now: Instant) {
        let mut used = 0u64;
        let mut counted = HashSet::new();
        let mut admit_more = true;
        let mut decisions = Vec::with_capacity(self.order.len());
        for (&(priority, _), bid) in &self.order {
            let bundle = self.bundles.get(bid).expect("order and bundles hold the same ids");
            let (cost, sized) = self.bundle_cost(bundle, &counted);
            let fits = sized && used.saturating_add(cost) <= self.budget;
            let admit = priority == PullPriority::Get || (admit_more && fits);
            if admit {
                used = used.saturating_add(cost);
                counted.extend(bundle.ids.iter().copied());
            } else {
                admit_more = false;
            }
            decisions.push((*bid, admit));
        }
        if !decisions.iter().any(|d| d.1) {
            if let Some(first) = decisions.first_mut() {
                first.1 = true;
            }
        }
        self.queued = decisions.iter().any(|d| !d.1);
        for (bid, admit) in decisions {
            if let Some(b) = self.bundles.get_mut(&bid) {
                b.active = admit;
            }
        }
        let ids: Vec<ObjectId> = self.objects.keys().copied().collect();
        for id in ids {
            let Some(e) = self.objects.get(&id) else {
                continue;
            };
            let want = e.bundles.iter().any(|b| self.bundles.get(b).is_some_and(|b| b.active));
            if want != e.active {
                self.set_active(now, id, want);
            } else if want {
                self.start_fetch(now, id);
            }
        }
    }

    /// New bytes `bundle` needs beyond `counted`, and whether every size is known.
    fn bundle_cost(&self, bundle: &Bundle, counted: &HashSet<ObjectId>) -> (u64, bool) {
        let mut cost = 0u64;
        let mut sized = true;
        for id in bundle.ids.iter().filter(|id| !counted.contains(*id)) {
            let Some(e) = self.objects.get(id) else {
                continue;
            };
            if e.resolved() {
                continue;
            }
            match e.size {
                Some(s) => cost = cost.saturating_add(s),
                None => sized = false,
            }
        }
        (cost, sized)
    }

    fn set_active(&mut self, now: Instant, id: ObjectId, active: bool) {
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        e.active = active;
        e.retries = 0;
        if active {
            self.start_fetch(now, id);
            return;
        }
        if e.fetching() {
            self.actions.push_back(PullAction::AbortBuffer { id });
        }
        if matches!(e.phase, Phase::Fetching(_) | Phase::AllocBackoff) {
            e.phase = Phase::Idle;
        }
        e.retry_at = None;
        sync_timer(&mut self.timers, id, e);
    }

    pub(super) fn complete_bundles_of(&mut self, id: ObjectId) {
        let bundles = self.objects.get(&id).map(|e| e.bundles.clone()).unwrap_or_default();
        for bid in bundles {
            self.complete_if_resolved(bid);
        }
    }

    pub(super) fn complete_if_resolved(&mut self, bundle_id: BundleId) {
        let Some(b) = self.bundles.get(&bundle_id) else {
            return;
        };
        if b.ids.iter().all(|id| self.objects.get(id).is_some_and(ObjectEntry::resolved)) {
            self.actions.push_back(PullAction::Completed { bundle_id });
            self.remove_bundle(bundle_id);
            self.dirty = true;
        }
    }

    pub(super) fn remove_bundle(&mut self, bundle_id: BundleId) {
        let Some(b) = self.bundles.remove(&bundle_id) else {
            return;
        };
        self.order.remove(&(b.priority, b.seq));
        for id in b.ids {
            let Some(e) = self.objects.get_mut(&id) else {
                continue;
            };
            e.bundles.retain(|x| *x != bundle_id);
            if !e.bundles.is_empty() {
                continue;
            }
            if e.fetching() {
                self.actions.push_back(PullAction::AbortBuffer { id });
            }
            if let Some(t) = e.scheduled {
                self.timers.remove(&(t, id));
            }
            self.objects.remove(&id);
        }
    }
}
