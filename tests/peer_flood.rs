//! Floods of unauthenticated TCP peers (issue 11, item 1).
//!
//! `flood_figures` (ignored: it measures, it does not judge) prints the figures of the
//! issue for any build of raylet, so a before/after pair comes from one session:
//!
//! ```sh
//! RAYLET_FLOOD_BIN=/path/to/raylet cargo test --release --test peer_flood flood_figures -- --ignored --nocapture
//! ```
//!
//! Without `RAYLET_FLOOD_BIN` it measures the binary this crate built. The CLI that times
//! `raylet status` is always this crate's, so only the server differs between runs.

mod common;

use common::flood::*;
use common::*;
use std::time::{Duration, Instant};

/// The binary the figures are measured on.
fn flood_bin() -> String {
    std::env::var("RAYLET_FLOOD_BIN").unwrap_or_else(|_| RAYLET.to_string())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Waits until the node's RSS stops moving (the store's prefault has finished).
fn settled_rss(pid: u32) -> u64 {
    let mut last = proc_status(pid, "VmRSS");
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = proc_status(pid, "VmRSS");
        if now.abs_diff(last) < 1024 {
            return now;
        }
        last = now;
    }
}

#[test]
#[ignore = "measures the figures of issue 11 item 1; run by hand with --ignored --nocapture"]
fn flood_figures() {
    raise_own_nofile();
    let bin = flood_bin();
    println!("binary: {bin}");

    // 1. 32 connections, each declaring a 64 MiB hello and sending 40 MiB of it.
    {
        let dir = TestDir::new();
        let mut opts = NodeOpts::head();
        opts.program = vec![bin.clone()];
        let node = dir.start(&opts);
        let before = settled_rss(node.pid);
        let started = Instant::now();
        let threads = huge_hellos(node.ready.node_manager_address, 32, 64 << 20, 40 << 20, Duration::from_secs(30));
        let sent: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let hwm = proc_status(node.pid, "VmHWM");
        println!(
            "huge hellos: 32 x (declare 64 MiB, send 40 MiB): {:.1} MiB written in {:?}; RSS before {:.1} MiB, peak {:.1} MiB, growth {:.1} MiB",
            sent as f64 / (1 << 20) as f64,
            started.elapsed(),
            mib(before),
            mib(hwm),
            mib(hwm.saturating_sub(before)),
        );
        dir.try_status().expect("status after the huge hellos");
    }

    // 2. `raylet status` during a flood of silent connections, under nofile 1024.
    {
        let dir = TestDir::new();
        let mut opts = NodeOpts::head();
        opts.program = vec!["prlimit".into(), "--nofile=1024:1024".into(), bin.clone()];
        let node = dir.start(&opts);
        // The node's own connections (the GCS's resource poll) are open before counting.
        wait_for("the GCS to poll this node's resources", Duration::from_secs(20), || {
            let (_, body) = http_get(node.ready.metrics_address, "/metrics");
            Ok((metric_sum(&body, "raylet_rpc_calls_total", "RequestResourceReport") > 0).then_some(()))
        });
        dir.try_status().expect("status before the flood");
        let fds_before = fd_count(node.pid);
        let r = &node.ready;
        let flood = Sustained::start(vec![r.node_manager_address, r.object_manager_address, r.gcs_address], 2000);
        let t0 = Instant::now();
        while flood.opened() < 2000 && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut took = Vec::new();
        let mut fds_during = 0;
        for _ in 0..7 {
            fds_during = fds_during.max(fd_count(node.pid));
            let t = Instant::now();
            let ok = dir.try_status().is_ok();
            took.push((t.elapsed(), ok));
        }
        println!(
            "silent flood under nofile 1024:1024: {} connections opened in total; node fds before {fds_before}, during (max) {fds_during}",
            flood.opened()
        );
        let mut times: Vec<Duration> = took.iter().map(|t| t.0).collect();
        times.sort();
        println!(
            "raylet status during the flood: median {:?}, max {:?}, failures {} of {}",
            times[times.len() / 2],
            times[times.len() - 1],
            took.iter().filter(|t| !t.1).count(),
            took.len()
        );
        drop(flood);
        let t = Instant::now();
        while fd_count(node.pid) > fds_before && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("after the flood: node fds {} ({:?} after it stopped)", fd_count(node.pid), t.elapsed());
    }
}

/// The default `--max-unauthenticated-connections`.
const UNAUTH_CAP: usize = 128;

/// Puts a file through the node's local socket and gets it back byte for byte, then
/// deletes it.
fn put_get(dir: &TestDir, node: &Node, tag: u8) {
    let socket = node.ready.socket.display().to_string();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i as u8).wrapping_mul(31).wrapping_add(tag)).collect();
    let file = dir.path().join(format!("in-{tag}.bin"));
    std::fs::write(&file, &data).unwrap();
    let put = dir.cli(&["object", "put", &file.display().to_string(), "--socket", &socket]);
    assert!(put.status.success(), "put: {}", put.stderr);
    let id = put.stdout.trim().to_string();
    let out = dir.path().join(format!("out-{tag}.bin"));
    let get = dir.cli(&["object", "get", &id, "--socket", &socket, "-o", &out.display().to_string()]);
    assert!(get.status.success(), "get: {}", get.stderr);
    assert!(std::fs::read(&out).unwrap() == data, "the object comes back byte for byte");
    let del = dir.cli(&["object", "delete", &id, "--socket", &socket]);
    assert!(del.status.success(), "delete: {}", del.stderr);
}

/// The node-wide sum of a per-shard gauge.
fn gauge(node: &Node, name: &str) -> u64 {
    let (code, body) = http_get(node.ready.metrics_address, "/metrics");
    assert_eq!(code, 200);
    metric_sum(&body, name, "")
}

/// The counts of the node's log lines that report refused peers.
fn refusal_lines(node: &Node) -> Vec<u64> {
    let log = std::fs::read_to_string(node.ready.session_dir.join("logs/raylet.log")).unwrap_or_default();
    log.lines()
        .filter_map(|l| l.split_once("refused ")?.1.split_once(" unauthenticated peer(s)")?.0.parse().ok())
        .collect()
}

#[test]
fn a_flood_of_unauthenticated_peers_under_nofile_256_leaves_the_node_serving() {
    with_timeout(Duration::from_secs(240), || {
        raise_own_nofile();
        let dir = TestDir::new();
        let mut opts = NodeOpts::head();
        opts.program = vec!["prlimit".into(), "--nofile=256:256".into(), RAYLET.into()];
        let node = dir.start(&opts);
        let r = node.ready.clone();
        // The node's own connections (its GCS session, the GCS's resource poll of its node
        // manager) and what serving a client leaves are there before counting.
        wait_for("the GCS to poll this node's resources", Duration::from_secs(20), || {
            let (_, body) = http_get(r.metrics_address, "/metrics");
            Ok((metric_sum(&body, "raylet_rpc_calls_total", "RequestResourceReport") > 0).then_some(()))
        });
        dir.status();
        put_get(&dir, &node, 1);
        let fds_before = fd_count(node.pid);
        let conns_before = gauge(&node, "raylet_rpc_connections");
        let started = Instant::now();

        // Four times the cap of silent peers over every TCP listener, all held open at
        // once, and peers that declare a 64 MiB hello and send 8 MiB of it.
        let huge = huge_hellos(r.node_manager_address, 16, 64 << 20, 8 << 20, Duration::from_secs(60));
        let ports = [r.node_manager_address, r.object_manager_address, r.gcs_address, r.metrics_address];
        let silent = hold_silent(&ports, 4 * UNAUTH_CAP);
        assert_eq!(silent.len(), 4 * UNAUTH_CAP, "every flood connection was accepted by the kernel");

        // During the flood: the CLI and local clients are served, the caps hold.
        dir.status();
        put_get(&dir, &node, 2);
        let unauthenticated = gauge(&node, "raylet_rpc_unauthenticated_connections");
        // A shard with none of its own to drop accepts past the cap, once (see logic::admission).
        let most = (UNAUTH_CAP + SHARDS) as u64;
        assert!(unauthenticated <= most, "{unauthenticated} connections before their hello");
        assert!(fd_count(node.pid) < 256, "the node never reaches its fd limit");
        assert_eq!(errors_of(&node, "accept_failed"), 0, "no accept ran out of fds");
        let dropped = errors_of(&node, "rpc_over_capacity");
        assert!(dropped >= (3 * UNAUTH_CAP) as u64, "older peers were dropped for newer ones: {dropped}");
        for t in huge {
            assert!(t.join().unwrap() < 8 << 20, "a declared 64 MiB hello is refused before its payload is read");
        }

        // The refusals are logged at most once per 10 s per shard, with their counts.
        let lines = refusal_lines(&node);
        assert!(!lines.is_empty(), "refusals are logged");
        let intervals = started.elapsed().as_secs() / 10 + 2;
        assert!(lines.len() as u64 <= SHARDS as u64 * intervals, "{} lines for {dropped} refusals", lines.len());

        // After the flood everything it held is released. The node may have opened its own
        // connections meanwhile (a shard's first GCS call, for the object directory): each
        // such connection is two fds of the node, both ends authenticated.
        drop(silent);
        wait_for("the node's fds and connections to go back down", Duration::from_secs(60), || {
            let fds = fd_count(node.pid);
            let conns = gauge(&node, "raylet_rpc_connections");
            // The scrape that reads it is one.
            let unauthenticated = gauge(&node, "raylet_rpc_unauthenticated_connections");
            let own = conns.saturating_sub(conns_before);
            if unauthenticated <= 1 && own <= SHARDS as u64 && fds as u64 <= fds_before as u64 + 2 * own {
                Ok(Some(()))
            } else {
                Err(format!(
                    "{fds} fds (was {fds_before}), {conns} connections (was {conns_before}), {unauthenticated} before their hello"
                ))
            }
        });
        dir.status();
        put_get(&dir, &node, 3);
        node.assert_no_panic();
    });
}

/// A flood of a port that only shard 0 serves (the GCS) fills the node-wide cap with
/// shard 0's peers: the other shards, which have none of them to drop, must still admit
/// their newcomers rather than lock every other node out of their listeners.
#[test]
fn a_flood_of_the_gcs_port_leaves_the_other_shards_listeners_open() {
    const CAP: usize = 16;
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let node = dir.start(&NodeOpts::head().args(["--max-unauthenticated-connections", &CAP.to_string()]));
        let r = node.ready.clone();
        let mut flood = hold_silent(&[r.gcs_address], 3 * CAP);
        // The cap is full of flood peers once every flood connection but the newest CAP
        // was dropped for a newer one (seen as EOF here; a metrics scrape would count as
        // one more peer before its hello and free a slot as it ends).
        let full = |flood: &mut Vec<std::net::TcpStream>| {
            let want = flood.len() - CAP;
            wait_for("the flood to fill the cap", Duration::from_secs(20), || {
                let dropped = flood.iter_mut().map(closed_by_peer).filter(|c| *c).count();
                Ok((dropped == want).then_some(()))
            });
        };
        full(&mut flood);
        // The kernel spreads node-manager connections over the shards: go on until one
        // lands on a shard other than 0. Each must get through its hello. One served by
        // shard 0 took a flood peer's slot: refill it first.
        let mut served_by = Vec::new();
        while !served_by.iter().any(|s| *s != 0) {
            assert!(served_by.len() < 64, "64 connections all landed on shard 0: {served_by:?}");
            let (_c, ack) = RawRpc::handshake_ack(r.node_manager_address, &r.token());
            served_by.push(ack.shard);
            flood.extend(hold_silent(&[r.gcs_address], 1));
            full(&mut flood);
        }
        dir.status();
        drop(flood);
        node.assert_no_panic();
    });
}

/// Whether the peer closed `s` (EOF or reset); never blocks.
fn closed_by_peer(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// The default worker's cap on connections before their hello.
const WORKER_UNAUTH_CAP: usize = 32;

/// A `stats` task on the worker at `addr`, over `c`: its pid.
fn worker_stats(c: &mut raylet::rpc::BlockingClient) -> u32 {
    use raylet::wire::rpc::{push_task_request::Task, worker_service, PushTaskRequest, StatsTask};
    let req = PushTaskRequest { lease_id: Vec::new(), task: Some(Task::Stats(StatsTask {})) };
    let reply = worker_service::blocking::push_task(c, &req, raylet::rpc::CallOpts::once(Duration::from_secs(10)))
        .expect("a stats task on the worker");
    reply.counters.expect("counters").pid
}

#[test]
fn a_flood_of_the_worker_port_costs_no_threads_and_ends_at_the_hello_deadline() {
    with_timeout(Duration::from_secs(240), || {
        raise_own_nofile();
        let dir = TestDir::new();
        let node = dir.start(&NodeOpts::head().args(["--num-prestart-workers", "1"]));
        let token = node.ready.token();
        let worker = wait_for("the prestarted worker to announce its port", Duration::from_secs(30), || {
            Ok(node_stats(&node, &token).core_workers_stats.into_iter().find(|w| w.port > 0 && w.state == "IDLE"))
        });
        let addr = std::net::SocketAddr::new(node.ready.node_manager_address.ip(), worker.port as u16);
        let mut client = raylet::rpc::BlockingClient::new(addr, token.clone());
        assert_eq!(worker_stats(&mut client), worker.pid);
        let (threads_before, fds_before) = (thread_count(worker.pid), fd_count(worker.pid));

        // Four times its cap of silent peers and peers declaring a 64 MiB hello.
        let huge = huge_hellos(addr, 8, 64 << 20, 4 << 20, Duration::from_secs(60));
        let silent = hold_silent(&[addr], 4 * WORKER_UNAUTH_CAP);
        assert_eq!(silent.len(), 4 * WORKER_UNAUTH_CAP);
        for t in huge {
            assert!(t.join().unwrap() < 4 << 20, "a declared 64 MiB hello is refused from its header");
        }
        // A peer that said hello is still served, over its connection and a new one; the
        // flood holds no thread (the raylet may have opened a connection of its own).
        assert_eq!(worker_stats(&mut client), worker.pid);
        assert_eq!(worker_stats(&mut raylet::rpc::BlockingClient::new(addr, token.clone())), worker.pid);
        let threads = thread_count(worker.pid);
        assert!(threads <= threads_before + 2, "{threads} threads, {threads_before} before the flood");
        let fds = fd_count(worker.pid);
        assert!(fds <= fds_before + 2 + WORKER_UNAUTH_CAP, "{fds} fds, {fds_before} before the flood");

        // The silent peers are closed at the hello deadline, without any help from us.
        let mut last = RawRpc::connect(addr);
        assert!(last.expect_closed(Duration::from_secs(30)).is_empty(), "closed without a frame");
        wait_for("the worker's fds to go back down", Duration::from_secs(30), || {
            let fds = fd_count(worker.pid);
            if fds <= fds_before + 2 {
                Ok(Some(()))
            } else {
                Err(format!("{fds} fds, {fds_before} before the flood"))
            }
        });
        drop(silent);
        assert_eq!(worker_stats(&mut client), worker.pid);
        node.assert_no_panic();
    });
}
