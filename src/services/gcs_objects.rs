//! The GCS object directory service (head, shard 0): raylets report copies in batches;
//! pullers read locations, optionally long-polling until the directory changes.
//!
//! Reports from a node the GCS declared dead are refused (`FailedPrecondition`): its
//! copies were dropped at its death and must not come back. A report past the
//! directory's bounds applies the updates before the one refused and fails with
//! `ResourceExhausted` (too many locations) or `InvalidArgument` (a spill URL too long).

use super::long_poll::LongPolls;
use crate::config::GcsLimits;
use crate::ids::{NodeId, ObjectId};
use crate::logic::gcs::objects::{Change, Directory, DirectoryError};
use crate::metrics::Metrics;
use crate::rpc::Status;
use crate::wire::rpc::*;
use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::time::Duration;

/// Dead nodes remembered to refuse their reports (Ray's
/// `maximum_gcs_dead_node_cached_count`, as the node table keeps).
const DEAD_REMEMBERED: usize = 1000;

/// The directory and its waiting readers.
#[derive(Debug)]
pub struct ObjectDirectoryServer {
    dir: RefCell<Directory>,
    waiters: LongPolls,
    dead: RefCell<(HashSet<NodeId>, VecDeque<NodeId>)>,
}

impl ObjectDirectoryServer {
    /// An empty directory within `limits`.
    pub fn new(limits: GcsLimits, metrics: Metrics) -> Self {
        Self {
            dir: RefCell::new(Directory::new(limits.max_locations)),
            waiters: LongPolls::new("object directory", limits.max_long_polls, metrics),
            dead: RefCell::default(),
        }
    }

    fn changed(&self) {
        self.waiters.notify();
    }

    /// A node died: drop its copies, and refuse its reports from now on.
    pub fn node_dead(&self, node: NodeId) {
        let mut dead = self.dead.borrow_mut();
        if dead.0.insert(node) {
            dead.1.push_back(node);
            if dead.1.len() > DEAD_REMEMBERED {
                if let Some(old) = dead.1.pop_front() {
                    dead.0.remove(&old);
                }
            }
        }
        drop(dead);
        if self.dir.borrow_mut().handle_node_dead(node) > 0 {
            self.changed();
        }
    }

    /// Locations held (copies on nodes plus spilled copies).
    pub fn locations(&self) -> usize {
        self.dir.borrow().locations()
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
        if self.dead.borrow().0.contains(&node) {
            return Err(Status::failed_precondition(format!("node {node} was declared dead; its reports are refused")));
        }
        let (total, mut applied) = (req.updates.len(), 0);
        let mut dir = self.dir.borrow_mut();
        let mut result = Ok(ReportObjectLocationsReply {});
        for u in req.updates {
            let id = ObjectId::from_bytes(&u.object_id).map_err(|e| Status::invalid_argument(e.to_string()));
            let change = match LocationChange::try_from(u.change) {
                Ok(LocationChange::Added) => Ok(Change::Added { size: u.size, metadata_size: u.metadata_size }),
                Ok(LocationChange::Removed) => Ok(Change::Removed),
                Ok(LocationChange::Spilled) => Ok(Change::Spilled { size: u.size, url: u.spilled_url }),
                Ok(LocationChange::SpillRemoved) => Ok(Change::SpillRemoved),
                Err(_) => Err(Status::invalid_argument(format!("unknown location change {}", u.change))),
            };
            let done = id.and_then(|id| {
                dir.handle_change(node, id, change?).map_err(|e| {
                    let msg = format!("{e}; {applied} of {total} updates applied");
                    match e {
                        DirectoryError::Full { .. } => Status::resource_exhausted(msg),
                        DirectoryError::UrlTooLong { .. } => Status::invalid_argument(msg),
                    }
                })
            });
            if let Err(e) = done {
                result = Err(e);
                break;
            }
            applied += 1;
        }
        drop(dir);
        if applied > 0 {
            self.changed();
        }
        result
    }

    async fn get_object_locations(&self, req: GetObjectLocationsRequest) -> Result<GetObjectLocationsReply, Status> {
        let ids = req
            .object_ids
            .iter()
            .map(|b| ObjectId::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if req.known_version != 0 && req.known_version == self.dir.borrow().version() && req.wait_ms > 0 {
            self.waiters.wait(Duration::from_millis(u64::from(req.wait_ms.min(60_000)))).await?;
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
