//! A node out of file descriptors (issue 11, item 2): it raised its soft `RLIMIT_NOFILE`
//! to the hard limit at start and said so, and an accept loop that fails for lack of fds
//! backs off (10 ms doubling to 1 s) instead of retrying every 10 ms with a log line each
//! time. The fds are used up through the local socket, whose connections are trusted and
//! not capped.

mod common;

use common::flood::*;
use common::*;
use std::time::Duration;

/// Local connections opened without blocking until the socket's backlog is full (the
/// node has stopped accepting) or `max` are open.
fn exhaust_local(node: &Node, max: usize) -> Vec<socket2::Socket> {
    let addr = socket2::SockAddr::unix(&node.ready.socket).unwrap();
    let mut held = Vec::new();
    while held.len() < max {
        let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        if s.connect(&addr).is_err() {
            break;
        }
        held.push(s);
    }
    held
}

/// The local accept loop's log lines about failed accepts: (count, pause).
fn accept_lines(node: &Node) -> Vec<(u64, String)> {
    let log = std::fs::read_to_string(node.ready.session_dir.join("logs/raylet.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("listener=\"local\""))
        .filter_map(|l| {
            let rest = l.split_once("accept failed ")?.1;
            let (count, rest) = rest.split_once(" time(s)")?;
            let pause = rest.split_once("pausing ")?.1.split_whitespace().next()?;
            Some((count.parse().ok()?, pause.to_string()))
        })
        .collect()
}

#[test]
fn an_fd_exhausted_accept_loop_backs_off_and_recovers() {
    with_timeout(Duration::from_secs(180), || {
        raise_own_nofile();
        let dir = TestDir::new();
        let mut opts = NodeOpts::head();
        opts.program = vec!["prlimit".into(), "--nofile=128:128".into(), RAYLET.into()];
        let node = dir.start(&opts);
        assert!(node.stderr().contains("RLIMIT_NOFILE is 128"), "the fd limit is logged:\n{}", node.stderr());

        let held = exhaust_local(&node, 1000);
        wait_for("a failed local accept to be logged", Duration::from_secs(30), || {
            Ok((!accept_lines(&node).is_empty()).then_some(()))
        });
        // The line after the first comes one log interval (10 s) later and reports the
        // pause the loop has reached by then: the cap, not the first 10 ms.
        let lines = wait_for("a second failed-accept line", Duration::from_secs(60), || {
            let l = accept_lines(&node);
            Ok((l.len() >= 2).then_some(l))
        });
        assert_eq!(lines[0].1, "10ms", "{lines:?}");
        assert_eq!(lines[1].1, "1s", "the pause doubled up to its cap: {lines:?}");
        // The second line counts the failures of one log interval (10 s, or up to one
        // pause more): 7 pauses up to 1 s, then one a second. Retrying every 10 ms, as
        // before, would be about a thousand.
        assert!(lines[1].0 <= 7 + 11 + 1, "{} failed accepts in one interval: {lines:?}", lines[1].0);
        drop(held);

        // Back to serving.
        local_still_serves(&node);
        dir.status();
        assert!(errors_of(&node, "accept_failed") >= lines[0].0 + lines[1].0, "failed accepts are counted");
        wait_for("the local accept loop to show no pause", Duration::from_secs(10), || {
            let (_, body) = http_get(node.ready.metrics_address, "/metrics");
            Ok((metric_sum(&body, "raylet_accept_pause_ms", "listener=\"local\"") == 0).then_some(()))
        });
        node.assert_no_panic();
    });
}
