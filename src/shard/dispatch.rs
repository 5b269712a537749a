//! Routes each mesh request to the service that owns it on this shard.

use super::msg::{Rep, Req};
use super::run::{handle_start, handle_stop, Shard};
use crate::ids::ShardId;
use std::rc::Rc;

/// Handles one request from shard `from`. `None` for one-way messages.
pub async fn handle(shard: Rc<Shard>, from: ShardId, req: Req) -> Option<Rep> {
    match req {
        Req::Start(info, arena) => Some(handle_start(&shard, info, arena)),
        Req::Stop => Some(handle_stop(&shard)),
        Req::Shutdown { reason, code } => {
            shard.trigger_shutdown(reason, code);
            None
        }
        Req::AdoptLocal(fd) => {
            crate::local::conn::adopt(&shard, fd, crate::local::conn::SocketKind::Main);
            None
        }
        Req::PeerAddrs => Some(Rep::PeerAddrs(shard.node().map(|n| n.peer_node_managers(&shard)).unwrap_or_default())),
        Req::PeerObjectManagers => {
            Some(Rep::PeerAddrs(shard.node().map(|n| n.peer_object_managers(&shard)).unwrap_or_default()))
        }
        Req::IsClient(id) => Some(Rep::IsClient(shard.node().is_some_and(|n| n.clients.is_registered(&id)))),
        Req::Config { json, gcs, objects } => {
            *shard.system_config.borrow_mut() = json;
            shard.gcs_address.set(Some(gcs));
            // The settings were checked when the node registered; a refusal here is a bug.
            if let Err(e) = crate::services::objects::configure(&shard, objects) {
                tracing::error!("cannot take the cluster's object settings {objects:?}: {e}");
            }
            Some(Rep::Ack)
        }
        Req::Stats => {
            crate::failpoint::hit("panic_shard", shard.id.index());
            Some(crate::services::node_stats::shard_stats(&shard))
        }
        Req::NodeStats => Some(match shard.node() {
            Some(node) => Rep::NodeStats(Box::new(node.node_stats(&shard).await)),
            None => Rep::Ack,
        }),
        Req::RegisterClient { shard: conn_shard, req } => Some(match shard.node() {
            Some(node) => Rep::Registered(node.register_client(&shard, conn_shard, req)),
            None => Rep::Ack,
        }),
        Req::ClientPort { worker_id, port } => Some(match shard.node() {
            Some(node) => Rep::PortAnnounced(node.announce_port(worker_id, port)),
            None => Rep::Ack,
        }),
        Req::Sched(r) => Some(match shard.node() {
            Some(node) => Rep::Sched(node.sched.handle(r).await),
            None => Rep::Ack,
        }),
        Req::Obj(r) => crate::services::objects::handle::handle(shard, r).await,
        Req::ClientGone { worker_id, detail } => {
            if let Some(node) = shard.node() {
                node.client_gone(worker_id, &detail);
            }
            let _ = from;
            None
        }
    }
}
