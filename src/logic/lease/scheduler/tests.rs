//! The queue, pool and bundle ledger together: each routed edge once.

use std::time::{Duration, Instant};

use super::*;
use crate::ids::PlacementGroupId;
use crate::logic::bundles::{format_indexed, BUNDLE_RESOURCE};
use crate::logic::lease::policy::Strategy;
use crate::logic::lease::queue::{CancelReason, QueueConfig};
use crate::logic::lease::testkit::{lid, nid, rs, wid};
use crate::logic::resources::{NodeResources, CPU, GPU};
use crate::logic::workers::PoolConfig;

const JOB: JobId = JobId([0, 0, 0, 1]);

fn sched(cpus: f64, t: Instant) -> Scheduler {
    let res = NodeResources::new(&rs(&[(CPU, cpus)]), &[GPU]);
    let queue = LeaseQueue::new(nid(1), res, QueueConfig::default(), 3);
    let pool_cfg = PoolConfig { max_startup_concurrency: 4, soft_limit: Some(0), ..Default::default() };
    Scheduler::new(queue, WorkerPool::new(pool_cfg, t, cpus as usize))
}

fn req(n: u32, res: &[(&str, f64)]) -> LeaseRequest {
    LeaseRequest {
        id: lid(n),
        job: JOB,
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

fn drain(s: &mut Scheduler) -> Vec<SchedAction> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn only_start(actions: &[SchedAction]) -> i64 {
    match actions {
        [SchedAction::StartProcess { token }] => *token,
        other => panic!("expected one StartProcess, got {other:?}"),
    }
}

/// Spawn report, registration and port for `token` as worker `w` (pid 1000 + w).
fn bring_up(s: &mut Scheduler, t: Instant, token: i64, w: u32) -> Vec<SchedAction> {
    s.handle_process_started(t, token, 1000 + w);
    s.handle_register(t, token, wid(w), 1000 + w).unwrap();
    s.handle_port_announced(t, wid(w), 7000).unwrap();
    drain(s)
}

fn is_grant(a: &[SchedAction], n: u32, w: u32) -> bool {
    matches!(a, [SchedAction::Reply { lease, decision: LeaseDecision::Grant { worker, .. } }] if *lease == lid(n) && *worker == wid(w))
}

/// A granted lease `n` on a fresh worker `w`.
fn leased(s: &mut Scheduler, t: Instant, n: u32, w: u32, res: &[(&str, f64)]) {
    s.handle_request(t, req(n, res), 0);
    let token = only_start(&drain(s));
    let got = bring_up(s, t, token, w);
    assert!(is_grant(&got, n, w), "{got:?}");
}

fn cpu_free(s: &Scheduler) -> f64 {
    s.queue().resources().available().get(CPU).to_f64()
}

#[test]
fn a_lease_starts_a_worker_and_is_granted_once_it_announces() {
    let t = Instant::now();
    let mut s = sched(2.0, t);
    leased(&mut s, t, 1, 9, &[(CPU, 1.0)]);
    assert_eq!(s.pool().lease_of(wid(9)), Some(lid(1)));
    assert_eq!(cpu_free(&s), 1.0);
}

#[test]
fn a_returned_worker_is_reused_without_a_new_process() {
    let t = Instant::now();
    let mut s = sched(2.0, t);
    leased(&mut s, t, 1, 9, &[(CPU, 1.0)]);
    assert_eq!(s.handle_return(t, wid(9), false, false), Ok(lid(1)));
    assert!(drain(&mut s).is_empty());
    assert_eq!(cpu_free(&s), 2.0);
    s.handle_request(t, req(2, &[(CPU, 1.0)]), 0);
    assert!(is_grant(&drain(&mut s), 2, 9));
}

#[test]
fn returning_with_disconnect_kills_the_worker_gracefully() {
    let t = Instant::now();
    let mut s = sched(2.0, t);
    leased(&mut s, t, 1, 9, &[(CPU, 1.0)]);
    s.handle_return(t, wid(9), true, false).unwrap();
    assert_eq!(drain(&mut s), vec![SchedAction::Kill { pid: 1009, worker: Some(wid(9)), force: false }]);
    assert_eq!(cpu_free(&s), 2.0);
}

#[test]
fn returning_an_unknown_worker_changes_nothing() {
    let t = Instant::now();
    let mut s = sched(2.0, t);
    assert!(matches!(s.handle_return(t, wid(3), false, false), Err(ReturnError::Lease(_))));
    assert!(drain(&mut s).is_empty());
}

#[test]
fn a_leased_worker_dying_returns_its_resources() {
    let t = Instant::now();
    let mut s = sched(2.0, t);
    leased(&mut s, t, 1, 9, &[(CPU, 2.0)]);
    s.handle_exit(t, ExitedProcess::Worker(wid(9)));
    assert!(drain(&mut s).is_empty());
    assert_eq!(cpu_free(&s), 2.0);
    assert!(s.queue().lease_of_worker(wid(9)).is_none());
    assert!(matches!(s.handle_return(t, wid(9), false, false), Err(ReturnError::Lease(_))));
}

#[test]
fn cancel_before_the_worker_arrives_wins_and_the_worker_goes_idle() {
    let t = Instant::now();
    let mut s = sched(2.0, t);
    s.handle_request(t, req(1, &[(CPU, 1.0)]), 0);
    let token = only_start(&drain(&mut s));
    assert!(s.handle_cancel(t, lid(1)));
    assert_eq!(
        drain(&mut s),
        vec![SchedAction::Reply {
            lease: lid(1),
            decision: LeaseDecision::Cancelled { reason: CancelReason::Intended }
        }]
    );
    assert!(bring_up(&mut s, t, token, 9).is_empty(), "no grant after the cancel");
    assert_eq!(s.pool().num_idle(), 1);
    assert_eq!(cpu_free(&s), 2.0);
}

#[test]
fn cancel_after_the_grant_fails_and_the_lease_stays() {
    let t = Instant::now();
    let mut s = sched(2.0, t);
    leased(&mut s, t, 1, 9, &[(CPU, 1.0)]);
    assert!(!s.handle_cancel(t, lid(1)));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.pool().lease_of(wid(9)), Some(lid(1)));
}

#[test]
fn a_worker_that_never_registers_is_killed_and_replaced() {
    let t = Instant::now();
    let mut s = sched(2.0, t);
    s.handle_request(t, req(1, &[(CPU, 1.0)]), 0);
    let token = only_start(&drain(&mut s));
    s.handle_process_started(t, token, 4242);
    let late = t + Duration::from_secs(61);
    assert!(s.poll_timeout().is_some_and(|d| d <= late));
    s.handle_timeout(late);
    let got = drain(&mut s);
    assert_eq!(got[0], SchedAction::Kill { pid: 4242, worker: None, force: false });
    assert!(matches!(got[1], SchedAction::StartProcess { token: t2 } if t2 != token), "{got:?}");
    assert!(s.handle_register(late, token, wid(5), 4242).is_err(), "the old token is dead");
}

#[test]
fn a_registration_with_a_wrong_token_is_refused() {
    let t = Instant::now();
    let mut s = sched(2.0, t);
    assert!(s.handle_register(t, 99, wid(5), 1).is_err());
    assert!(s.handle_register(t, -1, wid(5), 1).is_err());
}

#[test]
fn backlog_prestarts_up_to_available_cpus() {
    let t = Instant::now();
    let mut s = sched(3.0, t);
    s.handle_request(t, req(1, &[(CPU, 1.0)]), 10);
    let starts = drain(&mut s).iter().filter(|a| matches!(a, SchedAction::StartProcess { .. })).count();
    assert_eq!(starts, 2, "1 for the pop, then min(10, 2 free CPUs) - 1 starting");
}

#[test]
fn node_start_prestart_fills_the_idle_pool() {
    let t = Instant::now();
    let mut s = sched(4.0, t);
    s.handle_prestart(t, 3);
    let tokens: Vec<i64> = drain(&mut s)
        .into_iter()
        .filter_map(|a| match a {
            SchedAction::StartProcess { token } => Some(token),
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 3);
    for (i, tok) in tokens.into_iter().enumerate() {
        bring_up(&mut s, t, tok, i as u32 + 1);
    }
    assert_eq!(s.pool().num_idle(), 3);
}

fn spec(p: u8, index: i64, res: &[(&str, f64)]) -> BundleSpec {
    BundleSpec { key: BundleKey { pg: PlacementGroupId([p; 18]), index }, unit_resources: rs(res) }
}

#[test]
fn bundle_leases_run_in_the_bundle_and_cancel_reserve_kills_them_first() {
    let t = Instant::now();
    let mut s = sched(4.0, t);
    let b = spec(7, 0, &[(CPU, 2.0)]);
    assert!(s.handle_prepare_bundles(t, std::slice::from_ref(&b)));
    assert_eq!(cpu_free(&s), 2.0);
    s.handle_commit_bundles(t, std::slice::from_ref(&b));
    let name = format_indexed(CPU, 0, b.key.pg);
    let mut r = req(1, &[(name.as_str(), 1.0), (format_indexed(BUNDLE_RESOURCE, 0, b.key.pg).as_str(), 0.001)]);
    r.bundle = Some(b.key);
    s.handle_request(t, r, 0);
    let token = only_start(&drain(&mut s));
    assert!(is_grant(&bring_up(&mut s, t, token, 9), 1, 9));
    assert!(s.handle_cancel_bundle(t, b.key));
    assert_eq!(drain(&mut s), vec![SchedAction::Kill { pid: 1009, worker: Some(wid(9)), force: true }]);
    assert_eq!(cpu_free(&s), 4.0);
    assert_eq!(s.queue().resources().total(), rs(&[(CPU, 4.0)]), "formatted resources are gone");
    assert!(s.bundles().is_empty());
}

#[test]
fn a_failed_prepare_leaves_nothing_reserved() {
    let t = Instant::now();
    let mut s = sched(4.0, t);
    let bundles = [spec(7, 0, &[(CPU, 3.0)]), spec(7, 1, &[(CPU, 3.0)])];
    assert!(!s.handle_prepare_bundles(t, &bundles));
    assert_eq!(cpu_free(&s), 4.0);
    assert!(s.bundles().is_empty());
}

#[test]
fn release_unused_bundles_returns_what_is_not_in_use() {
    let t = Instant::now();
    let mut s = sched(4.0, t);
    let (a, b) = (spec(7, 0, &[(CPU, 1.0)]), spec(8, 0, &[(CPU, 1.0)]));
    assert!(s.handle_prepare_bundles(t, &[a.clone(), b.clone()]));
    s.handle_commit_bundles(t, &[a.clone(), b.clone()]);
    assert_eq!(s.handle_release_unused_bundles(t, &[b.key]), vec![a.key]);
    assert_eq!(cpu_free(&s), 3.0);
}

#[test]
fn a_driver_leaving_destroys_the_workers_it_leased() {
    let t = Instant::now();
    let mut s = sched(2.0, t);
    s.handle_driver_register(t, JOB, wid(100), 1).unwrap();
    let mut r = req(1, &[(CPU, 1.0)]);
    r.owner = Some(wid(100));
    s.handle_request(t, r, 0);
    let token = only_start(&drain(&mut s));
    assert!(is_grant(&bring_up(&mut s, t, token, 9), 1, 9));
    s.handle_driver_exit(t, wid(100));
    assert_eq!(drain(&mut s), vec![SchedAction::Kill { pid: 1009, worker: Some(wid(9)), force: true }]);
    assert_eq!(cpu_free(&s), 2.0);
}
