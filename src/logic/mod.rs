//! The sans-IO core: synchronous, deterministic state machines.
//!
//! Nothing here mentions glommio, sockets, files, the clock or a global RNG (the layering
//! test in `tests/layering.rs` checks). Conventions (quinn style): inputs are
//! `handle_<event>(now, ...)`; outputs are drained with `poll_action()` / `poll_<kind>()`
//! until `None` after every input; `poll_timeout()` gives the next deadline, so each
//! driver owns exactly one real timer per machine.

pub mod gcs;
