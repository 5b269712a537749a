//! Target `object_table`: an [`ObjectTable`] driven by an arbitrary sequence of client
//! operations (create, seal, abort, get, release, delete, disconnect), pins, eviction, and
//! the spill and restore driver's calls, with a driver that owns the allocator and the
//! spill files as the objects service does.
//!
//! Invariants checked after every operation (from outside, through the public API):
//! - **memory**: every placement the table accepted is freed exactly once (`Free` names a
//!   live placement, with its object and length), and the live placements are exactly
//!   those of resident entries; `stats().bytes_used` is their total;
//! - **spill files**: `DeleteSpilled` names a URL the table was given, once, and the live
//!   URLs are exactly those entries still carry;
//! - **references**: each entry's client set is what the driver's gets, releases and
//!   disconnects imply (a reference is never lost, duplicated or taken below zero:
//!   `release` without one is refused);
//! - **derived state**: `stats()` matches a recount of the entries; evictable bytes and
//!   count match the entries that are evictable; a deferred delete is only pending while
//!   the object is held; an entry is non-resident exactly when it is `SpilledOut`;
//! - **eviction** frees at least what was asked or everything evictable;
//! - **the end**: once every client disconnects, every spill and restore finishes and
//!   every object is unpinned and deleted, the table is empty, all memory is freed and
//!   every spill URL released.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use arbitrary::{Arbitrary, Unstructured};

use super::ids::object;
use crate::ids::ObjectId;
use crate::logic::objects::{
    ClientId, DeleteOutcome, NewObject, ObjectAction, ObjectEntry, ObjectSource, ObjectState, ObjectTable, Placement,
    SpillState,
};
use crate::logic::spill::SpillUrl;

const OBJECTS: u8 = 8;
const CLIENTS: u8 = 4;

#[derive(Debug, Arbitrary)]
enum Op {
    Create { id: u8, client: u8, data: u8, meta: u8, slack: u8, remote: bool },
    Seal { id: u8, client: u8 },
    Abort { id: u8, client: u8 },
    Get { id: u8, client: u8 },
    Release { id: u8, client: u8 },
    Delete { id: u8 },
    Pin { id: u8 },
    Unpin { id: u8 },
    Disconnect { client: u8 },
    Evict { bytes: u8 },
    SpillSome { max_bytes: u8, max_count: u8 },
    MarkSpilling { id: u8 },
    SpillDone { id: u8 },
    SpillFailed { id: u8 },
    RestoreStarted { id: u8, slack: u8 },
    RestoreDone { id: u8 },
    RestoreFailed { id: u8 },
}

struct Driver {
    t: ObjectTable,
    /// offset → (object, alloc_len) of every placement the table holds.
    placements: BTreeMap<u64, (ObjectId, u64)>,
    next_offset: u64,
    /// Spill URLs the table holds.
    urls: BTreeSet<SpillUrl>,
    next_file: u64,
    /// The clients referencing each object, as the driver's calls imply.
    refs: BTreeMap<ObjectId, BTreeSet<ClientId>>,
}

/// The target body.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(ops) = Vec::<Op>::arbitrary(&mut u) else { return };
    let mut d = Driver {
        t: ObjectTable::new(),
        placements: BTreeMap::new(),
        next_offset: 0,
        urls: BTreeSet::new(),
        next_file: 0,
        refs: BTreeMap::new(),
    };
    let now = Instant::now();
    for op in ops {
        d.step(now, op);
        d.drain();
        d.check();
    }
    for c in 0..CLIENTS {
        d.disconnect(ClientId(u64::from(c)));
    }
    let ids: Vec<ObjectId> = d.t.objects().map(|e| e.id).collect();
    for id in ids {
        let _ = d.t.spill_failed(&id);
        let _ = d.t.restore_done(&id);
        d.drain();
        let _ = d.t.unpin(&id);
        d.drain();
        if d.t.entry(&id).is_some() {
            assert_eq!(d.t.delete(&id), Ok(DeleteOutcome::Deleted), "{id} still held after everything ended");
        }
        d.refs.remove(&id);
        d.drain();
        d.check();
    }
    assert!(d.t.is_empty(), "objects left");
    assert!(d.placements.is_empty(), "memory never freed: {:?}", d.placements);
    assert!(d.urls.is_empty(), "spill urls never released: {:?}", d.urls);
    assert_eq!(d.t.stats(), Default::default());
}

impl Driver {
    fn place(&mut self, len: u64) -> Placement {
        let p = Placement { offset: self.next_offset, alloc_len: len };
        self.next_offset += len.max(1);
        p
    }

    fn step(&mut self, now: Instant, op: Op) {
        let oid = |n: u8| object(n % OBJECTS);
        let cid = |n: u8| ClientId(u64::from(n % CLIENTS));
        match op {
            Op::Create { id, client, data, meta, slack, remote } => {
                let (id, client) = (oid(id), cid(client));
                let (data, meta) = (u64::from(data), u64::from(meta % 8));
                let source = if remote { ObjectSource::ReceivedFromRemote } else { ObjectSource::CreatedByClient };
                let p = self.place(data + meta + u64::from(slack % 4));
                let new = NewObject { id, data_size: data, metadata_size: meta, source };
                if self.t.create(now, new, client, p).is_ok() {
                    self.placements.insert(p.offset, (id, p.alloc_len));
                    self.refs.insert(id, BTreeSet::from([client]));
                }
            }
            Op::Seal { id, client } => {
                let _ = self.t.seal(&oid(id), cid(client));
            }
            Op::Abort { id, client } => {
                let _ = self.t.abort(&oid(id), cid(client));
            }
            Op::Get { id, client } => {
                let (id, client) = (oid(id), cid(client));
                if let Ok(spec) = self.t.get(&id, client) {
                    let (owner, len) = self.placements[&spec.offset];
                    assert_eq!((owner, len), (id, spec.alloc_len), "get returned another object's memory");
                    self.refs.entry(id).or_default().insert(client);
                }
            }
            Op::Release { id, client } => {
                let (id, client) = (oid(id), cid(client));
                let held = self.t.entry(&id).is_some() && self.refs.get(&id).is_some_and(|r| r.contains(&client));
                let res = self.t.release(&id, client);
                assert_eq!(res.is_ok(), held, "release by {client} of {id}: {res:?}");
                if let Some(r) = self.refs.get_mut(&id) {
                    r.remove(&client);
                }
            }
            Op::Delete { id } => {
                let _ = self.t.delete(&oid(id));
            }
            Op::Pin { id } => {
                let _ = self.t.pin(&oid(id));
            }
            Op::Unpin { id } => {
                let _ = self.t.unpin(&oid(id));
            }
            Op::Disconnect { client } => self.disconnect(cid(client)),
            Op::Evict { bytes } => self.evict(u64::from(bytes)),
            Op::SpillSome { max_bytes, max_count } => {
                for id in self.t.spill_candidates(u64::from(max_bytes), usize::from(max_count % 4)) {
                    assert_eq!(self.t.mark_spilling(&id), Ok(()), "a spill candidate refused to spill");
                }
            }
            Op::MarkSpilling { id } => {
                let _ = self.t.mark_spilling(&oid(id));
            }
            Op::SpillDone { id } => {
                let id = oid(id);
                let url = SpillUrl { file: self.next_file, offset: 0, len: 1 };
                if self.t.spill_done(&id, url).is_ok() {
                    self.next_file += 1;
                    self.urls.insert(url);
                }
            }
            Op::SpillFailed { id } => {
                let _ = self.t.spill_failed(&oid(id));
            }
            Op::RestoreStarted { id, slack } => {
                let id = oid(id);
                let size = self.t.entry(&id).map_or(0, |e| e.size());
                let p = self.place(size + u64::from(slack % 4));
                if self.t.restore_started(&id, p).is_ok() {
                    self.placements.insert(p.offset, (id, p.alloc_len));
                }
            }
            Op::RestoreDone { id } => {
                let _ = self.t.restore_done(&oid(id));
            }
            Op::RestoreFailed { id } => {
                let _ = self.t.restore_failed(&oid(id));
            }
        }
    }

    fn disconnect(&mut self, client: ClientId) {
        self.t.client_disconnected(client);
        for r in self.refs.values_mut() {
            r.remove(&client);
        }
        self.drain();
    }

    fn evict(&mut self, needed: u64) {
        let (before_bytes, before_count) = (self.t.evictable_bytes(), self.t.evictable_count());
        let chosen = self.t.evict(needed);
        let mut freed = 0;
        while let Some(a) = self.t.poll_action() {
            if let ObjectAction::Free { id, .. } = a {
                assert!(chosen.contains(&id), "evict freed {id}, which it did not choose");
            }
            freed += self.apply(&a);
        }
        assert!(freed >= needed.min(before_bytes), "evicted {freed} of {needed} with {before_bytes} evictable");
        assert!(chosen.len() <= before_count);
        for id in &chosen {
            assert!(self.t.entry(id).is_none_or(|e| e.state == ObjectState::SpilledOut), "{id} still resident");
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.t.poll_action() {
            self.apply(&a);
        }
    }

    /// Performs one action; returns the bytes it freed.
    fn apply(&mut self, a: &ObjectAction) -> u64 {
        match *a {
            ObjectAction::Free { id, offset, alloc_len } => {
                let p = self.placements.remove(&offset);
                assert_eq!(p, Some((id, alloc_len)), "Free of {id} at {offset} does not match a live placement");
                if self.t.entry(&id).is_none() {
                    self.refs.remove(&id);
                }
                alloc_len
            }
            ObjectAction::DeleteSpilled { id, url } => {
                assert!(self.urls.remove(&url), "DeleteSpilled of {id}: {url} is not live");
                0
            }
            ObjectAction::Sealed { id } => {
                assert!(self.t.contains(&id), "Sealed for {id}, which is not readable");
                0
            }
            ObjectAction::Deleted { .. } => 0,
        }
    }

    fn check(&self) {
        let mut resident = BTreeMap::new();
        let mut urls = BTreeSet::new();
        let (mut bytes, mut evictable, mut evictable_count) = (0, 0, 0);
        for e in self.t.objects() {
            assert_eq!(e.placement.is_none(), e.state == ObjectState::SpilledOut, "residency of {}", e.id);
            assert!(!e.deferred_delete || e.is_held(), "deferred delete of {} not done", e.id);
            if let Some(p) = e.placement {
                assert!(p.alloc_len >= e.size());
                resident.insert(p.offset, (e.id, p.alloc_len));
                bytes += p.alloc_len;
            }
            if let SpillState::Spilled { url } = e.spill {
                urls.insert(url);
            }
            if e.is_evictable() {
                evictable += e.resident_bytes();
                evictable_count += 1;
            }
            let refs = self.refs.get(&e.id).cloned().unwrap_or_default();
            assert_eq!(e.ref_clients, refs, "references of {}", e.id);
        }
        assert_eq!(resident, self.placements, "live placements differ from resident entries");
        assert_eq!(urls, self.urls, "live spill urls differ from the entries'");
        let s = self.t.stats();
        assert_eq!((s.objects, s.bytes_used), (self.t.len() as u64, bytes), "stats");
        let count = |f: &dyn Fn(&ObjectEntry) -> bool| self.t.objects().filter(|e| f(e)).count() as u64;
        assert_eq!(s.created, count(&|e| e.state == ObjectState::Created));
        assert_eq!(s.sealed, count(&|e| e.state == ObjectState::Sealed));
        assert_eq!(s.restoring, count(&|e| e.state == ObjectState::Restoring));
        assert_eq!(s.spilled_out, count(&|e| e.state == ObjectState::SpilledOut));
        assert_eq!(s.pinned, count(&|e| e.pinned_primary));
        assert_eq!(s.spilling, count(&|e| e.spill == SpillState::Spilling));
        assert_eq!((self.t.evictable_bytes(), self.t.evictable_count()), (evictable, evictable_count), "evictable");
    }
}
