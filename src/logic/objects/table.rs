//! The per-shard object table: plasma's object lifecycle, reference counts, primary-copy
//! pins, eviction eligibility and spill/restore state.
//!
//! **Owns** the metadata of the objects hashed to this shard (DESIGN.md §2): state, sizes,
//! where the bytes are (a [`Placement`] handed in by the caller), which clients reference the
//! object, whether the raylet pins it as a primary copy, and its spill URL.
//!
//! **Called by** the owner shard's objects service, for requests from local clients
//! (create/seal/abort/get/release/delete/contains), the raylet's own pinning (pin/unpin, from
//! PinObjectIDs and owner frees), the spill/restore IO driver, and the create path under
//! memory pressure ([`ObjectTable::evict`]).
//!
//! **Must not** allocate or free memory, do IO, or wait: it returns results and queues
//! [`ObjectAction`]s. It never reads the clock (`now` is passed to `create`).
//!
//! # Calling protocol
//!
//! Call an operation, then drain [`ObjectTable::poll_action`] until `None` *before* the next
//! operation, and perform each action in order:
//! - `Free { offset, .. }`: give the bytes back to the allocator that produced the placement.
//! - `Sealed { id }`: wake Get/Wait requests (`waits::WaitTable::handle_sealed`), report the
//!   local copy to the object directory.
//! - `Deleted { id }`: the in-memory sealed copy is gone: tell the object directory and the
//!   wait table (`handle_deleted`). A spilled object keeps its entry (state `SpilledOut`).
//! - `DeleteSpilled { url, .. }`: release the URL in `spill::SpillFilePlanner`; delete the file
//!   when that returns `Some`.
//!
//! A single call may queue several actions (for instance `release` completing a deferred
//! delete queues `Free`, `Deleted` and possibly `DeleteSpilled`).
//!
//! # States
//!
//! ```text
//!            create              seal
//!  (none) ─────────> Created ───────────> Sealed ── delete / evict, never spilled ──> (none)
//!                      │                   │  ▲            Free + Deleted
//!        abort, or     │     evict, spilled│  │restore_done
//!        creator       │    Free + Deleted │  │  + Sealed           delete
//!        disconnects   ▼                   ▼  │                 DeleteSpilled
//!            (none), Free only       SpilledOut ──────────────────────────────> (none)
//!                                     │     ▲
//!                      restore_started│     │restore_failed: Free
//!                                     ▼     │
//!                                    Restoring ──restore_lost──> (none)
//!                                              Free + DeleteSpilled
//! ```
//!
//! Orthogonal flags of a `Sealed` object:
//! - `pinned_primary`: `pin` / `unpin`; `spill_done` clears it (the spilled copy is now the
//!   primary, so the memory may be evicted).
//! - `spill`: `None ──mark_spilling──> Spilling ──spill_done──> Spilled{url}`, and
//!   `Spilling ──spill_failed──> None`. The URL stays while the object is `SpilledOut`,
//!   `Restoring`, or resident again after a restore.
//!
//! An object is **held** while it is `Created` or `Restoring`, has client references, is
//! pinned, or is `Spilling`. `delete` of a held object is *deferred*: it sets
//! `deferred_delete` and completes when the last hold goes. A deferred object that would
//! become readable with nobody holding it (`seal` after its creator released it,
//! `restore_done`) is removed instead of being sealed, so `Sealed` is never followed by the
//! object vanishing within the same call.
//!
//! **Evictable** (in the LRU, [`super::eviction`]) = `Sealed`, no client references, not
//! pinned, not spilling. **Spill candidate** = `Sealed`, pinned, no spill URL, not spilling,
//! no client references (Ray spills only objects whose sole reference is the raylet's pin).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Instant;

use super::eviction::Lru;
use crate::ids::ObjectId;
use crate::logic::spill::SpillUrl;

/// A connected store client (worker, driver, or one of the raylet's internal clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client-{}", self.0)
    }
}

/// Where an object's bytes are in the arena, as returned by the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Offset of the data; metadata follows the data contiguously.
    pub offset: u64,
    /// Reserved length (what `Free` gives back); at least data + metadata size.
    pub alloc_len: u64,
}

/// Lifecycle state; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectState {
    /// Allocated and being written by its creator; not readable.
    Created,
    /// Immutable and readable in memory.
    Sealed,
    /// Memory allocated, being filled from the spill file; not readable.
    Restoring,
    /// Not in memory; only the spilled copy exists.
    SpilledOut,
}

/// Spill state of a sealed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillState {
    /// Never spilled (or the last spill failed).
    None,
    /// An IO worker is writing it; the memory must stay.
    Spilling,
    /// A copy exists at `url`.
    Spilled {
        /// Where the record is.
        url: SpillUrl,
    },
}

/// How the object got into this store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectSource {
    /// Put by a local client.
    CreatedByClient,
    /// Pulled from another node.
    ReceivedFromRemote,
    /// Read back from a spill file.
    Restored,
}

/// One object's metadata. Read-only outside this module.
#[derive(Debug, Clone)]
pub struct ObjectEntry {
    /// The object.
    pub id: ObjectId,
    /// Lifecycle state.
    pub state: ObjectState,
    /// Data bytes.
    pub data_size: u64,
    /// Metadata bytes (stored right after the data).
    pub metadata_size: u64,
    /// The bytes in the arena; `None` exactly when `state` is `SpilledOut`.
    pub placement: Option<Placement>,
    /// The client that created it (may abort it and must seal it).
    pub creator: ClientId,
    /// Clients holding a reference; a client counts once however many gets it made.
    pub ref_clients: BTreeSet<ClientId>,
    /// Pinned by the raylet as the primary copy (a reference of its own).
    pub pinned_primary: bool,
    /// Spill state.
    pub spill: SpillState,
    /// How it got here.
    pub source: ObjectSource,
    /// `delete` was called while the object was held.
    pub deferred_delete: bool,
    /// When `create` was called.
    pub created_at: Instant,
    /// Table tick of the last create/seal/get/release (larger = more recent).
    pub last_access: u64,
    /// Creation order, for oldest-first spilling.
    pub(super) seq: u64,
    /// Key in the LRU while evictable.
    pub(super) lru_key: Option<u64>,
}

impl ObjectEntry {
    /// Data plus metadata size.
    pub fn size(&self) -> u64 {
        self.data_size + self.metadata_size
    }

    /// Reserved bytes in memory (0 when not resident).
    pub fn resident_bytes(&self) -> u64 {
        self.placement.map_or(0, |p| p.alloc_len)
    }

    /// Whether something keeps the object alive (see the module docs).
    pub fn is_held(&self) -> bool {
        matches!(self.state, ObjectState::Created | ObjectState::Restoring)
            || !self.ref_clients.is_empty()
            || self.pinned_primary
            || self.spill == SpillState::Spilling
    }

    /// Whether eviction may free its memory now.
    pub fn is_evictable(&self) -> bool {
        self.state == ObjectState::Sealed
            && self.ref_clients.is_empty()
            && !self.pinned_primary
            && self.spill != SpillState::Spilling
    }

    /// Whether it may be chosen for spilling now.
    pub fn is_spill_candidate(&self) -> bool {
        self.state == ObjectState::Sealed
            && self.pinned_primary
            && self.spill == SpillState::None
            && self.ref_clients.is_empty()
    }

    fn is_primary(&self) -> bool {
        self.placement.is_some() && (self.pinned_primary || self.spill == SpillState::Spilling)
    }

    fn spec(&self) -> Option<ObjectSpec> {
        let p = self.placement?;
        Some(ObjectSpec {
            offset: p.offset,
            data_size: self.data_size,
            metadata_size: self.metadata_size,
            alloc_len: p.alloc_len,
        })
    }
}

/// What a client needs to read or write an object (Ray's `PlasmaObjectSpec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectSpec {
    /// Offset of the data in the arena.
    pub offset: u64,
    /// Data bytes.
    pub data_size: u64,
    /// Metadata bytes, at `offset + data_size`.
    pub metadata_size: u64,
    /// Reserved length.
    pub alloc_len: u64,
}

impl ObjectSpec {
    /// Offset of the metadata in the arena.
    pub fn metadata_offset(&self) -> u64 {
        self.offset + self.data_size
    }
}

/// The object-describing arguments of [`ObjectTable::create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewObject {
    /// The object.
    pub id: ObjectId,
    /// Data bytes.
    pub data_size: u64,
    /// Metadata bytes.
    pub metadata_size: u64,
    /// How it gets here (`Restored` is set by the restore path, not by `create`).
    pub source: ObjectSource,
}

/// Output of the table; see the module docs for what to do with each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectAction {
    /// Give `[offset, offset + alloc_len)` back to the allocator.
    Free {
        /// The object the bytes belonged to.
        id: ObjectId,
        /// Start of the placement.
        offset: u64,
        /// Its reserved length.
        alloc_len: u64,
    },
    /// The object is now readable (sealed, or restored from a spill file).
    Sealed {
        /// The object.
        id: ObjectId,
    },
    /// The in-memory sealed copy is gone (deleted or evicted).
    Deleted {
        /// The object.
        id: ObjectId,
    },
    /// The spilled copy is no longer needed.
    DeleteSpilled {
        /// The object.
        id: ObjectId,
        /// Its record.
        url: SpillUrl,
    },
}

/// Result of a successful [`ObjectTable::delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Deleted now; actions are queued.
    Deleted,
    /// Held (unsealed, referenced, pinned, spilling or restoring): deleted when released.
    Deferred,
}

/// Counters kept up to date on every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectStats {
    /// Entries in the table, all states.
    pub objects: u64,
    /// Reserved bytes of resident objects.
    pub bytes_used: u64,
    /// Reserved bytes of resident objects that are pinned or being spilled.
    pub primary_bytes: u64,
    /// Entries in state `Created`.
    pub created: u64,
    /// Entries in state `Sealed`.
    pub sealed: u64,
    /// Entries in state `Restoring`.
    pub restoring: u64,
    /// Entries in state `SpilledOut`.
    pub spilled_out: u64,
    /// Entries being spilled.
    pub spilling: u64,
    /// Entries with a spill URL (resident or not).
    pub spilled: u64,
    /// Data + metadata bytes of entries with a spill URL.
    pub spilled_bytes: u64,
    /// Pinned entries.
    pub pinned: u64,
}

impl ObjectStats {
    fn apply(&mut self, e: &ObjectEntry, add: bool) {
        let f = |x: &mut u64, by: u64| {
            if add {
                *x += by
            } else {
                *x -= by
            }
        };
        f(&mut self.objects, 1);
        f(&mut self.bytes_used, e.resident_bytes());
        f(&mut self.primary_bytes, if e.is_primary() { e.resident_bytes() } else { 0 });
        let state = match e.state {
            ObjectState::Created => &mut self.created,
            ObjectState::Sealed => &mut self.sealed,
            ObjectState::Restoring => &mut self.restoring,
            ObjectState::SpilledOut => &mut self.spilled_out,
        };
        f(state, 1);
        match e.spill {
            SpillState::None => {}
            SpillState::Spilling => f(&mut self.spilling, 1),
            SpillState::Spilled { .. } => {
                f(&mut self.spilled, 1);
                f(&mut self.spilled_bytes, e.size());
            }
        }
        f(&mut self.pinned, u64::from(e.pinned_primary));
    }
}

/// An operation was invalid for the object's current state or for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// `create` of an id that is already in the table (any state).
    #[error("object {0} already exists")]
    Exists(ObjectId),
    /// The id is not in the table.
    #[error("object {0} does not exist")]
    NotFound(ObjectId),
    /// The object is not sealed yet (`Created` or `Restoring`).
    #[error("object {0} is not sealed")]
    NotSealed(ObjectId),
    /// `seal`/`abort` of an object that is already sealed.
    #[error("object {0} is already sealed")]
    AlreadySealed(ObjectId),
    /// The object is only on disk; restore it first.
    #[error("object {0} is spilled and not in memory")]
    NotInMemory(ObjectId),
    /// `seal`/`abort` by a client that did not create the object.
    #[error("{client} did not create object {id}")]
    NotCreator {
        /// The object.
        id: ObjectId,
        /// The caller.
        client: ClientId,
    },
    /// `release` by a client without a reference.
    #[error("{client} holds no reference to object {id}")]
    NotReferenced {
        /// The object.
        id: ObjectId,
        /// The caller.
        client: ClientId,
    },
    /// `unpin` of an object that is not pinned.
    #[error("object {0} is not pinned")]
    NotPinned(ObjectId),
    /// `mark_spilling` of an object that is not a spill candidate.
    #[error("object {0} cannot be spilled now")]
    NotSpillable(ObjectId),
    /// `spill_done`/`spill_failed` of an object that is not being spilled.
    #[error("object {0} is not being spilled")]
    NotSpilling(ObjectId),
    /// `restore_started` of an object that is not `SpilledOut`.
    #[error("object {0} is not spilled out of memory")]
    NotSpilledOut(ObjectId),
    /// `restore_done`/`restore_failed` of an object that is not `Restoring`.
    #[error("object {0} is not being restored")]
    NotRestoring(ObjectId),
    /// Data + metadata size overflows.
    #[error("object {0}: sizes overflow")]
    SizeOverflow(ObjectId),
    /// The placement is smaller than data + metadata.
    #[error("object {id}: placement of {alloc_len} bytes is smaller than {needed}")]
    PlacementTooSmall {
        /// The object.
        id: ObjectId,
        /// Data + metadata size.
        needed: u64,
        /// What was given.
        alloc_len: u64,
    },
}

/// The per-shard object table. See the module docs for the protocol and states.
#[derive(Debug)]
pub struct ObjectTable {
    pub(super) objects: BTreeMap<ObjectId, ObjectEntry>,
    pub(super) lru: Lru,
    /// Spill candidates by creation order.
    pub(super) spill_order: BTreeMap<u64, ObjectId>,
    refs_by_client: BTreeMap<ClientId, BTreeSet<ObjectId>>,
    unsealed_by_client: BTreeMap<ClientId, BTreeSet<ObjectId>>,
    pub(super) stats: ObjectStats,
    pub(super) actions: VecDeque<ObjectAction>,
    tick: u64,
    next_seq: u64,
}

impl Default for ObjectTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectTable {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            lru: Lru::default(),
            spill_order: BTreeMap::new(),
            refs_by_client: BTreeMap::new(),
            unsealed_by_client: BTreeMap::new(),
            stats: ObjectStats::default(),
            actions: VecDeque::new(),
            tick: 0,
            next_seq: 0,
        }
    }

    /// Next queued action, oldest first.
    pub fn poll_action(&mut self) -> Option<ObjectAction> {
        self.actions.pop_front()
    }

    /// Registers a new unsealed object in memory the caller allocated. The creator holds a
    /// reference until it releases it.
    pub fn create(
        &mut self,
        now: Instant,
        new: NewObject,
        client: ClientId,
        placement: Placement,
    ) -> Result<ObjectSpec, ObjectError> {
        let id = new.id;
        if self.objects.contains_key(&id) {
            return Err(ObjectError::Exists(id));
        }
        check_placement(id, new.data_size, new.metadata_size, placement)?;
        self.tick += 1;
        let e = ObjectEntry {
            id,
            state: ObjectState::Created,
            data_size: new.data_size,
            metadata_size: new.metadata_size,
            placement: Some(placement),
            creator: client,
            ref_clients: BTreeSet::from([client]),
            pinned_primary: false,
            spill: SpillState::None,
            source: new.source,
            deferred_delete: false,
            created_at: now,
            last_access: self.tick,
            seq: self.next_seq,
            lru_key: None,
        };
        self.next_seq += 1;
        let spec = e.spec().expect("created objects are resident");
        self.stats.apply(&e, true);
        self.objects.insert(id, e);
        self.refs_by_client.entry(client).or_default().insert(id);
        self.unsealed_by_client.entry(client).or_default().insert(id);
        Ok(spec)
    }

    /// Seals an object created by `client`; queues `Sealed`. If deletion was deferred and
    /// nobody references the object any more, it is removed instead, as if aborted (`Free`
    /// only: no reader ever saw it).
    pub fn seal(&mut self, id: &ObjectId, client: ClientId) -> Result<(), ObjectError> {
        self.check_creator(id, client)?;
        let e = &self.objects[id];
        if e.deferred_delete && e.ref_clients.is_empty() {
            self.remove_entry(id);
            return Ok(());
        }
        self.modify(id, |e, tick| {
            e.state = ObjectState::Sealed;
            e.last_access = tick;
        });
        remove_from_index(&mut self.unsealed_by_client, client, id);
        self.actions.push_back(ObjectAction::Sealed { id: *id });
        Ok(())
    }

    /// Drops an unsealed object created by `client`, even if deletion was deferred; queues
    /// only `Free` (nobody was told it existed).
    pub fn abort(&mut self, id: &ObjectId, client: ClientId) -> Result<(), ObjectError> {
        self.check_creator(id, client)?;
        self.remove_entry(id);
        Ok(())
    }

    /// A sealed, resident object: adds `client`'s reference (once per client) and returns
    /// where it is. `NotSealed` means wait for `Sealed`; `NotInMemory` means restore first.
    pub fn get(&mut self, id: &ObjectId, client: ClientId) -> Result<ObjectSpec, ObjectError> {
        let e = self.objects.get(id).ok_or(ObjectError::NotFound(*id))?;
        match e.state {
            ObjectState::Sealed => {}
            ObjectState::Created | ObjectState::Restoring => return Err(ObjectError::NotSealed(*id)),
            ObjectState::SpilledOut => return Err(ObjectError::NotInMemory(*id)),
        }
        let spec = e.spec().expect("sealed objects are resident");
        self.modify(id, |e, tick| {
            e.ref_clients.insert(client);
            e.last_access = tick;
        });
        self.refs_by_client.entry(client).or_default().insert(*id);
        Ok(spec)
    }

    /// Drops `client`'s reference. The last hold going completes a deferred delete.
    pub fn release(&mut self, id: &ObjectId, client: ClientId) -> Result<(), ObjectError> {
        let e = self.objects.get(id).ok_or(ObjectError::NotFound(*id))?;
        if !e.ref_clients.contains(&client) {
            return Err(ObjectError::NotReferenced { id: *id, client });
        }
        remove_from_index(&mut self.refs_by_client, client, id);
        self.modify(id, |e, tick| {
            e.ref_clients.remove(&client);
            e.last_access = tick;
        });
        Ok(())
    }

    /// Deletes the object now, or marks it for deletion when its last hold goes.
    pub fn delete(&mut self, id: &ObjectId) -> Result<DeleteOutcome, ObjectError> {
        let e = self.objects.get(id).ok_or(ObjectError::NotFound(*id))?;
        if e.is_held() {
            self.modify(id, |e, _| e.deferred_delete = true);
            Ok(DeleteOutcome::Deferred)
        } else {
            self.remove_entry(id);
            Ok(DeleteOutcome::Deleted)
        }
    }

    /// Whether the object is sealed and in memory (plasma `Contains`).
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.objects.get(id).is_some_and(|e| e.state == ObjectState::Sealed)
    }

    /// Pins a sealed object as the primary copy. Returns `false` if it was already pinned.
    pub fn pin(&mut self, id: &ObjectId) -> Result<bool, ObjectError> {
        let e = self.objects.get(id).ok_or(ObjectError::NotFound(*id))?;
        match e.state {
            ObjectState::Sealed => {}
            ObjectState::Created | ObjectState::Restoring => return Err(ObjectError::NotSealed(*id)),
            ObjectState::SpilledOut => return Err(ObjectError::NotInMemory(*id)),
        }
        if e.pinned_primary {
            return Ok(false);
        }
        self.modify(id, |e, _| e.pinned_primary = true);
        Ok(true)
    }

    /// Removes the primary-copy pin. The last hold going completes a deferred delete.
    pub fn unpin(&mut self, id: &ObjectId) -> Result<(), ObjectError> {
        let e = self.objects.get(id).ok_or(ObjectError::NotFound(*id))?;
        if !e.pinned_primary {
            return Err(ObjectError::NotPinned(*id));
        }
        self.modify(id, |e, _| e.pinned_primary = false);
        Ok(())
    }

    /// A client went away: aborts the unsealed objects it created, then releases all of its
    /// references (which may complete deferred deletes).
    pub fn client_disconnected(&mut self, client: ClientId) {
        for id in self.unsealed_by_client.remove(&client).unwrap_or_default() {
            let r = self.abort(&id, client);
            debug_assert!(r.is_ok(), "unsealed index out of date: {r:?}");
        }
        for id in self.refs_by_client.remove(&client).unwrap_or_default() {
            self.modify(&id, |e, _| {
                e.ref_clients.remove(&client);
            });
        }
    }

    /// Counters for metrics and reporting.
    pub fn stats(&self) -> ObjectStats {
        self.stats
    }

    /// One object's metadata.
    pub fn entry(&self, id: &ObjectId) -> Option<&ObjectEntry> {
        self.objects.get(id)
    }

    /// All objects, in id order (for listings and debug dumps).
    pub fn objects(&self) -> impl Iterator<Item = &ObjectEntry> + '_ {
        self.objects.values()
    }

    /// Number of objects in the table.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Applies `f` to an existing entry and restores every derived structure: stats, LRU
    /// membership (entering the LRU = most recently used), spill-candidate order, and a
    /// deferred delete whose last hold just went.
    pub(super) fn modify(&mut self, id: &ObjectId, f: impl FnOnce(&mut ObjectEntry, u64)) {
        self.tick += 1;
        let Some(e) = self.objects.get_mut(id) else {
            debug_assert!(false, "modify of missing object {id}");
            return;
        };
        self.stats.apply(e, false);
        f(e, self.tick);
        self.stats.apply(e, true);
        match (e.lru_key, e.is_evictable()) {
            (None, true) => e.lru_key = Some(self.lru.push(*id, e.resident_bytes())),
            (Some(k), false) => {
                self.lru.remove(k);
                e.lru_key = None;
            }
            _ => {}
        }
        if e.is_spill_candidate() {
            self.spill_order.insert(e.seq, *id);
        } else {
            self.spill_order.remove(&e.seq);
        }
        if e.deferred_delete && !e.is_held() {
            self.remove_entry(id);
        }
    }

    /// Removes an entry and queues what its disappearance means: `Free` if resident,
    /// `Deleted` if it was a readable sealed copy, `DeleteSpilled` if it had a spilled copy.
    pub(super) fn remove_entry(&mut self, id: &ObjectId) {
        let Some(e) = self.objects.remove(id) else {
            debug_assert!(false, "remove of missing object {id}");
            return;
        };
        self.stats.apply(&e, false);
        if let Some(k) = e.lru_key {
            self.lru.remove(k);
        }
        self.spill_order.remove(&e.seq);
        for c in &e.ref_clients {
            remove_from_index(&mut self.refs_by_client, *c, id);
        }
        if e.state == ObjectState::Created {
            remove_from_index(&mut self.unsealed_by_client, e.creator, id);
        }
        if let Some(p) = e.placement {
            self.actions.push_back(ObjectAction::Free { id: *id, offset: p.offset, alloc_len: p.alloc_len });
        }
        if e.state == ObjectState::Sealed {
            self.actions.push_back(ObjectAction::Deleted { id: *id });
        }
        if let SpillState::Spilled { url } = e.spill {
            self.actions.push_back(ObjectAction::DeleteSpilled { id: *id, url });
        }
    }

    fn check_creator(&self, id: &ObjectId, client: ClientId) -> Result<(), ObjectError> {
        let e = self.objects.get(id).ok_or(ObjectError::NotFound(*id))?;
        if e.state != ObjectState::Created {
            return Err(ObjectError::AlreadySealed(*id));
        }
        if e.creator != client {
            return Err(ObjectError::NotCreator { id: *id, client });
        }
        Ok(())
    }

    /// Recomputes every derived structure from the entries; panics naming the broken one.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut stats = ObjectStats::default();
        for (id, e) in &self.objects {
            assert_eq!(*id, e.id);
            stats.apply(e, true);
            assert_eq!(e.placement.is_none(), e.state == ObjectState::SpilledOut, "{id}");
            assert_eq!(e.lru_key.is_some(), e.is_evictable(), "lru membership {id}");
            assert_eq!(self.spill_order.get(&e.seq) == Some(id), e.is_spill_candidate());
            assert!(!e.deferred_delete || e.is_held(), "deferred delete not done {id}");
            if e.state == ObjectState::SpilledOut || e.state == ObjectState::Restoring {
                assert!(matches!(e.spill, SpillState::Spilled { .. }), "no url {id}");
            }
            for c in &e.ref_clients {
                assert!(self.refs_by_client[c].contains(id), "ref index {id}");
            }
            let unsealed = self.unsealed_by_client.get(&e.creator).is_some_and(|s| s.contains(id));
            assert_eq!(unsealed, e.state == ObjectState::Created, "unsealed index {id}");
        }
        assert_eq!(stats, self.stats, "stats");
        for (c, ids) in self.refs_by_client.iter().chain(&self.unsealed_by_client) {
            assert!(!ids.is_empty(), "empty index set for {c}");
            for id in ids {
                assert!(self.objects.contains_key(id), "index names a missing object");
            }
        }
        assert_eq!(self.spill_order.len(), self.objects.values().filter(|e| e.is_spill_candidate()).count());
        self.lru.check(&self.objects);
    }
}

pub(super) fn check_placement(id: ObjectId, data: u64, meta: u64, p: Placement) -> Result<(), ObjectError> {
    let needed = data.checked_add(meta).ok_or(ObjectError::SizeOverflow(id))?;
    if p.alloc_len < needed {
        return Err(ObjectError::PlacementTooSmall { id, needed, alloc_len: p.alloc_len });
    }
    Ok(())
}

fn remove_from_index(index: &mut BTreeMap<ClientId, BTreeSet<ObjectId>>, client: ClientId, id: &ObjectId) {
    if let Some(set) = index.get_mut(&client) {
        set.remove(id);
        if set.is_empty() {
            index.remove(&client);
        }
    }
}

#[cfg(test)]
mod tests;
