//! The GCS failure detector trusts only what it saw (issue 11, item 4), from the built
//! binary with the fast test heartbeat (100 ms period, 1 s timeout):
//! - the head stopped (SIGSTOP) for several heartbeat timeouts and resumed: no node is
//!   declared dead for the time its GCS did not run, its own raylet included;
//! - a joiner stopped past the timeout is really DEAD: resumed, it is refused (its
//!   heartbeats and a re-registration under its id) and exits non-zero, saying why.

mod common;

use common::*;
use nix::sys::signal::Signal;
use raylet::rpc::{BlockingClient, CallOpts, Code, RpcError};
use raylet::wire::rpc::{self as w, node_info_gcs_service as nodes};
use std::time::{Duration, Instant};

/// How long a frozen process stays frozen: several heartbeat timeouts.
fn pause() -> Duration {
    Duration::from_millis(FAST_HEARTBEAT.1 * 4)
}

fn state_of(status: &serde_json::Value, node: &Node) -> String {
    node_entry(status, &node.ready.node_id).and_then(|n| n["state"].as_str()).unwrap_or("missing").to_string()
}

#[test]
fn a_paused_head_declares_no_node_dead_for_the_time_it_did_not_run() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let mut head = dir.start(&NodeOpts::head().fast_heartbeat());
        let mut joiner = dir.start(&NodeOpts::join(head.ready.gcs_address).fast_heartbeat());
        dir.wait_state(&joiner.ready.node_id, "ALIVE", Duration::from_secs(20));

        // The fault itself lasts a fixed time (a VM hiccup): this sleep is the pause, not
        // a wait for the system to do something.
        head.signal(Signal::SIGSTOP);
        std::thread::sleep(pause());
        head.signal(Signal::SIGCONT);

        // The detector's first check after the resume sees the gap and says so.
        wait_for("the head's detector to notice its own pause", Duration::from_secs(20), || {
            Ok(head.stderr().contains("the failure detector did not run").then_some(()))
        });
        // Watch for longer than a heartbeat timeout after the resume: a deadline that was
        // not restarted, or heartbeats that did not resume, would show up as DEAD here.
        let resumed = Instant::now();
        let watch = Duration::from_millis(FAST_HEARTBEAT.1 * 3);
        while resumed.elapsed() < watch {
            let status = dir.status();
            assert_eq!(state_of(&status, &head), "ALIVE", "the head's own raylet: {status}");
            assert_eq!(state_of(&status, &joiner), "ALIVE", "the joiner kept heartbeating: {status}");
            assert!(head.try_exit().is_none(), "the head exited:\n{}", head.stderr());
            assert!(joiner.try_exit().is_none(), "the joiner exited:\n{}", joiner.stderr());
        }
        for n in [&head, &joiner] {
            let err = n.stderr();
            assert!(!err.contains("marked DEAD") && !err.contains("exiting"), "no death was declared:\n{err}");
            n.assert_no_panic();
        }
    });
}

#[test]
fn a_joiner_declared_dead_is_refused_when_it_comes_back_and_exits() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start(&NodeOpts::head().fast_heartbeat());
        let mut frozen = dir.start(&NodeOpts::join(head.ready.gcs_address).fast_heartbeat());

        frozen.signal(Signal::SIGSTOP);
        let status = dir.wait_state(&frozen.ready.node_id, "DEAD", Duration::from_secs(20));
        let reason = node_entry(&status, &frozen.ready.node_id).unwrap()["death_reason"].as_str().unwrap_or("");
        assert!(reason.contains("no heartbeat"), "the reason names the silence: {status}");
        frozen.signal(Signal::SIGCONT);

        let st = frozen.wait_exit(Duration::from_secs(30));
        assert!(st.code().is_some_and(|c| c != 0), "a node declared dead exits non-zero, got {st}");
        let err = frozen.stderr();
        let line = err.lines().find(|l| l.starts_with("raylet: ")).unwrap_or_else(|| panic!("no message:\n{err}"));
        for part in ["declared this node DEAD", "no heartbeat", &head.ready.gcs_address.to_string(), "exiting"] {
            assert!(line.contains(part), "the message says {part:?}: {line}");
        }
        frozen.assert_no_panic();

        // Coming back under the same id is refused.
        let mut gcs = BlockingClient::new(head.ready.gcs_address, head.ready.token());
        let info = w::GcsNodeInfo {
            node_id: hex_bytes(&frozen.ready.node_id),
            node_manager_address: "127.0.0.1".into(),
            node_manager_port: i32::from(frozen.ready.node_manager_address.port()),
            ..Default::default()
        };
        let req = w::RegisterNodeRequest { node_info: Some(info) };
        match nodes::blocking::register_node(&mut gcs, &req, CallOpts::once(Duration::from_secs(10))) {
            Err(RpcError::Status(s)) => {
                assert_eq!(s.code, Code::FailedPrecondition, "{s}");
                assert!(s.message.contains("marked dead"), "{s}");
            }
            other => panic!("a dead node's re-registration must be refused, got {other:?}"),
        }
        let status = dir.status();
        assert_eq!(state_of(&status, &frozen), "DEAD", "{status}");
        assert_eq!(state_of(&status, &head), "ALIVE", "the rest of the cluster is unaffected: {status}");
        head.assert_no_panic();
    });
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}
