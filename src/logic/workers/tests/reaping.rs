//! Idle reaping: order, soft limit, idle threshold, and the Exit RPC replies.

use std::time::{Duration, Instant};

use super::{bring_up, config, drain, idle_pool, job, lid, ms, starts, wid, with_idle};
use crate::logic::workers::{Action, ExitedProcess, PoolConfig, WorkerPool, WorkerState};

#[test]
fn reaping_takes_oldest_first_and_stops_at_the_soft_limit() {
    let t0 = Instant::now();
    let cfg = PoolConfig { soft_limit: Some(2), ..config(4) };
    let mut p = idle_pool(cfg, 4, t0);
    // Re-idle worker 1 so that 2 and 3 are now the oldest.
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    p.handle_pop_worker(t0, lid(2), job(1)).unwrap();
    p.handle_pop_worker(t0, lid(3), job(1)).unwrap();
    p.handle_pop_worker(t0, lid(4), job(1)).unwrap();
    drain(&mut p);
    for w in [2, 3, 4, 1] {
        p.handle_return(t0, wid(w), false, false).unwrap();
    }
    drain(&mut p);
    p.handle_timeout(t0 + Duration::from_secs(2));
    assert_eq!(drain(&mut p), vec![Action::RequestExit { worker: wid(2) }, Action::RequestExit { worker: wid(3) }]);
    assert_eq!(p.worker(wid(2)).unwrap().state, WorkerState::Exiting);
    p.handle_timeout(t0 + Duration::from_secs(3));
    assert!(drain(&mut p).is_empty(), "exiting workers no longer count as running");
}

#[test]
fn reaping_spares_workers_idle_less_than_the_threshold() {
    let t0 = Instant::now();
    let mut p = with_idle(3, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    p.handle_return(t0 + ms(900), wid(3), false, false).unwrap();
    drain(&mut p);
    // At t0+1s, workers 1 and 2 have idled 1s; worker 3 only 100ms.
    p.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(drain(&mut p), vec![Action::RequestExit { worker: wid(1) }, Action::RequestExit { worker: wid(2) }]);
    p.handle_timeout(t0 + ms(1900));
    assert_eq!(drain(&mut p), vec![Action::RequestExit { worker: wid(3) }]);
}

#[test]
fn reaping_uses_available_cpus_when_no_soft_limit_is_set() {
    let t0 = Instant::now();
    let cfg = PoolConfig { max_startup_concurrency: 3, ..Default::default() };
    let mut p = WorkerPool::new(cfg, t0, 3);
    p.handle_prestart(t0, 3, 3);
    for (i, t) in starts(&drain(&mut p)).into_iter().enumerate() {
        bring_up(&mut p, t0, t, wid(i as u32 + 1));
    }
    p.handle_timeout(t0 + Duration::from_secs(2));
    assert!(drain(&mut p).is_empty(), "3 running, 3 CPUs");
    p.set_available_cpus(1);
    p.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(drain(&mut p), vec![Action::RequestExit { worker: wid(1) }, Action::RequestExit { worker: wid(2) }]);
}

#[test]
fn leased_workers_count_as_running_but_are_never_reaped() {
    let t0 = Instant::now();
    let cfg = PoolConfig { soft_limit: Some(1), ..config(3) };
    let mut p = idle_pool(cfg, 3, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    p.handle_pop_worker(t0, lid(2), job(1)).unwrap();
    assert_eq!(
        drain(&mut p),
        vec![Action::Assign { lease: lid(1), worker: wid(3) }, Action::Assign { lease: lid(2), worker: wid(2) },]
    );
    // Three run against a limit of one; only the idle worker can go.
    p.handle_timeout(t0 + Duration::from_secs(2));
    assert_eq!(drain(&mut p), vec![Action::RequestExit { worker: wid(1) }]);
    p.handle_timeout(t0 + Duration::from_secs(3));
    assert!(drain(&mut p).is_empty());
}

#[test]
fn an_accepted_exit_marks_the_worker_dead_until_it_exits() {
    let t0 = Instant::now();
    let mut p = with_idle(1, t0);
    p.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(drain(&mut p), vec![Action::RequestExit { worker: wid(1) }]);
    p.handle_pop_worker(t0 + Duration::from_secs(1), lid(1), job(1)).unwrap();
    assert_eq!(starts(&drain(&mut p)), vec![2], "an exiting worker is not handed out");
    p.handle_exit_reply(t0, wid(1), true).unwrap();
    assert_eq!(p.worker(wid(1)).unwrap().state, WorkerState::Dead);
    assert!(p.handle_exit_reply(t0, wid(1), true).is_err());
    p.handle_exit(t0, ExitedProcess::Worker(wid(1)));
    assert!(drain(&mut p).is_empty());
    assert!(p.worker(wid(1)).is_none());
}

#[test]
fn a_refused_exit_puts_the_worker_back_at_the_newest_end() {
    let t0 = Instant::now();
    let mut p = with_idle(2, t0);
    let t1 = t0 + Duration::from_secs(1);
    p.handle_timeout(t1);
    assert_eq!(drain(&mut p), vec![Action::RequestExit { worker: wid(1) }, Action::RequestExit { worker: wid(2) }]);
    p.handle_exit_reply(t1, wid(2), false).unwrap();
    p.handle_exit_reply(t1 + ms(1), wid(1), false).unwrap();
    assert!(drain(&mut p).is_empty());
    assert_eq!(p.num_idle(), 2);
    p.handle_pop_worker(t1, lid(1), job(1)).unwrap();
    assert_eq!(drain(&mut p), vec![Action::Assign { lease: lid(1), worker: wid(1) }]);
}

#[test]
fn a_refused_exit_serves_a_waiting_pop_of_its_job() {
    let t0 = Instant::now();
    let mut p = with_idle(1, t0);
    p.handle_pop_worker(t0, lid(1), job(1)).unwrap();
    drain(&mut p);
    p.handle_return(t0, wid(1), false, false).unwrap();
    let t1 = t0 + Duration::from_secs(1);
    p.handle_timeout(t1);
    assert_eq!(drain(&mut p), vec![Action::RequestExit { worker: wid(1) }]);
    p.handle_pop_worker(t1, lid(2), job(1)).unwrap();
    assert_eq!(starts(&drain(&mut p)), vec![2]);
    p.handle_exit_reply(t1, wid(1), false).unwrap();
    assert_eq!(drain(&mut p), vec![Action::Assign { lease: lid(2), worker: wid(1) }]);
}
