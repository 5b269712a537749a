//! Offset allocator: best-fit allocation of aligned byte ranges inside one address space.
//!
//! **Owns** the free/used bookkeeping of a set of *managed ranges* (offsets into the store
//! arena). It never touches memory: it hands out `(offset, len)` pairs and takes them back.
//!
//! **Used at two levels** (DESIGN.md §5): shard 0 owns one allocator over the whole arena
//! (`new(0, capacity, 64)`); large objects come straight from it. Each shard owns another
//! allocator that starts empty-ish and grows with *slabs* obtained from the global one
//! ([`OffsetAllocator::add_range`]); small objects are sub-allocated from those slabs, and an
//! empty slab goes back with [`OffsetAllocator::remove_range_if_free`].
//!
//! **Must not**: do IO, panic on a bad `free` (a wrong offset may come from a buggy peer or a
//! stale release message; it is an [`AllocError`]), or depend on any clock or RNG.
//!
//! # Model
//!
//! - Every offset and length handed out is a multiple of `align` (a power of two, 64 by
//!   default as in plasma's dlmalloc). Requests are rounded up to `align`.
//! - **Zero-size requests** reserve one `align` unit, so every allocation has a distinct
//!   offset and is freed the same way (like `malloc(0)` returning a unique pointer).
//! - **Best fit**: the smallest free range that fits; ties go to the lowest offset. The
//!   allocation is carved from the *front* of that range.
//! - **Coalescing**: on free, the range merges with free neighbours, so there are never two
//!   adjacent free ranges. Neighbouring managed ranges (two slabs that happen to touch) merge
//!   too; an allocation may therefore straddle two slabs, and such a slab only becomes
//!   removable once that allocation is freed.
//! - Costs: `alloc`, `free`, `add_range`, `remove_range_if_free` are O(log n) in the number of
//!   free ranges / allocations (two `BTreeMap`s of free ranges: by offset, by (size, offset)).
//!
//! ```text
//!   managed range  [base ........................................ base+len)
//!   after allocs   [A0 used][A1 used][   free   ][A3 used][     free      ]
//!   free(A1)       [A0 used][      free         ][A3 used][     free      ]  (coalesced)
//! ```

use std::collections::{BTreeMap, BTreeSet};

/// Default alignment of every allocation (plasma uses 64 bytes).
pub const DEFAULT_ALIGN: u64 = 64;

/// An allocation or a range operation was invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The alignment was zero or not a power of two.
    #[error("alignment {0} is not a power of two")]
    BadAlign(u64),
    /// A range's base or length was not a multiple of the alignment.
    #[error("range [{base}, +{len}) is not aligned to {align}")]
    Misaligned {
        /// Start of the range.
        base: u64,
        /// Its length.
        len: u64,
        /// The allocator's alignment.
        align: u64,
    },
    /// A range was empty or ran past `u64::MAX`.
    #[error("range [{base}, +{len}) is empty or overflows")]
    BadRange {
        /// Start of the range.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// A range overlapped one already managed.
    #[error("range [{base}, +{len}) overlaps a managed range")]
    Overlap {
        /// Start of the range.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// `free` of an offset that lies in a free range: the allocation was already freed.
    #[error("double free of offset {0}")]
    DoubleFree(u64),
    /// `free` of an offset that was never the start of an allocation.
    #[error("offset {0} is not an allocation")]
    UnknownOffset(u64),
}

/// One allocation: `len` bytes (a multiple of the alignment, at least one unit) at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Alloc {
    /// Start of the allocation (an offset into the arena).
    pub offset: u64,
    /// Reserved length; `>=` the requested size, rounded up to the alignment.
    pub len: u64,
}

impl Alloc {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Best-fit offset allocator over a set of managed ranges. See the module docs.
#[derive(Debug, Clone)]
pub struct OffsetAllocator {
    align: u64,
    /// Managed ranges: base -> len.
    ranges: BTreeMap<u64, u64>,
    /// Free ranges: offset -> len. Never two adjacent entries.
    free_by_offset: BTreeMap<u64, u64>,
    /// The same free ranges keyed (len, offset) for best-fit lookup.
    free_by_size: BTreeSet<(u64, u64)>,
    /// Live allocations: offset -> len.
    allocated: BTreeMap<u64, u64>,
    capacity: u64,
    used: u64,
}

impl OffsetAllocator {
    /// An allocator managing `[base, base + len)`. `align` must be a power of two and `base`
    /// and `len` multiples of it; `len == 0` gives an allocator with no ranges (grow it with
    /// [`add_range`](Self::add_range)).
    pub fn new(base: u64, len: u64, align: u64) -> Result<Self, AllocError> {
        if align == 0 || !align.is_power_of_two() {
            return Err(AllocError::BadAlign(align));
        }
        let mut a = Self {
            align,
            ranges: BTreeMap::new(),
            free_by_offset: BTreeMap::new(),
            free_by_size: BTreeSet::new(),
            allocated: BTreeMap::new(),
            capacity: 0,
            used: 0,
        };
        if len > 0 {
            a.add_range(base, len)?;
        }
        Ok(a)
    }

    /// The alignment of every offset and length.
    pub fn align(&self) -> u64 {
        self.align
    }

    /// Allocates at least `size` bytes (rounded up to the alignment; 0 counts as one unit).
    /// `None` when no free range is large enough (the caller evicts, spills, or grows).
    pub fn alloc(&mut self, size: u64) -> Option<Alloc> {
        let len = self.round_up(size.max(1))?;
        let &(flen, foff) = self.free_by_size.range((len, 0)..).next()?;
        self.remove_free(foff, flen);
        if flen > len {
            self.insert_free(foff + len, flen - len);
        }
        self.allocated.insert(foff, len);
        self.used += len;
        Some(Alloc { offset: foff, len })
    }

    /// Frees the allocation starting at `offset`; returns its length. Freeing an offset that
    /// is not a live allocation's start is an error and changes nothing.
    pub fn free(&mut self, offset: u64) -> Result<u64, AllocError> {
        let Some(len) = self.allocated.remove(&offset) else {
            return Err(if self.free_range_containing(offset).is_some() {
                AllocError::DoubleFree(offset)
            } else {
                AllocError::UnknownOffset(offset)
            });
        };
        self.used -= len;
        self.release(offset, len);
        Ok(len)
    }

    /// The reserved length of the live allocation at `offset`, if any.
    pub fn allocation_len(&self, offset: u64) -> Option<u64> {
        self.allocated.get(&offset).copied()
    }

    /// Number of live allocations.
    pub fn allocation_count(&self) -> usize {
        self.allocated.len()
    }

    /// Bytes not allocated (over all managed ranges).
    pub fn free_bytes(&self) -> u64 {
        self.capacity - self.used
    }

    /// Bytes allocated (sum of reserved lengths).
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// The largest single allocation that would currently succeed.
    pub fn largest_free(&self) -> u64 {
        self.free_by_size.last().map_or(0, |&(len, _)| len)
    }

    /// Total bytes of all managed ranges.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Number of free ranges (1 when a single managed range is entirely free).
    pub fn free_range_count(&self) -> usize {
        self.free_by_offset.len()
    }

    /// The managed ranges as `(base, len)`, in offset order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&b, &l)| (b, l))
    }

    /// Adds `[base, base + len)` (e.g. a slab from the global allocator) as free space.
    /// It must be aligned, non-empty and must not overlap a managed range.
    pub fn add_range(&mut self, base: u64, len: u64) -> Result<(), AllocError> {
        let end = base.checked_add(len).filter(|_| len > 0).ok_or(AllocError::BadRange { base, len })?;
        if !base.is_multiple_of(self.align) || !len.is_multiple_of(self.align) {
            return Err(AllocError::Misaligned { base, len, align: self.align });
        }
        let before = self.ranges.range(..end).next_back();
        if before.is_some_and(|(&b, &l)| b + l > base) {
            return Err(AllocError::Overlap { base, len });
        }
        self.ranges.insert(base, len);
        self.capacity += len;
        self.release(base, len);
        Ok(())
    }

    /// Removes the managed range `[base, base + len)` if it was added exactly so (by `new` or
    /// `add_range`) and none of its bytes is allocated. Returns whether it was removed; on
    /// `false` nothing changed.
    pub fn remove_range_if_free(&mut self, base: u64, len: u64) -> bool {
        if self.ranges.get(&base) != Some(&len) {
            return false;
        }
        let Some((foff, flen)) = self.free_range_containing(base) else {
            return false;
        };
        if foff + flen < base + len {
            return false;
        }
        self.remove_free(foff, flen);
        if foff < base {
            self.insert_free(foff, base - foff);
        }
        if foff + flen > base + len {
            self.insert_free(base + len, foff + flen - (base + len));
        }
        self.ranges.remove(&base);
        self.capacity -= len;
        true
    }

    fn round_up(&self, size: u64) -> Option<u64> {
        Some(size.checked_add(self.align - 1)? & !(self.align - 1))
    }

    /// The free range `(offset, len)` containing `pos`, if any.
    fn free_range_containing(&self, pos: u64) -> Option<(u64, u64)> {
        let (&off, &len) = self.free_by_offset.range(..=pos).next_back()?;
        (pos < off + len).then_some((off, len))
    }

    /// Returns `[offset, offset + len)` to the free set, merging with free neighbours.
    fn release(&mut self, mut offset: u64, mut len: u64) {
        if let Some((&poff, &plen)) = self.free_by_offset.range(..offset).next_back() {
            debug_assert!(poff + plen <= offset, "free ranges overlap");
            if poff + plen == offset {
                self.remove_free(poff, plen);
                offset = poff;
                len += plen;
            }
        }
        if let Some(&nlen) = self.free_by_offset.get(&(offset + len)) {
            self.remove_free(offset + len, nlen);
            len += nlen;
        }
        self.insert_free(offset, len);
    }

    fn insert_free(&mut self, offset: u64, len: u64) {
        debug_assert!(len > 0);
        self.free_by_offset.insert(offset, len);
        self.free_by_size.insert((len, offset));
    }

    fn remove_free(&mut self, offset: u64, len: u64) {
        let removed = self.free_by_offset.remove(&offset);
        debug_assert_eq!(removed, Some(len));
        self.free_by_size.remove(&(len, offset));
    }

    /// Recomputes every invariant from scratch; panics naming the broken one.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        assert_eq!(self.free_by_offset.len(), self.free_by_size.len(), "index sizes");
        for (&off, &len) in &self.free_by_offset {
            assert!(self.free_by_size.contains(&(len, off)), "size index missing");
        }
        let free: u64 = self.free_by_offset.values().sum();
        let used: u64 = self.allocated.values().sum();
        assert_eq!(used, self.used, "used accounting");
        assert_eq!(free + used, self.capacity, "free + used == capacity");
        assert_eq!(self.ranges.values().sum::<u64>(), self.capacity, "capacity");
        // Free ranges and allocations tile the managed ranges without overlap or gap.
        let mut pieces: Vec<(u64, u64, bool)> = self
            .free_by_offset
            .iter()
            .map(|(&o, &l)| (o, l, true))
            .chain(self.allocated.iter().map(|(&o, &l)| (o, l, false)))
            .collect();
        pieces.sort_unstable();
        for w in pieces.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "overlap at {}", w[1].0);
            if w[0].2 && w[1].2 {
                assert!(w[0].0 + w[0].1 < w[1].0, "uncoalesced free at {}", w[1].0);
            }
        }
        for &(o, l, _) in &pieces {
            assert!(o.is_multiple_of(self.align), "misaligned offset");
            assert!(l.is_multiple_of(self.align), "misaligned len");
            let inside = |p: u64| self.ranges.range(..=p).next_back().is_some_and(|(&b, &rl)| p < b + rl);
            assert!(inside(o) && inside(o + l - 1), "piece outside managed ranges");
        }
    }
}

#[cfg(test)]
mod tests;
