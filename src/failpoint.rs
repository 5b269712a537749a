//! Fault triggers for tests, compiled in only with the `failpoints` cargo feature:
//! `scripts/test.sh` builds the test run with it, and a user's `cargo build --release`
//! never has it (then [`hit`] is an empty inline function). A trigger is armed by the
//! environment of the node under test: `RAYLET_FAILPOINT=<name>:<shard>`.
//!
//! Triggers:
//! - `panic_shard:<i>`: shard `i` panics when it serves its part of a node-stats gather
//!   (every `GetNodeStats` asks every shard), to test that a panic ends the whole node.

/// Panics when `RAYLET_FAILPOINT` is `<name>:<shard>`.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str, shard: usize) {
    if std::env::var("RAYLET_FAILPOINT").is_ok_and(|v| v == format!("{name}:{shard}")) {
        panic!("failpoint {name}:{shard} triggered (RAYLET_FAILPOINT)");
    }
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str, _shard: usize) {}
