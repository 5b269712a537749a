//! The cluster lifecycle through the real binary and its CLI (issue 2, "Done means"): a
//! head prints its ready line, a second node joins, `raylet status` lists both with their
//! resources, a `kill -9` makes a node DEAD within the heartbeat timeout, `raylet stop`
//! ends the head with exit code 0 and nothing left behind; signals stop a node gracefully.
//! A node the GCS declared dead exits on its own: `tests/failure_detector.rs`.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// Checks one status entry against DESIGN.md §7 and the node's ready line.
fn check_entry(status: &serde_json::Value, node: &Node, head: bool, state: &str) {
    let e = node_entry(status, &node.ready.node_id).unwrap_or_else(|| panic!("node missing from status: {status}"));
    for key in [
        "node_id",
        "state",
        "is_head",
        "node_manager_address",
        "object_manager_address",
        "resources_total",
        "resources_available",
    ] {
        assert!(e.get(key).is_some(), "status entry lacks {key:?}: {e}");
    }
    assert_eq!(e["state"], state, "{e}");
    assert_eq!(e["is_head"], head, "{e}");
    assert_eq!(e["node_manager_address"], node.ready.node_manager_address.to_string(), "{e}");
    assert_eq!(e["object_manager_address"], node.ready.object_manager_address.to_string(), "{e}");
    let total = e["resources_total"].as_object().expect("resources_total is an object");
    assert_eq!(total.get("CPU").and_then(|v| v.as_f64()), Some(2.0), "{e}");
    assert_eq!(total.get("object_store_memory").and_then(|v| v.as_f64()), Some((32u64 << 20) as f64), "{e}");
    let avail = e["resources_available"].as_object().expect("resources_available is an object");
    if state == "ALIVE" {
        assert_eq!(avail.get("CPU").and_then(|v| v.as_f64()), Some(2.0), "an idle node has all its CPUs: {e}");
    }
}

#[test]
fn two_nodes_join_one_dies_and_stop_ends_the_head() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let head = dir.start(&NodeOpts::head().fast_heartbeat());
        assert!(head.ready.session_dir.starts_with(dir.path()), "{}", head.ready.line);
        assert_eq!(head.ready.socket, head.ready.session_dir.join("sockets").join("raylet"));
        assert!(head.ready.socket.exists(), "the local socket exists once ready");
        assert_eq!(head.ready.metrics_address.ip().to_string(), "127.0.0.1");
        // Local CLI calls and joiners find the cluster through session_latest.
        let latest = std::fs::canonicalize(dir.path().join("session_latest")).expect("session_latest");
        assert_eq!(latest, std::fs::canonicalize(&head.ready.session_dir).unwrap());

        let mut second = dir.start(&NodeOpts::join(head.ready.gcs_address).fast_heartbeat());
        assert_eq!(second.ready.gcs_address, head.ready.gcs_address, "a joiner reports the GCS it joined");
        assert_ne!(second.ready.node_id, head.ready.node_id);
        assert_ne!(second.ready.session_dir, head.ready.session_dir);

        let status = dir.status();
        assert_eq!(status["nodes"].as_array().map(Vec::len), Some(2), "{status}");
        check_entry(&status, &head, true, "ALIVE");
        check_entry(&status, &second, false, "ALIVE");

        // The table form lists the same nodes.
        let table = dir.cli(&["status"]);
        assert!(table.status.success(), "{}", table.stderr);
        assert!(table.stdout.contains(&head.ready.node_id) && table.stdout.contains(&second.ready.node_id));
        assert_eq!(table.stdout.matches("ALIVE").count(), 2, "{}", table.stdout);

        // kill -9: the GCS notices the silence and marks the node DEAD.
        let killed_at = Instant::now();
        second.kill9();
        let (_, timeout_ms) = FAST_HEARTBEAT;
        // The heartbeat timeout, plus slack for the detector's tick and the CLI round trips.
        let status =
            dir.wait_state(&second.ready.node_id, "DEAD", Duration::from_millis(timeout_ms) + Duration::from_secs(5));
        eprintln!("DEAD in status {:?} after kill -9", killed_at.elapsed());
        check_entry(&status, &second, false, "DEAD");
        check_entry(&status, &head, true, "ALIVE");
        assert!(
            node_entry(&status, &second.ready.node_id).unwrap()["resources_available"]
                .as_object()
                .is_some_and(|m| m.is_empty()),
            "a dead node offers nothing: {status}"
        );

        // raylet stop: the head (the only live node) exits 0, nothing is left behind.
        let children = descendants(head.pid);
        let stop = dir.cli(&["stop"]);
        assert!(stop.status.success(), "raylet stop failed: {}", stop.stderr);
        let mut head = head;
        let st = head.wait_exit(Duration::from_secs(30));
        assert_exit_code(st, 0, "the head after raylet stop");
        assert!(!pid_exists(head.pid), "the head's pid {} is gone", head.pid);
        for c in children {
            assert!(!pid_exists(c), "child {c} of the head outlived it");
        }
        assert_eq!(head.stdout_lines(), vec![head.ready.line.clone()], "exactly one stdout line: the ready line");
        assert!(!head.ready.socket.exists(), "the head removes its socket on a graceful stop");
        head.assert_no_panic();

        // With the cluster gone, status fails with a clear error rather than hanging.
        let after = dir.cli(&["status", "--format", "json"]);
        assert!(!after.status.success(), "status against a stopped cluster must fail");
        assert!(after.stderr.contains("raylet:"), "a clear error: {}", after.stderr);
    });
}

#[test]
fn sigterm_and_sigint_stop_a_node_gracefully() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let mut head = dir.start_head();
        let mut second = dir.start(&NodeOpts::join(head.ready.gcs_address));

        // SIGINT on the joiner: exit 0, and it unregisters (DEAD at once, long before the
        // default 5 s heartbeat timeout could have done it; the reason names the signal).
        second.signal(Signal::SIGINT);
        assert_exit_code(second.wait_exit(Duration::from_secs(30)), 0, "a joiner after SIGINT");
        let status = dir.wait_state(&second.ready.node_id, "DEAD", Duration::from_secs(20));
        let reason = node_entry(&status, &second.ready.node_id).unwrap()["death_reason"].as_str().unwrap_or("");
        assert!(reason.contains("signal"), "the death reason says why: {status}");
        second.assert_no_panic();
        assert_eq!(second.stdout_lines().len(), 1, "only the ready line on stdout");

        head.signal(Signal::SIGTERM);
        assert_exit_code(head.wait_exit(Duration::from_secs(30)), 0, "the head after SIGTERM");
        assert!(!pid_exists(head.pid));
        assert!(!head.ready.socket.exists(), "the socket is removed on a graceful stop");
        head.assert_no_panic();
    });
}

#[test]
fn a_joiner_with_the_wrong_token_is_refused_and_exits() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let before = errors_of(&head, "rpc_bad_token");
        let mut opts = NodeOpts::join(head.ready.gcs_address);
        opts.env.push(("RAYLET_AUTH_TOKEN".into(), "not-the-cluster-token".into()));
        let (st, out, err) = dir.start_expect_failure(&opts, Duration::from_secs(60));
        assert!(st.code().is_some_and(|c| c != 0), "the joiner must fail, got {st}");
        assert!(out.is_empty(), "no ready line: {out}");
        assert!(err.contains("wrong auth token"), "the error names the cause:\n{err}");
        wait_errors(&head, "rpc_bad_token", before + 1);
        let status = dir.status();
        assert_eq!(status["nodes"].as_array().map(Vec::len), Some(1), "the refused node never joined: {status}");
        head.assert_no_panic();
    });
}

#[test]
fn cli_without_a_cluster_fails_clearly() {
    with_timeout(Duration::from_secs(30), || {
        let dir = TestDir::new();
        for cmd in [&["status"][..], &["status", "--format", "json"], &["stop"]] {
            let out = dir.cli(cmd);
            assert!(!out.status.success(), "{cmd:?} without a cluster must fail");
            assert!(out.stderr.contains("no local cluster"), "{cmd:?}: {}", out.stderr);
        }
    });
}
