//! Per-shard object metadata: the plasma object lifecycle without the bytes.
//!
//! - [`table`]: [`ObjectTable`], one per shard, holding the objects hashed to that shard:
//!   state, client references, primary-copy pins, spill state, deferred deletes.
//! - [`eviction`]: the LRU of evictable objects and [`ObjectTable::evict`].
//! - [`spilling`]: spill and restore transitions (`spill_candidates`, `mark_spilling`,
//!   `spill_done`, `restore_started`, ...), an `impl ObjectTable` block.
//!
//! The memory itself is allocated by the caller (`store::alloc`) and handed in as a
//! [`Placement`]; the table says when it can be freed (`ObjectAction::Free`).

pub mod eviction;
pub mod spilling;
pub mod table;

pub use table::{
    ClientId, DeleteOutcome, NewObject, ObjectAction, ObjectEntry, ObjectError, ObjectSource, ObjectSpec, ObjectState,
    ObjectStats, ObjectTable, Placement, SpillState,
};
