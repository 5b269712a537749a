//! Eviction order: an LRU of the evictable objects of one [`ObjectTable`], and
//! [`ObjectTable::evict`].
//!
//! **Owns** the order in which unreferenced sealed objects give their memory back. Membership
//! is maintained by the table on every change (`ObjectTable::modify`): an object enters as the
//! *most recently used* when it becomes evictable (last client reference released, unpinned,
//! spill finished, sealed after a restore) and leaves when it stops being evictable (a client
//! gets it, it is pinned or spilled) or is removed. Evictable = `Sealed`, no client
//! references, not pinned, not being spilled.
//!
//! **Called by** the create path under memory pressure (evict, then retry the allocation; Ray
//! asks for `max(required, 20 % of capacity)`), and by plasma's testing-only `Evict` request.
//!
//! **Must not** pick objects that are held; it never does IO. Evicting an object with a
//! spill URL keeps its entry (`SpilledOut`) so a later get can restore it; any other evicted
//! object leaves the table.
//!
//! ```text
//!   oldest (evicted first) ── key 3 ── key 7 ── key 12 ── newest (entered last)
//! ```

use std::collections::BTreeMap;

use super::table::{ObjectAction, ObjectState, ObjectTable, SpillState};
use crate::ids::ObjectId;

/// Evictable objects by entry order; keys grow monotonically.
#[derive(Debug, Default, Clone)]
pub(super) struct Lru {
    order: BTreeMap<u64, (ObjectId, u64)>,
    next_key: u64,
    bytes: u64,
}

impl Lru {
    /// Appends `id` (with `bytes` of reserved memory) as the most recently used; returns its key.
    pub(super) fn push(&mut self, id: ObjectId, bytes: u64) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.order.insert(key, (id, bytes));
        self.bytes += bytes;
        key
    }

    /// Removes the entry with `key`.
    pub(super) fn remove(&mut self, key: u64) {
        if let Some((_, bytes)) = self.order.remove(&key) {
            self.bytes -= bytes;
        } else {
            debug_assert!(false, "LRU key {key} missing");
        }
    }

    /// Least recently used first.
    fn oldest(&self) -> impl Iterator<Item = (ObjectId, u64)> + '_ {
        self.order.values().copied()
    }

    #[cfg(test)]
    pub(super) fn check(&self, objects: &BTreeMap<ObjectId, super::table::ObjectEntry>) {
        let mut bytes = 0;
        for (k, (id, b)) in &self.order {
            let e = &objects[id];
            assert_eq!(e.lru_key, Some(*k), "LRU key of {id}");
            assert_eq!(e.resident_bytes(), *b, "LRU bytes of {id}");
            bytes += b;
        }
        assert_eq!(bytes, self.bytes, "LRU byte total");
    }
}

impl ObjectTable {
    /// Reserved bytes that [`evict`](Self::evict) could free right now.
    pub fn evictable_bytes(&self) -> u64 {
        self.lru.bytes
    }

    /// Number of evictable objects.
    pub fn evictable_count(&self) -> usize {
        self.lru.order.len()
    }

    /// Evicts least recently used objects until at least `bytes_needed` reserved bytes are
    /// freed or nothing evictable is left; returns the evicted ids in eviction order. Each
    /// queues `Free` and `Deleted`. Check [`evictable_bytes`](Self::evictable_bytes) first
    /// to avoid evicting when even everything would not be enough.
    pub fn evict(&mut self, bytes_needed: u64) -> Vec<ObjectId> {
        let mut chosen = Vec::new();
        let mut freed = 0u64;
        for (id, bytes) in self.lru.oldest() {
            if freed >= bytes_needed {
                break;
            }
            chosen.push(id);
            freed += bytes;
        }
        for id in &chosen {
            self.evict_one(id);
        }
        chosen
    }

    fn evict_one(&mut self, id: &ObjectId) {
        let Some(e) = self.objects.get(id) else {
            debug_assert!(false, "evicting missing object {id}");
            return;
        };
        debug_assert!(e.is_evictable(), "evicting held object {id}");
        if !matches!(e.spill, SpillState::Spilled { .. }) {
            self.remove_entry(id);
            return;
        }
        let p = e.placement.expect("sealed objects are resident");
        self.actions.push_back(ObjectAction::Free { id: *id, offset: p.offset, alloc_len: p.alloc_len });
        self.actions.push_back(ObjectAction::Deleted { id: *id });
        self.modify(id, |e, _| {
            e.state = ObjectState::SpilledOut;
            e.placement = None;
        });
    }
}
