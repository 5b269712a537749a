//! Scheduling-plane helpers on top of `tests/common` (which starts the built binary on
//! port 0 with 2 shards in a private temp dir, enforces the hard timeout and kills what
//! a test started): nodes that know their cluster token, drivers, node stats, and waits
//! for "every resource is available again".

#![allow(dead_code)]

pub(crate) use crate::common::{wait_for, with_timeout};
use crate::common::{NodeOpts, TestDir};
use raylet::client::Driver;
use raylet::wire::rpc::GetNodeStatsReply;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// One running node and what a driver needs to reach it. Dropping the last node of a
/// cluster removes its temp dir (after the node is killed).
pub(crate) struct Node {
    node: crate::common::Node,
    dir: Rc<TestDir>,
    /// NodeManagerService address.
    pub(crate) node_manager: SocketAddr,
    /// The GCS it uses.
    pub(crate) gcs: SocketAddr,
    /// Hex node id.
    pub(crate) node_id: String,
    /// Local socket.
    pub(crate) socket: PathBuf,
    /// The cluster auth token.
    pub(crate) token: String,
}

impl Node {
    fn new(node: crate::common::Node, dir: Rc<TestDir>, token: String) -> Self {
        let r = node.ready.clone();
        Self {
            node_manager: r.node_manager_address,
            gcs: r.gcs_address,
            node_id: r.node_id,
            socket: r.socket,
            token,
            node,
            dir,
        }
    }

    /// The raylet's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.node.pid
    }

    /// SIGKILLs the raylet (its workers die with it) and reaps it.
    pub(crate) fn kill(&mut self) {
        self.node.kill9();
    }

    /// A driver whose leases start at this node.
    pub(crate) fn driver(&self) -> Driver {
        Driver::new(self.node_manager, self.token.clone()).with_timeout(Duration::from_secs(20))
    }

    /// GetNodeStats of this node.
    pub(crate) fn stats(&self) -> Result<GetNodeStatsReply, String> {
        self.driver().node_stats(self.node_manager).map_err(|e| e.to_string())
    }
}

/// Starts a head node (2 shards, port 0) with `extra` flags in a fresh temp dir.
pub(crate) fn head(extra: &[&str]) -> Node {
    let dir = Rc::new(TestDir::new());
    let node = dir.start(&NodeOpts::head().args(extra.iter().copied()));
    let token = node.ready.token();
    Node::new(node, dir, token)
}

/// Starts a node joining `head`'s cluster.
pub(crate) fn join(head: &Node, extra: &[&str]) -> Node {
    let mut opts = NodeOpts::join(head.gcs).args(extra.iter().copied());
    opts.env.push(("RAYLET_AUTH_TOKEN".into(), head.token.clone()));
    let node = head.dir.start(&opts);
    Node::new(node, head.dir.clone(), head.token.clone())
}

/// `raylet status --format json` of `head`'s cluster.
pub(crate) fn status(head: &Node) -> Result<Value, String> {
    head.dir.try_status()
}

/// A status resource map; zero entries (a resource the node has none of) are dropped.
fn resources(v: &Value) -> BTreeMap<String, f64> {
    v.as_object()
        .map(|m| {
            m.iter().map(|(k, q)| (k.clone(), q.as_f64().unwrap_or(f64::NAN))).filter(|(_, q)| *q != 0.0).collect()
        })
        .unwrap_or_default()
}

/// Waits until `raylet status` shows `alive` ALIVE nodes, each with available == total.
pub(crate) fn wait_all_available(head: &Node, alive: usize, limit: Duration) {
    wait_for("every node's available resources to equal its totals", limit, || {
        let s = status(head)?;
        let nodes: Vec<&Value> =
            s["nodes"].as_array().into_iter().flatten().filter(|n| n["state"] == "ALIVE").collect();
        if nodes.len() != alive {
            return Err(format!("{} alive nodes: {s}", nodes.len()));
        }
        for n in nodes {
            let (total, avail) = (resources(&n["resources_total"]), resources(&n["resources_available"]));
            if total != avail {
                return Err(format!("node {}: total {total:?} != available {avail:?}", n["node_id"]));
            }
        }
        Ok(Some(()))
    })
}

/// GetNodeStats' available == total on `node` (no lease or bundle holds anything).
pub(crate) fn wait_node_idle(node: &Node, limit: Duration) {
    wait_for("the node's resources to be all available", limit, || {
        let s = node.stats()?;
        if s.resources_available != s.resources_total || s.num_granted_leases != 0 {
            return Err(format!(
                "available {:?} total {:?} granted {}",
                s.resources_available, s.resources_total, s.num_granted_leases
            ));
        }
        Ok(Some(()))
    });
}

/// Live (not zombie) children of `pid`.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    crate::common::descendants(pid).into_iter().filter(|p| alive(*p)).collect()
}

/// Whether a process exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}
