//! `raylet status`: every node, ALIVE or DEAD, with total and available resources.

use super::args::{Format, StatusArgs};
use crate::rpc::{BlockingClient, CallOpts};
use crate::wire::rpc::{node_info_gcs_service, GetAllNodeInfoReply, GetAllNodeInfoRequest, NodeState};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Reads the node table from the GCS.
pub fn fetch(client: &mut BlockingClient) -> Result<GetAllNodeInfoReply, String> {
    node_info_gcs_service::blocking::get_all_node_info(
        client,
        &GetAllNodeInfoRequest { known_version: 0, wait_ms: 0 },
        CallOpts::idempotent(Duration::from_secs(5)),
    )
    .map_err(|e| format!("cannot read the node table from {}: {e}", client.addr()))
}

/// The status JSON of DESIGN.md §7.
pub fn to_json(reply: &GetAllNodeInfoReply) -> Value {
    let avail: BTreeMap<Vec<u8>, &std::collections::HashMap<String, f64>> =
        reply.resources.iter().map(|r| (r.node_id.clone(), &r.resources_available)).collect();
    let mut nodes: Vec<&crate::wire::rpc::GcsNodeInfo> = reply.node_info_list.iter().collect();
    nodes.sort_by_key(|n| (n.state, !n.is_head_node, n.start_time_ms));
    let nodes: Vec<Value> = nodes
        .into_iter()
        .map(|n| {
            let alive = n.state == NodeState::Alive as i32;
            let total: BTreeMap<&String, &f64> = n.resources_total.iter().collect();
            let available: BTreeMap<&String, &f64> = match (alive, avail.get(&n.node_id)) {
                (true, Some(a)) => a.iter().collect(),
                _ => BTreeMap::new(),
            };
            json!({
                "node_id": crate::ids::hex_encode(&n.node_id),
                "state": if alive { "ALIVE" } else { "DEAD" },
                "is_head": n.is_head_node,
                "node_manager_address": format!("{}:{}", n.node_manager_address, n.node_manager_port),
                "object_manager_address": format!("{}:{}", n.node_manager_address, n.object_manager_port),
                "resources_total": total,
                "resources_available": available,
                "node_name": n.node_name,
                "death_reason": n.death_reason,
            })
        })
        .collect();
    json!({ "nodes": nodes })
}

fn fmt_resources(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, q)| {
                    let q = q.as_f64().unwrap_or(0.0);
                    if k.contains("memory") && q >= 1e6 {
                        format!("{k}={:.1}MiB", q / (1 << 20) as f64)
                    } else {
                        format!("{k}={}", (q * 1e4).round() / 1e4)
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Renders the table form.
pub fn to_table(v: &Value) -> String {
    let mut out = format!(
        "{:<56}  {:<5}  {:<4}  {:<21}  {:<40}  {}\n",
        "NODE_ID", "STATE", "HEAD", "NODE_MANAGER", "AVAILABLE", "TOTAL"
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<56}  {:<5}  {:<4}  {:<21}  {:<40}  {}\n",
            n["node_id"].as_str().unwrap_or(""),
            n["state"].as_str().unwrap_or(""),
            if n["is_head"].as_bool().unwrap_or(false) { "yes" } else { "" },
            n["node_manager_address"].as_str().unwrap_or(""),
            fmt_resources(&n["resources_available"]),
            fmt_resources(&n["resources_total"]),
        ));
    }
    out
}

/// Runs the command.
pub fn run(args: &StatusArgs) -> Result<(), String> {
    let c = &args.cluster;
    let cluster = super::session::find_cluster(c.address.as_deref(), &c.temp_dir, c.auth_token_file.as_deref())?;
    let mut client = BlockingClient::new(cluster.gcs, cluster.token);
    let v = to_json(&fetch(&mut client)?);
    match args.format {
        Format::Json => println!("{v}"),
        Format::Table => print!("{}", to_table(&v)),
    }
    Ok(())
}
