//! Mesh messages of the scheduling plane.

/// A scheduling-plane request between shards.
#[derive(Debug)]
pub enum SchedReq {}

/// A scheduling-plane reply.
#[derive(Debug)]
pub enum SchedRep {}
