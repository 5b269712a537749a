//! The worker pool and the agent from the built binary: workers that never register, bad
//! startup tokens, prestart, idle reaping, oom_score_adj, and agent supervision.

mod common;
mod sched_support;

use common::RAYLET;
use raylet::client::{LeaseOptions, LocalClient};
use raylet::ids::LeaseId;
use sched_support::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn a_worker_that_never_registers_is_killed_and_replaced() {
    with_timeout(Duration::from_secs(90), || {
        let node = head(&[
            "--num-cpus",
            "1",
            "--worker-command",
            "sleep 1000",
            "--worker-register-timeout-s",
            "1",
            "--kill-worker-timeout-ms",
            "200",
        ]);
        let addr = node.node_manager;
        let id = LeaseId::random();
        let mut d = node.driver();
        let waiter = std::thread::spawn(move || d.request_lease_at(addr, id, &LeaseOptions::cpus(1.0), false));
        let first = wait_for("a worker process to start", T, || Ok(children_of(node.pid()).first().copied()));
        wait_for("the unregistered worker to be killed", T, || Ok((!alive(first)).then_some(())));
        wait_for("a replacement to start", T, || Ok(children_of(node.pid()).into_iter().find(|p| *p != first)));
        assert!(node.driver().cancel_lease(addr, id).unwrap());
        assert!(matches!(waiter.join().unwrap(), Ok(raylet::client::LeaseReply::Cancelled(..))));
        wait_for("every unregistered worker to be gone", T, || Ok(children_of(node.pid()).is_empty().then_some(())));
        wait_all_available(&node, 1, T);
    });
}

#[test]
fn registrations_with_unknown_or_reused_tokens_are_refused() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&["--num-cpus", "1"]);
        for token in [12345, -1, 0] {
            let mut c = LocalClient::connect(&node.socket).unwrap();
            let r = c.register_worker(token);
            assert!(r.is_err(), "token {token} accepted: {r:?}");
        }
        let mut d = node.driver();
        let lease = d.request_lease(&LeaseOptions::cpus(1.0)).unwrap();
        // Token 1 belonged to the worker that just registered with it.
        let mut c = LocalClient::connect(&node.socket).unwrap();
        assert!(c.register_worker(1).is_err(), "a used token is refused");
        d.return_worker(&lease).unwrap();
        wait_all_available(&node, 1, T);
    });
}

#[test]
fn prestarted_workers_are_idle_and_reaped_above_the_soft_limit() {
    with_timeout(Duration::from_secs(60), || {
        let node = head(&[
            "--num-cpus",
            "2",
            "--num-prestart-workers",
            "2",
            "--num-workers-soft-limit",
            "0",
            "--idle-worker-killing-time-threshold-ms",
            "2000",
        ]);
        let pids = wait_for("two prestarted idle workers", T, || {
            let s = node.stats()?;
            let idle: Vec<u32> = s.core_workers_stats.iter().filter(|w| w.state == "IDLE").map(|w| w.pid).collect();
            Ok((idle.len() == 2).then_some(idle))
        });
        // Idle for less than the 2 s threshold: still alive to be inspected.
        for pid in &pids {
            let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
            assert_eq!(adj.trim(), "1000", "oom_score_adj of worker {pid}");
        }
        wait_for("idle workers to be reaped", T, || {
            let gone = pids.iter().all(|p| !alive(*p));
            let s = node.stats()?;
            Ok((gone && s.core_workers_stats.is_empty()).then_some(()))
        });
    });
}

#[test]
fn the_agent_registers_and_is_restarted_after_it_dies() {
    with_timeout(Duration::from_secs(90), || {
        let cmd = format!("{RAYLET} agent");
        let node = head(&["--num-cpus", "1", "--agent-command", &cmd, "--agent-restart-interval-ms", "100"]);
        let first = wait_for("the agent to register", T, || {
            let a = node.stats()?.agent.unwrap_or_default();
            Ok((a.registered && a.pid > 0).then_some(a))
        });
        assert!(first.port > 0);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(first.pid), nix::sys::signal::SIGKILL).unwrap();
        let second = wait_for("a restarted agent to register", T, || {
            let a = node.stats()?.agent.unwrap_or_default();
            Ok((a.registered && a.pid > 0 && a.pid != first.pid).then_some(a))
        });
        assert_eq!(second.restarts, 1);
    });
}

#[test]
fn an_agent_that_does_not_register_is_killed_and_restarted() {
    with_timeout(Duration::from_secs(90), || {
        let node = head(&[
            "--num-cpus",
            "1",
            "--agent-command",
            "sleep 1000",
            "--agent-register-timeout-s",
            "0.5",
            "--agent-restart-interval-ms",
            "100",
        ]);
        let first = wait_for("the agent to start", T, || {
            let a = node.stats()?.agent.unwrap_or_default();
            Ok((a.pid > 0).then_some(a.pid))
        });
        wait_for("the silent agent to be killed and restarted", T, || {
            let a = node.stats()?.agent.unwrap_or_default();
            Ok((a.restarts >= 1 && a.pid != first && !alive(first as u32)).then_some(()))
        });
        assert!(!node.stats().unwrap().agent.unwrap().registered);
    });
}
