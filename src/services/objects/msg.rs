//! Mesh messages of the object plane.

/// An object-plane request between shards.
#[derive(Debug)]
pub enum ObjReq {}

/// An object-plane reply.
#[derive(Debug)]
pub enum ObjRep {}
