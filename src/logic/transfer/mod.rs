//! Object transfer between nodes: chunk layout and reassembly, the puller's queue and the
//! holder's push queue.
//!
//! Flow: the puller's [`pull::PullQueue`] emits `SendPull { node, id }`; the holder feeds that
//! request to its [`push::PushQueue`], which hands out `SendChunk`s under a bytes-in-flight
//! cap; the receiver's IO layer asks the pull queue where each arriving chunk goes
//! ([`pull::PullQueue::handle_chunk_header`]), writes the bytes, verifies the CRC and reports
//! the chunk ([`pull::PullQueue::handle_chunk`]). Both sides lay chunks out with
//! [`chunks::ChunkLayout`], so they must be configured with the same chunk size.

pub mod chunks;
pub mod pull;
pub mod push;

#[cfg(test)]
mod sim;
