//! Cluster-wide frees: the other half of a local `Delete` with `local_only = false`
//! (Ray's `FreeObjects` / `ray._private.internal_api.free(refs, local_only=False)`).
//!
//! After the connection's shard has deleted this node's copies, it sends
//! `ObjectManagerService.FreeObjects` to the object manager of every other alive node (the
//! GCS node table as shard 0's session holds it), all at once, and waits for the answers.
//! A receiver deletes only its own copies ([`super::om_rpc`] never forwards), so a free
//! cannot loop; an object in use there is deleted when its last client releases it, as
//! a local delete is.
//!
//! Ray fires and forgets these calls. Here the caller's reply waits for them (each under
//! [`FREE_TIMEOUT`]), so a client that gets its reply knows the copies pulled elsewhere
//! are gone, and hears which nodes could not be reached instead of a log line on the
//! node. A node that fails does not stop the others.

use crate::ids::{NodeId, ObjectId, ShardId};
use crate::rpc::CallOpts;
use crate::shard::msg::{Rep, Req};
use crate::shard::Shard;
use crate::wire::rpc::{object_manager_service, FreeObjectsRequest};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// Deadline of one node's FreeObjects, retries included.
pub const FREE_TIMEOUT: Duration = Duration::from_secs(5);

/// Frees `ids` on every other alive node; returns one line per node that failed.
pub async fn free_on_peers(shard: &Rc<Shard>, ids: &[ObjectId]) -> Vec<String> {
    if ids.is_empty() {
        return Vec::new();
    }
    let peers: Vec<(NodeId, SocketAddr)> = match shard.mesh.call(ShardId::NODE, Req::PeerObjectManagers).await {
        Ok(Rep::PeerAddrs(p)) => p,
        other => return vec![format!("cannot list the other nodes: {other:?}")],
    };
    let req = FreeObjectsRequest { object_ids: ids.iter().map(ObjectId::to_vec).collect() };
    let calls: Vec<_> = peers
        .into_iter()
        .map(|(node, addr)| {
            let (s, req) = (shard.clone(), req.clone());
            let call = glommio::spawn_local(async move {
                let client = s.clients.get(addr);
                // Deleting twice is harmless, so a transport failure may resend.
                object_manager_service::client::free_objects(&*client, &req, CallOpts::idempotent(FREE_TIMEOUT)).await
            });
            (node, addr, call)
        })
        .collect();
    let mut failures = Vec::new();
    for (node, addr, call) in calls {
        if let Err(e) = call.await {
            tracing::warn!(%node, %addr, "FreeObjects failed: {e}");
            failures.push(format!("node {node} at {addr}: {e}"));
        }
    }
    failures
}
