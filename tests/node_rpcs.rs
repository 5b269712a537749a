//! The first real NodeManagerService RPCs, called over TCP on a head and on a joiner:
//! GetSystemConfig, GetGcsServerAddress, GetNodeStats and ShutdownRaylet; and
//! `raylet stop --node-id`, which stops one node through ShutdownRaylet.

mod common;

use common::*;
use raylet::rpc::CallOpts;
use raylet::wire::rpc::{self as w, node_manager_service as nm};
use std::time::Duration;

const SYSTEM_CONFIG: &str = r#"{"object_spilling_threshold":0.8,"raylet_test_knob":"on"}"#;

fn opts() -> CallOpts {
    CallOpts::idempotent(Duration::from_secs(10))
}

#[test]
fn system_config_and_gcs_address_are_served_by_every_node() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start(&NodeOpts::head().args(["--system-config", SYSTEM_CONFIG]));
        let joiner = dir.start(&NodeOpts::join(head.ready.gcs_address));
        let token = head.ready.token();
        let want: serde_json::Value = serde_json::from_str(SYSTEM_CONFIG).unwrap();
        for node in [&head, &joiner] {
            // Every shard serves the port (SO_REUSEPORT) and the kernel spreads connections
            // by hash: 32 connections miss a given shard with probability 2^-32.
            for _ in 0..32 {
                let mut c = node.node_manager(&token);
                let gcs = nm::blocking::get_gcs_server_address(&mut c, &Default::default(), opts())
                    .unwrap_or_else(|e| panic!("GetGcsServerAddress on some shard: {e}"));
                assert_eq!(format!("{}:{}", gcs.ip, gcs.port), head.ready.gcs_address.to_string());
                let cfg = nm::blocking::get_system_config(&mut c, &Default::default(), opts())
                    .unwrap_or_else(|e| panic!("GetSystemConfig on some shard: {e}"));
                assert_eq!(serde_json::from_str::<serde_json::Value>(&cfg.system_config).ok(), Some(want.clone()));
            }
            let mut c = node.node_manager(&token);
            let cfg = nm::blocking::get_system_config(&mut c, &w::GetSystemConfigRequest::default(), opts())
                .expect("GetSystemConfig");
            let got: serde_json::Value = serde_json::from_str(&cfg.system_config)
                .unwrap_or_else(|e| panic!("system config is not JSON ({e}): {:?}", cfg.system_config));
            assert_eq!(got, want, "node {} serves the head's --system-config", node.ready.node_id);

            let gcs = nm::blocking::get_gcs_server_address(&mut c, &w::GetGcsServerAddressRequest::default(), opts())
                .expect("GetGcsServerAddress");
            assert_eq!(format!("{}:{}", gcs.ip, gcs.port), head.ready.gcs_address.to_string());
            assert_eq!(node.ready.gcs_address, head.ready.gcs_address, "the ready line agrees");
        }
        head.assert_no_panic();
        joiner.assert_no_panic();
    });
}

#[test]
fn get_node_stats_reports_shards_and_uptime() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let token = head.ready.token();
        let s = node_stats(&head, &token);
        assert_eq!(s.num_shards, SHARDS as u32);
        assert_eq!(raylet::ids::hex_encode(&s.node_id), head.ready.node_id);
        assert!(s.uptime_s > 0.0, "uptime is positive: {}", s.uptime_s);
        let mut shards: Vec<u32> = s.shards.iter().map(|x| x.shard).collect();
        shards.sort_unstable();
        assert_eq!(shards, vec![0, 1], "every shard reports: {:?}", s.shards);
        assert_eq!((s.num_workers, s.num_drivers), (0, 0));
        // The call itself is an open RPC connection on one of the shards.
        assert!(s.shards.iter().map(|x| x.rpc_connections).sum::<u64>() >= 1, "{:?}", s.shards);
        let later = node_stats(&head, &token);
        assert!(later.uptime_s >= s.uptime_s, "uptime does not go backwards");
    });
}

#[test]
fn shutdown_raylet_stops_a_node_gracefully() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let mut joiner = dir.start(&NodeOpts::join(head.ready.gcs_address));
        let token = head.ready.token();
        let mut c = joiner.node_manager(&token);
        nm::blocking::shutdown_raylet(
            &mut c,
            &w::ShutdownRayletRequest { graceful: true },
            CallOpts::once(Duration::from_secs(10)),
        )
        .expect("ShutdownRaylet is answered before the node goes");
        assert_exit_code(joiner.wait_exit(Duration::from_secs(30)), 0, "a node after ShutdownRaylet");
        // It unregistered: DEAD at once (the default heartbeat timeout is 5 s), with the reason.
        let status = dir.wait_state(&joiner.ready.node_id, "DEAD", Duration::from_secs(20));
        let e = node_entry(&status, &joiner.ready.node_id).unwrap();
        assert!(e["death_reason"].as_str().unwrap_or("").contains("ShutdownRaylet"), "{e}");
        assert_eq!(node_entry(&status, &head.ready.node_id).unwrap()["state"], "ALIVE");
        joiner.assert_no_panic();
        head.assert_no_panic();
    });
}

#[test]
fn raylet_stop_with_a_node_id_stops_only_that_node() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let mut head = dir.start_head();
        let mut joiner = dir.start(&NodeOpts::join(head.ready.gcs_address));
        let out = dir.cli(&["stop", "--node-id", &joiner.ready.node_id]);
        assert!(out.status.success(), "raylet stop --node-id failed: {}", out.stderr);
        assert_exit_code(joiner.wait_exit(Duration::from_secs(30)), 0, "the stopped node");
        assert!(head.try_exit().is_none(), "the head keeps running");
        let status = dir.wait_state(&joiner.ready.node_id, "DEAD", Duration::from_secs(20));
        assert_eq!(node_entry(&status, &head.ready.node_id).unwrap()["state"], "ALIVE");

        let bogus = dir.cli(&["stop", "--node-id", &"ab".repeat(28)]);
        assert!(!bogus.status.success(), "stopping an unknown node fails");
        assert!(bogus.stderr.contains("no alive node"), "{}", bogus.stderr);
        head.assert_no_panic();
    });
}

#[test]
fn format_global_memory_info_gathers_every_node_and_sums_their_stores() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start(&NodeOpts::head().fast_heartbeat());
        let mut b = dir.start(&NodeOpts::join(head.ready.gcs_address).fast_heartbeat());
        let token = head.ready.token();
        let mut ids = Vec::new();
        for (node, n) in [(&head, 2), (&b, 3)] {
            let mut c = raylet::client::LocalClient::connect_driver(&node.ready.socket).unwrap();
            for i in 0..n {
                ids.push(c.put(&vec![i as u8; 100_000 + i * 1000]).unwrap());
            }
        }
        let req = w::FormatGlobalMemoryInfoRequest { include_memory_info: true };
        let r = nm::blocking::format_global_memory_info(&mut b.node_manager(&token), &req, opts())
            .expect("FormatGlobalMemoryInfo");
        let mut nodes: Vec<String> = r.node_stats.iter().map(|n| raylet::ids::hex_encode(&n.node_id)).collect();
        nodes.sort();
        let mut want = vec![head.ready.node_id.clone(), b.ready.node_id.clone()];
        want.sort();
        assert_eq!(nodes, want, "one entry per alive node, asked from either");
        let total = r.store_stats.expect("summed store stats");
        let per_node: Vec<_> = r.node_stats.iter().map(|n| n.store_stats.unwrap()).collect();
        assert_eq!(total.num_local_objects, 5);
        assert_eq!(total.num_local_objects, per_node.iter().map(|s| s.num_local_objects).sum::<i64>());
        assert_eq!(total.object_store_bytes_used, per_node.iter().map(|s| s.object_store_bytes_used).sum::<i64>());
        assert!(total.object_store_bytes_used >= 5 * 100_000, "{total:?}");
        for id in &ids {
            assert!(r.memory_summary.contains(&id.to_string()), "the summary lists object {id}:\n{}", r.memory_summary);
        }
        for n in &want {
            assert!(r.memory_summary.contains(n.as_str()), "the summary lists node {n}");
        }
        // A node that died (unreachable, then declared dead) drops out; the reply still comes.
        b.kill9();
        let r = nm::blocking::format_global_memory_info(&mut head.node_manager(&token), &req, opts())
            .expect("FormatGlobalMemoryInfo with a dead node");
        assert_eq!(r.node_stats.len(), 1, "only the head answers");
        assert_eq!(r.store_stats.unwrap().num_local_objects, 2);
        head.assert_no_panic();
    });
}
