//! The GCS object directory service (head, shard 0): raylets report copies in batches;
//! pullers read locations, optionally long-polling until the directory changes.

use crate::ids::{NodeId, ObjectId};
use crate::logic::gcs::objects::{Change, Directory};
use crate::rpc::Status;
use crate::wire::rpc::*;
use futures_channel::oneshot;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// The directory and its waiting readers.
#[derive(Debug, Default)]
pub struct ObjectDirectoryServer {
    dir: RefCell<Directory>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

impl ObjectDirectoryServer {
    fn changed(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            let _ = w.send(());
        }
    }

    /// A node died: drop its copies.
    pub fn node_dead(&self, node: NodeId) {
        if self.dir.borrow_mut().handle_node_dead(node) > 0 {
            self.changed();
        }
    }

    /// Number of objects known.
    pub fn len(&self) -> usize {
        self.dir.borrow().len()
    }

    /// Whether none are known.
    pub fn is_empty(&self) -> bool {
        self.dir.borrow().is_empty()
    }
}

impl object_directory_gcs_service::ObjectDirectoryGcsServiceHandler for Rc<ObjectDirectoryServer> {
    async fn report_object_locations(
        &self,
        req: ReportObjectLocationsRequest,
    ) -> Result<ReportObjectLocationsReply, Status> {
        let node = NodeId::from_bytes(&req.node_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut dir = self.dir.borrow_mut();
        for u in req.updates {
            let id = ObjectId::from_bytes(&u.object_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let change = match LocationChange::try_from(u.change) {
                Ok(LocationChange::Added) => Change::Added { size: u.size, metadata_size: u.metadata_size },
                Ok(LocationChange::Removed) => Change::Removed,
                Ok(LocationChange::Spilled) => Change::Spilled { size: u.size, url: u.spilled_url },
                Ok(LocationChange::SpillRemoved) => Change::SpillRemoved,
                Err(_) => return Err(Status::invalid_argument(format!("unknown location change {}", u.change))),
            };
            dir.handle_change(node, id, change);
        }
        drop(dir);
        self.changed();
        Ok(ReportObjectLocationsReply {})
    }

    async fn get_object_locations(&self, req: GetObjectLocationsRequest) -> Result<GetObjectLocationsReply, Status> {
        let ids = req
            .object_ids
            .iter()
            .map(|b| ObjectId::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if req.known_version != 0 && req.known_version == self.dir.borrow().version() && req.wait_ms > 0 {
            let (tx, rx) = oneshot::channel();
            self.waiters.borrow_mut().push(tx);
            let wait = Duration::from_millis(u64::from(req.wait_ms.min(60_000)));
            let _ = glommio::timer::timeout(wait, async {
                rx.await.map_err(|_| glommio::GlommioError::Closed(glommio::ResourceType::Channel(())))
            })
            .await;
        }
        let dir = self.dir.borrow();
        let locations = ids
            .iter()
            .map(|id| {
                let l = dir.get(id);
                ObjectLocations {
                    object_id: id.to_vec(),
                    node_ids: l.nodes.iter().map(NodeId::to_vec).collect(),
                    size: l.size,
                    spilled_node_id: l.spilled.as_ref().map(|(n, _)| n.to_vec()).unwrap_or_default(),
                    spilled_url: l.spilled.map(|(_, u)| u).unwrap_or_default(),
                    metadata_size: l.metadata_size,
                }
            })
            .collect();
        Ok(GetObjectLocationsReply { locations, version: dir.version() })
    }
}
