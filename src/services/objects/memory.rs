//! Where objects' bytes go: the arena is one allocator owned by shard 0 (large objects and
//! slabs come from it), and each shard sub-allocates small objects from slabs it holds, so
//! a small create never leaves its shard. Any object up to the whole capacity fits.
//!
//! Under pressure a create first evicts this shard's least recently used unreferenced
//! copies and gives its empty slabs back to the arena, then asks the other shards to do
//! the same, then spills pinned primaries everywhere, and retries (after 10 ms, doubling
//! to 200 ms while nothing can be freed) until the full-store wait (`oom_grace_period_s`,
//! 5 s) ends; only then does it fail with `ObjectStoreFull`, naming a failed spill write
//! if that is what left no room. The requesting shard drives all of it, so shard 0 never awaits a
//! call while serving one (the DAG rule of `lib.rs`). Pinned primaries also spill in the
//! background once shard 0's arena is fuller than `object_spilling_threshold` (0.8).
//!
//! **Fallback** (Ray's fallback allocation): an object larger than the whole store, or one
//! that still finds no room when the full-store wait ends, gets a fallback segment of its
//! own, a disk-backed file in the fallback directory mapped above the store
//! (`store::arena`). Shard 0 owns the allocator of that address range, whose size is the
//! fallback limit, so the limit holds across shards. Only when the limit or the disk cannot
//! take the object does the create fail, with `ObjectStoreFull` and a message saying why and
//! how big.

use super::msg::{ObjRep, ObjReq};
use super::store::ShardStore;
use crate::config::ObjectPlaneConfig;
use crate::ids::ShardId;
use crate::local::msg::StoreError;
use crate::logic::objects::Placement;
use crate::shard::msg::{Rep, Req};
use crate::shard::Shard;
use crate::store::alloc::OffsetAllocator;
use crate::store::arena::{Arena, FALLBACK_ALIGN};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Alignment of every allocation.
pub const ALIGN: u64 = 64;
/// First retry delay of a create that found nothing to free, and its cap.
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(200);

/// This shard's allocators.
#[derive(Debug)]
pub struct Memory {
    me: ShardId,
    n: usize,
    capacity: u64,
    slab_size: u64,
    large_threshold: u64,
    slab: RefCell<OffsetAllocator>,
    slabs: RefCell<Vec<(u64, u64)>>,
    large: RefCell<HashMap<u64, u64>>,
    global: Option<RefCell<OffsetAllocator>>,
    /// The store and its fallback segments.
    arena: Arc<Arena>,
    /// Shard 0: the fallback range of the arena's address space.
    fallback: Option<RefCell<OffsetAllocator>>,
    spilling: Cell<bool>,
    /// Fraction of capacity above which pinned primaries start spilling.
    spill_threshold: Cell<f64>,
    /// How long a create may wait for memory before `ObjectStoreFull`.
    full_timeout: Cell<Duration>,
}

fn empty_allocator() -> OffsetAllocator {
    OffsetAllocator::new(0, 0, ALIGN).expect("an empty allocator with a power-of-two alignment")
}

impl Memory {
    /// Allocators for the store in `arena` and its fallback range.
    pub fn new(shard: &Shard, arena: Arc<Arena>) -> Self {
        let capacity = arena.len() / ALIGN * ALIGN;
        // A slab is 1/64 of the store (1/8 of a shard's share if smaller), 64 KiB to 16 MiB;
        // objects under a quarter slab (up to 4 MiB in a store of 1 GiB or more on two
        // shards) are placed without leaving the shard. A larger object costs a round trip
        // to shard 0 (measured at 100-150 us between the vCPUs of a small VM, more than
        // copying 1 MiB). Empty slabs go back under pressure (`release_empty_slabs`).
        let per_shard = capacity / (8 * shard.n.max(1) as u64);
        let slab_size = (capacity / 64).min(per_shard).clamp(64 << 10, 16 << 20) / ALIGN * ALIGN;
        let global = (shard.id == ShardId::NODE)
            .then(|| RefCell::new(OffsetAllocator::new(0, capacity, ALIGN).expect("arena capacity is aligned")));
        let fallback = (shard.id == ShardId::NODE).then(|| {
            let limit = arena.fallback_limit() / FALLBACK_ALIGN * FALLBACK_ALIGN;
            RefCell::new(
                OffsetAllocator::new(arena.fallback_base(), limit, FALLBACK_ALIGN)
                    .expect("the fallback range is aligned to pages"),
            )
        });
        Self {
            me: shard.id,
            n: shard.n,
            capacity,
            slab_size,
            large_threshold: slab_size / 4,
            slab: RefCell::new(empty_allocator()),
            slabs: RefCell::new(Vec::new()),
            large: RefCell::new(HashMap::new()),
            global,
            arena,
            fallback,
            spilling: Cell::new(false),
            spill_threshold: Cell::new(ObjectPlaneConfig::default().spilling_threshold),
            full_timeout: Cell::new(ObjectPlaneConfig::default().full_timeout),
        }
    }

    /// Takes the cluster's spilling threshold and full-store wait.
    pub fn configure(&self, spill_threshold: f64, full_timeout: Duration) {
        self.spill_threshold.set(spill_threshold);
        self.full_timeout.set(full_timeout);
    }

    /// Arena bytes this shard holds (its slabs plus its large objects), for stats.
    pub fn held_bytes(&self) -> u64 {
        self.slabs.borrow().iter().map(|s| s.1).sum::<u64>() + self.large.borrow().values().sum::<u64>()
    }

    /// Arena bytes in use across the node (shard 0 only).
    pub fn arena_used(&self) -> Option<u64> {
        self.global.as_ref().map(|g| g.borrow().used_bytes())
    }

    /// Shard 0: allocate an arena range.
    pub fn global_alloc_local(&self, shard: &Rc<Shard>, len: u64) -> Option<(u64, u64)> {
        let g = self.global.as_ref()?;
        let a = g.borrow_mut().alloc(len)?;
        let used = g.borrow().used_bytes();
        if used as f64 > self.spill_threshold.get() * self.capacity as f64 {
            self.spill_in_background(shard, used);
        }
        Some((a.offset, a.len))
    }

    /// Store capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes of fallback segments in use across the node (shard 0 only).
    pub fn fallback_used(&self) -> Option<u64> {
        self.fallback.as_ref().map(|f| f.borrow().used_bytes())
    }

    /// Shard 0: allocate address space for a fallback segment.
    pub fn fallback_alloc_local(&self, len: u64) -> Option<(u64, u64)> {
        let a = self.fallback.as_ref()?.borrow_mut().alloc(len)?;
        Some((a.offset, a.len))
    }

    /// Shard 0: free an arena range or a fallback segment's address space.
    pub fn global_free_local(&self, offset: u64) {
        if offset >= self.arena.fallback_base() {
            if let Some(f) = &self.fallback {
                if let Err(e) = f.borrow_mut().free(offset) {
                    tracing::error!("fallback free of {offset}: {e}");
                }
            }
            return;
        }
        if let Some(g) = &self.global {
            if let Err(e) = g.borrow_mut().free(offset) {
                tracing::error!("arena free of {offset}: {e}");
            }
        }
    }

    async fn global_alloc(&self, shard: &Rc<Shard>, len: u64) -> Option<(u64, u64)> {
        if self.me == ShardId::NODE {
            return self.global_alloc_local(shard, len);
        }
        match shard.mesh.call(ShardId::NODE, Req::Obj(ObjReq::AllocRange(len))).await {
            Ok(Rep::Obj(ObjRep::Range(r))) => r,
            _ => None,
        }
    }

    fn global_free(&self, shard: &Rc<Shard>, offset: u64) {
        if self.me == ShardId::NODE {
            self.global_free_local(offset);
            return;
        }
        let s = shard.clone();
        glommio::spawn_local(async move {
            let _ = s.mesh.tell(ShardId::NODE, Req::Obj(ObjReq::FreeRange(offset))).await;
        })
        .detach();
    }

    async fn try_alloc(&self, shard: &Rc<Shard>, size: u64) -> Option<Placement> {
        if size >= self.large_threshold {
            let (offset, alloc_len) = self.global_alloc(shard, size).await?;
            self.large.borrow_mut().insert(offset, alloc_len);
            return Some(Placement { offset, alloc_len });
        }
        if let Some(a) = self.slab.borrow_mut().alloc(size) {
            return Some(Placement { offset: a.offset, alloc_len: a.len });
        }
        let Some((base, len)) = self.global_alloc(shard, self.slab_size).await else {
            // No room for a whole slab: place this object on its own.
            let (offset, alloc_len) = self.global_alloc(shard, size.max(1)).await?;
            self.large.borrow_mut().insert(offset, alloc_len);
            return Some(Placement { offset, alloc_len });
        };
        let mut slab = self.slab.borrow_mut();
        if slab.add_range(base, len).is_err() {
            drop(slab);
            self.global_free(shard, base);
            return None;
        }
        self.slabs.borrow_mut().push((base, len));
        let a = slab.alloc(size)?;
        Some(Placement { offset: a.offset, alloc_len: a.len })
    }

    /// Gives every empty slab, the kept spare too, back to the arena; returns the bytes
    /// given back. Under memory pressure the arena needs them: a spare slab can split the
    /// only hole big enough for a large object. Done once the arena has them (the tells to
    /// shard 0 are queued before any later allocation request), so a retry sees the room.
    pub async fn release_empty_slabs(&self, shard: &Rc<Shard>) -> u64 {
        let (mut bases, mut bytes) = (Vec::new(), 0);
        {
            let mut slabs = self.slabs.borrow_mut();
            let mut slab = self.slab.borrow_mut();
            let mut i = 0;
            while i < slabs.len() {
                let (base, len) = slabs[i];
                if slab.largest_free() >= len && slab.remove_range_if_free(base, len) {
                    slabs.swap_remove(i);
                    bases.push(base);
                    bytes += len;
                    continue;
                }
                i += 1;
            }
        }
        for base in bases {
            if self.me == ShardId::NODE {
                self.global_free_local(base);
            } else {
                let _ = shard.mesh.tell(ShardId::NODE, Req::Obj(ObjReq::FreeRange(base))).await;
            }
        }
        bytes
    }

    /// Gives memory back; whole empty slabs beyond one spare return to the arena. A
    /// fallback segment is unmapped at once and its file closed on a blocking thread.
    pub fn free(&self, shard: &Rc<Shard>, offset: u64, _alloc_len: u64) {
        if offset >= self.arena.fallback_base() {
            match self.arena.remove_fallback(offset) {
                Some(seg) => {
                    glommio::spawn_local(glommio::executor().spawn_blocking(move || drop(seg))).detach();
                }
                None => tracing::error!("free of {offset}: no fallback segment there"),
            }
            self.global_free(shard, offset);
            return;
        }
        if self.large.borrow_mut().remove(&offset).is_some() {
            self.global_free(shard, offset);
            return;
        }
        if let Err(e) = self.slab.borrow_mut().free(offset) {
            tracing::error!("slab free of {offset}: {e}");
            return;
        }
        let mut slabs = self.slabs.borrow_mut();
        let mut slab = self.slab.borrow_mut();
        let mut spare = 0;
        let mut i = 0;
        while i < slabs.len() {
            let (base, len) = slabs[i];
            let free = slab.largest_free() >= len && slab.remove_range_if_free(base, len);
            if free && spare >= 1 {
                slabs.swap_remove(i);
                self.global_free(shard, base);
                continue;
            }
            if free {
                // Keep one empty slab as a spare: re-add it.
                let _ = slab.add_range(base, len);
                spare += 1;
            }
            i += 1;
        }
    }

    /// Allocates `size` bytes, freeing memory as described in the module docs.
    pub async fn allocate(
        &self,
        shard: &Rc<Shard>,
        store: &ShardStore,
        size: u64,
    ) -> Result<Placement, (StoreError, String)> {
        if size > self.capacity {
            return self.allocate_fallback(shard, size).await;
        }
        let wait = self.full_timeout.get();
        let deadline = Instant::now() + wait;
        let mut delay = RETRY_MIN;
        let mut spill_failure = None;
        loop {
            if let Some(p) = self.try_alloc(shard, size).await {
                return Ok(p);
            }
            if store.evict(shard, size) + self.release_empty_slabs(shard).await > 0 {
                continue;
            }
            if self.evict_others(shard, size).await > 0 {
                continue;
            }
            let (spilled, failure) = spill_everywhere(shard, size).await;
            spill_failure = failure.or(spill_failure);
            if spilled > 0 && self.evict_all(shard, store, size).await > 0 {
                continue;
            }
            if Instant::now() >= deadline {
                let why = match &spill_failure {
                    Some(f) => format!("spilling to disk failed: {f}"),
                    None => "everything left is referenced, pinned or unspillable".to_string(),
                };
                return self.allocate_fallback(shard, size).await.map_err(|(code, fallback)| {
                    let full =
                        format!("no room for {size} bytes in the {} byte store after {:?}: {why}", self.capacity, wait);
                    (code, format!("{full}; {fallback}"))
                });
            }
            glommio::timer::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(RETRY_MAX);
        }
    }

    /// Places `size` bytes in a new fallback segment (module doc).
    pub async fn allocate_fallback(&self, shard: &Rc<Shard>, size: u64) -> Result<Placement, (StoreError, String)> {
        let full = |why: String| Err((StoreError::ObjectStoreFull, why));
        let limit = self.arena.fallback_limit() / FALLBACK_ALIGN * FALLBACK_ALIGN;
        let len = size.max(1).div_ceil(FALLBACK_ALIGN) * FALLBACK_ALIGN;
        if limit == 0 {
            return full(format!(
                "object of {size} bytes does not fit in the {} byte store and fallback allocation is off \
                 (--fallback-allocation-limit 0)",
                self.capacity
            ));
        }
        if len > limit {
            return full(format!(
                "object of {size} bytes is larger than the store ({} bytes) and the fallback limit ({limit} bytes, \
                 --fallback-allocation-limit)",
                self.capacity
            ));
        }
        let range = if self.me == ShardId::NODE {
            self.fallback_alloc_local(len)
        } else {
            match shard.mesh.call(ShardId::NODE, Req::Obj(ObjReq::AllocFallback(len))).await {
                Ok(Rep::Obj(ObjRep::Range(r))) => r,
                _ => None,
            }
        };
        let Some((offset, len)) = range else {
            return full(format!(
                "object of {size} bytes does not fit in the {} byte store, and other fallback segments hold too much \
                 of the {limit} byte fallback limit to take it",
                self.capacity
            ));
        };
        let dir = self.arena.fallback.dir.clone();
        let file = glommio::executor()
            .spawn_blocking(move || crate::store::segments::unlinked_file(&dir, "raylet-fallback", len, true))
            .await;
        let mapped = file.map_err(|e| e.to_string()).and_then(|(rw, ro)| {
            let ro = ro.expect("asked for a read-only copy");
            self.arena.add_fallback(offset, len, rw, ro).map_err(|e| e.to_string())
        });
        if let Err(e) = mapped {
            self.global_free(shard, offset);
            let dir = self.arena.fallback.dir.display();
            let free = crate::store::segments::free_bytes(&self.arena.fallback.dir).unwrap_or(0);
            return full(format!(
                "object of {size} bytes does not fit in the {} byte store, and the fallback directory {dir} \
                 ({free} bytes free) cannot take it: {e}",
                self.capacity
            ));
        }
        Ok(Placement { offset, alloc_len: len })
    }

    async fn evict_others(&self, shard: &Rc<Shard>, bytes: u64) -> u64 {
        let me = self.me;
        let mut freed = 0;
        for (i, r) in shard.mesh.call_all(|_| Req::Obj(ObjReq::Evict(bytes))).await.into_iter().enumerate() {
            if i != me.index() {
                if let Ok(Rep::Obj(ObjRep::Freed(b))) = r {
                    freed += b;
                }
            }
        }
        freed
    }

    async fn evict_all(&self, shard: &Rc<Shard>, store: &ShardStore, bytes: u64) -> u64 {
        store.evict(shard, bytes) + self.evict_others(shard, bytes).await
    }

    fn spill_in_background(&self, shard: &Rc<Shard>, used: u64) {
        if self.spilling.replace(true) {
            return;
        }
        let excess = used.saturating_sub((self.spill_threshold.get() * self.capacity as f64) as u64);
        let per_shard = (excess / self.n as u64).max(1);
        let s = shard.clone();
        glommio::spawn_local(async move {
            let (spilled, _) = spill_everywhere(&s, per_shard).await;
            tracing::debug!(spilled, "background spill above the threshold");
            if let Some(store) = super::local_store(&s) {
                store.memory.spilling.set(false);
            }
        })
        .detach();
    }
}

/// Asks every shard to spill up to `bytes` of pinned primaries; returns the total spilled
/// and a write failure that has spilling paused on some shard, if any.
pub async fn spill_everywhere(shard: &Rc<Shard>, bytes: u64) -> (u64, Option<String>) {
    let (mut total, mut failure) = (0, None);
    for r in shard.mesh.call_all(|_| Req::Obj(ObjReq::Spill(bytes))).await {
        if let Ok(Rep::Obj(ObjRep::SpillDone { bytes, failure: f })) = r {
            total += bytes;
            failure = failure.or(f);
        }
    }
    (total, failure)
}
