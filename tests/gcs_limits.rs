//! Bounded memory everywhere a peer can add state (issue 11, item 9), from the built
//! binary with small limits: GCS long-poll waiters leave when their wait ends and are
//! capped; the GCS KV, the object directory and the placement-group table refuse state
//! past their limits with a status code and a message naming the limit; a node refuses
//! lease requests past `--max-queued-leases`. Every refusal leaves the node serving.

mod common;

use common::*;
use raylet::client::{Driver, LeaseError, LeaseOptions, PlacementGroups};
use raylet::ids::{LeaseId, NodeId, ObjectId};
use raylet::rpc::{BlockingClient, CallOpts, Code, RpcError};
use raylet::wire::rpc::{self as w, PlacementStrategy};
use std::time::Duration;

const LIMITS: &str = r#"{"gcs_max_long_polls": 6, "gcs_kv_max_entries": 3, "gcs_kv_max_value_bytes": 1024,
    "gcs_object_directory_max_locations": 2, "gcs_max_placement_groups": 1,
    "gcs_max_bundles_per_placement_group": 2}"#;

fn opts() -> CallOpts {
    CallOpts::once(Duration::from_secs(30))
}

/// Asserts `r` failed with `code` and a message naming `limit`.
fn refused<T: std::fmt::Debug>(r: Result<T, RpcError>, code: Code, limit: &str) {
    match r {
        Err(RpcError::Status(s)) => {
            assert_eq!(s.code, code, "{s}");
            assert!(s.message.contains(limit), "the message names {limit}: {s}");
        }
        other => panic!("expected {code:?} naming {limit}, got {other:?}"),
    }
}

fn head_with_limits(dir: &TestDir) -> Node {
    dir.start(&NodeOpts::head().args(["--system-config", LIMITS, "--max-queued-leases", "2"]))
}

fn waiters(node: &Node) -> u64 {
    let (code, text) = http_get(node.ready.metrics_address, "/metrics");
    assert_eq!(code, 200);
    metric_sum(&text, "raylet_long_poll_waiters", "")
}

fn node_version(gcs: &mut BlockingClient) -> u64 {
    let req = w::GetAllNodeInfoRequest { known_version: 0, wait_ms: 0 };
    w::node_info_gcs_service::blocking::get_all_node_info(gcs, &req, opts()).expect("GetAllNodeInfo").version
}

fn report(gcs: &mut BlockingClient, node: &[u8], object: &ObjectId) -> Result<w::ReportObjectLocationsReply, RpcError> {
    let update = w::ObjectLocationUpdate {
        object_id: object.to_vec(),
        change: w::LocationChange::Added as i32,
        size: 10,
        ..Default::default()
    };
    let req = w::ReportObjectLocationsRequest { node_id: node.to_vec(), updates: vec![update] };
    w::object_directory_gcs_service::blocking::report_object_locations(gcs, &req, opts())
}

fn register_fake_node(gcs: &mut BlockingClient) -> NodeId {
    let id = NodeId::random();
    let info = w::GcsNodeInfo { node_id: id.to_vec(), node_manager_address: "127.0.0.1".into(), ..Default::default() };
    let req = w::RegisterNodeRequest { node_info: Some(info) };
    w::node_info_gcs_service::blocking::register_node(gcs, &req, opts()).expect("RegisterNode");
    id
}

#[test]
fn long_polls_leave_when_their_wait_ends_and_are_capped() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let head = head_with_limits(&dir);
        let token = head.ready.token();
        let mut gcs = BlockingClient::new(head.ready.gcs_address, token.clone());
        let me = NodeId::from_hex(&head.ready.node_id).expect("node id");

        // The head's own session and placement-group service each keep one long-poll on
        // the node table; nothing else waits.
        let version = node_version(&mut gcs);
        report(&mut gcs, &me.to_vec(), &ObjectId::random()).expect("a first location");
        let loc_req = |v| w::GetObjectLocationsRequest { object_ids: vec![], known_version: v, wait_ms: 1 };
        let dir_version =
            w::object_directory_gcs_service::blocking::get_object_locations(&mut gcs, &loc_req(0), opts())
                .expect("GetObjectLocations")
                .version;
        assert!(dir_version > 0);
        // Many polls that each time out (a stable cluster): before, every one stayed
        // listed until the next change.
        for _ in 0..150 {
            let req = w::GetAllNodeInfoRequest { known_version: version, wait_ms: 1 };
            w::node_info_gcs_service::blocking::get_all_node_info(&mut gcs, &req, opts()).expect("node poll");
            w::object_directory_gcs_service::blocking::get_object_locations(&mut gcs, &loc_req(dir_version), opts())
                .expect("directory poll");
        }
        let after = waiters(&head);
        assert!(after <= 2, "only the head's own two watches wait after 300 ended polls, not {after}");

        // Past gcs_max_long_polls (6) waiting at once, a poll is refused at once.
        let polls: Vec<_> = (0..8)
            .map(|_| {
                let (addr, token) = (head.ready.gcs_address, token.clone());
                std::thread::spawn(move || {
                    let mut c = BlockingClient::new(addr, token);
                    let req = w::GetAllNodeInfoRequest { known_version: version, wait_ms: 60_000 };
                    w::node_info_gcs_service::blocking::get_all_node_info(&mut c, &req, opts())
                })
            })
            .collect();
        wait_for("the long-poll limit to be reached", Duration::from_secs(20), || {
            Ok((waiters(&head) >= 6).then_some(()))
        });
        // A change wakes every waiter.
        register_fake_node(&mut gcs);
        let results: Vec<_> = polls.into_iter().map(|t| t.join().expect("poll thread")).collect();
        let exhausted = results
            .iter()
            .filter(|r| matches!(r, Err(RpcError::Status(s)) if s.code == Code::ResourceExhausted))
            .count();
        assert!(exhausted >= 2, "8 polls with at most 6 waiting: at least 2 refused: {results:?}");
        for r in results {
            if r.is_err() {
                refused(r, Code::ResourceExhausted, "gcs_max_long_polls");
            }
        }
        wait_for("the waiters to be back to the head's own", Duration::from_secs(20), || {
            Ok((waiters(&head) <= 2).then_some(()))
        });
        assert!(dir.try_status().is_ok(), "the GCS still serves");
        head.assert_no_panic();
    });
}

#[test]
fn gcs_tables_refuse_state_past_their_limits() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let head = head_with_limits(&dir);
        let mut gcs = BlockingClient::new(head.ready.gcs_address, head.ready.token());
        let kv = w::internal_kv_gcs_service::blocking::internal_kv_put;
        let put = |gcs: &mut BlockingClient, key: &str, len: usize| {
            let req = w::KvPutRequest { ns: "t".into(), key: key.into(), value: vec![7; len], overwrite: true };
            kv(gcs, &req, opts())
        };

        // KV: the system config is one entry of the three.
        put(&mut gcs, "a", 10).expect("a");
        put(&mut gcs, "b", 1024).expect("b, at the value limit");
        refused(put(&mut gcs, "c", 10), Code::ResourceExhausted, "gcs_kv_max_entries");
        refused(put(&mut gcs, "a", 1025), Code::InvalidArgument, "gcs_kv_max_value_bytes");
        put(&mut gcs, "a", 20).expect("an overwrite adds no entry");
        let del = w::KvDelRequest { ns: "t".into(), key: "a".into(), by_prefix: false };
        w::internal_kv_gcs_service::blocking::internal_kv_del(&mut gcs, &del, opts()).expect("del");
        put(&mut gcs, "c", 10).expect("room again after a delete");

        // Object directory: two locations, then refused; a dead node's reports too.
        let me = NodeId::from_hex(&head.ready.node_id).expect("node id").to_vec();
        report(&mut gcs, &me, &ObjectId::random()).expect("first location");
        report(&mut gcs, &me, &ObjectId::random()).expect("second location");
        refused(
            report(&mut gcs, &me, &ObjectId::random()),
            Code::ResourceExhausted,
            "gcs_object_directory_max_locations",
        );
        let fake = register_fake_node(&mut gcs);
        let bye = w::UnregisterNodeRequest { node_id: fake.to_vec(), reason: "test".into() };
        w::node_info_gcs_service::blocking::unregister_node(&mut gcs, &bye, opts()).expect("unregister");
        refused(report(&mut gcs, &fake.to_vec(), &ObjectId::random()), Code::FailedPrecondition, "declared dead");

        // Placement groups: bundles per group, then groups.
        let mut pgs = PlacementGroups::new(head.ready.gcs_address, head.ready.token());
        let bundle = vec![("CPU".to_string(), 0.5)];
        let three = vec![bundle.clone(), bundle.clone(), bundle.clone()];
        refused(
            pgs.create(PlacementStrategy::Pack, &three),
            Code::InvalidArgument,
            "gcs_max_bundles_per_placement_group",
        );
        let first = pgs.create(PlacementStrategy::Pack, &[bundle.clone(), bundle.clone()]).expect("first group");
        refused(
            pgs.create(PlacementStrategy::Pack, std::slice::from_ref(&bundle)),
            Code::ResourceExhausted,
            "gcs_max_placement_groups",
        );
        pgs.remove(first).expect("remove");
        let second = pgs.create(PlacementStrategy::Pack, &[bundle]).expect("room again after a remove");
        pgs.wait_ready(second, Duration::from_secs(30)).expect("the new group is placed");

        assert!(dir.try_status().is_ok(), "the GCS still serves");
        head.assert_no_panic();
    });
}

#[test]
fn a_node_refuses_lease_requests_past_max_queued_leases() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let head = head_with_limits(&dir);
        let token = head.ready.token();
        let nm = head.ready.node_manager_address;
        // Two requests no node can ever run wait as infeasible, holding their places.
        let infeasible = LeaseOptions { resources: vec![("GPU".into(), 1.0)], ..Default::default() };
        let ids = [LeaseId::random(), LeaseId::random()];
        let waiting: Vec<_> = ids
            .iter()
            .map(|&id| {
                let (token, opts) = (token.clone(), infeasible.clone());
                std::thread::spawn(move || {
                    let mut d = Driver::new(nm, token).with_timeout(Duration::from_secs(60));
                    d.request_lease_at(nm, id, &opts, false)
                })
            })
            .collect();
        wait_for("two infeasible leases to be queued", Duration::from_secs(20), || {
            Ok((node_stats(&head, &token).num_infeasible_leases == 2).then_some(()))
        });

        let mut driver = Driver::new(nm, token.clone()).with_timeout(Duration::from_secs(30));
        match driver.request_lease_at(nm, LeaseId::random(), &LeaseOptions::cpus(1.0), false) {
            Err(LeaseError::Rpc(e)) => refused::<()>(Err(e), Code::ResourceExhausted, "--max-queued-leases"),
            other => panic!("a third lease request must be refused, got {other:?}"),
        }
        for id in ids {
            assert!(driver.cancel_lease(nm, id).expect("cancel"), "lease {id} was waiting");
        }
        for t in waiting {
            let r = t.join().expect("lease thread");
            assert!(matches!(r, Ok(raylet::client::LeaseReply::Cancelled(..))), "cancelled: {r:?}");
        }
        let lease = driver.request_lease(&LeaseOptions::cpus(1.0)).expect("room again: granted");
        driver.return_worker(&lease).expect("return");
        head.assert_no_panic();
    });
}
