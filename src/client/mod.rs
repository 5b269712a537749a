//! `raylet::client`: what a Rust driver or worker links to talk to its raylet.
//!
//! Blocking by design: a driver's call path is a syscall to write the request and one to
//! read the reply, which is the lowest-latency shape for a single-threaded caller.

mod channel;
mod local;
mod objects;
pub mod tasks;
pub mod wire_io;

pub use local::{ClientError, LocalClient};
pub use objects::{ObjectView, ObjectWriter};
