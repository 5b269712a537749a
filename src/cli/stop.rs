//! `raylet stop`: graceful ShutdownRaylet to one node or all (the head last), then wait
//! until they are gone.

use super::args::StopArgs;
use crate::ids::NodeId;
use crate::rpc::{BlockingClient, CallOpts, RpcError};
use crate::wire::rpc::{node_manager_service, GcsNodeInfo, NodeState, ShutdownRayletRequest};
use std::time::{Duration, Instant};

/// Runs the command.
pub fn run(args: &StopArgs) -> Result<(), String> {
    let c = &args.cluster;
    let cluster = super::session::find_cluster(c.address.as_deref(), &c.temp_dir, c.auth_token_file.as_deref())?;
    let mut gcs = BlockingClient::new(cluster.gcs, cluster.token.clone());
    let table = super::status::fetch(&mut gcs)?;
    let mut targets: Vec<GcsNodeInfo> =
        table.node_info_list.into_iter().filter(|n| n.state == NodeState::Alive as i32).collect();
    if let Some(hex) = &args.node_id {
        let id = NodeId::from_hex(hex).map_err(|e| e.to_string())?;
        targets.retain(|n| n.node_id == id.as_bytes());
        if targets.is_empty() {
            return Err(format!("no alive node {hex}"));
        }
    }
    // Workers first, the head (and its GCS) last.
    targets.sort_by_key(|n| n.is_head_node);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    for n in &targets {
        let addr = super::session::resolve_addr(&format!("{}:{}", n.node_manager_address, n.node_manager_port))?;
        let mut client = BlockingClient::new(addr, cluster.token.clone());
        match node_manager_service::blocking::shutdown_raylet(
            &mut client,
            &ShutdownRayletRequest { graceful: true },
            CallOpts::once(Duration::from_secs(5)),
        ) {
            Ok(_) => {}
            Err(e) => return Err(format!("ShutdownRaylet to {addr}: {e}")),
        }
        wait_gone(addr, &cluster.token, deadline)?;
        eprintln!("stopped node {}", crate::ids::hex_encode(&n.node_id));
    }
    Ok(())
}

/// Waits until the node stops accepting connections.
fn wait_gone(addr: std::net::SocketAddr, token: &str, deadline: Instant) -> Result<(), String> {
    let mut delay = Duration::from_millis(10);
    loop {
        let mut probe = BlockingClient::new(addr, token);
        match probe.connect(Duration::from_millis(200)) {
            Err(RpcError::Io(_)) => return Ok(()),
            _ if Instant::now() >= deadline => return Err(format!("node at {addr} did not stop in time")),
            _ => std::thread::sleep(delay),
        }
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}
