//! The sans-IO core: synchronous, deterministic state machines.
//!
//! Nothing here mentions glommio, sockets, files, the clock or a global RNG (the layering
//! test in `tests/layering.rs` checks). Conventions (quinn style): inputs are
//! `handle_<event>(now, ...)`; outputs are drained with `poll_action()` / `poll_<kind>()`
//! until `None` after every input; `poll_timeout()` gives the next deadline, so each
//! driver owns exactly one real timer per machine. Randomness comes from a caller-seeded
//! `fastrand::Rng`.
//!
//! - [`admission`]: caps on unauthenticated TCP peers, refusal log rate, accept back-off.
//! - [`gcs`]: the embedded GCS's node table and KV.
//! - [`resources`]: fixed-point quantities and one node's resource ledger.
//! - [`lease`]: lease scheduling ([`lease::policy`] picks a node).
//! - [`bundles`]: the raylet-side placement-group two-phase-commit ledger.
//! - [`pg_placement`]: GCS-side placement of bundles on nodes.
//! - [`timers`]: a table of named deadlines.
//! - [`workers`]: the worker pool of one node.
//! - [`objects`]: the per-shard object table (lifecycle, refs, pins, LRU, spill state).
//! - [`spill`]: fused spill files: URLs, record layout, planning, ref counts.
//! - [`waits`]: Get/Wait requests waiting for objects.
//! - [`transfer`]: chunk layout, pull admission/retry, push scheduling.

pub mod admission;
pub mod bundles;
pub mod gcs;
pub mod lease;
pub mod objects;
pub mod pg_placement;
pub mod resources;
pub mod spill;
pub mod timers;
pub mod transfer;
pub mod waits;
pub mod workers;
