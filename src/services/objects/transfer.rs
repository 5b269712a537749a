//! Pulls of objects this shard owns but does not hold, and pushes of objects it holds.

use crate::ids::ObjectId;
use crate::shard::Shard;
use std::rc::Rc;

/// Starts pulling `ids` (a Get or Wait is waiting for them).
pub fn request_pulls(shard: &Rc<Shard>, ids: &[ObjectId]) {
    let _ = (shard, ids);
}
