//! ObjectManagerService as served by every shard on the object manager port.

use crate::ids::{NodeId, ObjectId};
use crate::rpc::Status;
use crate::services::objects::msg::{ObjReq, StoreOp};
use crate::shard::msg::Req;
use crate::shard::route::owner_of_object;
use crate::shard::Shard;
use crate::wire::rpc::*;
use std::rc::Rc;

/// The handler bound to one shard.
#[derive(Debug, Clone)]
pub struct ObjectManagerRpc(pub Rc<Shard>);

/// The client id the raylet uses for FreeObjects deletions.
const SYSTEM_CLIENT: crate::logic::objects::ClientId = crate::logic::objects::ClientId(u64::MAX - 3);

impl object_manager_service::ObjectManagerServiceHandler for ObjectManagerRpc {
    async fn push(&self, req: PushRequest) -> Result<PushReply, Status> {
        super::chunk_io::push_empty(&self.0, req).await
    }

    async fn pull(&self, req: PullRequest) -> Result<PullReply, Status> {
        let to = NodeId::from_bytes(&req.node_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let id = ObjectId::from_bytes(&req.object_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if to == self.0.node_id {
            return Err(Status::invalid_argument("a node cannot pull from itself"));
        }
        let owner = owner_of_object(&id, self.0.n);
        if owner == self.0.id {
            let s = self.0.clone();
            self.0.spawn_bulk(async move { super::transfer::push_requested(&s, to, id).await });
        } else {
            self.0
                .mesh
                .tell(owner, Req::Obj(ObjReq::PullRequested { to, id }))
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        Ok(PullReply {})
    }

    async fn free_objects(&self, req: FreeObjectsRequest) -> Result<FreeObjectsReply, Status> {
        let ids = req
            .object_ids
            .iter()
            .map(|b| ObjectId::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut by_owner: std::collections::BTreeMap<_, Vec<ObjectId>> = std::collections::BTreeMap::new();
        for id in ids {
            by_owner.entry(owner_of_object(&id, self.0.n)).or_default().push(id);
        }
        for (owner, ids) in by_owner {
            crate::local::store_ops::run_on(&self.0, SYSTEM_CLIENT, owner, StoreOp::Delete(ids))
                .await
                .map_err(|(_, e)| Status::unavailable(e))?;
        }
        Ok(FreeObjectsReply {})
    }
}
