//! Id and resource builders shared by the lease modules' unit tests.

use crate::ids::{LeaseId, NodeId, WorkerId};
use crate::logic::resources::ResourceSet;

/// Node `i` (all bytes `i`).
pub(super) fn nid(i: u8) -> NodeId {
    NodeId([i; NodeId::LEN])
}

/// Lease `n`.
pub(super) fn lid(n: u32) -> LeaseId {
    let mut b = [0u8; 24];
    b[..4].copy_from_slice(&n.to_be_bytes());
    LeaseId(b)
}

/// Worker `n`.
pub(super) fn wid(n: u32) -> WorkerId {
    let mut b = [0u8; 28];
    b[..4].copy_from_slice(&n.to_be_bytes());
    WorkerId(b)
}

/// A resource set from `(name, amount)` pairs.
pub(super) fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
    ResourceSet::from_f64_map(pairs.iter().map(|(k, v)| (k.to_string(), *v)))
}
