//! Spill and restore transitions of the [`ObjectTable`]: choosing primaries to spill,
//! recording spill results, and bringing spilled objects back into memory.
//!
//! **Owns** nothing of its own: it is the part of `ObjectTable`'s API used by the spill/restore
//! IO driver, split out to keep `table.rs` small. The states and holds are described in
//! [`super::table`]; the file side (URLs, packing, file ref counts) is `logic::spill`.
//!
//! **Must not** do IO or allocate: the caller allocates the restore placement and performs the
//! queued `Free` / `DeleteSpilled` actions.
//!
//! # Calling protocol (spilling)
//!
//! 1. `spill_candidates(max_bytes, max_count)` picks pinned, unreferenced primaries, oldest
//!    first; `mark_spilling(id)` each chosen one (its memory is held from now on).
//! 2. Plan the files (`SpillFilePlanner::plan`) and write them.
//! 3. Per object: `spill_done(id, url)` on success, `spill_failed(id)` otherwise (and release
//!    its planned URL in the planner). Drain `poll_action` after each call.
//!
//! # Calling protocol (restoring)
//!
//! `restore_started(id, placement)` on a `SpilledOut` object (allocate
//! [`ObjectEntry::size`] bytes first) returns the URL to read; then `restore_done(id)`,
//! `restore_failed(id)` (the read failed but the record may still be good: the object is
//! `SpilledOut` again), or `restore_lost(id)` (the record is corrupt or gone: the object
//! leaves the table, so a get pulls another copy if one exists).
//!
//! ```text
//!   Sealed+pinned ─mark_spilling─> Spilling ─spill_done─> Spilled (unpinned, evictable)
//!                        ▲             │                      │ evict
//!                        └─spill_failed┘                      ▼
//!                             Sealed <─restore_done── Restoring <─restore_started─ SpilledOut
//!                                                       │  └──restore_failed──────────▲
//!                                          restore_lost ▼  Free + DeleteSpilled
//!                                                     (none)
//! ```

use super::table::{
    check_placement, ObjectEntry, ObjectError, ObjectSource, ObjectState, ObjectTable, Placement, SpillState,
};
use crate::ids::ObjectId;
use crate::logic::objects::ObjectAction;
use crate::logic::spill::SpillUrl;

impl ObjectTable {
    /// Up to `max_count` spill candidates, oldest first, stopping once their data + metadata
    /// reach `max_bytes` (the object that crosses the bound is included, so a single object
    /// larger than `max_bytes` is still returned).
    pub fn spill_candidates(&self, max_bytes: u64, max_count: usize) -> Vec<ObjectId> {
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for id in self.spill_order.values() {
            if out.len() >= max_count || bytes >= max_bytes {
                break;
            }
            bytes = bytes.saturating_add(self.objects[id].size());
            out.push(*id);
        }
        out
    }

    /// Marks a spill candidate as being written to disk; its memory is held until
    /// `spill_done` or `spill_failed`.
    pub fn mark_spilling(&mut self, id: &ObjectId) -> Result<(), ObjectError> {
        let e = self.objects.get(id).ok_or(ObjectError::NotFound(*id))?;
        if !e.is_spill_candidate() {
            return Err(ObjectError::NotSpillable(*id));
        }
        self.modify(id, |e, _| e.spill = SpillState::Spilling);
        Ok(())
    }

    /// The spill succeeded: remember `url` and drop the primary pin, so the memory becomes
    /// evictable once no client references it. A deferred delete completes now (with
    /// `DeleteSpilled`).
    pub fn spill_done(&mut self, id: &ObjectId, url: SpillUrl) -> Result<(), ObjectError> {
        self.check_spilling(id)?;
        self.modify(id, |e, _| {
            e.spill = SpillState::Spilled { url };
            e.pinned_primary = false;
        });
        Ok(())
    }

    /// The spill failed: the object is a candidate again if still pinned. The caller releases
    /// the planned URL in its `SpillFilePlanner` itself.
    pub fn spill_failed(&mut self, id: &ObjectId) -> Result<(), ObjectError> {
        self.check_spilling(id)?;
        self.modify(id, |e, _| e.spill = SpillState::None);
        Ok(())
    }

    /// The spill URL of the object, if it has been spilled.
    pub fn spilled_url(&self, id: &ObjectId) -> Option<SpillUrl> {
        match self.objects.get(id)?.spill {
            SpillState::Spilled { url } => Some(url),
            _ => None,
        }
    }

    /// Starts restoring a `SpilledOut` object into `placement` (allocated by the caller for
    /// [`ObjectEntry::size`] bytes). Returns the URL to read. The table owns the placement from
    /// here: `restore_done` makes it readable, `restore_failed` queues its `Free`.
    pub fn restore_started(&mut self, id: &ObjectId, placement: Placement) -> Result<SpillUrl, ObjectError> {
        let e = self.objects.get(id).ok_or(ObjectError::NotFound(*id))?;
        let SpillState::Spilled { url } = e.spill else {
            return Err(ObjectError::NotSpilledOut(*id));
        };
        if e.state != ObjectState::SpilledOut {
            return Err(ObjectError::NotSpilledOut(*id));
        }
        check_placement(*id, e.data_size, e.metadata_size, placement)?;
        self.modify(id, |e, _| {
            e.state = ObjectState::Restoring;
            e.placement = Some(placement);
            e.source = ObjectSource::Restored;
        });
        Ok(url)
    }

    /// The bytes are back: the object is `Sealed` again (queues `Sealed`), evictable, and
    /// keeps its URL. If it was deleted meanwhile it is removed instead (`Free`,
    /// `DeleteSpilled`).
    pub fn restore_done(&mut self, id: &ObjectId) -> Result<(), ObjectError> {
        let e = self.check_restoring(id)?;
        if e.deferred_delete {
            self.remove_entry(id);
            return Ok(());
        }
        self.modify(id, |e, tick| {
            e.state = ObjectState::Sealed;
            e.last_access = tick;
        });
        self.actions.push_back(ObjectAction::Sealed { id: *id });
        Ok(())
    }

    /// The restore failed: queues `Free` for the placement; the object is `SpilledOut` again
    /// (or removed, with `DeleteSpilled`, if it was deleted meanwhile).
    pub fn restore_failed(&mut self, id: &ObjectId) -> Result<(), ObjectError> {
        let e = self.check_restoring(id)?;
        let p = e.placement.expect("restoring objects are resident");
        self.actions.push_back(ObjectAction::Free { id: *id, offset: p.offset, alloc_len: p.alloc_len });
        self.modify(id, |e, _| {
            e.state = ObjectState::SpilledOut;
            e.placement = None;
        });
        Ok(())
    }

    /// The spilled copy cannot be read back (corrupt, truncated or gone): the object leaves
    /// the table, queuing `Free` for the placement and `DeleteSpilled` for the record (no
    /// `Deleted`: it was not readable here). Returns whether it was still wanted, i.e. not
    /// deleted meanwhile: only primary copies spill, so a wanted one is a primary copy that
    /// this node lost and may pin again when another copy arrives.
    pub fn restore_lost(&mut self, id: &ObjectId) -> Result<bool, ObjectError> {
        let wanted = !self.check_restoring(id)?.deferred_delete;
        self.remove_entry(id);
        Ok(wanted)
    }

    fn check_spilling(&self, id: &ObjectId) -> Result<(), ObjectError> {
        let e = self.objects.get(id).ok_or(ObjectError::NotFound(*id))?;
        if e.spill != SpillState::Spilling {
            return Err(ObjectError::NotSpilling(*id));
        }
        Ok(())
    }

    fn check_restoring(&self, id: &ObjectId) -> Result<&ObjectEntry, ObjectError> {
        let e = self.objects.get(id).ok_or(ObjectError::NotFound(*id))?;
        if e.state != ObjectState::Restoring {
            return Err(ObjectError::NotRestoring(*id));
        }
        Ok(e)
    }
}
