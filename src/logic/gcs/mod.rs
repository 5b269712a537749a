//! Pure state of the embedded GCS: node membership, the internal KV and placement groups.

pub mod kv;
pub mod nodes;
pub mod objects;
pub mod pgs;
