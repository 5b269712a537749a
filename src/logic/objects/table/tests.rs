use super::*;
use crate::logic::objects::ObjectAction as A;
use crate::store::alloc::OffsetAllocator;
use std::time::Duration;

const C1: ClientId = ClientId(1);
const C2: ClientId = ClientId(2);

fn t0() -> Instant {
    // Tests need one base instant; the logic itself never reads the clock.
    Instant::now()
}

fn oid(n: u8) -> ObjectId {
    ObjectId([n; 28])
}

fn new_obj(n: u8, data: u64, meta: u64) -> NewObject {
    NewObject { id: oid(n), data_size: data, metadata_size: meta, source: ObjectSource::CreatedByClient }
}

/// Placement of object `n`: 4 KiB slots, so offsets are distinct and easy to read.
fn place(n: u8, len: u64) -> Placement {
    Placement { offset: u64::from(n) * 4096, alloc_len: len }
}

fn drain(t: &mut ObjectTable) -> Vec<ObjectAction> {
    let v: Vec<_> = std::iter::from_fn(|| t.poll_action()).collect();
    t.check_invariants();
    v
}

fn free(n: u8, len: u64) -> ObjectAction {
    A::Free { id: oid(n), offset: u64::from(n) * 4096, alloc_len: len }
}

/// Creates object `n` of `len` bytes by C1, seals and releases it: sealed, unreferenced.
fn sealed(t: &mut ObjectTable, n: u8, len: u64) {
    t.create(t0(), new_obj(n, len, 0), C1, place(n, len)).unwrap();
    t.seal(&oid(n), C1).unwrap();
    t.release(&oid(n), C1).unwrap();
    drain(t);
}

/// A sealed, pinned, unreferenced object: a spill candidate.
fn primary(t: &mut ObjectTable, n: u8, len: u64) {
    sealed(t, n, len);
    assert_eq!(t.pin(&oid(n)), Ok(true));
}

fn url(n: u64) -> SpillUrl {
    SpillUrl { file: 0, offset: n * 100, len: 100 }
}

/// Spills object `n` (must be a candidate) and evicts its memory.
fn spilled_out(t: &mut ObjectTable, n: u8, len: u64) {
    primary(t, n, len);
    t.mark_spilling(&oid(n)).unwrap();
    t.spill_done(&oid(n), url(u64::from(n))).unwrap();
    let lru_before = t.evictable_count();
    assert_eq!(t.evict(u64::MAX).len(), lru_before);
    drain(t);
    assert_eq!(t.entry(&oid(n)).unwrap().state, ObjectState::SpilledOut);
}

#[test]
fn created_object_is_not_readable_until_sealed() {
    let mut t = ObjectTable::new();
    let spec = t.create(t0(), new_obj(1, 100, 10), C1, place(1, 128)).unwrap();
    assert_eq!(spec, ObjectSpec { offset: 4096, data_size: 100, metadata_size: 10, alloc_len: 128 });
    assert_eq!(spec.metadata_offset(), 4196);
    assert!(!t.contains(&oid(1)));
    assert_eq!(t.get(&oid(1), C2), Err(ObjectError::NotSealed(oid(1))));
    t.seal(&oid(1), C1).unwrap();
    assert_eq!(drain(&mut t), vec![A::Sealed { id: oid(1) }]);
    assert!(t.contains(&oid(1)));
    assert_eq!(t.get(&oid(1), C2), Ok(spec));
}

#[test]
fn create_of_existing_id_fails_in_every_state() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    assert_eq!(t.create(t0(), new_obj(1, 1, 0), C2, place(2, 64)), Err(ObjectError::Exists(oid(1))));
    spilled_out(&mut t, 3, 64);
    assert_eq!(t.create(t0(), new_obj(3, 1, 0), C2, place(4, 64)), Err(ObjectError::Exists(oid(3))));
    assert!(drain(&mut t).is_empty());
}

#[test]
fn create_rejects_small_placements_and_overflowing_sizes() {
    let mut t = ObjectTable::new();
    assert_eq!(
        t.create(t0(), new_obj(1, 100, 10), C1, place(1, 64)),
        Err(ObjectError::PlacementTooSmall { id: oid(1), needed: 110, alloc_len: 64 })
    );
    assert_eq!(t.create(t0(), new_obj(1, u64::MAX, 1), C1, place(1, 64)), Err(ObjectError::SizeOverflow(oid(1))));
    assert!(t.is_empty());
    // Zero-sized objects are fine.
    t.create(t0(), new_obj(1, 0, 0), C1, place(1, 0)).unwrap();
}

#[test]
fn only_the_creator_seals_and_only_once() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    assert_eq!(t.seal(&oid(1), C2), Err(ObjectError::NotCreator { id: oid(1), client: C2 }));
    t.seal(&oid(1), C1).unwrap();
    assert_eq!(t.seal(&oid(1), C1), Err(ObjectError::AlreadySealed(oid(1))));
    assert_eq!(t.seal(&oid(9), C1), Err(ObjectError::NotFound(oid(9))));
    assert_eq!(drain(&mut t), vec![A::Sealed { id: oid(1) }]);
}

#[test]
fn abort_frees_immediately_without_deleted() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    assert_eq!(t.abort(&oid(1), C2), Err(ObjectError::NotCreator { id: oid(1), client: C2 }));
    t.abort(&oid(1), C1).unwrap();
    assert_eq!(drain(&mut t), vec![free(1, 64)]);
    assert!(t.is_empty());
    sealed(&mut t, 2, 64);
    assert_eq!(t.abort(&oid(2), C1), Err(ObjectError::AlreadySealed(oid(2))));
}

#[test]
fn abort_overrides_a_deferred_delete() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    assert_eq!(t.delete(&oid(1)), Ok(DeleteOutcome::Deferred));
    t.abort(&oid(1), C1).unwrap();
    assert_eq!(drain(&mut t), vec![free(1, 64)]);
}

#[test]
fn a_client_counts_once_however_many_gets() {
    let mut t = ObjectTable::new();
    sealed(&mut t, 1, 64);
    t.get(&oid(1), C2).unwrap();
    t.get(&oid(1), C2).unwrap();
    assert_eq!(t.entry(&oid(1)).unwrap().ref_clients.len(), 1);
    t.release(&oid(1), C2).unwrap();
    assert_eq!(t.release(&oid(1), C2), Err(ObjectError::NotReferenced { id: oid(1), client: C2 }));
    assert_eq!(t.evictable_count(), 1);
}

#[test]
fn get_and_release_of_unknown_objects_fail() {
    let mut t = ObjectTable::new();
    assert_eq!(t.get(&oid(1), C1), Err(ObjectError::NotFound(oid(1))));
    assert_eq!(t.release(&oid(1), C1), Err(ObjectError::NotFound(oid(1))));
    assert_eq!(t.delete(&oid(1)), Err(ObjectError::NotFound(oid(1))));
    assert_eq!(t.pin(&oid(1)), Err(ObjectError::NotFound(oid(1))));
    assert!(!t.contains(&oid(1)));
}

#[test]
fn delete_of_unreferenced_sealed_object_frees_and_reports() {
    let mut t = ObjectTable::new();
    sealed(&mut t, 1, 64);
    assert_eq!(t.delete(&oid(1)), Ok(DeleteOutcome::Deleted));
    assert_eq!(drain(&mut t), vec![free(1, 64), A::Deleted { id: oid(1) }]);
    assert!(t.is_empty());
}

#[test]
fn delete_of_referenced_object_waits_for_the_last_release() {
    let mut t = ObjectTable::new();
    sealed(&mut t, 1, 64);
    t.get(&oid(1), C1).unwrap();
    t.get(&oid(1), C2).unwrap();
    assert_eq!(t.delete(&oid(1)), Ok(DeleteOutcome::Deferred));
    assert!(t.entry(&oid(1)).unwrap().deferred_delete);
    t.release(&oid(1), C1).unwrap();
    assert!(drain(&mut t).is_empty());
    t.release(&oid(1), C2).unwrap();
    assert_eq!(drain(&mut t), vec![free(1, 64), A::Deleted { id: oid(1) }]);
}

#[test]
fn delete_of_unsealed_object_waits_for_seal_and_release() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    assert_eq!(t.delete(&oid(1)), Ok(DeleteOutcome::Deferred));
    t.seal(&oid(1), C1).unwrap();
    assert_eq!(drain(&mut t), vec![A::Sealed { id: oid(1) }]);
    t.release(&oid(1), C1).unwrap();
    assert_eq!(drain(&mut t), vec![free(1, 64), A::Deleted { id: oid(1) }]);
}

#[test]
fn sealing_a_deleted_object_nobody_references_removes_it_silently() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    t.release(&oid(1), C1).unwrap();
    t.delete(&oid(1)).unwrap();
    t.seal(&oid(1), C1).unwrap();
    assert_eq!(drain(&mut t), vec![free(1, 64)]);
    assert!(t.is_empty());
}

#[test]
fn releasing_an_unsealed_object_keeps_it_until_sealed() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    t.release(&oid(1), C1).unwrap();
    assert_eq!(t.evictable_count(), 0);
    t.seal(&oid(1), C1).unwrap();
    assert_eq!(t.evictable_count(), 1);
}

#[test]
fn pin_is_a_reference_of_its_own() {
    let mut t = ObjectTable::new();
    sealed(&mut t, 1, 64);
    assert_eq!(t.pin(&oid(1)), Ok(true));
    assert_eq!(t.pin(&oid(1)), Ok(false));
    assert_eq!(t.evictable_count(), 0);
    assert_eq!(t.delete(&oid(1)), Ok(DeleteOutcome::Deferred));
    t.get(&oid(1), C2).unwrap();
    t.release(&oid(1), C2).unwrap();
    assert!(drain(&mut t).is_empty(), "a client release does not drop the pin");
    t.unpin(&oid(1)).unwrap();
    assert_eq!(drain(&mut t), vec![free(1, 64), A::Deleted { id: oid(1) }]);
}

#[test]
fn unpin_makes_an_object_evictable_and_double_unpin_fails() {
    let mut t = ObjectTable::new();
    primary(&mut t, 1, 64);
    t.unpin(&oid(1)).unwrap();
    assert_eq!(t.unpin(&oid(1)), Err(ObjectError::NotPinned(oid(1))));
    assert_eq!(t.evictable_bytes(), 64);
}

#[test]
fn pin_requires_a_sealed_resident_object() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    assert_eq!(t.pin(&oid(1)), Err(ObjectError::NotSealed(oid(1))));
    spilled_out(&mut t, 2, 64);
    assert_eq!(t.pin(&oid(2)), Err(ObjectError::NotInMemory(oid(2))));
}

#[test]
fn disconnect_aborts_unsealed_objects_and_releases_references() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    sealed(&mut t, 2, 64);
    sealed(&mut t, 3, 64);
    t.get(&oid(2), C1).unwrap();
    t.get(&oid(3), C1).unwrap();
    t.get(&oid(3), C2).unwrap();
    t.delete(&oid(2)).unwrap();
    t.client_disconnected(C1);
    assert_eq!(drain(&mut t), vec![free(1, 64), free(2, 64), A::Deleted { id: oid(2) }]);
    assert_eq!(t.len(), 1);
    assert_eq!(t.evictable_count(), 0, "C2 still holds object 3");
    t.client_disconnected(C2);
    assert_eq!(t.evictable_count(), 1);
    t.client_disconnected(ClientId(99));
}

#[test]
fn disconnect_of_a_creator_that_released_before_sealing_still_aborts() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    t.release(&oid(1), C1).unwrap();
    t.client_disconnected(C1);
    assert_eq!(drain(&mut t), vec![free(1, 64)]);
}

#[test]
fn eviction_takes_the_least_recently_used_until_enough_bytes() {
    let mut t = ObjectTable::new();
    for n in 1..=4 {
        sealed(&mut t, n, 64 * u64::from(n));
    }
    // Touch 1: it becomes the most recently used.
    t.get(&oid(1), C2).unwrap();
    t.release(&oid(1), C2).unwrap();
    assert_eq!(t.evictable_bytes(), 640);
    assert_eq!(t.evict(0), vec![]);
    assert_eq!(t.evict(150), vec![oid(2), oid(3)]);
    assert_eq!(drain(&mut t), vec![free(2, 128), A::Deleted { id: oid(2) }, free(3, 192), A::Deleted { id: oid(3) }]);
    assert_eq!(t.evict(10_000), vec![oid(4), oid(1)]);
    assert_eq!(t.evictable_bytes(), 0);
    assert_eq!(t.evict(1), vec![]);
}

#[test]
fn eviction_never_touches_held_objects() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    sealed(&mut t, 2, 64);
    t.get(&oid(2), C2).unwrap();
    primary(&mut t, 3, 64);
    primary(&mut t, 4, 64);
    t.mark_spilling(&oid(4)).unwrap();
    t.unpin(&oid(4)).unwrap();
    assert_eq!(t.evict(u64::MAX), vec![]);
    assert_eq!(t.len(), 4);
}

#[test]
fn spill_candidates_are_unreferenced_pinned_primaries_oldest_first() {
    let mut t = ObjectTable::new();
    primary(&mut t, 1, 100);
    sealed(&mut t, 2, 100);
    primary(&mut t, 3, 100);
    primary(&mut t, 4, 100);
    primary(&mut t, 5, 100);
    t.get(&oid(4), C2).unwrap();
    assert_eq!(t.spill_candidates(u64::MAX, 10), vec![oid(1), oid(3), oid(5)]);
    assert_eq!(t.spill_candidates(u64::MAX, 2), vec![oid(1), oid(3)]);
    assert_eq!(t.spill_candidates(150, 10), vec![oid(1), oid(3)]);
    assert_eq!(t.spill_candidates(1, 10), vec![oid(1)]);
    assert_eq!(t.spill_candidates(0, 10), vec![]);
    assert_eq!(t.mark_spilling(&oid(2)), Err(ObjectError::NotSpillable(oid(2))));
    assert_eq!(t.mark_spilling(&oid(4)), Err(ObjectError::NotSpillable(oid(4))));
    t.mark_spilling(&oid(1)).unwrap();
    assert_eq!(t.mark_spilling(&oid(1)), Err(ObjectError::NotSpillable(oid(1))));
    assert_eq!(t.spill_candidates(u64::MAX, 10), vec![oid(3), oid(5)]);
}

#[test]
fn spill_done_unpins_remembers_the_url_and_makes_memory_evictable() {
    let mut t = ObjectTable::new();
    primary(&mut t, 1, 64);
    assert_eq!(t.spill_done(&oid(1), url(1)), Err(ObjectError::NotSpilling(oid(1))));
    t.mark_spilling(&oid(1)).unwrap();
    assert_eq!(t.stats().primary_bytes, 64);
    assert_eq!(t.evictable_count(), 0);
    t.spill_done(&oid(1), url(1)).unwrap();
    assert_eq!(t.spilled_url(&oid(1)), Some(url(1)));
    assert!(!t.entry(&oid(1)).unwrap().pinned_primary);
    assert_eq!(t.stats().primary_bytes, 0);
    assert_eq!(t.spill_candidates(u64::MAX, 10), vec![]);
    assert_eq!(t.evict(1), vec![oid(1)]);
    assert_eq!(drain(&mut t), vec![free(1, 64), A::Deleted { id: oid(1) }]);
    let e = t.entry(&oid(1)).unwrap();
    assert_eq!((e.state, e.placement), (ObjectState::SpilledOut, None));
    assert!(!t.contains(&oid(1)));
    assert_eq!(t.get(&oid(1), C1), Err(ObjectError::NotInMemory(oid(1))));
}

#[test]
fn spill_failed_makes_the_object_a_candidate_again() {
    let mut t = ObjectTable::new();
    primary(&mut t, 1, 64);
    t.mark_spilling(&oid(1)).unwrap();
    t.spill_failed(&oid(1)).unwrap();
    assert_eq!(t.spill_failed(&oid(1)), Err(ObjectError::NotSpilling(oid(1))));
    assert_eq!(t.spill_candidates(u64::MAX, 10), vec![oid(1)]);
    assert_eq!(t.spilled_url(&oid(1)), None);
}

#[test]
fn delete_while_spilling_completes_after_the_spill_with_delete_spilled() {
    let mut t = ObjectTable::new();
    primary(&mut t, 1, 64);
    t.mark_spilling(&oid(1)).unwrap();
    t.unpin(&oid(1)).unwrap();
    assert_eq!(t.delete(&oid(1)), Ok(DeleteOutcome::Deferred));
    assert!(drain(&mut t).is_empty());
    t.spill_done(&oid(1), url(1)).unwrap();
    assert_eq!(
        drain(&mut t),
        vec![free(1, 64), A::Deleted { id: oid(1) }, A::DeleteSpilled { id: oid(1), url: url(1) }]
    );
}

#[test]
fn delete_while_spilling_then_spill_failure_frees_without_delete_spilled() {
    let mut t = ObjectTable::new();
    primary(&mut t, 1, 64);
    t.mark_spilling(&oid(1)).unwrap();
    t.unpin(&oid(1)).unwrap();
    t.delete(&oid(1)).unwrap();
    t.spill_failed(&oid(1)).unwrap();
    assert_eq!(drain(&mut t), vec![free(1, 64), A::Deleted { id: oid(1) }]);
}

#[test]
fn delete_of_spilled_out_object_deletes_only_the_spilled_copy() {
    let mut t = ObjectTable::new();
    spilled_out(&mut t, 1, 64);
    assert_eq!(t.delete(&oid(1)), Ok(DeleteOutcome::Deleted));
    assert_eq!(drain(&mut t), vec![A::DeleteSpilled { id: oid(1), url: url(1) }]);
    assert!(t.is_empty());
}

#[test]
fn delete_of_resident_spilled_object_frees_both_copies() {
    let mut t = ObjectTable::new();
    primary(&mut t, 1, 64);
    t.mark_spilling(&oid(1)).unwrap();
    t.spill_done(&oid(1), url(1)).unwrap();
    t.delete(&oid(1)).unwrap();
    assert_eq!(
        drain(&mut t),
        vec![free(1, 64), A::Deleted { id: oid(1) }, A::DeleteSpilled { id: oid(1), url: url(1) }]
    );
}

#[test]
fn restore_brings_a_spilled_object_back_as_evictable_and_sealed() {
    let mut t = ObjectTable::new();
    spilled_out(&mut t, 1, 64);
    let p = Placement { offset: 9000, alloc_len: 64 };
    assert_eq!(t.restore_started(&oid(1), p), Ok(url(1)));
    assert_eq!(t.restore_started(&oid(1), p), Err(ObjectError::NotSpilledOut(oid(1))));
    assert_eq!(t.get(&oid(1), C1), Err(ObjectError::NotSealed(oid(1))));
    assert_eq!(t.evict(u64::MAX), vec![]);
    t.restore_done(&oid(1)).unwrap();
    assert_eq!(t.restore_done(&oid(1)), Err(ObjectError::NotRestoring(oid(1))));
    assert_eq!(drain(&mut t), vec![A::Sealed { id: oid(1) }]);
    let e = t.entry(&oid(1)).unwrap();
    assert_eq!((e.state, e.source), (ObjectState::Sealed, ObjectSource::Restored));
    assert_eq!(t.spilled_url(&oid(1)), Some(url(1)));
    assert_eq!(t.get(&oid(1), C1).unwrap().offset, 9000);
    t.release(&oid(1), C1).unwrap();
    // Evicting it again keeps the spilled copy.
    assert_eq!(t.evict(1), vec![oid(1)]);
    assert_eq!(t.entry(&oid(1)).unwrap().state, ObjectState::SpilledOut);
}

#[test]
fn restore_requires_a_spilled_out_object_and_a_large_enough_placement() {
    let mut t = ObjectTable::new();
    sealed(&mut t, 1, 64);
    let p = Placement { offset: 9000, alloc_len: 64 };
    assert_eq!(t.restore_started(&oid(1), p), Err(ObjectError::NotSpilledOut(oid(1))));
    assert_eq!(t.restore_done(&oid(1)), Err(ObjectError::NotRestoring(oid(1))));
    spilled_out(&mut t, 2, 64);
    assert!(matches!(
        t.restore_started(&oid(2), Placement { offset: 0, alloc_len: 8 }),
        Err(ObjectError::PlacementTooSmall { .. })
    ));
}

#[test]
fn restore_failure_frees_the_placement_and_allows_a_retry() {
    let mut t = ObjectTable::new();
    spilled_out(&mut t, 1, 64);
    t.restore_started(&oid(1), Placement { offset: 9000, alloc_len: 64 }).unwrap();
    t.restore_failed(&oid(1)).unwrap();
    assert_eq!(drain(&mut t), vec![A::Free { id: oid(1), offset: 9000, alloc_len: 64 }]);
    assert_eq!(t.restore_failed(&oid(1)), Err(ObjectError::NotRestoring(oid(1))));
    assert!(t.restore_started(&oid(1), Placement { offset: 100, alloc_len: 64 }).is_ok());
}

#[test]
fn a_lost_spilled_copy_removes_the_object_with_its_memory_and_record() {
    let mut t = ObjectTable::new();
    spilled_out(&mut t, 1, 64);
    t.restore_started(&oid(1), Placement { offset: 9000, alloc_len: 64 }).unwrap();
    assert_eq!(t.restore_lost(&oid(1)), Ok(true), "a primary copy nobody deleted is still wanted");
    assert_eq!(
        drain(&mut t),
        vec![A::Free { id: oid(1), offset: 9000, alloc_len: 64 }, A::DeleteSpilled { id: oid(1), url: url(1) }]
    );
    assert!(t.is_empty());
    assert_eq!(t.restore_lost(&oid(1)), Err(ObjectError::NotFound(oid(1))));
    // Only a restoring object can be lost.
    spilled_out(&mut t, 2, 64);
    assert_eq!(t.restore_lost(&oid(2)), Err(ObjectError::NotRestoring(oid(2))));
    // One deleted while restoring is not wanted any more.
    t.restore_started(&oid(2), Placement { offset: 9000, alloc_len: 64 }).unwrap();
    assert_eq!(t.delete(&oid(2)), Ok(DeleteOutcome::Deferred));
    assert_eq!(t.restore_lost(&oid(2)), Ok(false));
    drain(&mut t);
    assert!(t.is_empty());
}

#[test]
fn delete_during_restore_removes_the_object_when_the_restore_ends() {
    let p = Placement { offset: 9000, alloc_len: 64 };
    let expect =
        vec![A::Free { id: oid(1), offset: 9000, alloc_len: 64 }, A::DeleteSpilled { id: oid(1), url: url(1) }];
    for succeed in [true, false] {
        let mut t = ObjectTable::new();
        spilled_out(&mut t, 1, 64);
        t.restore_started(&oid(1), p).unwrap();
        assert_eq!(t.delete(&oid(1)), Ok(DeleteOutcome::Deferred));
        if succeed {
            t.restore_done(&oid(1)).unwrap();
        } else {
            t.restore_failed(&oid(1)).unwrap();
        }
        assert_eq!(drain(&mut t), expect, "restore succeeded: {succeed}");
        assert!(t.is_empty());
    }
}

#[test]
fn stats_follow_every_transition() {
    let mut t = ObjectTable::new();
    t.create(t0(), new_obj(1, 10, 0), C1, place(1, 64)).unwrap();
    primary(&mut t, 2, 128);
    spilled_out(&mut t, 3, 256);
    let s = t.stats();
    assert_eq!((s.objects, s.created, s.sealed, s.spilled_out), (3, 1, 1, 1));
    assert_eq!((s.bytes_used, s.primary_bytes, s.pinned), (192, 128, 1));
    assert_eq!((s.spilled, s.spilled_bytes, s.spilling), (1, 256, 0));
    assert_eq!(t.objects().map(|e| e.id).collect::<Vec<_>>(), vec![oid(1), oid(2), oid(3)]);
}

#[test]
fn last_access_and_creation_time_are_recorded() {
    let mut t = ObjectTable::new();
    let now = t0() + Duration::from_secs(5);
    t.create(now, new_obj(1, 1, 0), C1, place(1, 64)).unwrap();
    let before = t.entry(&oid(1)).unwrap().last_access;
    t.seal(&oid(1), C1).unwrap();
    let e = t.entry(&oid(1)).unwrap();
    assert_eq!(e.created_at, now);
    assert!(e.last_access > before);
}

/// Random operations against a real allocator: every `Free` must match a live allocation, the
/// table's byte accounting must match the allocator's, and tearing everything down must give
/// every byte back.
#[test]
fn random_operations_keep_memory_and_indexes_consistent() {
    let mut succeeded = [0u32; 16];
    for seed in 0..30u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut t = ObjectTable::new();
        let mut alloc = OffsetAllocator::new(0, 1 << 20, 64).unwrap();
        let mut spill_urls = BTreeSet::new();
        let clients = [ClientId(1), ClientId(2), ClientId(3)];
        for step in 0..1500u64 {
            let id = oid(rng.u8(0..10));
            let c = clients[rng.usize(0..3)];
            let (op, ok) = random_op(&mut rng, &mut t, &mut alloc, id, c, step, &mut spill_urls);
            succeeded[op] += u32::from(ok);
            apply(&mut t, &mut alloc, &mut spill_urls);
            if rng.u8(0..50) == 0 {
                t.client_disconnected(c);
                apply(&mut t, &mut alloc, &mut spill_urls);
            }
            assert_eq!(t.stats().bytes_used, alloc.used_bytes(), "seed {seed} step {step}");
        }
        for c in clients {
            t.client_disconnected(c);
            apply(&mut t, &mut alloc, &mut spill_urls);
        }
        let ids: Vec<ObjectId> = t.objects().map(|e| e.id).collect();
        for id in ids {
            let _ = t.unpin(&id);
            let _ = t.spill_failed(&id);
            let _ = t.restore_failed(&id);
            let _ = t.delete(&id);
            apply(&mut t, &mut alloc, &mut spill_urls);
        }
        assert!(t.is_empty(), "seed {seed}: {:?}", t.objects().next());
        assert_eq!(alloc.used_bytes(), 0);
        assert!(spill_urls.is_empty(), "seed {seed}: spilled copies leaked");
    }
    // The walk must reach every operation's success path, or it proves little.
    assert!(succeeded.iter().all(|&n| n > 0), "{succeeded:?}");
}

fn random_op(
    rng: &mut fastrand::Rng,
    t: &mut ObjectTable,
    alloc: &mut OffsetAllocator,
    id: ObjectId,
    c: ClientId,
    step: u64,
    urls: &mut BTreeSet<SpillUrl>,
) -> (usize, bool) {
    let mut place = |size: u64| alloc.alloc(size).map(|a| Placement { offset: a.offset, alloc_len: a.len });
    // Weighted so that multi-step paths (pin, spill, evict, restore) happen often.
    const OPS: [u8; 30] =
        [0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8, 8, 8, 9, 10, 10, 10, 11, 11, 11, 12, 13, 13, 13, 14, 14, 14, 15, 15];
    let op = OPS[rng.usize(0..OPS.len())];
    let r = match op {
        0 | 1 => {
            let size = rng.u64(0..5000);
            let new = NewObject { id, data_size: size, metadata_size: 0, source: ObjectSource::CreatedByClient };
            match place(size) {
                Some(p) => t.create(t0(), new, c, p).map(|_| ()).inspect_err(|_| {
                    alloc.free(p.offset).unwrap();
                }),
                None => Ok(()),
            }
        }
        2 => t.seal(&id, c),
        3 => t.abort(&id, c),
        4 => t.get(&id, c).map(|_| ()),
        5 | 6 => t.release(&id, c),
        7 => t.delete(&id).map(|_| ()),
        8 => t.pin(&id).map(|_| ()),
        9 => t.unpin(&id),
        10 => t.mark_spilling(&id),
        11 => {
            let url = SpillUrl { file: step, offset: 0, len: 1 };
            t.spill_done(&id, url).inspect(|_| {
                urls.insert(url);
            })
        }
        12 => t.spill_failed(&id),
        13 => {
            let size = t.entry(&id).map_or(0, ObjectEntry::size);
            match place(size) {
                Some(p) => t.restore_started(&id, p).map(|_| ()).inspect_err(|_| {
                    alloc.free(p.offset).unwrap();
                }),
                None => Ok(()),
            }
        }
        14 => match rng.u8(0..3) {
            0 => t.restore_done(&id),
            1 => t.restore_failed(&id),
            _ => t.restore_lost(&id).map(|_| ()),
        },
        _ => {
            let evicted = t.evict(rng.u64(0..20_000));
            if evicted.is_empty() {
                Err(ObjectError::NotFound(id))
            } else {
                Ok(())
            }
        }
    };
    (usize::from(op), r.is_ok())
}

/// Performs the queued actions against the allocator and a set of live spill URLs.
fn apply(t: &mut ObjectTable, alloc: &mut OffsetAllocator, urls: &mut BTreeSet<SpillUrl>) {
    // Spill URLs are live from spill_done until DeleteSpilled.
    for a in drain(t) {
        match a {
            A::Free { offset, alloc_len, .. } => assert_eq!(alloc.free(offset), Ok(alloc_len)),
            A::DeleteSpilled { url, .. } => assert!(urls.remove(&url), "unknown url {url}"),
            A::Sealed { id } => assert!(t.contains(&id)),
            A::Deleted { id } => assert!(!t.contains(&id)),
        }
    }
}
