//! The object plane: the shared-memory store, pinning, spilling and transfer.

pub mod msg;
pub mod rpc;
