//! Shared-memory object buffers. All `unsafe` for mapped memory lives here.
//!
//! - [`arena`]: the raylet's mapping of the store (create, prefault, read/write ranges).
//! - [`buffer`]: a client's mapping of a segment received by fd passing.
//! - [`alloc`]: the offset allocator (pure), used for the whole arena and for slabs.

pub mod alloc;
pub mod arena;
pub mod buffer;
