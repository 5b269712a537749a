//! `raylet::client`: what a Rust driver or worker links to talk to its raylet.
//!
//! Blocking by design: a driver's call path is a syscall to write the request and one to
//! read the reply, which is the lowest-latency shape for a single-threaded caller.
//!
//! - [`LocalClient`]: the local socket (register, object store).
//! - [`Driver`]: lease workers (following spillback), push tasks, return workers.
//! - [`PlacementGroups`]: create / wait / get / remove placement groups via the GCS.
//! - [`tasks`]: the built-in tasks' data contract; [`wire_io`], [`rpc_conn`]: blocking
//!   framed IO.

mod channel;
mod driver;
mod local;
mod objects;
mod placement;
pub mod rpc_conn;
pub mod tasks;
pub mod wire_io;

pub use driver::{Driver, Lease, LeaseError, LeaseOptions, LeaseReply, Strategy, Task, TaskOutput};
pub use placement::{PlacementGroups, PlacementStrategy};

pub use local::{ClientError, Freed, LocalClient, INLINE_PUT_MAX};
pub use objects::{ObjectView, ObjectWriter};
