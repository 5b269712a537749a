//! One shard's object store: the objects hashed to this shard (DESIGN.md §2), their table,
//! the Get/Wait requests waiting on them, and the operations local clients run on them.
//!
//! Every operation runs on the owner shard, called directly by a connection on the same
//! shard or through `ObjReq::Op` from a connection elsewhere. After each table operation
//! the table's actions are drained at once (`drain`), so memory, waiters and the object
//! directory never lag behind the table.

use super::memory::Memory;
use super::msg::OpResult;
use crate::ids::{ObjectId, ShardId};
use crate::local::msg::{ObjectSpec, StoreError};
use crate::logic::objects::{ClientId, NewObject, ObjectAction, ObjectError, ObjectSource, ObjectState, ObjectTable};
use crate::logic::transfer::pull::PullPriority;
use crate::logic::waits::{RequestId, WaitAction, WaitTable};
use crate::shard::Shard;
use crate::store::arena::Arena;
use futures_channel::oneshot;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cumulative counters of this shard's store.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreCounters {
    /// Objects created.
    pub created_objects: u64,
    /// Bytes created.
    pub created_bytes: u64,
    /// Objects evicted.
    pub evicted_objects: u64,
    /// Bytes evicted.
    pub evicted_bytes: u64,
    /// Objects spilled.
    pub spilled_objects: u64,
    /// Bytes spilled.
    pub spilled_bytes: u64,
    /// Time spent spilling.
    pub spill_time: Duration,
    /// Objects restored.
    pub restored_objects: u64,
    /// Bytes restored.
    pub restored_bytes: u64,
    /// Time spent restoring.
    pub restore_time: Duration,
    /// Bytes handed to clients by Get.
    pub consumed_bytes: u64,
}

/// The objects of one shard.
pub struct ShardStore {
    me: ShardId,
    /// The shared mapping.
    pub arena: Arc<Arena>,
    pub(super) table: RefCell<ObjectTable>,
    waits: RefCell<WaitTable>,
    waiters: RefCell<HashMap<RequestId, oneshot::Sender<WaitAction>>>,
    wait_calls: RefCell<HashMap<(ClientId, u64), RequestId>>,
    /// Each prefetching client's open pull (see `StoreOp::Prefetch`).
    prefetches: RefCell<HashMap<ClientId, crate::logic::transfer::pull::BundleId>>,
    next_req: Cell<u64>,
    pub(super) memory: Memory,
    pub(super) counters: RefCell<StoreCounters>,
    pub(super) spill: super::spilling::Spiller,
    pub(super) reporter: super::directory::Reporter,
    pub(super) transfer: super::transfer::Transfer,
    /// Objects created as primary copies, pinned when sealed.
    primary_on_seal: RefCell<std::collections::HashSet<ObjectId>>,
    /// Primary copies whose spilled copy was lost (`restore_lost`): pinned again when
    /// another copy arrives here; forgotten when deleted or when no copy can be fetched.
    lost_primaries: RefCell<std::collections::HashSet<ObjectId>>,
    /// Gets and waits in progress by client, and the clients gone lately.
    pending: RefCell<super::pending::Pending>,
    /// Objects their creator writes in a staging segment (`store::arena`), copied at seal.
    staged: RefCell<std::collections::HashSet<ObjectId>>,
    /// Staged objects being copied at seal, and their memory if it was freed meanwhile
    /// (freed once the copy is over, never under it).
    copying: RefCell<HashMap<ObjectId, Option<(u64, u64)>>>,
}

impl std::fmt::Debug for ShardStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardStore").field("me", &self.me).field("objects", &self.table.borrow().len()).finish()
    }
}

fn err(e: ObjectError) -> (StoreError, String) {
    let code = match &e {
        ObjectError::Exists(_) => StoreError::ObjectExists,
        ObjectError::NotFound(_) => StoreError::ObjectNonexistent,
        ObjectError::NotSealed(_) => StoreError::ObjectNotSealed,
        ObjectError::AlreadySealed(_) => StoreError::ObjectSealed,
        ObjectError::NotCreator { .. } | ObjectError::NotReferenced { .. } => StoreError::InvalidRequest,
        _ => StoreError::Unexpected,
    };
    (code, e.to_string())
}

impl ShardStore {
    /// The store of shard `me` over `arena`.
    pub fn new(shard: &Shard, arena: Arc<Arena>) -> Rc<Self> {
        Rc::new(Self {
            me: shard.id,
            memory: Memory::new(shard, arena.clone()),
            arena,
            table: RefCell::new(ObjectTable::new()),
            waits: RefCell::new(WaitTable::new()),
            waiters: RefCell::new(HashMap::new()),
            wait_calls: RefCell::new(HashMap::new()),
            prefetches: RefCell::new(HashMap::new()),
            next_req: Cell::new(1),
            counters: RefCell::new(StoreCounters::default()),
            spill: super::spilling::Spiller::new(shard),
            reporter: super::directory::Reporter::default(),
            transfer: super::transfer::Transfer::new(shard),
            primary_on_seal: RefCell::new(std::collections::HashSet::new()),
            lost_primaries: RefCell::new(std::collections::HashSet::new()),
            pending: RefCell::new(super::pending::Pending::default()),
            staged: RefCell::new(std::collections::HashSet::new()),
            copying: RefCell::new(HashMap::new()),
        })
    }

    /// Performs the table's queued actions.
    pub(super) fn drain(&self, shard: &Rc<Shard>) {
        loop {
            let action = self.table.borrow_mut().poll_action();
            let Some(action) = action else { break };
            match action {
                ObjectAction::Free { id, offset, alloc_len } => {
                    if let Some(slot) = self.copying.borrow_mut().get_mut(&id) {
                        *slot = Some((offset, alloc_len));
                        continue;
                    }
                    if self.staged.borrow_mut().remove(&id) && offset < self.arena.fallback_base() {
                        self.arena.release_staging(offset, alloc_len);
                    }
                    self.memory.free(shard, offset, alloc_len)
                }
                ObjectAction::Sealed { id } => {
                    if self.lost_primaries.borrow_mut().remove(&id) {
                        let pinned = self.table.borrow_mut().pin(&id);
                        tracing::info!(%id, "pulled back after its spilled copy was lost; pinned as primary: {pinned:?}");
                    }
                    self.waits.borrow_mut().handle_sealed(&id);
                    let (size, meta) =
                        self.table.borrow().entry(&id).map(|e| (e.size(), e.metadata_size)).unwrap_or((0, 0));
                    super::directory::object_added(shard, id, size, meta);
                    super::transfer::object_local(shard, self, id, size);
                }
                ObjectAction::Deleted { id } => {
                    self.waits.borrow_mut().handle_deleted(&id);
                    super::directory::object_removed(shard, id);
                }
                ObjectAction::DeleteSpilled { id, url } => {
                    self.spill.release(url);
                    super::directory::object_spill_removed(shard, id);
                }
            }
        }
        loop {
            let a = self.waits.borrow_mut().poll_action();
            let Some(a) = a else { break };
            let req = match &a {
                WaitAction::GetReady { req, .. } | WaitAction::WaitReady { req, .. } => *req,
            };
            if let Some(tx) = self.waiters.borrow_mut().remove(&req) {
                let _ = tx.send(a);
            }
        }
    }

    /// Runs one operation for `client`.
    pub async fn execute(self: &Rc<Self>, shard: &Rc<Shard>, client: ClientId, op: super::msg::StoreOp) -> OpResult {
        use super::msg::StoreOp as O;
        match op {
            O::Create { id, data_size, metadata_size, primary, inline: None } => {
                OpResult::Created(self.create(shard, client, id, data_size, metadata_size, primary).await)
            }
            O::Create { id, data_size, metadata_size, primary, inline: Some(bytes) } => OpResult::Created(
                self.create_sealed(shard, client, id, data_size, metadata_size, primary, &bytes).await,
            ),
            O::Seal(id) if self.staged.borrow().contains(&id) => {
                OpResult::Done(self.seal_staged(shard, client, id).await)
            }
            O::Seal(id) => OpResult::Done(self.seal(shard, client, id)),
            O::Abort(id) => OpResult::Done(self.abort(shard, client, id)),
            O::Release(ids) => {
                self.release(shard, client, &ids);
                OpResult::Done(Ok(()))
            }
            O::Delete(ids) => OpResult::Deleted(self.delete(shard, &ids)),
            O::Contains(id) => OpResult::Contains(self.table.borrow().contains(&id)),
            O::Get(ids, timeout_ms) => {
                let specs = self.get(shard, client, &ids, timeout_ms).await;
                // Why missing objects are missing, when their pull failed for a reason.
                let failed = self.transfer.failed.borrow();
                let errors = if specs.iter().any(|s| !s.found && failed.contains_key(&s.id)) {
                    specs
                        .iter()
                        .map(|s| if s.found { String::new() } else { failed.get(&s.id).cloned().unwrap_or_default() })
                        .collect()
                } else {
                    Vec::new()
                };
                OpResult::Got(specs, errors)
            }
            O::Wait { ids, n, timeout_ms, call, priority } => {
                let (ready, remaining) = self.wait(shard, &ids, n, timeout_ms, priority, Some((client, call))).await;
                OpResult::Waited(ready, remaining)
            }
            O::CancelWait(call) => {
                self.cancel_wait((client, call));
                OpResult::Done(Ok(()))
            }
            O::Prefetch(ids) => {
                self.restore_spilled(shard, &ids).await;
                let bundle = super::transfer::request_pulls(shard, &ids, PullPriority::TaskArgs);
                // The new pull is open before the old one closes: what both want keeps
                // its partly received buffer.
                let old = match bundle {
                    Some(b) => self.prefetches.borrow_mut().insert(client, b),
                    None => self.prefetches.borrow_mut().remove(&client),
                };
                if let Some(old) = old {
                    super::transfer::cancel_pull(shard, old);
                }
                OpResult::Done(Ok(()))
            }
        }
    }

    /// Creates an object and returns where its creator writes it: in place, or in a staging
    /// segment when the store or its fallback segment is one clients may only read.
    pub async fn create(
        &self,
        shard: &Rc<Shard>,
        client: ClientId,
        id: ObjectId,
        data_size: u64,
        metadata_size: u64,
        primary: bool,
    ) -> Result<ObjectSpec, (StoreError, String)> {
        let (offset, spec) = self.create_object(shard, client, id, data_size, metadata_size, primary).await?;
        if offset >= self.arena.fallback_base() {
            let dir = self.arena.fallback.dir.clone();
            let len = data_size + metadata_size;
            let file = glommio::executor()
                .spawn_blocking(move || crate::store::segments::unlinked_file(&dir, "raylet-staging", len, false))
                .await;
            let attached = file.map_err(|e| e.to_string()).and_then(|(f, _)| {
                self.arena.fallback.attach_staging(offset, f).ok_or_else(|| "its segment is gone".to_string())
            });
            if let Err(e) = attached {
                let _ = self.abort(shard, client, id);
                return Err((
                    StoreError::ObjectStoreFull,
                    format!(
                        "object {id} of {len} bytes: no staging file in {}: {e}",
                        self.arena.fallback.dir.display()
                    ),
                ));
            }
        } else if !self.arena.stages_creates() {
            return Ok(spec);
        }
        self.staged.borrow_mut().insert(id);
        Ok(self.to_spec(id, true, offset, data_size, metadata_size, true))
    }

    /// Allocates and registers a new unsealed object; returns its arena offset and where a
    /// reader finds it.
    async fn create_object(
        &self,
        shard: &Rc<Shard>,
        client: ClientId,
        id: ObjectId,
        data_size: u64,
        metadata_size: u64,
        primary: bool,
    ) -> Result<(u64, ObjectSpec), (StoreError, String)> {
        let size = data_size.checked_add(metadata_size).ok_or((StoreError::InvalidRequest, "size overflows".into()))?;
        let limit = self.arena.fallback_limit();
        if size > self.arena.len().saturating_add(limit) {
            return Err((
                StoreError::ObjectStoreFull,
                format!(
                    "object of {size} bytes exceeds the store capacity of {} bytes plus the fallback limit of {limit} \
                     bytes (--object-store-memory, --fallback-allocation-limit)",
                    self.arena.len()
                ),
            ));
        }
        if self.table.borrow().entry(&id).is_some() {
            return Err((StoreError::ObjectExists, format!("object {id} already exists")));
        }
        let placement = self.memory.allocate(shard, self, size).await?;
        let new = NewObject { id, data_size, metadata_size, source: ObjectSource::CreatedByClient };
        let created = self.table.borrow_mut().create(Instant::now(), new, client, placement);
        let spec = match created {
            Ok(s) => s,
            Err(e) => {
                // Lost a race with another create of the same id while allocating.
                self.memory.free(shard, placement.offset, placement.alloc_len);
                return Err(err(e));
            }
        };
        if primary {
            self.primary_on_seal.borrow_mut().insert(id);
        }
        {
            let mut c = self.counters.borrow_mut();
            c.created_objects += 1;
            c.created_bytes += size;
        }
        self.drain(shard);
        Ok((spec.offset, self.to_spec(id, true, spec.offset, data_size, metadata_size, false)))
    }

    /// Creates, fills, seals and releases a small object in one step (an inline put).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_sealed(
        &self,
        shard: &Rc<Shard>,
        client: ClientId,
        id: ObjectId,
        data_size: u64,
        metadata_size: u64,
        primary: bool,
        bytes: &[u8],
    ) -> Result<ObjectSpec, (StoreError, String)> {
        if data_size.checked_add(metadata_size) != Some(bytes.len() as u64) {
            return Err((
                StoreError::InvalidRequest,
                format!("inline object holds {} bytes, sizes say {}+{}", bytes.len(), data_size, metadata_size),
            ));
        }
        let (offset, spec) = self.create_object(shard, client, id, data_size, metadata_size, primary).await?;
        let dst =
            self.arena.bytes_mut(offset, bytes.len() as u64).map_err(|e| (StoreError::Unexpected, e.to_string()))?;
        dst.copy_from_slice(bytes);
        self.seal(shard, client, id)?;
        self.release(shard, client, &[id]);
        Ok(spec)
    }

    /// Where a client finds the object at arena offset `offset`: the store (segment 0), the
    /// staging segment while its creator writes it (`staged`), or a fallback segment.
    fn to_spec(
        &self,
        id: ObjectId,
        found: bool,
        offset: u64,
        data_size: u64,
        metadata_size: u64,
        staged: bool,
    ) -> ObjectSpec {
        use crate::store::segments::{ARENA_SEGMENT, STAGING_SEGMENT};
        let (segment, offset) = if offset < self.arena.fallback_base() {
            (if staged { STAGING_SEGMENT } else { ARENA_SEGMENT }, offset)
        } else {
            match self.arena.fallback.locate(offset, staged) {
                Some(l) => (l.segment, l.offset),
                None => {
                    tracing::error!(%id, offset, "object names no fallback segment");
                    return ObjectSpec { id, ..Default::default() };
                }
            }
        };
        ObjectSpec { id, found, segment, offset, data_size, metadata_size }
    }

    /// Seals an object its creator wrote in a staging segment: copies it into its place
    /// (a kernel copy on a blocking thread), then seals. A staging file its writer shrank
    /// fails the seal and aborts the object.
    async fn seal_staged(&self, shard: &Rc<Shard>, client: ClientId, id: ObjectId) -> Result<(), (StoreError, String)> {
        let entry = self.table.borrow().entry(&id).map(|e| (e.creator, e.state, e.placement, e.size()));
        let Some((creator, ObjectState::Created, Some(p), size)) = entry else {
            return self.seal(shard, client, id);
        };
        if creator != client {
            return self.seal(shard, client, id);
        }
        self.staged.borrow_mut().remove(&id);
        let fallback = p.offset >= self.arena.fallback_base();
        let src = if fallback {
            self.arena.fallback.take_staging(p.offset)
        } else {
            self.arena.staging_file().and_then(|f| f.try_clone().ok())
        };
        let Some(src) = src else {
            let _ = self.abort(shard, client, id);
            return Err((StoreError::Unexpected, format!("object {id}: its staging buffer is gone; aborted")));
        };
        let src_offset = if fallback { 0 } else { p.offset };
        self.copying.borrow_mut().insert(id, None);
        let arena = self.arena.clone();
        let copied = glommio::executor()
            .spawn_blocking(move || {
                let r = arena.copy_from_staging(p.offset, size, &src, src_offset);
                if !fallback {
                    arena.release_staging(p.offset, p.alloc_len);
                }
                r
            })
            .await;
        if let Some((offset, alloc_len)) = self.copying.borrow_mut().remove(&id).flatten() {
            // Aborted (its creator left) while the copy ran.
            self.memory.free(shard, offset, alloc_len);
            return Err((StoreError::ObjectNonexistent, format!("object {id} was aborted while being sealed")));
        }
        match copied {
            Ok(n) if n == size => self.seal(shard, client, id),
            other => {
                let _ = self.abort(shard, client, id);
                let why = match other {
                    Ok(n) => format!("its staging buffer holds only {n} of its {size} bytes (truncated by its writer)"),
                    Err(e) => e.to_string(),
                };
                Err((StoreError::Unexpected, format!("object {id} cannot be sealed: {why}; it was aborted")))
            }
        }
    }

    /// Seals an object its creator finished writing.
    pub fn seal(&self, shard: &Rc<Shard>, client: ClientId, id: ObjectId) -> Result<(), (StoreError, String)> {
        let r = self.table.borrow_mut().seal(&id, client).map_err(err);
        if r.is_ok() && self.primary_on_seal.borrow_mut().remove(&id) {
            // A primary copy is pinned from the moment it is readable.
            let _ = self.table.borrow_mut().pin(&id);
        }
        self.drain(shard);
        r
    }

    /// Aborts an unsealed object.
    pub fn abort(&self, shard: &Rc<Shard>, client: ClientId, id: ObjectId) -> Result<(), (StoreError, String)> {
        let r = self.table.borrow_mut().abort(&id, client).map_err(err);
        if r.is_ok() {
            self.primary_on_seal.borrow_mut().remove(&id);
        }
        self.drain(shard);
        r
    }

    /// Drops `client`'s references.
    pub fn release(&self, shard: &Rc<Shard>, client: ClientId, ids: &[ObjectId]) {
        for id in ids {
            let r = self.table.borrow_mut().release(id, client);
            if let Err(e) = r {
                tracing::debug!(%client, "release: {e}");
            }
            self.drain(shard);
        }
    }

    /// Deletes objects (a primary pin is dropped first); deferred while in use.
    pub fn delete(&self, shard: &Rc<Shard>, ids: &[ObjectId]) -> Vec<StoreError> {
        ids.iter()
            .map(|id| {
                self.lost_primaries.borrow_mut().remove(id);
                let _ = self.table.borrow_mut().unpin(id);
                let r = self.table.borrow_mut().delete(id);
                self.drain(shard);
                match r {
                    Ok(crate::logic::objects::DeleteOutcome::Deleted) => StoreError::Ok,
                    Ok(crate::logic::objects::DeleteOutcome::Deferred) => StoreError::ObjectInUse,
                    Err(e) => err(e).0,
                }
            })
            .collect()
    }

    /// The fetch of `id` failed for good: gets and waits that depended on it finish now.
    pub fn fetch_failed(&self, shard: &Rc<Shard>, id: ObjectId) {
        self.lost_primaries.borrow_mut().remove(&id);
        self.waits.borrow_mut().handle_failed(&id);
        self.drain(shard);
    }

    /// The spilled copy of `id` could not be read back and the object left the table
    /// (`restore_lost`; `wanted`: it was not deleted meanwhile). Gets and waits already
    /// waiting for that restore end now, reporting it missing; a wanted primary copy is
    /// pinned again if another copy arrives.
    pub(super) fn spilled_copy_lost(&self, shard: &Rc<Shard>, id: ObjectId, wanted: bool) {
        if wanted {
            self.lost_primaries.borrow_mut().insert(id);
        }
        self.waits.borrow_mut().handle_failed(&id);
        self.drain(shard);
    }

    /// Evicts up to `bytes` of least recently used unreferenced copies; returns the bytes
    /// freed.
    pub fn evict(&self, shard: &Rc<Shard>, bytes: u64) -> u64 {
        let before = self.table.borrow().stats().bytes_used;
        let ids = self.table.borrow_mut().evict(bytes);
        self.drain(shard);
        let freed = before.saturating_sub(self.table.borrow().stats().bytes_used);
        if !ids.is_empty() {
            let mut c = self.counters.borrow_mut();
            c.evicted_objects += ids.len() as u64;
            c.evicted_bytes += freed;
        }
        freed
    }

    /// Pins primary copies (PinObjectIDs); false for objects not here and sealed.
    pub fn pin(&self, ids: &[ObjectId]) -> Vec<bool> {
        let mut t = self.table.borrow_mut();
        ids.iter().map(|id| t.entry(id).is_some_and(|e| e.state == ObjectState::Sealed) && t.pin(id).is_ok()).collect()
    }

    /// Releases everything `client` held and aborts what it left unsealed.
    pub fn client_gone(&self, shard: &Rc<Shard>, client: ClientId) {
        let prefetch = self.prefetches.borrow_mut().remove(&client);
        if let Some(b) = prefetch {
            super::transfer::cancel_pull(shard, b);
        }
        // Its gets and waits end now (a dropped waiter wakes its operation, which then
        // pins nothing for a gone client), and their pulls with them.
        let ended = self.pending.borrow_mut().client_gone(client);
        for (req, bundle) in ended {
            self.waits.borrow_mut().cancel(req);
            self.waiters.borrow_mut().remove(&req);
            if let Some(b) = bundle {
                super::transfer::cancel_pull(shard, b);
            }
        }
        self.wait_calls.borrow_mut().retain(|(c, _), _| *c != client);
        self.table.borrow_mut().client_disconnected(client);
        self.drain(shard);
        // Unsealed objects of that client were aborted: forget their primary intent.
        let t = self.table.borrow();
        self.primary_on_seal.borrow_mut().retain(|id| t.entry(id).is_some());
    }

    /// Gets objects, waiting up to `timeout_ms` (-1 forever) for missing ones to be sealed
    /// here (created locally, restored, or pulled from another node).
    pub async fn get(&self, shard: &Rc<Shard>, client: ClientId, ids: &[ObjectId], timeout_ms: i64) -> Vec<ObjectSpec> {
        let lost = self.restore_spilled(shard, ids).await;
        // A restore that failed and left the object on disk will not be retried by anyone
        // while this get waits, and a lost object with no copy anywhere cannot be pulled:
        // the get does not wait for them (it reports them missing).
        let waitable: std::borrow::Cow<[ObjectId]> = {
            let t = self.table.borrow();
            let skip =
                |id: &ObjectId| lost.contains(id) || t.entry(id).is_some_and(|e| e.state == ObjectState::SpilledOut);
            if ids.iter().any(skip) {
                ids.iter().filter(|id| !skip(id)).copied().collect()
            } else {
                ids.into()
            }
        };
        let missing: Vec<ObjectId> = waitable.iter().filter(|id| !self.table.borrow().contains(id)).copied().collect();
        if !missing.is_empty() && timeout_ms != 0 && !self.pending.borrow().is_gone(client) {
            let mut bundle = super::transfer::request_pulls(shard, &missing, PullPriority::Get);
            let req = self.new_req();
            let rx = {
                let t = self.table.borrow();
                let r = self.waits.borrow_mut().handle_get(Instant::now(), req, &waitable, None, |id| t.contains(id));
                drop(t);
                if r.is_err() {
                    None
                } else {
                    self.waited(req)
                }
            };
            if let Some(rx) = rx {
                self.pending.borrow_mut().track(client, req, bundle.take());
                let _ = self.await_wait(req, rx, timeout_ms).await;
                bundle = self.pending.borrow_mut().untrack(client, req).flatten();
            }
            if let Some(b) = bundle {
                super::transfer::cancel_pull(shard, b);
            }
        }
        if self.pending.borrow().is_gone(client) {
            // The client went while this get waited (or before it started): pin nothing.
            return ids.iter().map(|id| ObjectSpec { id: *id, ..Default::default() }).collect();
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut t = self.table.borrow_mut();
        for id in ids {
            match t.get(id, client) {
                Ok(s) => {
                    self.counters.borrow_mut().consumed_bytes += s.data_size + s.metadata_size;
                    out.push(self.to_spec(*id, true, s.offset, s.data_size, s.metadata_size, false))
                }
                Err(_) => out.push(ObjectSpec { id: *id, ..Default::default() }),
            }
        }
        out
    }

    fn new_req(&self) -> RequestId {
        let r = self.next_req.get();
        self.next_req.set(r + 1);
        RequestId(r)
    }

    /// If the wait table completed `req` synchronously, its action is already queued;
    /// otherwise registers a waiter.
    fn waited(&self, req: RequestId) -> Option<oneshot::Receiver<WaitAction>> {
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().insert(req, tx);
        let mut waits = self.waits.borrow_mut();
        let mut done = false;
        let mut requeue = Vec::new();
        while let Some(a) = waits.poll_action() {
            let r = match &a {
                WaitAction::GetReady { req, .. } | WaitAction::WaitReady { req, .. } => *req,
            };
            if r == req {
                done = true;
            } else {
                requeue.push((r, a));
            }
        }
        drop(waits);
        for (r, a) in requeue {
            if let Some(tx) = self.waiters.borrow_mut().remove(&r) {
                let _ = tx.send(a);
            }
        }
        if done {
            self.waiters.borrow_mut().remove(&req);
            None
        } else {
            Some(rx)
        }
    }

    async fn await_wait(&self, req: RequestId, rx: oneshot::Receiver<WaitAction>, timeout_ms: i64) -> bool {
        let done = if timeout_ms < 0 {
            rx.await.is_ok()
        } else {
            let d = Duration::from_millis(timeout_ms as u64);
            matches!(glommio::timer::timeout(d, async { Ok(rx.await) }).await, Ok(Ok(_)))
        };
        if !done {
            self.waits.borrow_mut().cancel(req);
            self.waiters.borrow_mut().remove(&req);
        }
        done
    }

    /// Waits until `n` of `ids` are sealed here or the timeout passes; returns (ready,
    /// remaining). `call` lets another shard cancel it (`cancel_wait`).
    pub async fn wait(
        &self,
        shard: &Rc<Shard>,
        ids: &[ObjectId],
        n: usize,
        timeout_ms: i64,
        priority: PullPriority,
        call: Option<(ClientId, u64)>,
    ) -> (Vec<ObjectId>, Vec<ObjectId>) {
        let missing: Vec<ObjectId> = ids.iter().filter(|id| !self.table.borrow().contains(id)).copied().collect();
        let ready_now = ids.len() - missing.len();
        let client = call.map(|(c, _)| c);
        let gone = client.is_some_and(|c| self.pending.borrow().is_gone(c));
        if ready_now < n.min(ids.len()) && timeout_ms != 0 && !gone {
            let mut bundle = super::transfer::request_pulls(shard, &missing, priority);
            let req = self.new_req();
            let registered = {
                let t = self.table.borrow();
                self.waits.borrow_mut().handle_wait(Instant::now(), req, ids, n, None, |id| t.contains(id)).is_ok()
            };
            if registered {
                if let Some(rx) = self.waited(req) {
                    if let Some(c) = call {
                        self.wait_calls.borrow_mut().insert(c, req);
                        self.pending.borrow_mut().track(c.0, req, bundle.take());
                    }
                    self.await_wait(req, rx, timeout_ms).await;
                    if let Some(c) = call {
                        self.wait_calls.borrow_mut().remove(&c);
                        bundle = bundle.or(self.pending.borrow_mut().untrack(c.0, req).flatten());
                    }
                }
            }
            if let Some(b) = bundle {
                super::transfer::cancel_pull(shard, b);
            }
        }
        let t = self.table.borrow();
        let mut seen = std::collections::HashSet::new();
        let (mut ready, mut remaining) = (Vec::new(), Vec::new());
        for id in ids {
            if !seen.insert(*id) {
                continue;
            }
            if t.contains(id) {
                ready.push(*id);
            } else {
                remaining.push(*id);
            }
        }
        (ready, remaining)
    }

    /// Ends a pending cross-shard wait now.
    pub fn cancel_wait(&self, call: (ClientId, u64)) {
        let req = self.wait_calls.borrow_mut().remove(&call);
        if let Some(req) = req {
            self.waits.borrow_mut().cancel(req);
            if let Some(tx) = self.waiters.borrow_mut().remove(&req) {
                let _ = tx.send(WaitAction::WaitReady { req, ready: Vec::new(), remaining: Vec::new() });
            }
        }
    }

    /// Restores the spilled ones of `ids`; returns those that a get should not wait for:
    /// their restore failed (the record stays for a later get), or their spilled copy was
    /// lost with no copy left on any other node.
    async fn restore_spilled(&self, shard: &Rc<Shard>, ids: &[ObjectId]) -> Vec<ObjectId> {
        let spilled: Vec<ObjectId> = {
            let t = self.table.borrow();
            ids.iter().filter(|id| t.entry(id).is_some_and(|e| e.state == ObjectState::SpilledOut)).copied().collect()
        };
        if spilled.is_empty() {
            return Vec::new();
        }
        let Some(store) = super::local_store(shard) else { return Vec::new() };
        // In a task of its own: the get that wants the objects may be dropped (its client
        // went), and a restore stopped halfway would leave an object restoring forever and
        // its memory taken.
        let s = shard.clone();
        let restore = glommio::spawn_local(async move {
            let mut failed = Vec::new();
            for id in spilled {
                match super::spilling::restore(&s, &store, id).await {
                    Ok(()) => {}
                    Err(super::spilling::RestoreError::Lost { .. }) => {
                        if !super::directory::copy_elsewhere(&s, id).await {
                            tracing::error!(%id, "no other copy of the object exists: it is lost");
                            store.lost_primaries.borrow_mut().remove(&id);
                            failed.push(id);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%id, "restore failed: {e}");
                        failed.push(id);
                    }
                }
            }
            failed
        });
        restore.detach().await.unwrap_or_default()
    }
}
