//! The command-line front end: argument parsing, session files, and the inspection and
//! control commands. `raylet start` hands off to `shard::bootstrap`.

pub mod agent;
pub mod args;
pub mod memory;
pub mod object;
pub mod session;
pub mod status;
pub mod stop;
