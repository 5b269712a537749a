//! Pure state of the embedded GCS: node membership and the internal KV.

pub mod kv;
pub mod nodes;
pub mod objects;
