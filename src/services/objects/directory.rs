//! Reports this shard's local copies to the GCS object directory: added, removed and
//! spilled objects, batched, with at most one report in flight per shard (later updates
//! accumulate meanwhile and go in the next batch).

use crate::ids::ObjectId;
use crate::logic::spill::SpillUrl;
use crate::rpc::CallOpts;
use crate::shard::Shard;
use crate::wire::rpc::{
    object_directory_gcs_service, GetObjectLocationsRequest, LocationChange, ObjectLocationUpdate,
    ReportObjectLocationsRequest,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// Most updates per report (Ray's `max_object_report_batch_size`).
const MAX_BATCH: usize = 2000;

/// Updates waiting to be reported.
#[derive(Debug, Default)]
pub struct Reporter {
    pending: RefCell<Vec<ObjectLocationUpdate>>,
    busy: Cell<bool>,
}

impl Reporter {
    fn push(&self, shard: &Rc<Shard>, u: ObjectLocationUpdate) {
        self.pending.borrow_mut().push(u);
        if self.busy.replace(true) {
            return;
        }
        let s = shard.clone();
        glommio::spawn_local(async move { flush(s).await }).detach();
    }
}

async fn flush(shard: Rc<Shard>) {
    // Let the tasks this update woke (a get waiting for the seal that reported it, which
    // may be in another task queue) answer first: the report wakes the GCS, which may
    // share this CPU and take it.
    glommio::executor().yield_task_queue_now().await;
    let Some(store) = super::local_store(&shard) else { return };
    loop {
        let batch: Vec<ObjectLocationUpdate> = {
            let mut p = store.reporter.pending.borrow_mut();
            let n = p.len().min(MAX_BATCH);
            p.drain(..n).collect()
        };
        if batch.is_empty() {
            store.reporter.busy.set(false);
            return;
        }
        let Some(gcs) = shard.gcs_address.get() else {
            // Not registered yet: keep the batch for when we are.
            store.reporter.pending.borrow_mut().splice(0..0, batch);
            glommio::timer::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let req = ReportObjectLocationsRequest { node_id: shard.node_id.to_vec(), updates: batch };
        let client = shard.clients.get(gcs);
        if let Err(e) = object_directory_gcs_service::client::report_object_locations(
            &*client,
            &req,
            CallOpts::idempotent(Duration::from_secs(10)),
        )
        .await
        {
            tracing::warn!("cannot report object locations to the GCS: {e}");
        }
    }
}

fn update(id: ObjectId, change: LocationChange, size: u64, url: String) -> ObjectLocationUpdate {
    ObjectLocationUpdate { object_id: id.to_vec(), change: change as i32, size, spilled_url: url, metadata_size: 0 }
}

/// A sealed copy of `size` bytes (`metadata_size` of them metadata) appeared here.
pub fn object_added(shard: &Rc<Shard>, id: ObjectId, size: u64, metadata_size: u64) {
    if let Some(store) = super::local_store(shard) {
        let mut u = update(id, LocationChange::Added, size, String::new());
        u.metadata_size = metadata_size;
        store.reporter.push(shard, u);
    }
}

/// The in-memory copy here is gone.
pub fn object_removed(shard: &Rc<Shard>, id: ObjectId) {
    if let Some(store) = super::local_store(shard) {
        store.reporter.push(shard, update(id, LocationChange::Removed, 0, String::new()));
    }
}

/// The object was spilled here to `url`.
pub fn object_spilled(shard: &Rc<Shard>, id: ObjectId, size: u64, url: SpillUrl) {
    if let Some(store) = super::local_store(shard) {
        store.reporter.push(shard, update(id, LocationChange::Spilled, size, url.to_string()));
    }
}

/// The spilled copy here is gone (its object was deleted, or the record was found corrupt).
pub fn object_spill_removed(shard: &Rc<Shard>, id: ObjectId) {
    if let Some(store) = super::local_store(shard) {
        store.reporter.push(shard, update(id, LocationChange::SpillRemoved, 0, String::new()));
    }
}

/// Whether the object directory knows a copy of `id` on another node, in memory or
/// spilled. `true` when the GCS cannot be asked, so that the caller tries a pull anyway.
pub async fn copy_elsewhere(shard: &Rc<Shard>, id: ObjectId) -> bool {
    let Some(gcs) = shard.gcs_address.get() else { return true };
    let req = GetObjectLocationsRequest { object_ids: vec![id.to_vec()], known_version: 0, wait_ms: 0 };
    let client = shard.clients.get(gcs);
    let opts = CallOpts::idempotent(Duration::from_secs(5));
    match object_directory_gcs_service::client::get_object_locations(&*client, &req, opts).await {
        Ok(reply) => {
            let me = shard.node_id.as_bytes();
            reply.locations.iter().any(|l| {
                l.node_ids.iter().any(|n| n.as_slice() != me)
                    || (!l.spilled_node_id.is_empty() && l.spilled_node_id.as_slice() != me)
            })
        }
        Err(e) => {
            tracing::debug!(%id, "object locations: {e}");
            true
        }
    }
}
