//! The glommio runtime glue: the only place that builds executors and the mesh.
//!
//! - [`bootstrap`]: process-level start (rlimits, signals, executors).
//! - [`run`]: the per-shard context, ordered start and reverse-order stop.
//! - [`mesh`]: typed request/reply over the SPSC mesh.
//! - [`msg`]: the messages.
//! - [`dispatch`]: routes requests to services.
//! - [`route`]: which shard owns what (pure).

pub mod bootstrap;
pub mod dispatch;
pub mod mesh;
pub mod msg;
pub mod route;
pub mod run;

pub use run::Shard;
