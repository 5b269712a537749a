//! NodeManagerService handlers of the object plane.

use crate::rpc::Status;
use crate::shard::Shard;
use crate::wire::rpc::*;
use std::rc::Rc;

/// `PinObjectIDs`.
pub async fn pin_object_i_ds(_shard: &Rc<Shard>, _req: PinObjectIDsRequest) -> Result<PinObjectIDsReply, Status> {
    Err(Status::unimplemented("PinObjectIDs: not yet (object plane)"))
}

/// `FormatGlobalMemoryInfo`.
pub async fn format_global_memory_info(
    _shard: &Rc<Shard>,
    _req: FormatGlobalMemoryInfoRequest,
) -> Result<FormatGlobalMemoryInfoReply, Status> {
    Err(Status::unimplemented("FormatGlobalMemoryInfo: not yet (object plane)"))
}

/// `RequestObjectSpillage`.
pub async fn request_object_spillage(
    _shard: &Rc<Shard>,
    _req: RequestObjectSpillageRequest,
) -> Result<RequestObjectSpillageReply, Status> {
    Err(Status::unimplemented("RequestObjectSpillage: not yet (object plane)"))
}
