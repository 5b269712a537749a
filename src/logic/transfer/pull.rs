//! The puller's side of object transfer: which objects this node wants, which of them it
//! may fetch now (memory admission), where it fetches each from, and when it retries.
//!
//! Owns: pull bundles (a deduplicated set of object ids with a priority), per-object
//! records (known copies, size, fetch phase, chunk reassembly, retry and expiry timers) and
//! the admission decision. Called by the transfer service on the shard that runs this
//! node's pulls. It must not do IO, allocate store memory, read the clock or keep
//! callbacks: effects come out as [`PullAction`]s.
//!
//! # Call protocol
//!
//! * Inputs: [`PullQueue::handle_pull`], [`PullQueue::handle_cancel`],
//!   [`PullQueue::handle_budget`], [`PullQueue::handle_locations`] (object directory),
//!   [`PullQueue::handle_node_dead`], [`PullQueue::handle_object_local`],
//!   [`PullQueue::handle_transfer_failed`], [`PullQueue::handle_allocation_failed`],
//!   [`PullQueue::handle_allocation_impossible`],
//!   [`PullQueue::handle_timeout`], and on the chunk path [`PullQueue::handle_chunk_header`]
//!   then [`PullQueue::handle_chunk`].
//! * After every input, drain [`PullQueue::poll_action`] until `None` and perform the actions
//!   **in order**, then re-arm the single timer with [`PullQueue::poll_timeout`]. Ordering
//!   guarantees: `AllocateBuffer{id}` comes before the `SendPull`s for `id` (the driver must
//!   finish the allocation, or report [`PullQueue::handle_allocation_failed`], before chunks
//!   can land); `AbortBuffer{id}` comes before any new `AllocateBuffer{id}`; `Seal{id}` comes
//!   before the `Completed` of bundles it finishes.
//! * Chunk path (IO layer): read a header, call `handle_chunk_header`; on
//!   [`ChunkClaim::Write`] read the payload straight into the buffer at that offset, verify
//!   its CRC32C, then call `handle_chunk(.., crc_ok)`; on [`ChunkClaim::Discard`] (or an
//!   error) read and drop the payload. A claim is held until `handle_chunk`, or until
//!   `handle_transfer_failed` / `handle_node_dead` for the sending node, so a stalled
//!   connection must be reported as failed by the IO layer's own read timeout.
//! * A `Seal{id}` marks the object local here; a later `handle_object_local(id)` is harmless.
//!
//! # Admission
//!
//! [`PullQueue::handle_budget`] gives the bytes that objects being pulled may occupy in total
//! (the driver passes free store memory plus [`PullQueue::bytes_in_progress`], since buffers
//! already allocated by this queue are no longer free). The budget starts at 0. On every
//! change, bundles are walked in order (Get, then Wait, then TaskArgs; FIFO within a
//! priority) and each object's size is counted once, local and failed objects at 0:
//! Get bundles are always active; a Wait/TaskArgs bundle is active if all its sizes are known
//! and it fits in what is left, and the walk admits no further Wait/TaskArgs bundle after the
//! first one that is not admitted (no overtaking, so big bundles do not starve). If no bundle
//! is active after the walk, the first one is activated anyway, so one bundle larger than
//! memory cannot deadlock the queue. An object is active while any active bundle names it;
//! deactivating an object with a buffer emits `AbortBuffer`.
//!
//! # Retries and failures
//!
//! * Source choice: uniformly at random (seeded RNG) among known copies other than this node,
//!   avoiding the copy that just failed or stalled when another exists.
//! * No progress (no newly accepted chunk) for `pull_retry × 2^min(retries,
//!   max_backoff_exponent)` re-sends the pull, to another copy when one exists. An accepted
//!   chunk resets the retry count.
//! * Transfer failed / source dead: re-sent at once to another copy if one exists, else after
//!   the back-off delay to the same copy (if it is still listed).
//! * Bad CRC: the chunk stays missing (its claim is released). If it came from the current
//!   source, that is handled exactly like a transfer failure from that source. The holder
//!   suppresses a duplicate request while its push is in flight, so with a single copy the
//!   missing chunk is re-fetched by the no-progress timer once that push has gone quiet;
//!   duplicates of chunks already held are discarded by the claim.
//! * No known copy for `fetch_timeout` (from the request, or from when the list became empty;
//!   an accepted chunk counts as a copy): `Failed{ NoLocation }`. Failed objects count as
//!   resolved for their bundles; a new bundle naming a failed object restarts it.
//!
//! # State diagram (one object)
//!
//! ```text
//!                      handle_pull (new record)
//!                               │
//!   deactivated / size changed  ▼
//!   [AbortBuffer] ─────────▶  Idle ──active ∧ size known──▶ Fetching
//!        ▲                                [AllocateBuffer, SendPull if a copy is known]
//!        └───────────────── Fetching ──allocation failed──▶ AllocBackoff
//!                           Fetching ──allocation impossible──▶ Failed [Failed{NoRoom}]
//!                           Fetching ◀──retry timer──────── AllocBackoff
//!   Fetching ──last chunk accepted──▶ Local [Seal]
//!   Idle/Fetching/AllocBackoff ──object local──▶ Local [AbortBuffer if Fetching]
//!   Idle/Fetching/AllocBackoff ──no copy for fetch_timeout──▶ Failed [AbortBuffer if
//!                                                             Fetching, Failed]
//!   Failed ──named by a new bundle──▶ Idle
//! ```
//!
//! Bundles: `Inactive ⇄ Active` by admission; `Completed` (emitted, then removed) once every
//! object is `Local` or `Failed`; removed by `handle_cancel`. An object record is dropped
//! when no bundle names it (`AbortBuffer` if it had a buffer).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::chunks::{ChunkError, ChunkHeader, Claim, Progress, Reassembly, DEFAULT_CHUNK_SIZE};
use crate::ids::{NodeId, ObjectId};
use fetch::backoff;

/// Caller-chosen id of one pull bundle (unique among live bundles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleId(pub u64);

/// Why the objects are wanted; earlier variants are admitted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PullPriority {
    /// A worker is blocked in `get`.
    Get,
    /// A worker waits in `wait` (or an actor call needs the objects).
    Wait,
    /// Arguments of queued tasks.
    TaskArgs,
}

/// Tunables of a [`PullQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullConfig {
    /// Chunk size; must equal the holders' chunk size.
    pub chunk_size: u64,
    /// Base delay before a pull without progress is re-sent (Ray: 10 s).
    pub pull_retry: Duration,
    /// Cap on the doubling of `pull_retry` per consecutive retry (Ray: 10).
    pub max_backoff_exponent: u32,
    /// How long an object may have no known copy before its pull fails (Ray: 600 s).
    pub fetch_timeout: Duration,
}

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            pull_retry: Duration::from_secs(1),
            max_backoff_exponent: 4,
            fetch_timeout: Duration::from_secs(600),
        }
    }
}

/// Why a pull gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullFailure {
    /// No copy was known anywhere for this long (Ray `OBJECT_FETCH_TIMED_OUT`).
    NoLocation(Duration),
    /// The object can never get a buffer here (larger than the store, and its fallback
    /// allocation failed): the store's reason.
    NoRoom(String),
    /// The directory reported a size that cannot be laid out in chunks.
    InvalidSize {
        /// The reported size.
        size: u64,
        /// Why it cannot be laid out.
        error: ChunkError,
    },
}

/// An effect the driver must perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullAction {
    /// Ask `node` to push object `id` to this node.
    SendPull {
        /// The holder asked.
        node: NodeId,
        /// The object.
        id: ObjectId,
    },
    /// Create the (unsealed) destination buffer of `size` bytes for `id`.
    AllocateBuffer {
        /// The object.
        id: ObjectId,
        /// Data plus metadata bytes.
        size: u64,
    },
    /// Release the partial buffer of `id`; chunks still arriving for it must be dropped.
    AbortBuffer {
        /// The object.
        id: ObjectId,
    },
    /// Every chunk of `id` is written and verified: seal the buffer.
    Seal {
        /// The object.
        id: ObjectId,
    },
    /// The pull of `id` gave up; bundles treat it as resolved.
    Failed {
        /// The object.
        id: ObjectId,
        /// Why.
        reason: PullFailure,
    },
    /// Every object of the bundle is local or failed; the bundle is forgotten.
    Completed {
        /// The bundle.
        bundle_id: BundleId,
    },
}

/// Where the IO layer puts the payload of an arriving chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkClaim {
    /// Write the payload at `offset` of the object's buffer, verify it, then report it.
    Write {
        /// Byte offset in the object.
        offset: u64,
        /// Payload length.
        len: u64,
    },
    /// Read and drop the payload.
    Discard(DiscardReason),
}

/// Why an arriving chunk is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// Nobody here is pulling the object right now (cancelled, inactive, done).
    NotPulled,
    /// The chunk is already received.
    AlreadyReceived,
    /// Another connection is writing this chunk.
    InProgress,
}

/// What [`PullQueue::handle_chunk`] did with a reported chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Newly received; the object is not complete yet.
    Accepted,
    /// Newly received and the object is complete (`Seal` emitted).
    Completed,
    /// Already received; ignored.
    Duplicate,
    /// The object is not being fetched, or another writer holds the chunk; ignored.
    Dropped,
    /// Checksum failed; the chunk stays missing.
    Corrupt,
}

/// An input the pull queue refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// The configuration cannot work.
    #[error("invalid pull config: {0}")]
    InvalidConfig(&'static str),
    /// A live bundle already has this id.
    #[error("bundle {0:?} already exists")]
    DuplicateBundle(BundleId),
    /// A chunk does not fit the object's layout.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
}

#[derive(Debug)]
struct Bundle {
    priority: PullPriority,
    seq: u64,
    ids: Vec<ObjectId>,
    active: bool,
}

#[derive(Debug)]
struct Fetch {
    chunks: Reassembly,
    /// The copy the latest pull went to; `None` while no copy is known.
    source: Option<NodeId>,
}

#[derive(Debug)]
enum Phase {
    Idle,
    Fetching(Fetch),
    AllocBackoff,
    Local,
    Failed,
}

#[derive(Debug)]
struct ObjectEntry {
    bundles: Vec<BundleId>,
    active: bool,
    /// Known copies, excluding this node and nodes known dead.
    locations: Vec<NodeId>,
    size: Option<u64>,
    phase: Phase,
    /// Fail with `NoLocation` at this time (set while no copy is known).
    expires_at: Option<Instant>,
    /// Re-send the pull (or retry the allocation) at this time.
    retry_at: Option<Instant>,
    retries: u32,
    /// The key under which this entry sits in the timer index.
    scheduled: Option<Instant>,
}

impl ObjectEntry {
    fn new(expires_at: Option<Instant>) -> Self {
        Self {
            bundles: Vec::new(),
            active: false,
            locations: Vec::new(),
            size: None,
            phase: Phase::Idle,
            expires_at,
            retry_at: None,
            retries: 0,
            scheduled: None,
        }
    }

    fn resolved(&self) -> bool {
        matches!(self.phase, Phase::Local | Phase::Failed)
    }

    fn fetching(&self) -> bool {
        matches!(self.phase, Phase::Fetching(_))
    }
}

/// The puller's queue of bundles and objects. See the module docs for the protocol.
#[derive(Debug)]
pub struct PullQueue {
    self_node: NodeId,
    config: PullConfig,
    rng: fastrand::Rng,
    budget: u64,
    next_seq: u64,
    bundles: HashMap<BundleId, Bundle>,
    order: BTreeMap<(PullPriority, u64), BundleId>,
    objects: BTreeMap<ObjectId, ObjectEntry>,
    timers: BTreeSet<(Instant, ObjectId)>,
    dead_nodes: HashSet<NodeId>,
    queued: bool,
    dirty: bool,
    actions: VecDeque<PullAction>,
}

fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// Keeps the timer index in step with an entry's deadlines.
fn sync_timer(timers: &mut BTreeSet<(Instant, ObjectId)>, id: ObjectId, e: &mut ObjectEntry) {
    let want = match (e.expires_at, e.retry_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if want != e.scheduled {
        if let Some(t) = e.scheduled {
            timers.remove(&(t, id));
        }
        if let Some(t) = want {
            timers.insert((t, id));
        }
        e.scheduled = want;
    }
}

impl PullQueue {
    /// A queue for node `self_node`; `rng` picks sources (seed it for reproducible runs).
    pub fn new(self_node: NodeId, config: PullConfig, rng: fastrand::Rng) -> Result<Self, PullError> {
        if config.chunk_size == 0 {
            return Err(PullError::InvalidConfig("chunk_size must be positive"));
        }
        if config.pull_retry.is_zero() {
            return Err(PullError::InvalidConfig("pull_retry must be positive"));
        }
        Ok(Self {
            self_node,
            config,
            rng,
            budget: 0,
            next_seq: 0,
            bundles: HashMap::new(),
            order: BTreeMap::new(),
            objects: BTreeMap::new(),
            timers: BTreeSet::new(),
            dead_nodes: HashSet::new(),
            queued: false,
            dirty: false,
            actions: VecDeque::new(),
        })
    }

    /// The chunk size pulls starting now lay objects out with.
    pub fn chunk_size(&self) -> u64 {
        self.config.chunk_size
    }

    /// Lays out objects whose pull starts from now on in chunks of `chunk_size` bytes (the
    /// cluster's configured size, learnt when the node registers).
    pub fn set_chunk_size(&mut self, chunk_size: u64) -> Result<(), PullError> {
        if chunk_size == 0 {
            return Err(PullError::InvalidConfig("chunk_size must be positive"));
        }
        self.config.chunk_size = chunk_size;
        Ok(())
    }

    /// A new bundle wants `ids` (duplicates within the bundle are ignored). Objects already
    /// wanted by other bundles are shared, so they are fetched once.
    pub fn handle_pull(
        &mut self,
        now: Instant,
        bundle_id: BundleId,
        priority: PullPriority,
        ids: Vec<ObjectId>,
    ) -> Result<(), PullError> {
        if self.bundles.contains_key(&bundle_id) {
            return Err(PullError::DuplicateBundle(bundle_id));
        }
        let mut seen = HashSet::new();
        let ids: Vec<ObjectId> = ids.into_iter().filter(|id| seen.insert(*id)).collect();
        let expiry = after(now, self.config.fetch_timeout);
        for &id in &ids {
            let e = self.objects.entry(id).or_insert_with(|| ObjectEntry::new(expiry));
            if matches!(e.phase, Phase::Failed) {
                e.phase = Phase::Idle;
                e.retries = 0;
                e.expires_at = if e.locations.is_empty() { expiry } else { None };
            }
            e.bundles.push(bundle_id);
            sync_timer(&mut self.timers, id, e);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert((priority, seq), bundle_id);
        self.bundles.insert(bundle_id, Bundle { priority, seq, ids, active: false });
        self.complete_if_resolved(bundle_id);
        self.settle(now);
        Ok(())
    }

    /// The bundle is no longer wanted. Returns whether it was live (a completed bundle is
    /// already gone).
    pub fn handle_cancel(&mut self, now: Instant, bundle_id: BundleId) -> bool {
        let live = self.bundles.contains_key(&bundle_id);
        self.remove_bundle(bundle_id);
        self.settle(now);
        live
    }

    /// Bytes that objects being pulled may occupy in total (see the module docs).
    pub fn handle_budget(&mut self, now: Instant, bytes_available: u64) {
        self.budget = bytes_available;
        self.settle(now);
    }

    /// The directory's current view of `id`: the nodes holding a copy (empty = none known)
    /// and the size once known. Replaces the previous list.
    pub fn handle_locations(&mut self, now: Instant, id: ObjectId, nodes: Vec<NodeId>, size: Option<u64>) {
        let expiry = after(now, self.config.fetch_timeout);
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        if e.resolved() {
            return;
        }
        let mut locations = Vec::with_capacity(nodes.len());
        for n in nodes {
            if n != self.self_node && !self.dead_nodes.contains(&n) && !locations.contains(&n) {
                locations.push(n);
            }
        }
        e.locations = locations;
        if !e.locations.is_empty() {
            e.expires_at = None;
        } else if e.expires_at.is_none() {
            e.expires_at = expiry;
        }
        if let Some(size) = size.filter(|s| e.size != Some(*s)) {
            if e.size.is_some() {
                // The object changed size (re-created): the partial buffer is useless.
                if e.fetching() {
                    self.actions.push_back(PullAction::AbortBuffer { id });
                }
                if matches!(e.phase, Phase::Fetching(_) | Phase::AllocBackoff) {
                    e.phase = Phase::Idle;
                    e.retry_at = None;
                }
            }
            e.size = Some(size);
        }
        let resend = match &e.phase {
            Phase::Fetching(f) if !e.locations.is_empty() => {
                f.source.is_none_or(|s| !e.locations.contains(&s)).then_some(f.source)
            }
            _ => None,
        };
        sync_timer(&mut self.timers, id, e);
        if let Some(avoid) = resend {
            self.send_pull(now, id, avoid);
        }
        self.settle(now);
    }

    /// `node` is dead: forget its copies, drop its claims, re-source pulls it was serving.
    pub fn handle_node_dead(&mut self, now: Instant, node: NodeId) {
        self.dead_nodes.insert(node);
        let expiry = after(now, self.config.fetch_timeout);
        let ids: Vec<ObjectId> = self.objects.keys().copied().collect();
        for id in ids {
            let Some(e) = self.objects.get_mut(&id) else {
                continue;
            };
            let had_copy = !e.locations.is_empty();
            e.locations.retain(|n| *n != node);
            if had_copy && e.locations.is_empty() && !e.resolved() && e.expires_at.is_none() {
                e.expires_at = expiry;
            }
            if let Phase::Fetching(f) = &mut e.phase {
                f.chunks.release_node(node);
            }
            sync_timer(&mut self.timers, id, e);
            self.source_failed(now, id, node);
        }
        self.settle(now);
    }

    /// `id` is sealed in the local store (by any path). A partial buffer of ours is aborted.
    pub fn handle_object_local(&mut self, now: Instant, id: ObjectId) {
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        if matches!(e.phase, Phase::Local) {
            return;
        }
        if e.fetching() {
            self.actions.push_back(PullAction::AbortBuffer { id });
        }
        e.phase = Phase::Local;
        e.retry_at = None;
        e.expires_at = None;
        sync_timer(&mut self.timers, id, e);
        self.complete_bundles_of(id);
        self.settle(now);
    }

    /// The transfer of `id` from `from` broke (connection lost, source died mid-object).
    /// Claims held for `from` are released; if `from` was the current source the pull is
    /// re-sent at once to another copy, or after the back-off delay.
    pub fn handle_transfer_failed(&mut self, now: Instant, id: ObjectId, from: NodeId) {
        if let Some(ObjectEntry { phase: Phase::Fetching(f), .. }) = self.objects.get_mut(&id) {
            f.chunks.release_node(from);
        }
        self.source_failed(now, id, from);
    }

    /// The `AllocateBuffer` for `id` failed (store full): retry it after the back-off delay.
    pub fn handle_allocation_failed(&mut self, now: Instant, id: ObjectId) {
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        if !e.fetching() {
            return;
        }
        e.phase = Phase::AllocBackoff;
        e.retries = e.retries.saturating_add(1);
        e.retry_at = after(now, backoff(&self.config, e.retries));
        sync_timer(&mut self.timers, id, e);
    }

    /// The `AllocateBuffer` for `id` failed and retrying cannot help (the object is larger
    /// than the store and the fallback could not take it): the pull fails now with `why`.
    pub fn handle_allocation_impossible(&mut self, now: Instant, id: ObjectId, why: String) {
        let Some(e) = self.objects.get_mut(&id) else {
            return;
        };
        if !e.fetching() {
            return;
        }
        // No buffer exists, so nothing to abort.
        e.phase = Phase::Idle;
        self.fail(id, PullFailure::NoRoom(why));
        self.settle(now);
    }

    /// Fires every timer due at `now`: fetch timeouts and retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ObjectId> = self.timers.iter().take_while(|(t, _)| *t <= now).map(|(_, id)| *id).collect();
        for id in due {
            self.fire(now, id);
        }
        self.settle(now);
    }

    /// A chunk header arrived from `from`: validates it and says where its payload goes.
    /// [`ChunkClaim::Write`] claims the chunk for `from` until [`Self::handle_chunk`].
    pub fn handle_chunk_header(
        &mut self,
        id: ObjectId,
        from: NodeId,
        header: &ChunkHeader,
    ) -> Result<ChunkClaim, PullError> {
        let Some(ObjectEntry { phase: Phase::Fetching(f), .. }) = self.objects.get_mut(&id) else {
            return Ok(ChunkClaim::Discard(DiscardReason::NotPulled));
        };
        let (offset, len) = f.chunks.layout().check(header)?;
        Ok(match f.chunks.claim(header.index, from)? {
            Claim::Granted => ChunkClaim::Write { offset, len },
            Claim::AlreadyReceived => ChunkClaim::Discard(DiscardReason::AlreadyReceived),
            Claim::Busy(_) => ChunkClaim::Discard(DiscardReason::InProgress),
        })
    }

    /// Chunk `index` of `id` from `from` is written; `crc_ok` says whether it verified.
    pub fn handle_chunk(
        &mut self,
        now: Instant,
        id: ObjectId,
        from: NodeId,
        index: u32,
        crc_ok: bool,
    ) -> Result<ChunkOutcome, PullError> {
        let (retry, fetch_timeout) = (self.config.pull_retry, self.config.fetch_timeout);
        let Some(e) = self.objects.get_mut(&id) else {
            return Ok(ChunkOutcome::Dropped);
        };
        let Phase::Fetching(f) = &mut e.phase else {
            return Ok(ChunkOutcome::Dropped);
        };
        f.chunks.layout().range(index)?;
        if f.chunks.is_received(index) {
            return Ok(ChunkOutcome::Duplicate);
        }
        if f.chunks.claimant(index).is_some_and(|holder| holder != from) {
            return Ok(ChunkOutcome::Dropped);
        }
        if !crc_ok {
            f.chunks.release(index)?;
            self.source_failed(now, id, from);
            return Ok(ChunkOutcome::Corrupt);
        }
        let progress = f.chunks.handle_chunk(index)?;
        if progress == Progress::Duplicate {
            return Ok(ChunkOutcome::Duplicate);
        }
        // A node that sends us chunks holds a copy: push the no-location expiry back.
        if e.expires_at.is_some() {
            e.expires_at = after(now, fetch_timeout);
        }
        if progress == Progress::Accepted {
            e.retries = 0;
            e.retry_at = after(now, retry);
            sync_timer(&mut self.timers, id, e);
            return Ok(ChunkOutcome::Accepted);
        }
        e.phase = Phase::Local;
        e.retry_at = None;
        e.expires_at = None;
        sync_timer(&mut self.timers, id, e);
        self.actions.push_back(PullAction::Seal { id });
        self.complete_bundles_of(id);
        self.settle(now);
        Ok(ChunkOutcome::Completed)
    }

    /// The next effect to perform, in order.
    pub fn poll_action(&mut self) -> Option<PullAction> {
        self.actions.pop_front()
    }

    /// The earliest time [`Self::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Whether `id` is in an active bundle.
    pub fn is_active(&self, id: &ObjectId) -> bool {
        self.objects.get(id).is_some_and(|e| e.active)
    }

    /// Whether chunks of `id` are wanted now (its buffer exists and it is incomplete).
    pub fn wants_chunk(&self, id: &ObjectId) -> bool {
        self.objects.get(id).is_some_and(ObjectEntry::fetching)
    }

    /// Whether some wanted object is held back by admission (Ray `object_pulls_queued`).
    pub fn object_pulls_queued(&self) -> bool {
        self.queued
    }

    /// Whether the bundle is live and active.
    pub fn is_bundle_active(&self, bundle_id: BundleId) -> bool {
        self.bundles.get(&bundle_id).is_some_and(|b| b.active)
    }

    /// Bytes of the buffers this queue has allocated and not yet sealed or aborted.
    pub fn bytes_in_progress(&self) -> u64 {
        self.objects.values().filter(|e| e.fetching()).map(|e| e.size.unwrap_or(0)).fold(0, u64::saturating_add)
    }

    /// The node the latest pull of `id` went to, while it is being fetched.
    pub fn source(&self, id: &ObjectId) -> Option<NodeId> {
        match self.objects.get(id).map(|e| &e.phase) {
            Some(Phase::Fetching(f)) => f.source,
            _ => None,
        }
    }
}

mod admission;
mod fetch;

#[cfg(test)]
mod tests;
