use super::*;
use std::collections::BTreeMap;

fn alloc64(len: u64) -> OffsetAllocator {
    OffsetAllocator::new(0, len, 64).unwrap()
}

#[test]
fn new_rejects_bad_alignment_and_misaligned_ranges() {
    assert_eq!(OffsetAllocator::new(0, 64, 0).unwrap_err(), AllocError::BadAlign(0));
    assert_eq!(OffsetAllocator::new(0, 96, 48).unwrap_err(), AllocError::BadAlign(48));
    assert!(matches!(OffsetAllocator::new(32, 64, 64), Err(AllocError::Misaligned { .. })));
    assert!(matches!(OffsetAllocator::new(0, 100, 64), Err(AllocError::Misaligned { .. })));
    assert!(matches!(OffsetAllocator::new(u64::MAX - 63, 128, 64), Err(AllocError::BadRange { .. })));
}

#[test]
fn empty_allocator_has_no_capacity_and_fails_allocs() {
    let mut a = OffsetAllocator::new(0, 0, 64).unwrap();
    assert_eq!(a.capacity(), 0);
    assert_eq!(a.alloc(1), None);
    assert_eq!(a.largest_free(), 0);
}

#[test]
fn sizes_round_up_to_alignment_and_offsets_are_aligned() {
    let mut a = OffsetAllocator::new(1024, 4096, 64).unwrap();
    let x = a.alloc(1).unwrap();
    assert_eq!(x, Alloc { offset: 1024, len: 64 });
    let y = a.alloc(65).unwrap();
    assert_eq!(y, Alloc { offset: 1088, len: 128 });
    assert_eq!(a.used_bytes(), 192);
    assert_eq!(a.free_bytes(), 4096 - 192);
    a.check_invariants();
}

#[test]
fn zero_size_allocations_get_distinct_offsets_of_one_unit() {
    let mut a = alloc64(256);
    let x = a.alloc(0).unwrap();
    let y = a.alloc(0).unwrap();
    assert_ne!(x.offset, y.offset);
    assert_eq!((x.len, y.len), (64, 64));
    assert_eq!(a.free(x.offset), Ok(64));
    a.check_invariants();
}

#[test]
fn huge_request_fails_without_overflow() {
    let mut a = alloc64(1 << 20);
    assert_eq!(a.alloc(u64::MAX), None);
    assert_eq!(a.alloc((1 << 20) + 1), None);
    assert!(a.alloc(1 << 20).is_some());
    assert_eq!(a.alloc(1), None);
}

#[test]
fn best_fit_picks_smallest_hole_then_lowest_offset() {
    let mut a = alloc64(64 * 20);
    let blocks: Vec<Alloc> = [2, 1, 4, 1, 3, 1].iter().map(|&u| a.alloc(u * 64).unwrap()).collect();
    // Holes of 2, 4 and 3 units, separated by live 1-unit blocks; plus the 8-unit tail.
    a.free(blocks[0].offset).unwrap();
    a.free(blocks[2].offset).unwrap();
    a.free(blocks[4].offset).unwrap();
    assert_eq!(a.alloc(3 * 64).unwrap().offset, blocks[4].offset);
    assert_eq!(a.alloc(64).unwrap().offset, blocks[0].offset);
    a.check_invariants();
}

#[test]
fn free_coalesces_with_both_neighbours() {
    let mut a = alloc64(64 * 3);
    let x = a.alloc(64).unwrap();
    let y = a.alloc(64).unwrap();
    let z = a.alloc(64).unwrap();
    a.free(x.offset).unwrap();
    a.free(z.offset).unwrap();
    assert_eq!(a.free_range_count(), 2);
    a.free(y.offset).unwrap();
    assert_eq!(a.free_range_count(), 1);
    assert_eq!(a.largest_free(), 192);
    a.check_invariants();
}

#[test]
fn double_free_and_unknown_offset_are_errors_that_change_nothing() {
    let mut a = alloc64(1024);
    let x = a.alloc(128).unwrap();
    let _y = a.alloc(128).unwrap();
    assert_eq!(a.free(x.offset + 64), Err(AllocError::UnknownOffset(x.offset + 64)));
    a.free(x.offset).unwrap();
    assert_eq!(a.free(x.offset), Err(AllocError::DoubleFree(x.offset)));
    assert_eq!(a.free(1 << 40), Err(AllocError::UnknownOffset(1 << 40)));
    assert_eq!(a.used_bytes(), 128);
    a.check_invariants();
}

#[test]
fn add_range_grows_capacity_and_rejects_overlap() {
    let mut a = OffsetAllocator::new(0, 0, 64).unwrap();
    a.add_range(4096, 1024).unwrap();
    a.add_range(0, 1024).unwrap();
    assert_eq!(a.capacity(), 2048);
    assert_eq!(a.free_range_count(), 2);
    assert!(matches!(a.add_range(4096 + 512, 1024), Err(AllocError::Overlap { .. })));
    assert!(matches!(a.add_range(3072, 2048), Err(AllocError::Overlap { .. })));
    assert!(matches!(a.add_range(512, 64), Err(AllocError::Overlap { .. })));
    assert!(matches!(a.add_range(8192, 0), Err(AllocError::BadRange { .. })));
    assert!(matches!(a.add_range(8200, 64), Err(AllocError::Misaligned { .. })));
    assert_eq!(a.capacity(), 2048);
    // A 1 KiB request fits in either slab; the lower one wins the tie.
    assert_eq!(a.alloc(1024).unwrap().offset, 0);
    a.check_invariants();
}

#[test]
fn adjacent_slabs_coalesce_and_can_still_be_removed_individually() {
    let mut a = OffsetAllocator::new(0, 0, 64).unwrap();
    a.add_range(0, 1024).unwrap();
    a.add_range(1024, 1024).unwrap();
    assert_eq!(a.free_range_count(), 1);
    assert!(a.remove_range_if_free(0, 1024));
    assert_eq!(a.capacity(), 1024);
    assert_eq!(a.alloc(1024).unwrap().offset, 1024);
    a.check_invariants();
}

#[test]
fn remove_range_fails_while_any_byte_is_allocated() {
    let mut a = OffsetAllocator::new(0, 0, 64).unwrap();
    a.add_range(0, 1024).unwrap();
    a.add_range(1024, 1024).unwrap();
    // Straddles both slabs.
    let x = a.alloc(2048).unwrap();
    assert!(!a.remove_range_if_free(0, 1024));
    assert!(!a.remove_range_if_free(1024, 1024));
    a.free(x.offset).unwrap();
    let y = a.alloc(64).unwrap();
    assert!(!a.remove_range_if_free(0, 1024));
    assert!(a.remove_range_if_free(1024, 1024));
    a.free(y.offset).unwrap();
    assert!(a.remove_range_if_free(0, 1024));
    assert_eq!(a.capacity(), 0);
    assert_eq!(a.free_range_count(), 0);
    a.check_invariants();
}

#[test]
fn remove_range_requires_an_exact_managed_range() {
    let mut a = alloc64(4096);
    assert!(!a.remove_range_if_free(0, 1024));
    assert!(!a.remove_range_if_free(1024, 3072));
    assert!(!a.remove_range_if_free(8192, 64));
    assert_eq!(a.capacity(), 4096);
    assert!(a.remove_range_if_free(0, 4096));
}

#[test]
fn removing_a_middle_slab_splits_a_coalesced_free_range() {
    let mut a = OffsetAllocator::new(0, 0, 64).unwrap();
    for i in 0..3 {
        a.add_range(i * 1024, 1024).unwrap();
    }
    assert!(a.remove_range_if_free(1024, 1024));
    assert_eq!(a.free_range_count(), 2);
    assert_eq!(a.largest_free(), 1024);
    assert_eq!(a.alloc(2048), None);
    a.check_invariants();
}

#[test]
fn custom_power_of_two_alignment_is_honoured() {
    let mut a = OffsetAllocator::new(0, 1 << 20, 4096).unwrap();
    let x = a.alloc(1).unwrap();
    let y = a.alloc(5000).unwrap();
    assert_eq!((x.offset, x.len), (0, 4096));
    assert_eq!((y.offset, y.len), (4096, 8192));
    a.check_invariants();
}

/// Checks the model of live allocations against the allocator: no overlap, inside a managed
/// range, same accounting.
fn check_model(a: &OffsetAllocator, live: &BTreeMap<u64, u64>) {
    a.check_invariants();
    let mut prev_end = 0;
    for (&o, &l) in live {
        assert!(o >= prev_end, "allocations overlap at {o}");
        prev_end = o + l;
        assert_eq!(a.allocation_len(o), Some(l));
    }
    assert_eq!(a.used_bytes(), live.values().sum::<u64>());
    assert_eq!(a.allocation_count(), live.len());
}

#[test]
fn random_alloc_free_sequences_never_overlap_and_coalesce_fully() {
    for seed in 0..20u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let cap = 64 * rng.u64(16..4096);
        let mut a = OffsetAllocator::new(64 * rng.u64(0..1000), cap, 64).unwrap();
        let mut live: BTreeMap<u64, u64> = BTreeMap::new();
        for step in 0..2000 {
            if rng.u8(0..100) < 55 {
                let size = match rng.u8(0..10) {
                    0 => 0,
                    1..=6 => rng.u64(1..512),
                    _ => rng.u64(512..cap / 4 + 2),
                };
                let largest = a.largest_free();
                match a.alloc(size) {
                    Some(x) => {
                        assert!(x.len >= size.max(1) && x.len - size.max(1) < 64);
                        assert!(live.insert(x.offset, x.len).is_none(), "seed {seed} step {step}");
                    }
                    None => assert!(size.div_ceil(64).max(1) * 64 > largest),
                }
            } else if !live.is_empty() {
                let k = *live.keys().nth(rng.usize(0..live.len())).unwrap();
                assert_eq!(a.free(k), Ok(live.remove(&k).unwrap()));
                assert!(a.free(k).is_err());
            }
            check_model(&a, &live);
        }
        for (o, _) in std::mem::take(&mut live) {
            a.free(o).unwrap();
        }
        assert_eq!(a.free_range_count(), 1, "seed {seed}");
        assert_eq!(a.largest_free(), cap);
        assert_eq!(a.used_bytes(), 0);
    }
}

#[test]
fn random_slab_growth_and_return_keeps_accounting_exact() {
    for seed in 0..20u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let slab = 64 * 64;
        let mut a = OffsetAllocator::new(0, 0, 64).unwrap();
        // Slab slots 0..32; only some are managed at a time (adjacent ones coalesce).
        let mut slabs: BTreeMap<u64, ()> = BTreeMap::new();
        let mut live: BTreeMap<u64, u64> = BTreeMap::new();
        for _ in 0..1500 {
            match rng.u8(0..100) {
                0..=9 => {
                    let base = slab * rng.u64(0..32);
                    let added = a.add_range(base, slab).is_ok();
                    assert_eq!(added, slabs.insert(base, ()).is_none());
                }
                10..=19 if !slabs.is_empty() => {
                    let base = *slabs.keys().nth(rng.usize(0..slabs.len())).unwrap();
                    let busy = live.iter().any(|(&o, &l)| o < base + slab && o + l > base);
                    assert_eq!(a.remove_range_if_free(base, slab), !busy);
                    if !busy {
                        slabs.remove(&base);
                    }
                }
                20..=64 => {
                    if let Some(x) = a.alloc(rng.u64(0..3 * slab)) {
                        live.insert(x.offset, x.len);
                    }
                }
                _ if !live.is_empty() => {
                    let k = *live.keys().nth(rng.usize(0..live.len())).unwrap();
                    a.free(k).unwrap();
                    live.remove(&k);
                }
                _ => {}
            }
            check_model(&a, &live);
            assert_eq!(a.capacity(), slab * slabs.len() as u64);
        }
        for (o, _) in std::mem::take(&mut live) {
            a.free(o).unwrap();
        }
        for base in slabs.keys() {
            assert!(a.remove_range_if_free(*base, slab));
        }
        assert_eq!((a.capacity(), a.free_range_count()), (0, 0));
    }
}
