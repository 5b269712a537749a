//! Shared-memory object buffers. All `unsafe` for mapped memory lives here.
//!
//! - [`arena`]: the raylet's mapping of the store and its fallback segments (create,
//!   prefault, read/write ranges), and why no client can truncate them.
//! - [`segments`]: the files and memfds behind the segments, and the fallback table.
//! - [`buffer`]: a client's mapping of a segment received by fd passing.
//! - [`alloc`]: the offset allocator (pure), used for the whole arena and for slabs.

pub mod alloc;
pub mod arena;
pub mod buffer;
pub mod segments;
