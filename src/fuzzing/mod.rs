//! Fuzz target bodies: one `run(&[u8])` per target, shared by the cargo-fuzz crate in
//! `fuzz/` (libFuzzer, nightly, sanitizers) and the stable replay test
//! `tests/fuzz_corpora.rs`, which feeds every committed corpus file through the same body
//! so the targets build and pass in CI without nightly.
//!
//! A body panics exactly when the code under test broke: a decoder panicked on peer input,
//! or a state machine broke one of the invariants its module docs list. Errors the code
//! returns for bad input are expected outcomes, not failures.
//!
//! Not part of the raylet's API: nothing outside the fuzz crate and the replay test calls
//! this module, and it does no IO.

pub mod lease_queue;
pub mod local_codec;
pub mod object_table;
pub mod pull_queue;
pub mod push_queue;
pub mod rpc_frames;
pub mod seeds;
pub mod spill_record;

/// A target body: panics when the code under test broke.
pub type Body = fn(&[u8]);

/// Every target: its name (the `fuzz/fuzz_targets/<name>.rs` file and the
/// `fuzz/corpus/<name>/` directory) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("rpc_frames", rpc_frames::run),
    ("local_codec", local_codec::run),
    ("spill_record", spill_record::run),
    ("pull_queue", pull_queue::run),
    ("push_queue", push_queue::run),
    ("object_table", object_table::run),
    ("lease_queue", lease_queue::run),
];

/// Small-universe ids, so that fuzzed events name the same objects and nodes often.
pub(crate) mod ids {
    use crate::ids::{LeaseId, NodeId, ObjectId, WorkerId};

    /// Object `n` (first byte `n + 1`, so never the nil id).
    pub(crate) fn object(n: u8) -> ObjectId {
        let mut b = [0u8; ObjectId::LEN];
        b[0] = n.wrapping_add(1);
        ObjectId(b)
    }

    /// Node `n` (first byte `n + 1`).
    pub(crate) fn node(n: u8) -> NodeId {
        let mut b = [0u8; NodeId::LEN];
        b[0] = n.wrapping_add(1);
        NodeId(b)
    }

    /// Lease `n`.
    pub(crate) fn lease(n: u8) -> LeaseId {
        let mut b = [0u8; LeaseId::LEN];
        b[0] = n.wrapping_add(1);
        LeaseId(b)
    }

    /// Worker `n` (a `u32` universe: the driver hands out fresh ones).
    pub(crate) fn worker(n: u32) -> WorkerId {
        let mut b = [0u8; WorkerId::LEN];
        b[..4].copy_from_slice(&n.wrapping_add(1).to_be_bytes());
        WorkerId(b)
    }
}
