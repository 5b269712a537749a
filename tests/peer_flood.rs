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
