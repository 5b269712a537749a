//! Placement groups through the GCS (`PlacementGroupInfoGcsService`): create, wait until
//! ready, get, remove.

use super::rpc_conn::RpcConn;
use crate::ids::PlacementGroupId;
use crate::rpc::RpcError;
use crate::wire::rpc::*;
use std::net::SocketAddr;
use std::time::Duration;

pub use crate::wire::rpc::PlacementStrategy;

/// A blocking client of the GCS's placement-group service.
#[derive(Debug)]
pub struct PlacementGroups {
    gcs: SocketAddr,
    token: String,
    timeout: Duration,
    conn: Option<RpcConn>,
}

impl PlacementGroups {
    /// A client of the GCS at `gcs`; connects on first use.
    pub fn new(gcs: SocketAddr, token: impl Into<String>) -> Self {
        Self { gcs, token: token.into(), timeout: Duration::from_secs(30), conn: None }
    }

    fn call<Q: prost::Message, R: prost::Message + Default>(
        &mut self,
        method: u16,
        req: &Q,
        timeout: Duration,
    ) -> Result<R, RpcError> {
        if self.conn.as_ref().is_some_and(RpcConn::is_dead) {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(RpcConn::connect_to_shard0(self.gcs, &self.token, self.timeout)?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        conn.call(placement_group_info_gcs_service::SERVICE_ID, method, req, timeout)
    }

    /// Creates a group of `bundles` (each a list of resource amounts); returns its id once
    /// the GCS accepted it (it is placed asynchronously: see [`Self::wait_ready`]).
    pub fn create(
        &mut self,
        strategy: PlacementStrategy,
        bundles: &[Vec<(String, f64)>],
    ) -> Result<PlacementGroupId, RpcError> {
        let id = PlacementGroupId::random();
        let spec = PlacementGroupSpec {
            placement_group_id: id.to_vec(),
            name: String::new(),
            bundles: bundles
                .iter()
                .enumerate()
                .map(|(i, b)| Bundle {
                    bundle_id: Some(BundleId { placement_group_id: id.to_vec(), bundle_index: i as i64 }),
                    unit_resources: b.iter().cloned().collect(),
                    node_id: Vec::new(),
                })
                .collect(),
            strategy: strategy as i32,
            creator_job_id: Vec::new(),
        };
        let req = CreatePlacementGroupRequest { placement_group_spec: Some(spec) };
        let _: CreatePlacementGroupReply =
            self.call(placement_group_info_gcs_service::method::CREATE_PLACEMENT_GROUP, &req, self.timeout)?;
        Ok(id)
    }

    /// Waits until every bundle is committed (or fails: removed, not ready in `timeout`).
    pub fn wait_ready(&mut self, pg: PlacementGroupId, timeout: Duration) -> Result<(), RpcError> {
        let req = WaitPlacementGroupUntilReadyRequest {
            placement_group_id: pg.to_vec(),
            timeout_ms: timeout.as_millis() as u64,
        };
        let m = placement_group_info_gcs_service::method::WAIT_PLACEMENT_GROUP_UNTIL_READY;
        let _: WaitPlacementGroupUntilReadyReply = self.call(m, &req, timeout + Duration::from_secs(5))?;
        Ok(())
    }

    /// Removes a group; returns once every raylet has released its bundles.
    pub fn remove(&mut self, pg: PlacementGroupId) -> Result<(), RpcError> {
        let req = RemovePlacementGroupRequest { placement_group_id: pg.to_vec() };
        let _: RemovePlacementGroupReply =
            self.call(placement_group_info_gcs_service::method::REMOVE_PLACEMENT_GROUP, &req, self.timeout)?;
        Ok(())
    }

    /// The group's state and placement, if the GCS knows it.
    pub fn get(&mut self, pg: PlacementGroupId) -> Result<Option<PlacementGroupTableData>, RpcError> {
        let req = GetPlacementGroupRequest { placement_group_id: pg.to_vec() };
        let r: GetPlacementGroupReply =
            self.call(placement_group_info_gcs_service::method::GET_PLACEMENT_GROUP, &req, self.timeout)?;
        Ok(r.placement_group_table_data)
    }
}
