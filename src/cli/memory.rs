//! `raylet memory`: per node store usage, object count, spilled and restored bytes; per
//! object id, node, size and state. Data from FormatGlobalMemoryInfo on one node (which
//! gathers every node).

use super::args::{Format, MemoryArgs};
use crate::rpc::{BlockingClient, CallOpts};
use crate::wire::rpc::{node_manager_service, FormatGlobalMemoryInfoRequest, GetNodeStatsReply, NodeState};
use serde_json::{json, Value};
use std::time::Duration;

fn mib(b: i64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// The human table (also the RPC's `memory_summary`).
pub fn render_table(nodes: &[GetNodeStatsReply], with_objects: bool) -> String {
    let mut out = format!(
        "{:<56}  {:>12}  {:>12}  {:>8}  {:>12}  {:>12}\n",
        "NODE_ID", "USED", "CAPACITY", "OBJECTS", "SPILLED", "RESTORED"
    );
    for n in nodes {
        let s = n.store_stats.unwrap_or_default();
        out.push_str(&format!(
            "{:<56}  {:>12}  {:>12}  {:>8}  {:>12}  {:>12}\n",
            crate::ids::hex_encode(&n.node_id),
            mib(s.object_store_bytes_used),
            mib(s.object_store_bytes_avail),
            s.num_local_objects,
            mib(s.spilled_bytes_total),
            mib(s.restored_bytes_total)
        ));
    }
    if with_objects {
        out.push_str(&format!(
            "\n{:<56}  {:<12}  {:>14}  {:<14}  {:>4}\n",
            "OBJECT_ID", "NODE", "SIZE", "STATE", "REFS"
        ));
        for n in nodes {
            for o in &n.objects {
                let node = crate::ids::hex_encode(&o.node_id);
                out.push_str(&format!(
                    "{:<56}  {:<12}  {:>14}  {:<14}  {:>4}\n",
                    crate::ids::hex_encode(&o.object_id),
                    &node[..node.len().min(12)],
                    o.data_size + o.metadata_size,
                    o.state,
                    o.ref_count
                ));
            }
        }
    }
    out
}

/// The JSON form.
pub fn to_json(nodes: &[GetNodeStatsReply]) -> Value {
    let nodes_json: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let s = n.store_stats.unwrap_or_default();
            json!({
                "node_id": crate::ids::hex_encode(&n.node_id),
                "store_bytes_used": s.object_store_bytes_used,
                "store_capacity": s.object_store_bytes_avail,
                "primary_bytes": s.object_store_bytes_primary_copy,
                "num_objects": s.num_local_objects,
                "spilled_bytes": s.spilled_bytes_total,
                "spilled_objects": s.spilled_objects_total,
                "restored_bytes": s.restored_bytes_total,
                "restored_objects": s.restored_objects_total,
                "evicted_bytes": s.evicted_bytes_total,
                "object_pulls_queued": s.object_pulls_queued,
            })
        })
        .collect();
    let objects: Vec<Value> = nodes
        .iter()
        .flat_map(|n| n.objects.iter())
        .map(|o| {
            json!({
                "object_id": crate::ids::hex_encode(&o.object_id),
                "node_id": crate::ids::hex_encode(&o.node_id),
                "size": o.data_size + o.metadata_size,
                "state": o.state,
                "ref_count": o.ref_count,
                "primary": o.primary,
            })
        })
        .collect();
    json!({ "nodes": nodes_json, "objects": objects })
}

/// Runs the command.
pub fn run(args: &MemoryArgs) -> Result<(), String> {
    let c = &args.cluster;
    let cluster = super::session::find_cluster(c.address.as_deref(), &c.temp_dir, c.auth_token_file.as_deref())?;
    let mut gcs = BlockingClient::new(cluster.gcs, cluster.token.clone());
    let table = super::status::fetch(&mut gcs)?;
    let node = table
        .node_info_list
        .iter()
        .filter(|n| n.state == NodeState::Alive as i32)
        .max_by_key(|n| n.is_head_node)
        .ok_or("no alive node")?;
    let addr = super::session::resolve_addr(&format!("{}:{}", node.node_manager_address, node.node_manager_port))?;
    let mut client = BlockingClient::new(addr, cluster.token);
    let reply = node_manager_service::blocking::format_global_memory_info(
        &mut client,
        &FormatGlobalMemoryInfoRequest { include_memory_info: true },
        CallOpts::idempotent(Duration::from_secs(15)),
    )
    .map_err(|e| format!("FormatGlobalMemoryInfo to {addr}: {e}"))?;
    match args.format {
        Format::Json => println!("{}", to_json(&reply.node_stats)),
        Format::Table => print!("{}", render_table(&reply.node_stats, true)),
    }
    Ok(())
}
