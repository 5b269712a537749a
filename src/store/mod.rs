//! Shared-memory object buffers.
//!
//! - [`alloc`]: the offset allocator (pure), used for the whole arena and for slabs.

pub mod alloc;
