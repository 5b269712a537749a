//! Unit tests of the worker pool: one test per documented edge, plus the shared helpers
//! used by the `random` and `reaping` submodules.

use std::time::{Duration, Instant};

use super::*;
use crate::ids::{JobId, LeaseId, WorkerId};

mod random;
mod reaping;

fn wid(n: u32) -> WorkerId {
    let mut b = [0u8; 28];
    b[..4].copy_from_slice(&n.to_be_bytes());
    WorkerId(b)
}

fn lid(n: u32) -> LeaseId {
    let mut b = [0u8; 24];
    b[..4].copy_from_slice(&n.to_be_bytes());
    LeaseId(b)
}

fn job(n: u32) -> JobId {
    JobId(n.to_be_bytes())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(concurrency: usize) -> PoolConfig {
    PoolConfig { max_startup_concurrency: concurrency, soft_limit: Some(0), ..Default::default() }
}

fn pool(concurrency: usize, now: Instant) -> WorkerPool {
    WorkerPool::new(config(concurrency), now, 4)
}

fn drain(p: &mut WorkerPool) -> Vec<Action> {
    let out: Vec<Action> = std::iter::from_fn(|| p.poll_action()).collect();
    p.check_invariants();
    out
}

fn starts(actions: &[Action]) -> Vec<i64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StartProcess { token } => Some(*token),
            _ => None,
        })
        .collect()
}

/// Spawn report, registration and port announcement for `token` as worker `w`.
fn bring_up(p: &mut WorkerPool, now: Instant, token: i64, w: WorkerId) -> Vec<Action> {
    p.handle_process_started(token, 1000 + token as u32);
    p.handle_register(token, w, 1000 + token as u32).unwrap();
    p.handle_port_announced(now, w, 5000).unwrap();
    drain(p)
}

/// A pool built from `cfg` with `n` fresh idle workers `wid(1..=n)`, idled in that order
/// at `now`. The config's startup concurrency must be at least `n`.
fn idle_pool(cfg: PoolConfig, n: u32, now: Instant) -> WorkerPool {
    let mut p = WorkerPool::new(cfg, now, 4);
    p.handle_prestart(now, n as usize, n as usize);
    let tokens = starts(&drain(&mut p));
    assert_eq!(tokens.len(), n as usize);
    for (i, t) in tokens.into_iter().enumerate() {
        assert!(bring_up(&mut p, now, t, wid(i as u32 + 1)).is_empty());
    }
    assert_eq!(p.num_idle(), n as usize);
    p
}

/// [`idle_pool`] with soft limit 0 and startup concurrency `n`.
fn with_idle(n: u32, now: Instant) -> WorkerPool {
    idle_pool(config(n as usize), n, now)
}

#[test]
fn pop_without_idle_starts_a_process_and_assigns_it_once_announced() {
    let t0 = Instant::now();
    let mut p = pool(2, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    assert_eq!(drain(&mut p), vec![Action::StartProcess { token: 1 }]);
    assert_eq!(p.num_starting(), 1);
    p.handle_process_started(1, 77);
    p.handle_register(1, wid(9), 77).unwrap();
    assert!(p.is_registered(wid(9)));
    assert_eq!(p.worker(wid(9)).unwrap().state, WorkerState::Registered);
    assert_eq!(p.num_starting(), 1, "registered but unannounced still holds its slot");
    p.handle_port_announced(t0, wid(9), 6000).unwrap();
    assert_eq!(drain(&mut p), vec![Action::Assign { lease: lid(1), worker: wid(9) }]);
    let info = p.worker(wid(9)).unwrap();
    assert_eq!((info.lease(), info.job, info.port, info.pid), (Some(lid(1)), Some(job(1)), Some(6000), 77));
    assert_eq!((p.lease_of(wid(9)), p.worker_of_lease(lid(1))), (Some(lid(1)), Some(wid(9))));
    assert_eq!((p.num_starting(), p.num_leased(), p.num_pending_pops()), (0, 1, 0));
}

#[test]
fn tokens_are_monotonic_from_one() {
    let t0 = Instant::now();
    let mut p = pool(3, t0);
    p.handle_prestart(t0, 3, 3);
    assert_eq!(starts(&drain(&mut p)), vec![1, 2, 3]);
    let listed: Vec<i64> = p.starting_processes().map(|s| s.token).collect();
    assert_eq!(listed, vec![1, 2, 3]);
}

#[test]
fn registration_with_unknown_token_is_rejected() {
    let t0 = Instant::now();
    let mut p = pool(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    assert_eq!(p.handle_register(0, wid(1), 5), Err(RegisterError::UnknownToken(0)));
    assert_eq!(p.handle_register(2, wid(1), 5), Err(RegisterError::UnknownToken(2)));
    assert_eq!(p.handle_register(-3, wid(1), 5), Err(RegisterError::UnknownToken(-3)));
    assert!(!p.is_registered(wid(1)));
}

#[test]
fn registration_with_reused_token_is_rejected() {
    let t0 = Instant::now();
    let mut p = pool(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    p.handle_register(1, wid(1), 5).unwrap();
    assert_eq!(p.handle_register(1, wid(2), 6), Err(RegisterError::TokenNotPending(1)));
    assert!(!p.is_registered(wid(2)));
}

#[test]
fn registration_with_duplicate_worker_id_is_rejected() {
    let t0 = Instant::now();
    let mut p = pool(2, t0);
    p.handle_prestart(t0, 2, 2);
    drain(&mut p);
    p.handle_register(1, wid(1), 5).unwrap();
    assert_eq!(p.handle_register(2, wid(1), 6), Err(RegisterError::DuplicateWorker(wid(1))));
    p.handle_driver_register(t0, job(1), wid(7), 9).unwrap();
    assert_eq!(p.handle_register(2, wid(7), 6), Err(RegisterError::DuplicateWorker(wid(7))));
    // The token is still pending after the rejected attempts.
    p.handle_register(2, wid(2), 6).unwrap();
}

#[test]
fn startup_concurrency_is_never_exceeded() {
    let t0 = Instant::now();
    let mut p = pool(2, t0);
    for i in 1..=5 {
        p.handle_pop_worker(t0, lid(i), job(1)).unwrap();
    }
    assert_eq!(starts(&drain(&mut p)), vec![1, 2]);
    p.handle_prestart(t0, 10, 10);
    assert!(drain(&mut p).is_empty(), "prestart respects the cap too");
    p.handle_process_started(1, 11);
    p.handle_register(1, wid(1), 11).unwrap();
    assert!(drain(&mut p).is_empty(), "registration alone frees no slot");
    p.handle_port_announced(t0, wid(1), 1).unwrap();
    assert_eq!(
        drain(&mut p),
        vec![Action::Assign { lease: lid(1), worker: wid(1) }, Action::StartProcess { token: 3 }]
    );
    assert_eq!(p.num_starting(), 2);
}

#[test]
fn exit_of_a_starting_process_frees_its_slot_for_a_replacement() {
    let t0 = Instant::now();
    let mut p = pool(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    p.handle_process_started(1, 42);
    p.handle_exit(t0, ExitedProcess::Token(1));
    assert_eq!(drain(&mut p), vec![Action::StartProcess { token: 2 }]);
    assert_eq!(p.handle_register(1, wid(1), 42), Err(RegisterError::TokenNotPending(1)));
}

#[test]
fn exit_of_a_registered_unannounced_worker_frees_its_slot() {
    let t0 = Instant::now();
    let mut p = pool(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    p.handle_register(1, wid(1), 42).unwrap();
    p.handle_exit(t0, ExitedProcess::Worker(wid(1)));
    assert_eq!(drain(&mut p), vec![Action::StartProcess { token: 2 }]);
    assert!(p.worker(wid(1)).is_none());
}

#[test]
fn idle_workers_are_reused_most_recent_first() {
    let t0 = Instant::now();
    let mut p = with_idle(3, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    assert_eq!(drain(&mut p), vec![Action::Assign { lease: lid(1), worker: wid(3) }]);
    p.handle_return(t0 + ms(1), wid(3), false, false).unwrap();
    drain(&mut p);
    // wid(3) idled last again, so it is picked again.
    p.handle_pop_worker(t0 + ms(2), lid(2), job(1)).unwrap();
    assert_eq!(drain(&mut p), vec![Action::Assign { lease: lid(2), worker: wid(3) }]);
    p.handle_pop_worker(t0 + ms(3), lid(3), job(1)).unwrap();
    assert_eq!(drain(&mut p), vec![Action::Assign { lease: lid(3), worker: wid(2) }]);
}

#[test]
fn a_worker_stays_bound_to_the_job_it_ran() {
    let t0 = Instant::now();
    let mut p = with_idle(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    p.handle_return(t0, wid(1), false, false).unwrap();
    drain(&mut p);
    p.handle_pop_worker(t0, lid(2), job(2)).unwrap();
    assert_eq!(drain(&mut p), vec![Action::StartProcess { token: 2 }]);
    assert_eq!(p.num_idle(), 1);
    // A fresh worker takes the other job.
    assert_eq!(bring_up(&mut p, t0, 2, wid(2)), vec![Action::Assign { lease: lid(2), worker: wid(2) }]);
    p.handle_pop_worker(t0, lid(3), job(1)).unwrap();
    assert_eq!(drain(&mut p), vec![Action::Assign { lease: lid(3), worker: wid(1) }]);
}

#[test]
fn a_returned_worker_goes_to_a_waiting_pop_of_its_job() {
    let t0 = Instant::now();
    let mut p = with_idle(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    p.handle_pop_worker(t0, lid(2), job(1)).unwrap();
    assert_eq!(
        drain(&mut p),
        vec![Action::Assign { lease: lid(1), worker: wid(1) }, Action::StartProcess { token: 2 }]
    );
    p.handle_return(t0, wid(1), false, false).unwrap();
    assert_eq!(drain(&mut p), vec![Action::Assign { lease: lid(2), worker: wid(1) }]);
    // The process started for lid(2) arrives to no pop and idles.
    assert!(bring_up(&mut p, t0, 2, wid(2)).is_empty());
    assert_eq!(p.worker(wid(2)).unwrap().state, WorkerState::Idle);
}

#[test]
fn a_cancelled_pop_never_receives_a_worker() {
    let t0 = Instant::now();
    let mut p = pool(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    assert!(p.handle_cancel_pop(lid(1)));
    assert!(!p.handle_cancel_pop(lid(1)));
    assert!(bring_up(&mut p, t0, 1, wid(1)).is_empty());
    assert_eq!(p.worker(wid(1)).unwrap().state, WorkerState::Idle);
    assert_eq!(p.worker_of_lease(lid(1)), None);
}

#[test]
fn cancelling_an_assigned_lease_is_refused() {
    let t0 = Instant::now();
    let mut p = with_idle(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    assert!(!p.handle_cancel_pop(lid(1)));
    assert_eq!(p.lease_of(wid(1)), Some(lid(1)));
}

#[test]
fn a_lease_cannot_pop_twice() {
    let t0 = Instant::now();
    let mut p = with_idle(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    p.handle_pop_worker(t0, lid(2), job(1)).unwrap();
    drain(&mut p);
    for l in [lid(1), lid(2)] {
        assert_eq!(p.handle_pop_worker(t0, l, job(1)), Err(TransitionError::DuplicateLease(l)));
    }
    assert!(drain(&mut p).is_empty());
}

#[test]
fn return_with_kill_or_exiting_kills_the_worker() {
    let t0 = Instant::now();
    for (kill, exiting) in [(true, false), (false, true)] {
        let mut p = with_idle(1, t0);
        p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
        drain(&mut p);
        p.handle_return(t0, wid(1), kill, exiting).unwrap();
        assert_eq!(drain(&mut p), vec![Action::Kill { pid: 1001, worker: Some(wid(1)) }]);
        assert_eq!(p.worker(wid(1)).unwrap().state, WorkerState::Dead);
        assert!(!p.is_registered(wid(1)));
        assert_eq!(p.worker_of_lease(lid(1)), None);
        p.handle_exit(t0, ExitedProcess::Token(1));
        assert!(drain(&mut p).is_empty(), "a returned lease is not lost");
        assert!(p.worker(wid(1)).is_none());
    }
}

#[test]
fn returning_a_worker_that_is_not_leased_is_an_error() {
    let t0 = Instant::now();
    let mut p = with_idle(1, t0);
    assert_eq!(p.handle_return(t0, wid(9), false, false), Err(TransitionError::UnknownWorker(wid(9))));
    assert!(matches!(
        p.handle_return(t0, wid(1), false, false),
        Err(TransitionError::WrongState { state: WorkerState::Idle, .. })
    ));
}

#[test]
fn announcing_twice_or_unregistered_is_an_error() {
    let t0 = Instant::now();
    let mut p = with_idle(1, t0);
    assert!(matches!(
        p.handle_port_announced(t0, wid(1), 1),
        Err(TransitionError::WrongState { state: WorkerState::Idle, .. })
    ));
    assert_eq!(p.handle_port_announced(t0, wid(5), 1), Err(TransitionError::UnknownWorker(wid(5))));
}

#[test]
fn death_of_a_leased_worker_reports_the_lease_lost_exactly_once() {
    let t0 = Instant::now();
    let mut p = with_idle(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    p.handle_exit(t0, ExitedProcess::Worker(wid(1)));
    assert_eq!(drain(&mut p), vec![Action::LeaseLost { lease: lid(1), worker: wid(1) }]);
    p.handle_exit(t0, ExitedProcess::Token(1));
    p.handle_exit(t0, ExitedProcess::Worker(wid(1)));
    assert!(drain(&mut p).is_empty());
    assert_eq!((p.num_leased(), p.worker_of_lease(lid(1))), (0, None));
}

#[test]
fn death_of_an_idle_worker_removes_it_from_the_idle_queue() {
    let t0 = Instant::now();
    let mut p = with_idle(2, t0);
    p.handle_exit(t0, ExitedProcess::Token(2));
    assert!(drain(&mut p).is_empty());
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    assert_eq!(drain(&mut p), vec![Action::Assign { lease: lid(1), worker: wid(1) }]);
}

#[test]
fn a_process_that_never_registers_is_killed_at_the_timeout_and_replaced() {
    let t0 = Instant::now();
    let mut p = pool(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    p.handle_process_started(1, 55);
    let deadline = t0 + Duration::from_secs(60);
    assert_eq!(p.poll_timeout(), Some(t0 + ms(200)), "the reap tick comes first");
    p.handle_timeout(deadline - ms(1));
    assert!(drain(&mut p).is_empty());
    p.handle_timeout(deadline);
    assert_eq!(drain(&mut p), vec![Action::Kill { pid: 55, worker: None }, Action::StartProcess { token: 2 }]);
    assert_eq!(p.handle_register(1, wid(1), 55), Err(RegisterError::TokenNotPending(1)));
    p.handle_exit(deadline, ExitedProcess::Token(1));
    assert!(drain(&mut p).is_empty(), "the exit of a forgotten token changes nothing");
    assert_eq!(p.num_starting(), 1);
}

#[test]
fn a_spawn_reported_after_its_timeout_is_killed() {
    let t0 = Instant::now();
    let mut p = pool(1, t0);
    p.handle_prestart(t0, 1, 1);
    drain(&mut p);
    p.handle_timeout(t0 + Duration::from_secs(60));
    assert!(drain(&mut p).is_empty(), "no pid known yet, nothing to kill");
    p.handle_process_started(1, 66);
    assert_eq!(drain(&mut p), vec![Action::Kill { pid: 66, worker: None }]);
    p.handle_process_started(99, 67);
    assert_eq!(drain(&mut p), vec![Action::Kill { pid: 67, worker: None }]);
}

#[test]
fn a_spawn_reported_after_registration_is_ignored() {
    let t0 = Instant::now();
    let mut p = pool(1, t0);
    p.handle_prestart(t0, 1, 1);
    drain(&mut p);
    p.handle_register(1, wid(1), 70).unwrap();
    p.handle_process_started(1, 70);
    assert!(drain(&mut p).is_empty());
}

#[test]
fn a_registered_worker_that_never_announces_is_killed_at_the_timeout() {
    let t0 = Instant::now();
    let mut p = pool(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    p.handle_register(1, wid(1), 88).unwrap();
    p.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(drain(&mut p), vec![Action::Kill { pid: 88, worker: Some(wid(1)) }, Action::StartProcess { token: 2 }]);
    assert_eq!(p.worker(wid(1)).unwrap().state, WorkerState::Dead);
    assert!(p.handle_port_announced(t0, wid(1), 1).is_err());
    p.handle_exit(t0, ExitedProcess::Token(1));
    assert!(p.worker(wid(1)).is_none());
}

#[test]
fn a_spawn_failure_pauses_starting_then_retries() {
    let t0 = Instant::now();
    let mut p = pool(2, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    p.handle_start_failed(t0, 1);
    assert!(drain(&mut p).is_empty());
    assert_eq!(p.num_starting(), 0);
    p.handle_pop_worker(t0, lid(2), job(1)).unwrap();
    assert!(drain(&mut p).is_empty(), "no start during the pause");
    p.handle_timeout(t0 + ms(999));
    assert!(drain(&mut p).is_empty());
    p.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(starts(&drain(&mut p)), vec![2, 3]);
}

#[test]
fn poll_timeout_is_the_earliest_of_startup_deadline_and_reap_tick() {
    let t0 = Instant::now();
    let cfg = PoolConfig { max_startup_concurrency: 1, register_timeout: ms(50), ..Default::default() };
    let mut p = WorkerPool::new(cfg, t0, 1);
    assert_eq!(p.poll_timeout(), Some(t0 + ms(200)));
    p.handle_prestart(t0 + ms(10), 1, 1);
    drain(&mut p);
    assert_eq!(p.poll_timeout(), Some(t0 + ms(60)));
    let off = PoolConfig { kill_idle_interval: Duration::ZERO, ..Default::default() };
    assert_eq!(WorkerPool::new(off, t0, 1).poll_timeout(), None);
}

#[test]
fn prestart_starts_the_shortfall_of_min_backlog_cpus() {
    let t0 = Instant::now();
    let mut p = with_idle(1, t0);
    let mut q = WorkerPool::new(config(10), t0, 4);
    // desired = min(5, 3) = 3; have = 0 → 3.
    q.handle_prestart(t0, 5, 3);
    assert_eq!(starts(&drain(&mut q)).len(), 3);
    // desired = min(2, 8) = 2; have = 3 starting → none.
    q.handle_prestart(t0, 2, 8);
    assert!(drain(&mut q).is_empty());
    // desired = min(6, 5) = 5; have = 3 → 2 more.
    q.handle_prestart(t0, 6, 5);
    assert_eq!(starts(&drain(&mut q)), vec![4, 5]);
    // The pool with one idle worker and cap 1: desired 3, have 1 → 2, capped at 1.
    p.handle_prestart(t0, 3, 3);
    assert_eq!(starts(&drain(&mut p)), vec![2]);
    p.handle_prestart(t0, 0, 3);
    assert!(drain(&mut p).is_empty());
}

#[test]
fn the_first_driver_triggers_num_prestart_once() {
    let t0 = Instant::now();
    let cfg = PoolConfig { max_startup_concurrency: 4, num_prestart: 2, ..Default::default() };
    let mut p = WorkerPool::new(cfg, t0, 4);
    p.handle_driver_register(t0, job(1), wid(100), 10).unwrap();
    assert_eq!(starts(&drain(&mut p)), vec![1, 2]);
    p.handle_driver_register(t0, job(2), wid(101), 11).unwrap();
    assert!(drain(&mut p).is_empty());
    assert_eq!(p.handle_driver_register(t0, job(2), wid(101), 11), Err(RegisterError::DuplicateWorker(wid(101))));
    let drivers: Vec<DriverInfo> = p.drivers().collect();
    assert_eq!(drivers[0], DriverInfo { id: wid(100), job: job(1), pid: 10 });
    assert!(p.is_registered(wid(100)));
    assert!(p.handle_driver_exit(wid(100)));
    assert!(!p.handle_driver_exit(wid(100)));
    assert!(!p.is_registered(wid(100)));
    assert_eq!(p.num_leased(), 0, "drivers are never leased");
}
