//! Scheduling-plane RPCs called directly, with good and bad input: resource reports and
//! broadcasts, backlog reports, bundle 2PC on one raylet, agent registration, and the
//! GCS placement-group service's validation.

mod common;
mod sched_support;

use prost::Message;
use raylet::client::{LeaseOptions, LocalClient, PlacementGroups, PlacementStrategy};
use raylet::ids::{PlacementGroupId, WorkerId};
use raylet::rpc::RpcError;
use raylet::wire::rpc::*;
use sched_support::*;
use std::net::SocketAddr;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn nm<Q: Message, R: Message + Default>(node: &Node, method: u16, req: &Q) -> Result<R, RpcError> {
    node.driver().call(node.node_manager, node_manager_service::SERVICE_ID, method, req)
}

fn report(node: &Node) -> ResourcesData {
    let r: RequestResourceReportReply =
        nm(node, node_manager_service::method::REQUEST_RESOURCE_REPORT, &RequestResourceReportRequest {}).unwrap();
    r.resources.expect("a report")
}

fn broadcast(node: &Node, seq: i64, data: Vec<ResourcesData>) -> Result<UpdateResourceUsageReply, RpcError> {
    let batch = ResourceUsageBroadcastData {
        seq_no: seq,
        batch: data.into_iter().map(|d| ResourceUpdate { update: Some(resource_update::Update::Data(d)) }).collect(),
    };
    let req = UpdateResourceUsageRequest { serialized_resource_usage_batch: batch.encode_to_vec() };
    nm(node, node_manager_service::method::UPDATE_RESOURCE_USAGE, &req)
}

#[test]
fn the_resource_report_carries_totals_availability_and_load() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "2", "--resources", r#"{"accel": 3}"#]);
        let r = report(&node);
        assert_eq!(r.node_id, raylet::ids::NodeId::from_hex(&node.node_id).unwrap().to_vec());
        assert_eq!((r.resources_total["CPU"], r.resources_total["accel"]), (2.0, 3.0));
        assert_eq!(r.resources_available, r.resources_total);
        assert_eq!(r.node_manager_address, node.node_manager.to_string());
        let mut d = node.driver();
        let lease = d.request_lease(&LeaseOptions::cpus(2.0)).unwrap();
        let addr = node.node_manager;
        let mut d2 = node.driver();
        let id = raylet::ids::LeaseId::random();
        let queued = std::thread::spawn(move || d2.request_lease_at(addr, id, &LeaseOptions::cpus(1.0), false));
        wait_for("the queued lease in the load", T, || {
            let r = report(&node);
            let load = r.resource_load_by_shape.unwrap_or_default();
            Ok(load
                .resource_demands
                .iter()
                .any(|d| d.shape.get("CPU") == Some(&1.0) && d.num_ready_requests_queued == 1)
                .then_some(()))
        });
        assert_eq!(report(&node).resources_available.get("CPU"), None);
        assert!(node.driver().cancel_lease(addr, id).unwrap());
        let _ = queued.join();
        d.return_worker(&lease).unwrap();
    });
}

#[test]
fn broadcasts_never_overwrite_the_local_view_and_stale_ones_are_dropped() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "2", "--gcs-resource-poll-period-ms", "600000"]);
        let mut mine = report(&node);
        mine.resources_available.insert("CPU".into(), 0.0);
        mine.resources_total.insert("CPU".into(), 0.0);
        broadcast(&node, 1_000_000, vec![mine]).expect("accepted");
        let s = node.stats().unwrap();
        assert_eq!(s.resources_available["CPU"], 2.0, "the local view is authoritative");
        let mut d = node.driver();
        let lease = d.request_lease(&LeaseOptions::cpus(2.0)).expect("still leasable");
        d.return_worker(&lease).unwrap();
        assert!(broadcast(&node, 5, vec![]).is_ok(), "an old batch is acknowledged and dropped");
        let bad = UpdateResourceUsageRequest { serialized_resource_usage_batch: vec![0xff, 0x01, 0x02] };
        let r: Result<UpdateResourceUsageReply, _> =
            nm(&node, node_manager_service::method::UPDATE_RESOURCE_USAGE, &bad);
        assert!(matches!(r, Err(RpcError::Status(_))), "{r:?}");
        let mut negative = report(&node);
        negative.resources_available.insert("CPU".into(), -3.0);
        assert!(matches!(broadcast(&node, 2_000_000, vec![negative]), Err(RpcError::Status(_))));
    });
}

#[test]
fn backlog_reports_show_in_the_load_and_are_validated() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "2"]);
        let driver = LocalClient::connect_driver(&node.socket).unwrap();
        let me = driver.worker_id();
        let spec =
            LeaseSpec { required_resources: [("CPU".to_string(), 1.0)].into_iter().collect(), ..Default::default() };
        let req = |id: WorkerId, reports: Vec<WorkerBacklogReport>| ReportWorkerBacklogRequest {
            worker_id: id.to_vec(),
            backlog_reports: reports,
        };
        let one = WorkerBacklogReport { lease_spec: Some(spec.clone()), backlog_size: 5 };
        let m = node_manager_service::method::REPORT_WORKER_BACKLOG;
        let _: ReportWorkerBacklogReply = nm(&node, m, &req(me, vec![one.clone()])).unwrap();
        let backlog = |r: ResourcesData| {
            r.resource_load_by_shape.unwrap_or_default().resource_demands.iter().map(|d| d.backlog_size).sum::<i64>()
        };
        assert_eq!(backlog(report(&node)), 5);
        let _: ReportWorkerBacklogReply = nm(&node, m, &req(WorkerId::random(), vec![one.clone()])).unwrap();
        assert_eq!(backlog(report(&node)), 5, "reports from unregistered workers are ignored");
        let dup: Result<ReportWorkerBacklogReply, _> = nm(&node, m, &req(me, vec![one.clone(), one]));
        assert!(matches!(dup, Err(RpcError::Status(_))), "a class named twice is refused");
        let negative = WorkerBacklogReport { lease_spec: Some(spec), backlog_size: -1 };
        assert!(matches!(
            nm::<_, ReportWorkerBacklogReply>(&node, m, &req(me, vec![negative])),
            Err(RpcError::Status(_))
        ));
        let _: ReportWorkerBacklogReply = nm(&node, m, &req(me, vec![])).unwrap();
        assert_eq!(backlog(report(&node)), 0, "an empty report replaces the old one");
        drop(driver);
    });
}

fn bundle(pg: PlacementGroupId, index: i64, cpus: f64) -> Bundle {
    Bundle {
        bundle_id: Some(BundleId { placement_group_id: pg.to_vec(), bundle_index: index }),
        unit_resources: [("CPU".to_string(), cpus)].into_iter().collect(),
        node_id: Vec::new(),
    }
}

#[test]
fn bundle_two_phase_commit_on_one_raylet_is_all_or_nothing() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "2", "--gcs-resource-poll-period-ms", "600000"]);
        let pg = PlacementGroupId::random();
        let prep = node_manager_service::method::PREPARE_BUNDLE_RESOURCES;
        let too_big = PrepareBundleResourcesRequest { bundle_specs: vec![bundle(pg, 0, 1.0), bundle(pg, 1, 5.0)] };
        let r: PrepareBundleResourcesReply = nm(&node, prep, &too_big).unwrap();
        assert!(!r.success);
        assert_eq!(node.stats().unwrap().resources_available["CPU"], 2.0, "nothing stays reserved");
        let ok = PrepareBundleResourcesRequest { bundle_specs: vec![bundle(pg, 0, 1.0), bundle(pg, 1, 1.0)] };
        assert!(nm::<_, PrepareBundleResourcesReply>(&node, prep, &ok).unwrap().success);
        let commit = CommitBundleResourcesRequest { bundle_specs: ok.bundle_specs.clone() };
        let _: CommitBundleResourcesReply =
            nm(&node, node_manager_service::method::COMMIT_BUNDLE_RESOURCES, &commit).unwrap();
        let s = node.stats().unwrap();
        assert_eq!(s.resources_total[&format!("CPU_group_{}", pg.hex())], 2.0);
        assert_eq!(s.resources_total[&format!("bundle_group_0_{}", pg.hex())], 1000.0);
        let keep = ReleaseUnusedBundlesRequest { bundles_in_use: vec![bundle(pg, 1, 1.0)] };
        let _: ReleaseUnusedBundlesReply =
            nm(&node, node_manager_service::method::RELEASE_UNUSED_BUNDLES, &keep).unwrap();
        let s = node.stats().unwrap();
        assert!(!s.resources_total.contains_key(&format!("CPU_group_0_{}", pg.hex())));
        assert_eq!(s.resources_available["CPU"], 1.0);
        let cancel = CancelResourceReserveRequest { bundle_spec: Some(bundle(pg, 1, 1.0)) };
        let _: CancelResourceReserveReply =
            nm(&node, node_manager_service::method::CANCEL_RESOURCE_RESERVE, &cancel).unwrap();
        let _: CancelResourceReserveReply =
            nm(&node, node_manager_service::method::CANCEL_RESOURCE_RESERVE, &cancel).unwrap();
        wait_node_idle(&node, T);
        assert_eq!(node.stats().unwrap().resources_total.len(), 2, "only CPU and object_store_memory remain");
        let bad = PrepareBundleResourcesRequest { bundle_specs: vec![bundle(pg, -4, 1.0)] };
        assert!(nm::<_, PrepareBundleResourcesReply>(&node, prep, &bad).is_err());
        let formatted = PrepareBundleResourcesRequest {
            bundle_specs: vec![Bundle {
                unit_resources: [(format!("CPU_group_{}", pg.hex()), 1.0)].into_iter().collect(),
                ..bundle(pg, 0, 1.0)
            }],
        };
        assert!(nm::<_, PrepareBundleResourcesReply>(&node, prep, &formatted).is_err());
    });
}

#[test]
fn an_agent_with_an_unknown_id_is_refused() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "1"]);
        let req =
            RegisterAgentRequest { agent_pid: 1, agent_port: 1, agent_ip_address: "127.0.0.1".into(), agent_id: 99 };
        let r: RegisterAgentReply = node
            .driver()
            .call(
                node.node_manager,
                agent_manager_service::SERVICE_ID,
                agent_manager_service::method::REGISTER_AGENT,
                &req,
            )
            .unwrap();
        assert!(!r.success);
        assert!(node.stats().unwrap().agent.is_none(), "no agent is configured");
    });
}

#[test]
fn the_placement_group_service_refuses_bad_groups() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "1"]);
        let gcs: SocketAddr = node.gcs;
        let mut pgs = PlacementGroups::new(gcs, node.token.clone());
        assert!(pgs.create(PlacementStrategy::Pack, &[]).is_err(), "no bundles");
        assert!(pgs.create(PlacementStrategy::Pack, &[vec![]]).is_err(), "an empty bundle");
        assert!(pgs.create(PlacementStrategy::Pack, &[vec![("CPU".into(), -1.0)]]).is_err(), "a negative amount");
        assert!(pgs.remove(PlacementGroupId::random()).is_err(), "an unknown group");
        assert_eq!(pgs.get(PlacementGroupId::random()).unwrap(), None);
        let mut d = node.driver();
        let req = CreatePlacementGroupRequest {
            placement_group_spec: Some(PlacementGroupSpec { placement_group_id: vec![1, 2, 3], ..Default::default() }),
        };
        let r: Result<CreatePlacementGroupReply, _> = d.call(
            gcs,
            placement_group_info_gcs_service::SERVICE_ID,
            placement_group_info_gcs_service::method::CREATE_PLACEMENT_GROUP,
            &req,
        );
        assert!(matches!(r, Err(RpcError::Status(_))), "a short id");
        let infeasible = pgs.create(PlacementStrategy::StrictPack, &[vec![("CPU".into(), 64.0)]]).unwrap();
        let r = pgs.wait_ready(infeasible, Duration::from_millis(300));
        assert!(matches!(&r, Err(RpcError::Status(s)) if s.message.contains("infeasible")), "{r:?}");
        pgs.remove(infeasible).unwrap();
        assert!(pgs.wait_ready(infeasible, Duration::from_secs(1)).is_err(), "a removed group never becomes ready");
        wait_all_available(&node, 1, T);
    });
}

#[test]
fn the_resource_report_says_when_pulls_wait_for_admission() {
    use raylet::ids::ObjectId;
    use raylet::shard::route::owner_of_object;
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "1"]);
        assert!(!report(&node).object_pulls_queued);
        // Two waits for objects nobody has, owned by the same shard (one pull queue): the
        // first bundle is admitted anyway, the second (size unknown) waits for admission.
        let first = ObjectId::random();
        let second = loop {
            let id = ObjectId::random();
            if owner_of_object(&id, 2) == owner_of_object(&first, 2) {
                break id;
            }
        };
        let waits: Vec<_> = [first, second]
            .into_iter()
            .map(|id| {
                let socket = node.socket.clone();
                std::thread::spawn(move || {
                    let mut c = LocalClient::connect_driver(&socket).unwrap();
                    c.wait(&[id], 1, Some(Duration::from_secs(4)))
                })
            })
            .collect();
        wait_for("a pull waiting for admission in the report", T, || {
            Ok(report(&node).object_pulls_queued.then_some(()))
        });
        for w in waits {
            let (ready, _) = w.join().unwrap().expect("wait");
            assert!(ready.is_empty());
        }
        wait_for("no pull waiting once the waits ended", T, || Ok((!report(&node).object_pulls_queued).then_some(())));
    });
}
