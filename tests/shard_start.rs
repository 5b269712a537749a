//! Shard start and stop in-process, through `raylet::shard::bootstrap::run` with real
//! glommio executors (STYLE.md §6.5, seastar's `sharded_test`): a start that fails on one
//! shard unwinds every other shard and returns non-zero without hanging, releasing the
//! ports they bound; a node that started cleanly stops in order on ShutdownRaylet.
//!
//! These tests run `bootstrap::run` inside the test process, which installs the node's
//! signal thread (it reaps every child of the process), so this file must never start
//! child processes; the CLI-level start failures live in `start_failures.rs`.

use raylet::config::NodeConfig;
use raylet::rpc::{BlockingClient, CallOpts};
use raylet::wire::rpc::{self as w, node_manager_service as nm};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Well under the 20 s mesh-join timeout a stuck shard would fall back on.
const UNWIND_LIMIT: Duration = Duration::from_secs(15);

/// A free TCP port on loopback, as the kernel hands out for port 0.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(dir: &std::path::Path, shards: usize) -> NodeConfig {
    let mut cfg = NodeConfig::new(dir.to_path_buf());
    cfg.head = true;
    cfg.gcs_port = 0;
    cfg.shards = shards;
    cfg.spin_before_park = None;
    cfg.auth_token = "shard-start-test-token".into();
    cfg.session_dir = dir.join("session");
    cfg.resources = vec![("CPU".into(), 1.0)];
    cfg.object_store_memory = 16 << 20;
    cfg.node_manager_port = free_port();
    cfg.object_manager_port = free_port();
    cfg.validate().expect("valid test config");
    cfg
}

/// Runs the node on a thread; `Some(code)` if it returned within `limit`.
fn run_node(cfg: NodeConfig, limit: Duration) -> Option<i32> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(raylet::shard::bootstrap::run(cfg));
    });
    rx.recv_timeout(limit).ok()
}

/// Polls until a plain bind (no `SO_REUSEPORT`) of `port` succeeds, i.e. no shard holds
/// its listener any more. Polled rather than checked once: a listener closed while an
/// io_uring accept is pending is released by the kernel's ring teardown, shortly after.
fn wait_port_free(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("{what} port {port} is still held after the node returned: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn failed_start_unwinds(shards: usize, failing: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), shards);
    cfg.fail_start_on_shard = Some(failing);
    let (nm_port, om_port) = (cfg.node_manager_port, cfg.object_manager_port);
    let started = Instant::now();
    let code = run_node(cfg, UNWIND_LIMIT)
        .unwrap_or_else(|| panic!("a failed start on shard {failing} of {shards} hung for {UNWIND_LIMIT:?}"));
    assert_ne!(code, 0, "a failed start returns non-zero");
    eprintln!("failed start of {shards} shards unwound in {:?}", started.elapsed());
    wait_port_free(nm_port, "node manager");
    wait_port_free(om_port, "object manager");
}

#[test]
fn a_failed_start_on_the_last_shard_unwinds_the_others() {
    failed_start_unwinds(2, 1);
}

#[test]
fn a_failed_start_in_the_middle_stops_the_shards_already_started() {
    // Shard 1 has started (and bound its listeners) when shard 2 fails; shards 3 never start.
    failed_start_unwinds(4, 2);
}

#[test]
fn a_clean_start_stops_in_order_on_shutdown_raylet() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2);
    let token = cfg.auth_token.clone();
    let addr = SocketAddr::from(([127, 0, 0, 1], cfg.node_manager_port));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(raylet::shard::bootstrap::run(cfg));
    });
    let mut c = BlockingClient::new(addr, token);
    // Poll the observable (the node answering GetNodeStats) with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        match nm::blocking::get_node_stats(
            &mut c,
            &w::GetNodeStatsRequest::default(),
            CallOpts::once(Duration::from_secs(2)),
        ) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the in-process node never answered: {e}"),
        }
    };
    assert_eq!(stats.num_shards, 2);
    nm::blocking::shutdown_raylet(&mut c, &w::ShutdownRayletRequest { graceful: true }, CallOpts::default())
        .expect("ShutdownRaylet");
    let code = rx.recv_timeout(UNWIND_LIMIT).expect("the node stops after ShutdownRaylet");
    assert_eq!(code, 0);
}
