//! Get/Wait bookkeeping: which pending client requests complete when an object is sealed or
//! a deadline passes.
//!
//! **Owns** the pending plasma `Get` requests and raylet `Wait` requests of one shard, the
//! objects each one still misses, and their deadlines.
//!
//! **Called by** the objects service. It feeds requests in with a presence test (normally
//! `|id| table.contains(id)`), feeds `ObjectAction::Sealed` / `Deleted` from the object table
//! into [`WaitTable::handle_sealed`] / [`WaitTable::handle_deleted`], and arms one timer at
//! [`WaitTable::poll_timeout`]. The table does not care where objects live: it can equally
//! run on a client's shard, fed by seal notifications from the objects' owner shards.
//!
//! **Must not** touch objects or add references: on `GetReady` the caller takes a reference
//! for each found id with `ObjectTable::get` (which may still fail if the object went away
//! since; treat that id as missing). No IO, no clock.
//!
//! # Calling protocol
//!
//! Any `handle_*` call or `cancel` may queue actions; drain [`WaitTable::poll_action`] until
//! `None`, then re-arm the timer from [`WaitTable::poll_timeout`]. Requests whose objects are
//! all present when they arrive (or whose timeout is zero) complete within the `handle_*`
//! call itself.
//!
//! # Semantics
//!
//! - Ids are deduplicated (first occurrence kept); results list each id once, in request
//!   order. The caller maps them back to a reply with repeats if its protocol needs that.
//! - `timeout`: `None` waits forever; `Some(ZERO)` answers at once with what is present
//!   (plasma's `timeout_ms = 0`); otherwise the request answers at `now + timeout` with what
//!   is present then (a timeout too large to represent is treated as forever).
//! - Get completes when every id is present. Wait completes when at least
//!   `min(num_required, distinct ids)` are present and reports *all* present ids as ready
//!   (as Ray's WaitManager does). `num_required == 0` completes at once with the present ids
//!   ready; Ray's E4+ raylet replies to that case with two empty lists, which the codec can
//!   reproduce.
//!
//! ```text
//!   handle_get / handle_wait ──(complete now?)──yes──> action queued, nothing stored
//!            │ no
//!            ▼
//!         Pending ──handle_sealed completes──> GetReady / WaitReady
//!            │    ──handle_timeout (deadline)─> GetReady / WaitReady with missing ids
//!            └────cancel──────────────────────> (dropped, no action)
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::ids::ObjectId;

/// Identifies one Get or Wait request; chosen by the caller, unique among pending requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A request could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// A request with this id is already pending.
    #[error("request {0:?} is already pending")]
    DuplicateRequest(RequestId),
}

/// A completed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitAction {
    /// A Get is answered: `found` ids were present, `missing` ones were not (timeout).
    GetReady {
        /// The request.
        req: RequestId,
        /// Present ids, in request order.
        found: Vec<ObjectId>,
        /// Absent ids, in request order; empty unless the request timed out.
        missing: Vec<ObjectId>,
    },
    /// A Wait is answered.
    WaitReady {
        /// The request.
        req: RequestId,
        /// Present ids, in request order (may exceed `num_required`).
        ready: Vec<ObjectId>,
        /// The other ids, in request order.
        remaining: Vec<ObjectId>,
    },
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Get,
    Wait { num_required: usize },
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    /// Distinct ids in request order.
    ids: Vec<ObjectId>,
    /// The subset of `ids` present now.
    ready: BTreeSet<ObjectId>,
    /// Objects that can no longer become ready (their fetch failed).
    failed: BTreeSet<ObjectId>,
    deadline: Option<Instant>,
}

impl Pending {
    fn is_complete(&self) -> bool {
        match self.kind {
            Kind::Get => self.ready.len() + self.failed.len() >= self.ids.len(),
            Kind::Wait { num_required } => {
                let need = num_required.min(self.ids.len());
                let still_possible = self.ids.len() - self.failed.len();
                self.ready.len() >= need || still_possible < need
            }
        }
    }

    fn into_action(self, req: RequestId) -> WaitAction {
        let (mut yes, mut no) = (Vec::new(), Vec::new());
        for id in self.ids {
            if self.ready.contains(&id) {
                yes.push(id);
            } else {
                no.push(id);
            }
        }
        match self.kind {
            Kind::Get => WaitAction::GetReady { req, found: yes, missing: no },
            Kind::Wait { .. } => WaitAction::WaitReady { req, ready: yes, remaining: no },
        }
    }
}

/// Pending Get/Wait requests of one shard. See the module docs.
#[derive(Debug, Default)]
pub struct WaitTable {
    requests: BTreeMap<RequestId, Pending>,
    by_object: BTreeMap<ObjectId, BTreeSet<RequestId>>,
    deadlines: BTreeSet<(Instant, RequestId)>,
    actions: VecDeque<WaitAction>,
}

impl WaitTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A plasma Get: answer when all `ids` are present or at the timeout. `present` says
    /// which ids are sealed in the store right now.
    pub fn handle_get(
        &mut self,
        now: Instant,
        req: RequestId,
        ids: &[ObjectId],
        timeout: Option<Duration>,
        present: impl Fn(&ObjectId) -> bool,
    ) -> Result<(), WaitError> {
        self.add(now, req, Kind::Get, ids, timeout, present)
    }

    /// A Wait: answer when `num_required` of the distinct `ids` are present or at the
    /// timeout. `present` says which ids are sealed in the store right now.
    pub fn handle_wait(
        &mut self,
        now: Instant,
        req: RequestId,
        ids: &[ObjectId],
        num_required: usize,
        timeout: Option<Duration>,
        present: impl Fn(&ObjectId) -> bool,
    ) -> Result<(), WaitError> {
        self.add(now, req, Kind::Wait { num_required }, ids, timeout, present)
    }

    /// `id` was sealed (or restored): requests now complete are answered.
    pub fn handle_sealed(&mut self, id: &ObjectId) {
        let Some(reqs) = self.by_object.get(id) else {
            return;
        };
        let mut done = Vec::new();
        for req in reqs {
            let p = self.requests.get_mut(req).expect("object index names a pending request");
            p.ready.insert(*id);
            if p.is_complete() {
                done.push(*req);
            }
        }
        for req in done {
            self.finish(req);
        }
    }

    /// `id` left memory (deleted or evicted): pending requests count it as missing again.
    pub fn handle_deleted(&mut self, id: &ObjectId) {
        let Some(reqs) = self.by_object.get(id) else {
            return;
        };
        for req in reqs {
            let p = self.requests.get_mut(req).expect("object index names a pending request");
            p.ready.remove(id);
        }
    }

    /// `id` can no longer become ready here (its fetch failed): requests that can now never
    /// complete normally finish at once, reporting it missing/remaining.
    pub fn handle_failed(&mut self, id: &ObjectId) {
        let Some(reqs) = self.by_object.get(id) else {
            return;
        };
        let mut done = Vec::new();
        for req in reqs {
            let p = self.requests.get_mut(req).expect("object index names a pending request");
            if !p.ready.contains(id) {
                p.failed.insert(*id);
            }
            if p.is_complete() {
                done.push(*req);
            }
        }
        for req in done {
            self.finish(req);
        }
    }

    /// Answers every request whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, req)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.finish(req);
        }
    }

    /// Drops a pending request without answering it. Returns whether it was pending.
    pub fn cancel(&mut self, req: RequestId) -> bool {
        self.remove(req).is_some()
    }

    /// Next answered request, in completion order.
    pub fn poll_action(&mut self) -> Option<WaitAction> {
        self.actions.pop_front()
    }

    /// The earliest pending deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(t, _)| t)
    }

    /// Number of pending requests.
    pub fn pending(&self) -> usize {
        self.requests.len()
    }

    /// Whether `req` is pending.
    pub fn is_pending(&self, req: RequestId) -> bool {
        self.requests.contains_key(&req)
    }

    /// Whether any pending request includes `id` (e.g. to keep a pull or restore going).
    pub fn is_watched(&self, id: &ObjectId) -> bool {
        self.by_object.contains_key(id)
    }

    fn add(
        &mut self,
        now: Instant,
        req: RequestId,
        kind: Kind,
        ids: &[ObjectId],
        timeout: Option<Duration>,
        present: impl Fn(&ObjectId) -> bool,
    ) -> Result<(), WaitError> {
        if self.requests.contains_key(&req) {
            return Err(WaitError::DuplicateRequest(req));
        }
        let mut seen = BTreeSet::new();
        let ids: Vec<ObjectId> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
        let ready: BTreeSet<ObjectId> = ids.iter().copied().filter(|id| present(id)).collect();
        let deadline = timeout.and_then(|t| now.checked_add(t));
        let p = Pending { kind, ids, ready, failed: BTreeSet::new(), deadline };
        if p.is_complete() || timeout == Some(Duration::ZERO) {
            self.actions.push_back(p.into_action(req));
            return Ok(());
        }
        for id in &p.ids {
            self.by_object.entry(*id).or_default().insert(req);
        }
        if let Some(d) = deadline {
            self.deadlines.insert((d, req));
        }
        self.requests.insert(req, p);
        Ok(())
    }

    fn finish(&mut self, req: RequestId) {
        if let Some(p) = self.remove(req) {
            self.actions.push_back(p.into_action(req));
        }
    }

    fn remove(&mut self, req: RequestId) -> Option<Pending> {
        let p = self.requests.remove(&req)?;
        for id in &p.ids {
            if let Some(set) = self.by_object.get_mut(id) {
                set.remove(&req);
                if set.is_empty() {
                    self.by_object.remove(id);
                }
            }
        }
        if let Some(d) = p.deadline {
            self.deadlines.remove(&(d, req));
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests;
