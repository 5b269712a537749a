//! Chunk layout of one object and the receiver's record of which chunks it holds.
//!
//! Owns: the arithmetic that splits an object of `total_size` bytes (data then metadata)
//! into fixed-size chunks, the validation of an incoming chunk header against that layout,
//! and [`Reassembly`], the per-chunk state of one object being received.
//!
//! Callers: [`super::pull::PullQueue`] (one `Reassembly` per object with a buffer) and
//! [`super::push::PushQueue`] (layout only). It must not do IO, hold bytes or compute
//! checksums: the IO layer writes chunk bytes straight into the destination buffer and
//! verifies CRC32C itself.
//!
//! Layout: `num_chunks = ceil(total / chunk)`, except that a zero-size object has exactly one
//! empty chunk (so "all chunks received" still means one message arrived). Chunk `i` covers
//! `[i * chunk, min((i + 1) * chunk, total))`. Indexes are `u32` as on the wire; a layout
//! that would need more chunks than that is rejected.
//!
//! Per-chunk state machine in [`Reassembly`] (chunks of one object may arrive over several
//! connections at once, so a writer claims a chunk before writing its bytes; at most one
//! writer per chunk, and nobody writes a chunk that is already received):
//!
//! ```text
//!            claim(i, node)                 handle_chunk(i)
//!   Missing ───────────────▶ Claimed(node) ─────────────────▶ Received
//!      ▲  │                      │
//!      │  │  release(i) /        │
//!      │  │  release_node(node)  │
//!      │  └──── ◀────────────────┘
//!      └──────────── handle_chunk(i) without a claim ───────▶ Received
//! ```
//!
//! `Received` is final; a second `handle_chunk(i)` reports [`Progress::Duplicate`].

use std::collections::BTreeMap;

use crate::ids::NodeId;

/// Ray's `object_manager_default_chunk_size`: 5 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 5 * 1024 * 1024;

/// A layout could not be built, or a chunk does not fit the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The configured chunk size is zero.
    #[error("chunk size must be positive")]
    ZeroChunkSize,
    /// The object needs more chunks than a `u32` index can name.
    #[error("object of {total_size} bytes needs more than u32::MAX chunks of {chunk_size} bytes")]
    TooManyChunks {
        /// Object size.
        total_size: u64,
        /// Chunk size.
        chunk_size: u64,
    },
    /// The chunk index is past the last chunk.
    #[error("chunk index {index} out of range (object has {num_chunks} chunks)")]
    IndexOutOfRange {
        /// The index received.
        index: u32,
        /// Chunks in the object.
        num_chunks: u32,
    },
    /// The chunk carries the wrong number of bytes for its index.
    #[error("chunk {index} has {got} bytes, expected {expected}")]
    WrongLength {
        /// The chunk index.
        index: u32,
        /// Length the layout gives this index.
        expected: u64,
        /// Length in the header.
        got: u64,
    },
    /// The header names a different object size than the receiver expects.
    #[error("chunk says the object has {got} bytes, expected {expected}")]
    SizeMismatch {
        /// Size the receiver laid the object out with.
        expected: u64,
        /// Size in the header.
        got: u64,
    },
}

/// The header of one chunk as it arrives (domain form, not the wire type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Chunk index within the object.
    pub index: u32,
    /// Total object size (data + metadata) the sender laid the object out with.
    pub total_size: u64,
    /// Bytes of payload following the header.
    pub len: u64,
}

/// How one object is split into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLayout {
    total_size: u64,
    chunk_size: u64,
    num_chunks: u32,
}

impl ChunkLayout {
    /// Lays out an object of `total_size` bytes in chunks of `chunk_size` bytes.
    pub fn new(total_size: u64, chunk_size: u64) -> Result<Self, ChunkError> {
        if chunk_size == 0 {
            return Err(ChunkError::ZeroChunkSize);
        }
        let n = if total_size == 0 { 1 } else { total_size.div_ceil(chunk_size) };
        let num_chunks = u32::try_from(n).map_err(|_| ChunkError::TooManyChunks { total_size, chunk_size })?;
        Ok(Self { total_size, chunk_size, num_chunks })
    }

    /// Object size in bytes.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// Chunk size in bytes (every chunk but the last has exactly this length).
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Number of chunks (at least one).
    pub fn num_chunks(&self) -> u32 {
        self.num_chunks
    }

    /// Byte range `(offset, len)` of chunk `index`.
    pub fn range(&self, index: u32) -> Result<(u64, u64), ChunkError> {
        if index >= self.num_chunks {
            return Err(ChunkError::IndexOutOfRange { index, num_chunks: self.num_chunks });
        }
        let offset = u64::from(index) * self.chunk_size;
        let len = self.chunk_size.min(self.total_size - offset);
        Ok((offset, len))
    }

    /// Validates an incoming header against this layout; returns the chunk's `(offset, len)`.
    ///
    /// Checked in this order: total size, index, length.
    pub fn check(&self, header: &ChunkHeader) -> Result<(u64, u64), ChunkError> {
        if header.total_size != self.total_size {
            return Err(ChunkError::SizeMismatch { expected: self.total_size, got: header.total_size });
        }
        let (offset, len) = self.range(header.index)?;
        if header.len != len {
            return Err(ChunkError::WrongLength { index: header.index, expected: len, got: header.len });
        }
        Ok((offset, len))
    }
}

/// What [`Reassembly::handle_chunk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The chunk was already received; nothing changed.
    Duplicate,
    /// The chunk is newly received; others are still missing.
    Accepted,
    /// The chunk was the last missing one: the object is complete.
    Complete,
}

/// Answer to [`Reassembly::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller now owns the chunk and may write its bytes.
    Granted,
    /// The chunk is already received: discard the bytes.
    AlreadyReceived,
    /// Another writer holds the chunk: discard the bytes.
    Busy(NodeId),
}

/// Which chunks of one object have been received (a bitmap) and which are being written.
#[derive(Debug, Clone)]
pub struct Reassembly {
    layout: ChunkLayout,
    received: Vec<u64>,
    received_count: u32,
    claims: BTreeMap<u32, NodeId>,
}

impl Reassembly {
    /// An empty reassembly for `layout`: every chunk missing.
    pub fn new(layout: ChunkLayout) -> Self {
        let words = (layout.num_chunks() as usize).div_ceil(64);
        Self { layout, received: vec![0; words], received_count: 0, claims: BTreeMap::new() }
    }

    /// The layout being reassembled.
    pub fn layout(&self) -> ChunkLayout {
        self.layout
    }

    /// Claims chunk `index` for a writer fed by node `by` (before its bytes are written).
    pub fn claim(&mut self, index: u32, by: NodeId) -> Result<Claim, ChunkError> {
        self.layout.range(index)?;
        if self.is_received(index) {
            return Ok(Claim::AlreadyReceived);
        }
        if let Some(&holder) = self.claims.get(&index) {
            return Ok(Claim::Busy(holder));
        }
        self.claims.insert(index, by);
        Ok(Claim::Granted)
    }

    /// Drops the claim on chunk `index` (bad checksum, abandoned write); it stays missing.
    /// Returns whether a claim was held.
    pub fn release(&mut self, index: u32) -> Result<bool, ChunkError> {
        self.layout.range(index)?;
        Ok(self.claims.remove(&index).is_some())
    }

    /// Drops every claim held for `node` (its connection is gone). Returns how many.
    pub fn release_node(&mut self, node: NodeId) -> usize {
        let before = self.claims.len();
        self.claims.retain(|_, holder| *holder != node);
        before - self.claims.len()
    }

    /// Who holds the claim on chunk `index`, if anyone.
    pub fn claimant(&self, index: u32) -> Option<NodeId> {
        self.claims.get(&index).copied()
    }

    /// Marks chunk `index` received (its bytes are written and verified).
    pub fn handle_chunk(&mut self, index: u32) -> Result<Progress, ChunkError> {
        self.layout.range(index)?;
        if self.is_received(index) {
            return Ok(Progress::Duplicate);
        }
        self.claims.remove(&index);
        self.received[index as usize / 64] |= 1 << (index % 64);
        self.received_count += 1;
        if self.is_complete() {
            Ok(Progress::Complete)
        } else {
            Ok(Progress::Accepted)
        }
    }

    /// Whether chunk `index` is received (`false` for an out-of-range index).
    pub fn is_received(&self, index: u32) -> bool {
        index < self.layout.num_chunks() && self.received[index as usize / 64] & (1 << (index % 64)) != 0
    }

    /// Number of chunks received.
    pub fn received_count(&self) -> u32 {
        self.received_count
    }

    /// Whether every chunk is received.
    pub fn is_complete(&self) -> bool {
        self.received_count == self.layout.num_chunks()
    }

    /// Indexes of the chunks not yet received, in order.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.layout.num_chunks()).filter(|&i| !self.is_received(i))
    }
}

#[cfg(test)]
mod tests;
