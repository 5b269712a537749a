//! Which services each TCP port serves, and method names for metrics and logs.

use super::gcs::GcsServer;
use super::node_rpc::NodeRpc;
use crate::rpc::server::Router;
use crate::shard::Shard;
use crate::wire::rpc::*;
use std::rc::Rc;

macro_rules! service {
    ($router:expr, $module:ident, $handler:expr) => {{
        let h = $handler;
        $router.add(
            $module::SERVICE_ID,
            $module::method_name,
            Rc::new(move |method, payload| {
                let h = h.clone();
                Box::pin(async move { $module::dispatch(&h, method, &payload).await })
            }),
        );
    }};
}

/// The node manager port: NodeManagerService.
pub fn node_manager(shard: &Rc<Shard>) -> Router {
    let mut r = Router::default();
    service!(r, node_manager_service, NodeRpc(shard.clone()));
    service!(r, agent_manager_service, super::sched::rpc::AgentRpc(shard.clone()));
    r
}

/// The object manager port: ObjectManagerService; Push chunks arrive as frame trailers.
pub fn object_manager(shard: &Rc<Shard>) -> Router {
    use crate::services::objects::{chunk_io, om_rpc::ObjectManagerRpc};
    let mut r = Router::default();
    service!(r, object_manager_service, ObjectManagerRpc(shard.clone()));
    let s = shard.clone();
    r.add_trailer(
        object_manager_service::SERVICE_ID,
        object_manager_service::method::PUSH,
        Rc::new(move |h, payload| chunk_io::accept(s.clone(), u64::from(h.trailer_len), payload)),
    );
    r
}

/// The GCS port (head only).
pub fn gcs(gcs: &Rc<GcsServer>, pgs: &Rc<super::sched::gcs_pg::GcsPlacementGroups>) -> Router {
    let mut r = Router::default();
    service!(r, node_info_gcs_service, gcs.clone());
    service!(r, heartbeat_info_gcs_service, gcs.clone());
    service!(r, node_resource_info_gcs_service, gcs.clone());
    service!(r, internal_kv_gcs_service, gcs.clone());
    service!(r, placement_group_info_gcs_service, pgs.clone());
    service!(r, object_directory_gcs_service, gcs.objects.clone());
    r
}

/// "Service.Method" for a (service, method) pair, for metrics.
pub fn method_name(service: u16, method: u16) -> Option<String> {
    let (svc, name): (&str, fn(u16) -> Option<&'static str>) = match service {
        node_manager_service::SERVICE_ID => (node_manager_service::NAME, node_manager_service::method_name),
        node_info_gcs_service::SERVICE_ID => (node_info_gcs_service::NAME, node_info_gcs_service::method_name),
        heartbeat_info_gcs_service::SERVICE_ID => {
            (heartbeat_info_gcs_service::NAME, heartbeat_info_gcs_service::method_name)
        }
        node_resource_info_gcs_service::SERVICE_ID => {
            (node_resource_info_gcs_service::NAME, node_resource_info_gcs_service::method_name)
        }
        internal_kv_gcs_service::SERVICE_ID => (internal_kv_gcs_service::NAME, internal_kv_gcs_service::method_name),
        agent_manager_service::SERVICE_ID => (agent_manager_service::NAME, agent_manager_service::method_name),
        placement_group_info_gcs_service::SERVICE_ID => {
            (placement_group_info_gcs_service::NAME, placement_group_info_gcs_service::method_name)
        }
        object_directory_gcs_service::SERVICE_ID => {
            (object_directory_gcs_service::NAME, object_directory_gcs_service::method_name)
        }
        object_manager_service::SERVICE_ID => (object_manager_service::NAME, object_manager_service::method_name),
        _ => return None,
    };
    name(method).map(|m| format!("{svc}.{m}"))
}
