//! Leases on one node from the built binary: grant, reuse, idempotence, cancellation,
//! infeasible requests, worker death while leased, bad returns, node stats and GlobalGC.

mod common;
mod sched_support;

use raylet::client::{LeaseError, LeaseOptions, LeaseReply, Task};
use raylet::ids::{LeaseId, ObjectId};
use raylet::rpc::RpcError;
use raylet::wire::rpc::{
    node_manager_service, GlobalGcReply, GlobalGcRequest, LeaseFailureType, ReturnWorkerReply, ReturnWorkerRequest,
};
use sched_support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn a_lease_runs_tasks_and_its_worker_is_reused_after_return() {
    with_timeout(Duration::from_secs(90), || {
        let node = head(&["--num-cpus", "2"]);
        let mut d = node.driver();
        let lease = d.request_lease(&LeaseOptions::cpus(1.0)).expect("lease");
        assert_eq!(lease.node_id.hex(), node.node_id);
        assert_eq!(lease.raylet, node.node_manager);
        assert!(lease.resource_mapping.iter().any(|e| e.name == "CPU"), "{:?}", lease.resource_mapping);
        wait_for("raylet status to show the leased CPU", T, || {
            let s = status(&node)?;
            Ok((s["nodes"][0]["resources_available"]["CPU"].as_f64() == Some(1.0)).then_some(()))
        });
        d.push_task(&lease, &Task::Noop).expect("noop");
        d.push_task(&lease, &Task::Sleep(Duration::from_millis(5))).expect("sleep");
        let c = d.push_task(&lease, &Task::Stats).expect("stats").counters.expect("counters");
        assert_eq!((c.pid, c.tasks_run), (lease.worker_pid, 2));
        let piped = d.push_tasks(&lease, &vec![Task::Noop; 64], 16).expect("pipelined tasks");
        assert_eq!(piped.len(), 64);
        d.return_worker(&lease).expect("return");
        wait_node_idle(&node, T);
        let again = d.request_lease(&LeaseOptions::cpus(1.0)).expect("second lease");
        assert_eq!(again.worker_id, lease.worker_id, "the idle worker is reused");
        d.return_worker(&again).expect("return");
        wait_all_available(&node, 1, T);
    });
}

#[test]
fn a_repeated_lease_id_returns_the_same_worker() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "2"]);
        let mut d = node.driver();
        let id = LeaseId::random();
        let a = d.request_lease_with_id(id, &LeaseOptions::cpus(1.0)).unwrap();
        let b = d.request_lease_with_id(id, &LeaseOptions::cpus(1.0)).unwrap();
        assert_eq!((a.worker_id, a.id), (b.worker_id, b.id));
        let s = node.stats().unwrap();
        assert_eq!((s.num_granted_leases, s.resources_available["CPU"]), (1, 1.0), "granted once");
        d.return_worker(&a).unwrap();
        wait_node_idle(&node, T);
    });
}

#[test]
fn an_infeasible_lease_waits_is_reported_and_can_be_cancelled() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "2"]);
        let id = LeaseId::random();
        let mut d = node.driver();
        let addr = node.node_manager;
        let waiter = std::thread::spawn(move || d.request_lease_at(addr, id, &LeaseOptions::cpus(64.0), false));
        wait_for("the lease to be reported infeasible", T, || {
            let s = node.stats()?;
            Ok((s.num_infeasible_leases == 1).then_some(()))
        });
        assert!(node.driver().cancel_lease(addr, id).unwrap(), "the waiting lease was found");
        match waiter.join().unwrap() {
            Ok(LeaseReply::Cancelled(LeaseFailureType::CancelledIntended, _)) => {}
            other => panic!("expected a cancelled reply, got {other:?}"),
        }
        assert_eq!(node.stats().unwrap().num_infeasible_leases, 0);
        wait_all_available(&node, 1, T);
    });
}

#[test]
fn a_cancel_before_its_request_wins() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "2"]);
        let mut d = node.driver();
        let id = LeaseId::random();
        assert!(!d.cancel_lease(node.node_manager, id).unwrap());
        match d.request_lease_with_id(id, &LeaseOptions::cpus(1.0)) {
            Err(LeaseError::Cancelled { failure_type: LeaseFailureType::CancelledIntended, .. }) => {}
            other => panic!("expected cancelled, got {other:?}"),
        }
        wait_node_idle(&node, T);
    });
}

#[test]
fn cancels_racing_grants_never_leak_a_worker_or_resources() {
    with_timeout(Duration::from_secs(120), || {
        // No prestart: the first lease waits for a worker process, so its cancel wins;
        // later ones find that worker idle and are granted before their cancel.
        let node = head(&["--num-cpus", "2"]);
        let addr = node.node_manager;
        let (mut granted, mut cancelled) = (0, 0);
        for _ in 0..40 {
            let id = LeaseId::random();
            let mut d = node.driver();
            let req = std::thread::spawn(move || {
                let r = d.request_lease_at(addr, id, &LeaseOptions::cpus(1.0), false);
                (d, r)
            });
            let found = node.driver().cancel_lease(addr, id).unwrap();
            let (mut d, reply) = req.join().unwrap();
            match reply.unwrap() {
                LeaseReply::Granted(lease) => {
                    assert!(!found, "a granted lease cannot also be cancelled");
                    granted += 1;
                    d.return_worker(&lease).unwrap();
                }
                LeaseReply::Cancelled(LeaseFailureType::CancelledIntended, _) => cancelled += 1,
                other => panic!("unexpected reply {other:?}"),
            }
        }
        assert_eq!(granted + cancelled, 40);
        assert!(granted > 0 && cancelled > 0, "both orders happened: {granted} granted, {cancelled} cancelled");
        wait_node_idle(&node, T);
        let s = node.stats().unwrap();
        assert!(s.core_workers_stats.iter().all(|w| w.state != "LEASED"), "{:?}", s.core_workers_stats);
    });
}

#[test]
fn a_worker_killed_while_leased_returns_its_resources_and_the_lessee_fails_cleanly() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "2"]);
        let mut d = node.driver();
        let lease = d.request_lease(&LeaseOptions::cpus(2.0)).unwrap();
        d.push_task(&lease, &Task::Noop).unwrap();
        assert_eq!(node.stats().unwrap().resources_available.get("CPU"), None, "all CPUs leased");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(lease.worker_pid as i32), nix::sys::signal::SIGKILL).unwrap();
        wait_node_idle(&node, T);
        assert!(d.push_task(&lease, &Task::Noop).is_err(), "the dead worker cannot run tasks");
        match d.return_worker(&lease) {
            Err(RpcError::Status(s)) => assert!(s.message.contains("does not exist"), "{s:?}"),
            other => panic!("returning a dead worker must fail, got {other:?}"),
        }
        let next = d.request_lease(&LeaseOptions::cpus(2.0)).expect("the CPUs are back");
        d.return_worker(&next).unwrap();
        wait_all_available(&node, 1, T);
    });
}

#[test]
fn returning_an_unknown_worker_is_an_error() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "1"]);
        let mut d = node.driver();
        let req = ReturnWorkerRequest { worker_id: vec![7; 28], ..Default::default() };
        let r: Result<ReturnWorkerReply, _> = d.call(
            node.node_manager,
            node_manager_service::SERVICE_ID,
            node_manager_service::method::RETURN_WORKER,
            &req,
        );
        assert!(matches!(r, Err(RpcError::Status(_))), "{r:?}");
        let bad = ReturnWorkerRequest { worker_id: vec![1, 2, 3], ..Default::default() };
        let r: Result<ReturnWorkerReply, _> = d.call(
            node.node_manager,
            node_manager_service::SERVICE_ID,
            node_manager_service::method::RETURN_WORKER,
            &bad,
        );
        assert!(matches!(r, Err(RpcError::Status(_))), "{r:?}");
        wait_all_available(&node, 1, T);
    });
}

#[test]
fn node_stats_list_workers_with_their_state_and_lease() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "2"]);
        let mut d = node.driver();
        let lease = d.request_lease(&LeaseOptions::cpus(1.0)).unwrap();
        let s = node.stats().unwrap();
        let w = s.core_workers_stats.iter().find(|w| w.worker_id == lease.worker_id.to_vec()).expect("listed");
        assert_eq!((w.state.as_str(), w.pid, w.lease_id.as_slice()), ("LEASED", lease.worker_pid, lease.id.as_bytes()));
        assert_eq!(w.leased_resources.get("CPU"), Some(&1.0));
        assert_eq!(s.num_granted_leases, 1);
        d.return_worker(&lease).unwrap();
        let s = node.stats().unwrap();
        let w = s.core_workers_stats.iter().find(|w| w.worker_id == lease.worker_id.to_vec()).expect("listed");
        assert_eq!((w.state.as_str(), w.lease_id.is_empty()), ("IDLE", true));
    });
}

#[test]
fn global_gc_runs_local_gc_on_every_worker() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "2"]);
        let mut d = node.driver();
        let leases =
            [d.request_lease(&LeaseOptions::cpus(1.0)).unwrap(), d.request_lease(&LeaseOptions::cpus(1.0)).unwrap()];
        let _: GlobalGcReply = d
            .call(
                node.node_manager,
                node_manager_service::SERVICE_ID,
                node_manager_service::method::GLOBAL_GC,
                &GlobalGcRequest {},
            )
            .expect("GlobalGC replies OK");
        for l in &leases {
            wait_for("LocalGC on the worker", T, || {
                let c = d.push_task(l, &Task::Stats).map_err(|e| e.to_string())?.counters.unwrap_or_default();
                Ok((c.local_gc_runs >= 1).then_some(()))
            });
            d.return_worker(l).unwrap();
        }
        wait_node_idle(&node, T);
    });
}

#[test]
fn a_lease_request_that_times_out_is_withdrawn() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "1"]);
        let mut d = node.driver().with_timeout(Duration::from_millis(300));
        let r = d.request_lease(&LeaseOptions::cpus(8.0));
        assert!(matches!(r, Err(LeaseError::Rpc(RpcError::Timeout(_)))), "{r:?}");
        let s = node.stats().unwrap();
        assert_eq!((s.num_infeasible_leases, s.num_queued_leases), (0, 0), "the driver cancelled what it gave up on");
        wait_all_available(&node, 1, T);
    });
}

#[test]
fn a_lessee_whose_connection_closes_loses_its_leases_and_nothing_leaks() {
    use raylet::client::rpc_conn::RpcConn;
    use raylet::wire::rpc::{LeaseSpec, RequestWorkerLeaseRequest};
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "2"]);
        // A granted lease whose driver goes away without returning it.
        let mut d = node.driver();
        let lease = d.request_lease(&LeaseOptions::cpus(2.0)).unwrap();
        assert_eq!(node.stats().unwrap().num_granted_leases, 1);
        drop(d);
        wait_for("the vanished lessee's worker to be destroyed", T, || Ok((!alive(lease.worker_pid)).then_some(())));
        wait_node_idle(&node, T);
        // A waiting (infeasible) lease whose requester disconnects before any reply.
        let mut c = RpcConn::connect(node.node_manager, &node.token, T).unwrap();
        let spec = LeaseSpec {
            lease_id: LeaseId::random().to_vec(),
            required_resources: [("CPU".to_string(), 64.0)].into_iter().collect(),
            ..Default::default()
        };
        let req = RequestWorkerLeaseRequest { lease_spec: Some(spec), ..Default::default() };
        c.send(node_manager_service::SERVICE_ID, node_manager_service::method::REQUEST_WORKER_LEASE, &req).unwrap();
        wait_for("the lease to wait as infeasible", T, || Ok((node.stats()?.num_infeasible_leases == 1).then_some(())));
        drop(c);
        wait_for("the waiting lease to be cancelled", T, || {
            Ok((node.stats()?.num_infeasible_leases == 0).then_some(()))
        });
        // The node still leases normally, and everything is available afterwards.
        let mut d = node.driver();
        let next = d.request_lease(&LeaseOptions::cpus(2.0)).expect("the CPUs are back");
        d.return_worker(&next).unwrap();
        wait_all_available(&node, 1, T);
    });
}

#[test]
fn a_lease_waits_for_its_argument_holding_nothing_and_pins_it_while_granted() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "1"]);
        let object = raylet::ids::ObjectId::random();
        let opts = LeaseOptions { deps: vec![object], ..LeaseOptions::cpus(1.0) };
        let mut d = node.driver();
        let waiter = std::thread::spawn(move || d.request_lease(&opts).map(|l| (d, l)));
        wait_for("the lease to wait for its argument", T, || {
            let s = node.stats()?;
            Ok((s.num_queued_leases == 1).then_some(s))
        });
        let s = node.stats().unwrap();
        assert_eq!((s.num_granted_leases, s.resources_available["CPU"]), (0, 1.0), "nothing held while waiting");
        let mut store = raylet::client::LocalClient::connect_driver(&node.socket).unwrap();
        store.put_with_id(object, &[7u8; 100_000]).unwrap();
        let (mut d, lease) = waiter.join().unwrap().expect("granted once the argument is here");
        assert_eq!(
            store.delete(&[object]).unwrap(),
            vec![raylet::local::codec::StoreError::ObjectInUse],
            "the granted lease pins its argument"
        );
        assert!(store.contains(&object).unwrap());
        d.return_worker(&lease).unwrap();
        wait_for("the deferred delete once the lease released its argument", T, || {
            Ok((!store.contains(&object).map_err(|e| e.to_string())?).then_some(()))
        });
        wait_node_idle(&node, T);
    });
}

/// The objects `node` holds, as `raylet memory` sees them (GetNodeStats with memory info).
fn objects_of(node: &Node) -> Result<Vec<raylet::wire::rpc::ObjectInfo>, String> {
    use raylet::wire::rpc::GetNodeStatsRequest;
    let mut c = raylet::rpc::BlockingClient::new(node.node_manager, node.token.clone());
    let r = node_manager_service::blocking::get_node_stats(
        &mut c,
        &GetNodeStatsRequest { include_memory_info: true },
        raylet::rpc::CallOpts::default(),
    )
    .map_err(|e| e.to_string())?;
    Ok(r.objects)
}

#[test]
fn a_lease_whose_argument_was_spilled_restores_it_and_pins_it_before_the_grant() {
    with_timeout(Duration::from_secs(90), || {
        let node = head(&["--num-cpus", "1", "--object-store-memory", "67108864"]);
        let mut store = raylet::client::LocalClient::connect_driver(&node.socket).unwrap();
        // 160 MiB of pinned primaries in a 64 MiB store: the oldest live only on disk.
        let objects: Vec<(ObjectId, Vec<u8>)> = (0..20u8)
            .map(|i| {
                let data = vec![i; 8 << 20];
                (store.put(&data).unwrap(), data)
            })
            .collect();
        let arg = wait_for("an object only on disk", T, || {
            let spilled = objects_of(&node)?.into_iter().find(|o| o.state == "SPILLED");
            Ok(spilled.map(|o| ObjectId::from_bytes(&o.object_id).unwrap()))
        });
        let restored = |n: &Node| n.stats().unwrap().store_stats.unwrap().restored_objects_total;
        let restored_before = restored(&node);

        let opts = LeaseOptions { deps: vec![arg], ..LeaseOptions::cpus(1.0) };
        let mut d = node.driver();
        let lease = d.request_lease(&opts).expect("granted once the argument is back in memory");
        // Checked before any get (a get would restore it too).
        assert!(restored(&node) > restored_before, "the lease's fetch restored its argument");
        let state = objects_of(&node).unwrap().into_iter().find(|o| o.object_id == arg.to_vec()).map(|o| o.state);
        assert!(state.as_deref().is_some_and(|s| s != "SPILLED"), "in memory at grant time: {state:?}");
        // `put` released the object, so only the lease holds it (a get's reference would be
        // released asynchronously, hence the delete first; the delete is then deferred).
        assert_eq!(
            store.delete(&[arg]).unwrap(),
            vec![raylet::local::codec::StoreError::ObjectInUse],
            "the granted lease pins its restored argument"
        );
        let want = &objects.iter().find(|(id, _)| *id == arg).unwrap().1;
        let v = store.get(&[arg], Some(T)).unwrap();
        assert!(v[0].as_ref().is_some_and(|got| got[..] == want[..]), "the restored argument is intact");
        drop(v);
        d.return_worker(&lease).unwrap();
        wait_for("the deferred delete once the lease released its argument", T, || {
            Ok((!store.contains(&arg).map_err(|e| e.to_string())?).then_some(()))
        });
        wait_node_idle(&node, T);
    });
}
