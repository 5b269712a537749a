//! `raylet start` that cannot start: a port already taken (by a plain listener without
//! `SO_REUSEPORT`, so the shards cannot share it) or an invalid configuration. The process
//! exits non-zero, promptly, with a clear error on stderr, and never prints a ready line.

mod common;

use common::*;
use std::net::TcpListener;
use std::time::Duration;

/// Binds a loopback port without `SO_REUSEPORT` and keeps it.
fn squat() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn expect_failure(dir: &TestDir, opts: &NodeOpts, needles: &[&str]) -> String {
    let (st, out, err) = dir.start_expect_failure(opts, Duration::from_secs(60));
    assert!(st.code().is_some_and(|c| c != 0), "raylet start must exit non-zero, got {st}\n{err}");
    assert!(!out.contains("raylet ready"), "no ready line when the start fails: {out}");
    for n in needles {
        assert!(err.contains(n), "stderr should mention {n:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "a failed start must not panic:\n{err}");
    err
}

#[test]
fn a_taken_port_makes_start_fail_with_a_clear_error() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let (_held, port) = squat();
        let p = port.to_string();
        for (flag, what) in [
            ("--node-manager-port", "node manager"),
            ("--object-manager-port", "object manager"),
            ("--metrics-export-port", "metrics"),
            ("--port", "GCS"),
        ] {
            let opts = NodeOpts::head().args([flag, p.as_str()]);
            let err = expect_failure(&dir, &opts, &["raylet:", "in use"]);
            assert!(err.contains(&p), "{what}: the error names the port {p}:\n{err}");
        }
        // The port is still ours: nothing of the failed nodes kept running on it.
        drop(_held);
    });
}

#[test]
fn an_invalid_configuration_is_refused_before_starting() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let mut opts = NodeOpts::head();
        opts.shards = 0;
        expect_failure(&dir, &opts, &["--shards"]);
        let opts = NodeOpts::head().args(["--heartbeat-period-ms", "1000", "--heartbeat-timeout-ms", "1500"]);
        expect_failure(&dir, &opts, &["heartbeat"]);
        let opts = NodeOpts::head().args(["--system-config", "[1,2]"]);
        expect_failure(&dir, &opts, &["--system-config"]);
        for bad in ["100", "0", "\"5MiB\"", "1073741824"] {
            let cfg = format!("{{\"object_manager_default_chunk_size\": {bad}}}");
            let opts = NodeOpts::head().args(["--system-config", cfg.as_str()]);
            expect_failure(&dir, &opts, &["object_manager_default_chunk_size", "whole number of bytes"]);
        }
        for (key, bad) in
            [("object_spilling_threshold", "1.5"), ("object_spilling_threshold", "0"), ("oom_grace_period_s", "-1")]
        {
            let cfg = format!("{{\"{key}\": {bad}}}");
            let opts = NodeOpts::head().args(["--system-config", cfg.as_str()]);
            expect_failure(&dir, &opts, &[key]);
        }
        let opts = NodeOpts::head().args(["--resources", r#"{"CPU": 3}"#]);
        expect_failure(&dir, &opts, &["--resources"]);
        let opts = NodeOpts::head().args(["--max-connections", "0"]);
        expect_failure(&dir, &opts, &["--max-connections"]);
        // Its own hellos must fit the 4 KiB hello cap.
        let mut opts = NodeOpts::head();
        opts.env.push(("RAYLET_AUTH_TOKEN".into(), "t".repeat(5000)));
        expect_failure(&dir, &opts, &["auth token is 5000 bytes"]);
    });
}
