//! No half-dead node (issue 11, item 8): a panic on any shard ends the whole process at
//! once, with the panic message in its log, so the GCS sees it go silent and declares it
//! DEAD, instead of shard 0 heartbeating for a node that no longer serves.
//!
//! Needs the `failpoints` feature (Cargo.toml `required-features`; `scripts/test.sh`
//! enables it): `RAYLET_FAILPOINT=panic_shard:1` makes shard 1 panic when it serves its
//! part of a GetNodeStats.

mod common;

use common::*;
use raylet::rpc::CallOpts;
use raylet::wire::rpc::node_manager_service as nm;
use std::time::Duration;

#[test]
fn a_panic_on_shard_1_ends_the_whole_node_with_the_message_in_its_log() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start(&NodeOpts::head().fast_heartbeat());
        let mut opts = NodeOpts::join(head.ready.gcs_address).fast_heartbeat();
        opts.env.push(("RAYLET_FAILPOINT".into(), "panic_shard:1".into()));
        let mut node = dir.start(&opts);
        dir.wait_state(&node.ready.node_id, "ALIVE", Duration::from_secs(20));

        // GetNodeStats asks every shard for its part: shard 1 panics serving it. The call
        // itself fails one way or another (the connection dies with the process).
        let mut c = node.node_manager(&head.ready.token());
        let r = nm::blocking::get_node_stats(&mut c, &Default::default(), CallOpts::once(Duration::from_secs(10)));
        assert!(r.is_err(), "the node should have died serving the call, got {r:?}");

        let st = node.wait_exit(Duration::from_secs(30));
        assert_exit_code(st, 101, "a node with a panicked shard");
        let message = "failpoint panic_shard:1 triggered";
        let err = node.stderr();
        assert!(err.contains("panicked") && err.contains(message), "the panic on stderr:\n{err}");
        assert!(err.contains("ending the node"), "the log says the node ends:\n{err}");
        let log = std::fs::read_to_string(node.ready.session_dir.join("logs").join("raylet.log")).expect("raylet.log");
        assert!(log.contains(message), "the panic message in the session log:\n{log}");

        // Nothing of it keeps heartbeating: the GCS declares it dead, the rest goes on.
        let status = dir.wait_state(&node.ready.node_id, "DEAD", Duration::from_secs(20));
        assert_eq!(node_entry(&status, &head.ready.node_id).unwrap()["state"], "ALIVE", "{status}");
        head.assert_no_panic();
    });
}
