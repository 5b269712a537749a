//! Two (or three) nodes from the built binary: spillback, objects produced on one node
//! and consumed on the other, placement groups (STRICT_SPREAD, a failed prepare rolled
//! back, a node dying with bundles), and GlobalGC across nodes. After every workload
//! `raylet status` shows every node's available resources equal to its totals.

mod common;
mod sched_support;

use raylet::client::tasks::expected_checksum;
use raylet::client::{LeaseOptions, LocalClient, PlacementGroups, PlacementStrategy, Strategy, Task};
use raylet::ids::NodeId;
use raylet::wire::rpc::{node_manager_service, GlobalGcReply, GlobalGcRequest, PlacementGroupState};
use sched_support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn node_id(n: &Node) -> NodeId {
    NodeId::from_hex(&n.node_id).unwrap()
}

/// Waits until `head` sees `n` alive nodes (and so schedules onto them).
fn wait_nodes(head: &Node, n: usize) {
    wait_for("the cluster to form", T, || {
        let s = status(head)?;
        let alive = s["nodes"].as_array().into_iter().flatten().filter(|n| n["state"] == "ALIVE").count();
        Ok((alive == n).then_some(()))
    });
}

/// A head and a joiner with one CPU each, once the head sees both.
fn two_one_cpu_nodes() -> (Node, Node) {
    let a = head(&["--num-cpus", "1"]);
    let b = join(&a, &["--num-cpus", "1"]);
    wait_nodes(&a, 2);
    (a, b)
}

#[test]
fn leases_spill_to_both_nodes_and_an_object_made_on_one_is_consumed_on_the_other() {
    with_timeout(Duration::from_secs(120), || {
        let (a, b) = two_one_cpu_nodes();
        let mut d = a.driver();
        let on_a = d.request_lease(&LeaseOptions::cpus(1.0)).expect("lease on A");
        assert_eq!(on_a.node_id, node_id(&a));
        let on_b = wait_for("a lease spilled back to B", T, || {
            // A is full; until A's view of B is current the lease may queue, so use a
            // lease id per attempt and cancel leftovers.
            let l = d.request_lease(&LeaseOptions::cpus(1.0)).map_err(|e| e.to_string())?;
            if l.node_id == node_id(&b) {
                return Ok(Some(l));
            }
            d.return_worker(&l).map_err(|e| e.to_string())?;
            Ok(None)
        });
        assert_eq!(on_b.raylet, b.node_manager, "the worker is returned to the raylet that granted it");
        let (bytes, seed) = (3 << 20, 42);
        let made = d.push_task(&on_a, &Task::Produce { bytes, seed }).expect("produce on A");
        let object = made.object_id.expect("an object id");
        let got = d.push_task(&on_b, &Task::Consume { object, timeout: T }).expect("consume on B");
        assert_eq!((got.size, got.crc32c), (bytes, expected_checksum(bytes as usize, seed)));
        d.return_worker(&on_a).unwrap();
        d.return_worker(&on_b).unwrap();
        wait_all_available(&a, 2, T);
    });
}

#[test]
fn a_lease_on_another_node_pulls_its_argument_there_before_the_grant() {
    with_timeout(Duration::from_secs(120), || {
        let (a, b) = two_one_cpu_nodes();
        let mut d = a.driver();
        let on_a = d.request_lease(&LeaseOptions::cpus(1.0)).expect("lease on A");
        assert_eq!(on_a.node_id, node_id(&a));
        let (bytes, seed) = (6 << 20, 11);
        let made = d.push_task(&on_a, &Task::Produce { bytes, seed }).expect("produce on A");
        let object = made.object_id.expect("an object id");
        d.return_worker(&on_a).unwrap();
        let mut store_b = LocalClient::connect_driver(&b.socket).unwrap();
        assert!(!store_b.contains(&object).unwrap(), "B has no copy yet");
        let strategy = Strategy::NodeAffinity { node: node_id(&b), soft: false };
        let opts = LeaseOptions { deps: vec![object], strategy, ..LeaseOptions::cpus(1.0) };
        let on_b = wait_for("a lease with the argument granted on B", T, || {
            // Until A's view of B is current, the affinity lease may be refused as
            // unschedulable; ask again.
            d.request_lease(&opts).map(Some).map_err(|e| e.to_string())
        });
        assert_eq!(on_b.node_id, node_id(&b));
        assert!(store_b.contains(&object).unwrap(), "B pulled the argument before granting the lease");
        let got = d.push_task(&on_b, &Task::Consume { object, timeout: T }).expect("consume on B");
        assert_eq!((got.size, got.crc32c), (bytes, expected_checksum(bytes as usize, seed)));
        d.return_worker(&on_b).unwrap();
        wait_all_available(&a, 2, T);
    });
}

#[test]
fn a_strict_spread_group_spans_both_nodes_runs_leases_and_is_removed() {
    with_timeout(Duration::from_secs(120), || {
        let a = head(&["--num-cpus", "2"]);
        let b = join(&a, &["--num-cpus", "2"]);
        wait_nodes(&a, 2);
        let mut pgs = PlacementGroups::new(a.gcs, a.token.clone());
        let cpu = vec![("CPU".to_string(), 1.0)];
        let pg = pgs.create(PlacementStrategy::StrictSpread, &[cpu.clone(), cpu]).unwrap();
        pgs.wait_ready(pg, T).expect("group ready");
        let info = pgs.get(pg).unwrap().expect("known");
        assert_eq!(info.state, PlacementGroupState::Created as i32);
        let nodes: Vec<Vec<u8>> = info.bundles.iter().map(|b| b.node_id.clone()).collect();
        assert_ne!(nodes[0], nodes[1], "one bundle per node");
        let mut d = a.driver();
        let mut seen = Vec::new();
        for index in 0..2 {
            let opts = LeaseOptions { bundle: Some((pg, index)), ..LeaseOptions::cpus(1.0) };
            let lease = d.request_lease(&opts).expect("lease in the bundle");
            assert_eq!(lease.node_id.to_vec(), nodes[index as usize], "bundle {index}'s node");
            d.push_task(&lease, &Task::Noop).unwrap();
            seen.push(lease);
        }
        let extra = LeaseOptions { bundle: Some((pg, 0)), ..LeaseOptions::cpus(1.0) };
        let id = raylet::ids::LeaseId::random();
        let (mut d2, addr) = (a.driver(), a.node_manager);
        let queued = std::thread::spawn(move || d2.request_lease_with_id(id, &extra));
        wait_for("a second lease in the full bundle to queue", T, || {
            let (sa, sb) = (a.stats()?, b.stats()?);
            Ok((sa.num_queued_leases + sb.num_queued_leases == 1).then_some(()))
        });
        pgs.remove(pg).unwrap();
        assert!(queued.join().unwrap().is_err(), "removing the group cancels its queued lease");
        let _ = addr;
        for l in &seen {
            assert!(d.push_task(l, &Task::Noop).is_err(), "the group's workers were killed");
        }
        assert_eq!(pgs.get(pg).unwrap().unwrap().state, PlacementGroupState::Removed as i32);
        wait_all_available(&a, 2, T);
        let after = d.request_lease(&LeaseOptions::cpus(1.0)).expect("plain lease after removal");
        d.return_worker(&after).unwrap();
        wait_all_available(&a, 2, T);
    });
}

#[test]
fn a_prepare_that_fails_on_one_node_is_rolled_back_on_the_others() {
    with_timeout(Duration::from_secs(120), || {
        // The GCS polls reports rarely here, so its view keeps claiming B's CPU is free
        // while a lease holds it: the prepare on B fails, A's must be rolled back.
        let a = head(&["--num-cpus", "1", "--gcs-resource-poll-period-ms", "600000"]);
        let b = join(&a, &["--num-cpus", "1"]);
        wait_nodes(&a, 2);
        let mut d = b.driver();
        let hold = d
            .request_lease(&LeaseOptions {
                strategy: Strategy::NodeAffinity { node: node_id(&b), soft: false },
                ..LeaseOptions::cpus(1.0)
            })
            .unwrap();
        let mut pgs = PlacementGroups::new(a.gcs, a.token.clone());
        let cpu = vec![("CPU".to_string(), 1.0)];
        let pg = pgs.create(PlacementStrategy::StrictSpread, &[cpu.clone(), cpu]).unwrap();
        wait_for("the group to stay pending after a failed prepare", T, || {
            let info = pgs.get(pg).map_err(|e| e.to_string())?.ok_or("unknown group")?;
            Ok((info.state == PlacementGroupState::Pending as i32 && info.state_message.contains("prepare"))
                .then_some(()))
        });
        wait_node_idle(&a, T);
        d.return_worker(&hold).unwrap();
        pgs.wait_ready(pg, T).expect("the retry succeeds once B's CPU is free");
        pgs.remove(pg).unwrap();
        wait_node_idle(&a, T);
        wait_node_idle(&b, T);
    });
}

#[test]
fn bundles_of_a_dead_node_are_rescheduled_elsewhere() {
    with_timeout(Duration::from_secs(120), || {
        let fast = ["--heartbeat-period-ms", "100", "--heartbeat-timeout-ms", "1000"];
        let a = head(&[&["--num-cpus", "0"][..], &fast].concat());
        let mut b = join(&a, &[&["--num-cpus", "1"][..], &fast].concat());
        let mut c = join(&a, &[&["--num-cpus", "1"][..], &fast].concat());
        wait_nodes(&a, 3);
        let mut pgs = PlacementGroups::new(a.gcs, a.token.clone());
        let pg = pgs.create(PlacementStrategy::Pack, &[vec![("CPU".to_string(), 1.0)]]).unwrap();
        pgs.wait_ready(pg, T).unwrap();
        let first = pgs.get(pg).unwrap().unwrap().bundles[0].node_id.clone();
        let (victim, survivor) = if first == node_id(&b).to_vec() { (&mut b, &c) } else { (&mut c, &b) };
        let survivor_id = node_id(survivor).to_vec();
        victim.kill();
        wait_for("the bundle to be rescheduled on the surviving node", T, || {
            let info = pgs.get(pg).map_err(|e| e.to_string())?.ok_or("unknown group")?;
            let ok = info.state == PlacementGroupState::Created as i32 && info.bundles[0].node_id == survivor_id;
            Ok(ok.then_some(()))
        });
        let mut d = a.driver();
        let lease = d.request_lease(&LeaseOptions { bundle: Some((pg, 0)), ..LeaseOptions::cpus(1.0) }).unwrap();
        assert_eq!(lease.node_id.to_vec(), survivor_id);
        d.return_worker(&lease).unwrap();
        pgs.remove(pg).unwrap();
        wait_all_available(&a, 2, T);
    });
}

#[test]
fn global_gc_reaches_workers_on_every_node() {
    with_timeout(Duration::from_secs(120), || {
        let a = head(&["--num-cpus", "1"]);
        let b = join(&a, &["--num-cpus", "1"]);
        wait_nodes(&a, 2);
        let mut d = a.driver();
        let to_b = LeaseOptions {
            strategy: Strategy::NodeAffinity { node: node_id(&b), soft: false },
            ..LeaseOptions::cpus(1.0)
        };
        // A hard affinity to a node A does not know yet is cancelled as unschedulable.
        let on_b = wait_for("A to know B and lease there", T, || Ok(d.request_lease(&to_b).ok()));
        let on_a = d.request_lease(&LeaseOptions::cpus(1.0)).unwrap();
        assert_eq!(on_a.node_id, node_id(&a));
        let _: GlobalGcReply = d
            .call(
                a.node_manager,
                node_manager_service::SERVICE_ID,
                node_manager_service::method::GLOBAL_GC,
                &GlobalGcRequest {},
            )
            .unwrap();
        for l in [&on_a, &on_b] {
            wait_for("LocalGC on the worker", T, || {
                let c = d.push_task(l, &Task::Stats).map_err(|e| e.to_string())?.counters.unwrap_or_default();
                Ok((c.local_gc_runs >= 1).then_some(()))
            });
        }
        d.return_worker(&on_a).unwrap();
        d.return_worker(&on_b).unwrap();
        wait_all_available(&a, 2, T);
    });
}
