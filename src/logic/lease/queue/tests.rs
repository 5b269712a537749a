//! One test per edge of the lease-queue state diagram, plus class and view behaviour.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::*;
use crate::ids::{JobId, ObjectId};
use crate::logic::lease::testkit::{lid, nid, rs, wid};
use crate::logic::resources::{GPU, MEMORY};

fn pg(i: u8) -> PlacementGroupId {
    PlacementGroupId([i; PlacementGroupId::LEN])
}

const LOCAL: u8 = 1;

/// A queue on node 1 with `res`, policy defaults, seed 7.
fn queue(res: &[(&str, f64)]) -> LeaseQueue {
    LeaseQueue::new(nid(LOCAL), NodeResources::new(&rs(res), &[GPU]), QueueConfig::default(), 7)
}

fn req(n: u32, res: &[(&str, f64)]) -> LeaseRequest {
    LeaseRequest {
        id: lid(n),
        job: JobId([0, 0, 0, 1]),
        owner: None,
        owner_node: None,
        resources: rs(res),
        strategy: Strategy::Default,
        bundle: None,
        grant_or_reject: false,
        conn: None,
        deps: Vec::new(),
    }
}

fn drain(q: &mut LeaseQueue) -> Vec<LeaseAction> {
    std::iter::from_fn(|| q.poll_action()).collect()
}

fn pop(n: u32) -> LeaseAction {
    LeaseAction::PopWorker { lease: lid(n), job: JobId([0, 0, 0, 1]) }
}

fn spill(n: u32, node: u8) -> LeaseAction {
    LeaseAction::Decided { lease: lid(n), decision: LeaseDecision::Spillback { node: nid(node) } }
}

fn cancelled(n: u32, reason: CancelReason) -> LeaseAction {
    LeaseAction::Decided { lease: lid(n), decision: LeaseDecision::Cancelled { reason } }
}

/// Requests lease `n` and hands it worker `w`; returns the grant's allocation.
fn grant(q: &mut LeaseQueue, t: Instant, n: u32, w: u32, res: &[(&str, f64)]) -> Allocation {
    q.handle_request(t, req(n, res));
    assert_eq!(drain(q), vec![pop(n)]);
    q.handle_worker_assigned(lid(n), wid(w));
    match drain(q).as_slice() {
        [LeaseAction::Decided { lease, decision: LeaseDecision::Grant { worker, allocation } }]
            if *lease == lid(n) && *worker == wid(w) =>
        {
            allocation.clone()
        }
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn available(q: &LeaseQueue, name: &str) -> f64 {
    q.resources().available().get(name).to_f64()
}

fn remote(total: &[(&str, f64)], free: &[(&str, f64)]) -> NodeView {
    let mut v = NodeView::new(rs(total));
    v.available = rs(free);
    v
}

#[test]
fn local_request_allocates_pops_and_grants_with_instance_mapping() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 4.0), (GPU, 2.0)]);
    let alloc = grant(&mut q, t, 1, 9, &[(CPU, 1.0), (GPU, 1.0)]);
    assert_eq!(alloc.instance_mapping(), vec![("CPU".into(), vec![(0, 1.0)]), ("GPU".into(), vec![(0, 1.0)])]);
    assert_eq!((available(&q, CPU), available(&q, GPU)), (3.0, 1.0));
    assert_eq!(q.lease_of_worker(wid(9)), Some(lid(1)));
    assert_eq!((q.num_granted(), q.num_pending()), (1, 0));
}

#[test]
fn repeat_while_pending_joins_without_a_second_pop() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 4.0)]);
    q.handle_request(t, req(1, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![pop(1)]);
    q.handle_request(t, req(1, &[(CPU, 1.0)]));
    assert!(drain(&mut q).is_empty());
    assert_eq!(available(&q, CPU), 3.0, "allocated once");
}

#[test]
fn repeat_of_a_granted_lease_re_replies_with_the_same_worker() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 4.0)]);
    let alloc = grant(&mut q, t, 1, 9, &[(CPU, 1.0)]);
    q.handle_request(t, req(1, &[(CPU, 1.0)]));
    assert_eq!(
        drain(&mut q),
        vec![LeaseAction::Decided {
            lease: lid(1),
            decision: LeaseDecision::Grant { worker: wid(9), allocation: alloc }
        }]
    );
    assert_eq!(available(&q, CPU), 3.0);
}

#[test]
fn cancel_before_request_leaves_a_tombstone_that_wins() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 4.0)]);
    assert!(!q.handle_cancel(t, lid(1)), "nothing was waiting");
    q.handle_request(t, req(1, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![cancelled(1, CancelReason::Intended)]);
    assert_eq!(available(&q, CPU), 4.0);
}

#[test]
fn tombstones_expire_after_their_ttl() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 4.0)]);
    q.handle_cancel(t, lid(1));
    q.handle_request(t + Duration::from_secs(601), req(1, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![pop(1)]);
}

#[test]
fn oldest_tombstones_go_first_past_the_cap() {
    let t = Instant::now();
    let cfg = QueueConfig { max_tombstones: 2, ..Default::default() };
    let mut q = LeaseQueue::new(nid(LOCAL), NodeResources::new(&rs(&[(CPU, 4.0)]), &[]), cfg, 1);
    for n in 1..=3 {
        q.handle_cancel(t, lid(n));
    }
    q.handle_request(t, req(1, &[(CPU, 1.0)]));
    q.handle_request(t, req(3, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![pop(1), cancelled(3, CancelReason::Intended)]);
}

#[test]
fn cancel_of_a_queued_lease_answers_cancelled_and_leaves_a_tombstone() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    grant(&mut q, t, 1, 9, &[(CPU, 1.0)]);
    q.handle_request(t, req(2, &[(CPU, 1.0)]));
    assert!(drain(&mut q).is_empty(), "waits for resources");
    assert!(q.handle_cancel(t, lid(2)));
    assert_eq!(drain(&mut q), vec![cancelled(2, CancelReason::Intended)]);
    q.handle_request(t, req(2, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![cancelled(2, CancelReason::Intended)], "a retry stays cancelled");
    assert_eq!(q.num_pending(), 0);
}

#[test]
fn cancel_while_waiting_for_a_worker_frees_resources_and_cancels_the_pop() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0)]);
    q.handle_request(t, req(1, &[(CPU, 2.0)]));
    assert_eq!(drain(&mut q), vec![pop(1)]);
    assert_eq!(available(&q, CPU), 0.0);
    assert!(q.handle_cancel(t, lid(1)));
    assert_eq!(drain(&mut q), vec![LeaseAction::CancelPop { lease: lid(1) }, cancelled(1, CancelReason::Intended)]);
    assert_eq!(available(&q, CPU), 2.0);
}

#[test]
fn cancel_of_a_granted_lease_is_refused() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0)]);
    grant(&mut q, t, 1, 9, &[(CPU, 1.0)]);
    assert!(!q.handle_cancel(t, lid(1)));
    assert!(drain(&mut q).is_empty());
    assert_eq!(q.lease_of_worker(wid(9)), Some(lid(1)));
}

#[test]
fn a_worker_arriving_after_cancel_is_released() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0)]);
    q.handle_request(t, req(1, &[(CPU, 1.0)]));
    q.handle_cancel(t, lid(1));
    drain(&mut q);
    q.handle_worker_assigned(lid(1), wid(9));
    assert_eq!(drain(&mut q), vec![LeaseAction::ReleaseWorker { worker: wid(9) }]);
    q.handle_worker_assigned(lid(77), wid(8));
    assert_eq!(drain(&mut q), vec![LeaseAction::ReleaseWorker { worker: wid(8) }], "unknown lease");
}

#[test]
fn a_second_assignment_to_a_granted_lease_is_released() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0)]);
    grant(&mut q, t, 1, 9, &[(CPU, 1.0)]);
    q.handle_worker_assigned(lid(1), wid(8));
    assert_eq!(drain(&mut q), vec![LeaseAction::ReleaseWorker { worker: wid(8) }]);
    assert_eq!(q.lease_of_worker(wid(9)), Some(lid(1)));
}

#[test]
fn return_frees_resources_and_dispatches_the_next_waiting_lease() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    grant(&mut q, t, 1, 9, &[(CPU, 1.0)]);
    q.handle_request(t, req(2, &[(CPU, 1.0)]));
    assert!(drain(&mut q).is_empty());
    assert_eq!(q.handle_return(wid(9)), Ok(lid(1)));
    assert_eq!(drain(&mut q), vec![pop(2)]);
    assert_eq!(q.lease_of_worker(wid(9)), None);
}

#[test]
fn return_of_an_unknown_worker_is_an_error() {
    let mut q = queue(&[(CPU, 1.0)]);
    assert_eq!(q.handle_return(wid(5)), Err(LeaseError::UnknownWorker(wid(5))));
}

#[test]
fn a_lost_lease_returns_its_resources() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0)]);
    grant(&mut q, t, 1, 9, &[(CPU, 2.0)]);
    q.handle_lease_lost(lid(1));
    assert_eq!(available(&q, CPU), 2.0);
    assert_eq!(q.lease_of_worker(wid(9)), None);
    q.handle_lease_lost(lid(1));
    assert_eq!(available(&q, CPU), 2.0, "a second loss is ignored");
}

#[test]
fn a_lost_lease_that_was_never_granted_is_ignored() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0)]);
    q.handle_request(t, req(1, &[(CPU, 1.0)]));
    drain(&mut q);
    q.handle_lease_lost(lid(1));
    assert_eq!(available(&q, CPU), 1.0, "still waiting for its worker");
}

#[test]
fn infeasible_requests_wait_are_reported_and_cancellable() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0)]);
    q.handle_request(t, req(1, &[(CPU, 64.0)]));
    assert_eq!(drain(&mut q), vec![LeaseAction::Infeasible { lease: lid(1) }]);
    q.handle_request(t, req(2, &[(CPU, 64.0)]));
    assert_eq!(drain(&mut q), vec![LeaseAction::Infeasible { lease: lid(2) }], "joins the infeasible class");
    assert_eq!((q.num_infeasible(), q.num_pending()), (2, 0));
    assert_eq!(q.load(), vec![ClassLoad { shape: rs(&[(CPU, 64.0)]), ready: 0, infeasible: 2 }]);
    assert!(q.handle_cancel(t, lid(1)));
    assert_eq!(drain(&mut q), vec![cancelled(1, CancelReason::Intended)]);
    assert_eq!(q.num_infeasible(), 1);
}

#[test]
fn infeasible_class_is_rechecked_and_spills_when_a_big_node_joins() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0)]);
    q.handle_request(t, req(1, &[(CPU, 64.0)]));
    drain(&mut q);
    q.handle_node_update(nid(2), remote(&[(CPU, 128.0)], &[(CPU, 128.0)]));
    assert_eq!(drain(&mut q), vec![spill(1, 2)]);
    assert_eq!(q.num_infeasible(), 0);
}

#[test]
fn spillback_subtracts_from_the_remote_view_so_requests_do_not_pile_on() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    q.handle_node_update(nid(2), remote(&[(CPU, 1.0)], &[(CPU, 1.0)]));
    grant(&mut q, t, 1, 9, &[(CPU, 1.0)]);
    q.handle_request(t, req(2, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![spill(2, 2)]);
    q.handle_request(t, req(3, &[(CPU, 1.0)]));
    assert!(drain(&mut q).is_empty(), "node 2 is full in our view now; queue locally");
    assert_eq!(q.num_pending(), 1);
}

#[test]
fn grant_or_reject_is_rejected_instead_of_spilled() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    q.handle_node_update(nid(2), remote(&[(CPU, 4.0)], &[(CPU, 4.0)]));
    grant(&mut q, t, 1, 9, &[(CPU, 1.0)]);
    let mut r = req(2, &[(CPU, 1.0)]);
    r.grant_or_reject = true;
    q.handle_request(t, r);
    assert_eq!(drain(&mut q), vec![LeaseAction::Decided { lease: lid(2), decision: LeaseDecision::Reject }]);
    assert_eq!(q.num_pending(), 0);
}

#[test]
fn a_blocked_class_does_not_block_another_class() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0), ("accel", 1.0)]);
    grant(&mut q, t, 1, 9, &[(CPU, 2.0)]);
    q.handle_request(t, req(2, &[(CPU, 2.0)]));
    assert!(drain(&mut q).is_empty());
    q.handle_request(t, req(3, &[("accel", 1.0)]));
    assert_eq!(drain(&mut q), vec![pop(3)], "other shape dispatches past the blocked one");
    assert_eq!(q.load().iter().map(|l| l.ready).sum::<usize>(), 2);
}

#[test]
fn a_class_is_served_in_arrival_order() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    grant(&mut q, t, 1, 9, &[(CPU, 1.0)]);
    q.handle_request(t, req(2, &[(CPU, 1.0)]));
    q.handle_request(t, req(3, &[(CPU, 1.0)]));
    drain(&mut q);
    q.handle_return(wid(9)).unwrap();
    assert_eq!(drain(&mut q), vec![pop(2)]);
}

#[test]
fn hard_affinity_to_an_unknown_node_is_cancelled_unschedulable() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    let mut r = req(1, &[(CPU, 1.0)]);
    r.strategy = Strategy::NodeAffinity { node: nid(9), soft: false };
    q.handle_request(t, r);
    assert_eq!(drain(&mut q), vec![cancelled(1, CancelReason::Unschedulable)]);
}

#[test]
fn hard_affinity_to_a_remote_node_spills_there_even_when_local_is_free() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 4.0)]);
    q.handle_node_update(nid(2), remote(&[(CPU, 1.0)], &[(CPU, 1.0)]));
    let mut r = req(1, &[(CPU, 1.0)]);
    r.strategy = Strategy::NodeAffinity { node: nid(2), soft: false };
    q.handle_request(t, r);
    assert_eq!(drain(&mut q), vec![spill(1, 2)]);
}

#[test]
fn soft_affinity_to_an_unknown_node_runs_locally() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    let mut r = req(1, &[(CPU, 1.0)]);
    r.strategy = Strategy::NodeAffinity { node: nid(9), soft: true };
    q.handle_request(t, r);
    assert_eq!(drain(&mut q), vec![pop(1)]);
}

fn bundle_req(n: u32, p: u8, res: &[(&str, f64)]) -> LeaseRequest {
    let mut r = req(n, res);
    r.bundle = Some(BundleKey { pg: pg(p), index: 0 });
    r
}

#[test]
fn removing_a_placement_group_cancels_its_waiting_leases_and_revokes_granted_ones() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0)]);
    q.handle_request(t, bundle_req(1, 5, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![pop(1)]);
    q.handle_worker_assigned(lid(1), wid(9));
    drain(&mut q);
    q.handle_request(t, bundle_req(2, 5, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![pop(2)]);
    q.handle_request(t, bundle_req(3, 6, &[(CPU, 1.0)]));
    drain(&mut q);
    q.handle_cancel_placement_group(pg(5));
    let got = drain(&mut q);
    assert!(got.contains(&LeaseAction::DestroyWorker { lease: lid(1), worker: wid(9) }), "{got:?}");
    assert!(got.contains(&LeaseAction::CancelPop { lease: lid(2) }), "{got:?}");
    assert!(got.contains(&cancelled(2, CancelReason::PlacementGroupRemoved)), "{got:?}");
    assert!(got.contains(&pop(3)), "the freed CPU dispatches the other group's lease: {got:?}");
    assert_eq!(q.lease_of_worker(wid(9)), None);
}

#[test]
fn releasing_unused_bundles_revokes_leases_outside_the_in_use_set() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0)]);
    q.handle_request(t, bundle_req(1, 5, &[(CPU, 1.0)]));
    drain(&mut q);
    q.handle_worker_assigned(lid(1), wid(9));
    q.handle_request(t, bundle_req(2, 6, &[(CPU, 1.0)]));
    drain(&mut q);
    q.handle_worker_assigned(lid(2), wid(8));
    drain(&mut q);
    let keep: BTreeSet<BundleKey> = [BundleKey { pg: pg(6), index: 0 }].into_iter().collect();
    q.handle_release_unused_bundles(&keep);
    assert_eq!(drain(&mut q), vec![LeaseAction::DestroyWorker { lease: lid(1), worker: wid(9) }]);
    assert_eq!(q.lease_of_worker(wid(8)), Some(lid(2)));
    assert_eq!(available(&q, CPU), 1.0);
}

#[test]
fn an_owner_going_away_cancels_and_revokes_its_leases() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    let mut r1 = req(1, &[(CPU, 1.0)]);
    r1.owner = Some(wid(100));
    q.handle_request(t, r1);
    drain(&mut q);
    q.handle_worker_assigned(lid(1), wid(9));
    let mut r2 = req(2, &[(CPU, 1.0)]);
    r2.owner = Some(wid(100));
    q.handle_request(t, r2);
    drain(&mut q);
    q.handle_owner_gone(wid(100));
    let got = drain(&mut q);
    assert_eq!(
        got,
        vec![LeaseAction::DestroyWorker { lease: lid(1), worker: wid(9) }, cancelled(2, CancelReason::Intended)]
    );
    assert_eq!(available(&q, CPU), 1.0);
}

#[test]
fn a_closed_connection_cancels_and_revokes_only_its_leases() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0)]);
    let (mine, other) = (LesseeConn { shard: 0, conn: 1 }, LesseeConn { shard: 1, conn: 1 });
    for (id, conn) in [(1, mine), (2, other), (3, mine)] {
        let mut r = req(id, &[(CPU, 1.0)]);
        r.conn = Some(conn);
        q.handle_request(t, r);
    }
    drain(&mut q);
    q.handle_worker_assigned(lid(1), wid(9));
    q.handle_worker_assigned(lid(2), wid(8));
    drain(&mut q);
    // Lease 1 is granted, lease 3 still waits for a CPU; lease 2 is another connection's.
    q.handle_conn_closed(mine);
    assert_eq!(
        drain(&mut q),
        vec![LeaseAction::DestroyWorker { lease: lid(1), worker: wid(9) }, cancelled(3, CancelReason::Intended)]
    );
    assert_eq!(q.lease_of_worker(wid(8)), Some(lid(2)));
    assert_eq!(available(&q, CPU), 1.0);
}

#[test]
fn the_local_view_is_never_overwritten_from_outside() {
    let mut q = queue(&[(CPU, 4.0)]);
    q.handle_node_update(nid(LOCAL), remote(&[(CPU, 1.0)], &[]));
    assert_eq!(q.view().nodes[&nid(LOCAL)].total, rs(&[(CPU, 4.0)]));
    q.handle_node_dead(nid(LOCAL));
    assert!(q.view().nodes.contains_key(&nid(LOCAL)));
}

#[test]
fn a_removed_node_is_not_chosen_again() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    q.handle_node_update(nid(2), remote(&[(CPU, 8.0)], &[(CPU, 8.0)]));
    q.handle_node_dead(nid(2));
    q.handle_request(t, req(1, &[(CPU, 8.0)]));
    assert_eq!(drain(&mut q), vec![LeaseAction::Infeasible { lease: lid(1) }]);
}

#[test]
fn committed_resources_dispatch_waiting_bundle_leases() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 2.0), (MEMORY, 10.0)]);
    q.handle_request(t, req(1, &[("CPU_group_0_x", 1.0)]));
    assert_eq!(drain(&mut q), vec![LeaseAction::Infeasible { lease: lid(1) }]);
    q.resources_mut()
        .add_capacity("CPU_group_0_x", crate::logic::resources::Capacity::Amount(FixedPoint::ONE))
        .unwrap();
    q.handle_resources_changed();
    assert_eq!(drain(&mut q), vec![pop(1)]);
}

#[test]
fn spread_leases_round_robin_over_nodes() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 4.0)]);
    q.handle_node_update(nid(2), remote(&[(CPU, 4.0)], &[(CPU, 4.0)]));
    let mut placed = Vec::new();
    for n in 1..=4 {
        let mut r = req(n, &[(CPU, 1.0)]);
        r.strategy = Strategy::Spread;
        q.handle_request(t, r);
        placed.extend(drain(&mut q));
    }
    let spilled = placed
        .iter()
        .filter(|a| matches!(a, LeaseAction::Decided { decision: LeaseDecision::Spillback { .. }, .. }))
        .count();
    let local = placed.iter().filter(|a| matches!(a, LeaseAction::PopWorker { .. })).count();
    assert_eq!((spilled, local), (2, 2), "{placed:?}");
}

#[test]
fn a_dead_node_takes_its_owners_leases_with_it() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    q.handle_node_update(nid(3), remote(&[(CPU, 1.0)], &[]));
    let mut r1 = req(1, &[(CPU, 1.0)]);
    r1.owner_node = Some(nid(3));
    q.handle_request(t, r1);
    drain(&mut q);
    q.handle_worker_assigned(lid(1), wid(9));
    let mut r2 = req(2, &[(CPU, 1.0)]);
    r2.owner_node = Some(nid(3));
    q.handle_request(t, r2);
    q.handle_request(t, req(3, &[(CPU, 1.0)]));
    drain(&mut q);
    q.handle_node_dead(nid(3));
    assert_eq!(
        drain(&mut q),
        vec![
            LeaseAction::DestroyWorker { lease: lid(1), worker: wid(9) },
            cancelled(2, CancelReason::Intended),
            pop(3),
        ]
    );
    assert!(!q.view().nodes.contains_key(&nid(3)));
}

fn args_req(n: u32, deps: &[u8]) -> LeaseRequest {
    let mut r = req(n, &[(CPU, 1.0)]);
    r.deps = deps.iter().map(|d| ObjectId([*d; 28])).collect();
    r
}

fn fetch(n: u32, deps: &[u8]) -> LeaseAction {
    LeaseAction::FetchArgs { lease: lid(n), deps: deps.iter().map(|d| ObjectId([*d; 28])).collect() }
}

fn release_args(n: u32) -> LeaseAction {
    LeaseAction::ReleaseArgs { lease: lid(n) }
}

#[test]
fn a_lease_with_arguments_holds_nothing_until_they_are_here_then_is_granted_and_releases_them_at_the_end() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    q.handle_request(t, args_req(1, &[7, 8]));
    assert_eq!(drain(&mut q), vec![fetch(1, &[7, 8])]);
    // No resources are held while the arguments travel: a lease without any runs first.
    assert_eq!(available(&q, CPU), 1.0);
    assert_eq!(q.num_pending(), 1);
    let a = grant(&mut q, t, 2, 20, &[(CPU, 1.0)]);
    q.handle_args_ready(lid(1));
    assert_eq!(drain(&mut q), vec![], "arguments ready, but no CPU free: it waits");
    q.handle_return(wid(20)).unwrap();
    assert_eq!(drain(&mut q), vec![pop(1)], "the freed CPU goes to the lease whose arguments are here");
    drop(a);
    q.handle_worker_assigned(lid(1), wid(10));
    assert!(matches!(drain(&mut q).as_slice(), [LeaseAction::Decided { decision: LeaseDecision::Grant { .. }, .. }]));
    q.handle_return(wid(10)).unwrap();
    assert_eq!(drain(&mut q), vec![release_args(1)]);
    assert_eq!(available(&q, CPU), 1.0);
}

#[test]
fn cancelling_a_lease_while_its_arguments_travel_or_after_they_came_releases_them() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    q.handle_request(t, args_req(1, &[7]));
    assert_eq!(drain(&mut q), vec![fetch(1, &[7])]);
    assert!(q.handle_cancel(t, lid(1)));
    assert_eq!(drain(&mut q), vec![release_args(1), cancelled(1, CancelReason::Intended)]);
    q.handle_args_ready(lid(1));
    assert_eq!(drain(&mut q), vec![], "a late arrival for a cancelled lease does nothing");
    // Arguments here, waiting for a CPU, then cancelled.
    let _held = grant(&mut q, t, 2, 20, &[(CPU, 1.0)]);
    q.handle_request(t, args_req(3, &[9]));
    assert_eq!(drain(&mut q), vec![fetch(3, &[9])]);
    q.handle_args_ready(lid(3));
    assert_eq!(drain(&mut q), vec![]);
    assert!(q.handle_cancel(t, lid(3)));
    assert_eq!(drain(&mut q), vec![release_args(3), cancelled(3, CancelReason::Intended)]);
    q.handle_return(wid(20)).unwrap();
    assert_eq!(drain(&mut q), vec![]);
    assert_eq!(available(&q, CPU), 1.0);
    assert_eq!(q.num_pending(), 0);
}

#[test]
fn a_lease_with_arguments_placed_on_another_node_fetches_nothing_here() {
    let t = Instant::now();
    let mut q = queue(&[(CPU, 1.0)]);
    q.handle_node_update(nid(2), remote(&[(CPU, 4.0)], &[(CPU, 4.0)]));
    let _held = grant(&mut q, t, 1, 10, &[(CPU, 1.0)]);
    q.handle_request(t, args_req(2, &[7]));
    assert_eq!(drain(&mut q), vec![spill(2, 2)]);
}

#[test]
fn a_request_past_max_leases_is_refused_at_once_and_repeats_still_join() {
    let t = Instant::now();
    let cfg = QueueConfig { max_leases: 2, ..QueueConfig::default() };
    let mut q = LeaseQueue::new(nid(LOCAL), NodeResources::new(&rs(&[(CPU, 1.0)]), &[GPU]), cfg, 7);
    q.handle_request(t, req(1, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![pop(1)]);
    q.handle_request(t, req(2, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![], "queued behind lease 1");
    q.handle_request(t, req(3, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![cancelled(3, CancelReason::QueueFull)]);
    q.handle_request(t, req(2, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![], "a repeat of a held lease joins it, full or not");
    assert!(q.handle_cancel(t, lid(2)));
    drain(&mut q);
    q.handle_request(t, req(3, &[(CPU, 1.0)]));
    assert_eq!(drain(&mut q), vec![], "room again: queued");
}
