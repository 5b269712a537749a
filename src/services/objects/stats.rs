//! Store statistics: each shard summarises its objects; shard 0 merges them into the
//! node's `ObjectStoreStats` and object listing (GetNodeStats, `raylet memory`).

use super::store::{ShardStore, StoreCounters};
use crate::logic::objects::{ObjectState, SpillState};
use crate::wire::rpc::{ObjectInfo, ObjectStoreStats};

/// One shard's store summary.
#[derive(Debug, Clone, Default)]
pub struct ShardStoreStats {
    /// Objects in the table.
    pub num_objects: u64,
    /// Bytes resident in memory.
    pub bytes_used: u64,
    /// Bytes of pinned primaries.
    pub primary_bytes: u64,
    /// Arena bytes this shard holds (slabs and large objects).
    pub held_bytes: u64,
    /// Bytes of fallback segments on the node (shard 0 reports them, the others 0).
    pub fallback_bytes: u64,
    /// Cumulative counters.
    pub counters: StoreCounters,
    /// Whether pulls wait for admission.
    pub pulls_queued: bool,
    /// Every object (for listings).
    pub objects: Vec<ObjectInfo>,
}

/// Summarises `store`.
pub fn shard_store_stats(store: &ShardStore) -> ShardStoreStats {
    let t = store.table.borrow();
    let s = t.stats();
    let objects = t
        .objects()
        .map(|e| ObjectInfo {
            object_id: e.id.to_vec(),
            node_id: Vec::new(),
            data_size: e.data_size,
            metadata_size: e.metadata_size,
            state: match (e.state, e.spill, e.pinned_primary) {
                (ObjectState::Created, _, _) => "CREATED",
                (ObjectState::Restoring, _, _) => "RESTORING",
                (ObjectState::SpilledOut, _, _) => "SPILLED",
                (ObjectState::Sealed, SpillState::Spilled { .. }, _) => "SEALED_SPILLED",
                (ObjectState::Sealed, SpillState::Spilling, _) => "SPILLING",
                (ObjectState::Sealed, _, true) => "PINNED",
                (ObjectState::Sealed, _, false) => "SEALED",
            }
            .to_string(),
            ref_count: e.ref_clients.len() as i32,
            primary: e.pinned_primary || matches!(e.spill, SpillState::Spilled { .. } | SpillState::Spilling),
        })
        .collect();
    ShardStoreStats {
        num_objects: s.objects,
        bytes_used: s.bytes_used,
        primary_bytes: s.primary_bytes,
        held_bytes: store.memory.held_bytes(),
        fallback_bytes: store.memory.fallback_used().unwrap_or(0),
        counters: *store.counters.borrow(),
        pulls_queued: store.transfer.pulls_queued(),
        objects,
    }
}

/// Merges shard summaries into the node's store stats.
pub fn merge(parts: &[ShardStoreStats], capacity: u64) -> ObjectStoreStats {
    let mut s = ObjectStoreStats { object_store_bytes_avail: capacity as i64, ..Default::default() };
    for p in parts {
        let c = &p.counters;
        s.spill_time_total_s += c.spill_time.as_secs_f64();
        s.spilled_bytes_total += c.spilled_bytes as i64;
        s.spilled_objects_total += c.spilled_objects as i64;
        s.restore_time_total_s += c.restore_time.as_secs_f64();
        s.restored_bytes_total += c.restored_bytes as i64;
        s.restored_objects_total += c.restored_objects as i64;
        s.object_store_bytes_used += p.bytes_used as i64;
        s.object_store_bytes_primary_copy += p.primary_bytes as i64;
        s.object_store_bytes_fallback += p.fallback_bytes as i64;
        s.num_local_objects += p.num_objects as i64;
        s.consumed_bytes += c.consumed_bytes as i64;
        s.object_pulls_queued |= p.pulls_queued;
        s.cumulative_created_objects += c.created_objects as i64;
        s.cumulative_created_bytes += c.created_bytes as i64;
        s.evicted_objects_total += c.evicted_objects as i64;
        s.evicted_bytes_total += c.evicted_bytes as i64;
    }
    s
}
