//! Stalled peers (issue 11, item 3): connections between processes have an idle deadline
//! (`--rpc-idle-timeout-ms`) and TCP keepalive.
//!
//! - A source whose link goes dark in the middle of a pull (nodes in network namespaces,
//!   the source's packets silently dropped by nftables) is cut at the puller's idle
//!   deadline, its chunk claims are freed, and the pull completes from another copy byte
//!   for byte, with no partial buffer left behind.
//! - A long-poll on an otherwise idle connection is outstanding work, not idleness: it is
//!   never cut, however short the deadline.
//!
//! The deterministic variant with a fake source that stops writing mid-chunk (its kernel
//! still answers, so only the idle deadline can notice) is in `transfer_failures.rs`.

mod common;

use common::netns::NetBed;
use common::*;
use raylet::client::LocalClient;
use raylet::ids::ObjectId;
use raylet::rpc::{BlockingClient, CallOpts, RpcError};
use raylet::wire::rpc::*;
use std::time::Duration;

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u8(..)).collect()
}

/// Starts a get of `id` on `node` in a thread; returns the bytes it ends with.
fn get_in_thread(node: &Node, id: ObjectId, timeout: Duration) -> std::thread::JoinHandle<Option<Vec<u8>>> {
    let sock = node.ready.socket.clone();
    std::thread::spawn(move || {
        let mut c = LocalClient::connect_driver(&sock).unwrap();
        let v = c.get(&[id], Some(timeout)).unwrap();
        v[0].as_ref().map(|v| v.to_vec())
    })
}

#[test]
fn a_pull_whose_source_link_goes_dark_completes_from_another_copy() {
    with_timeout(Duration::from_secs(240), || {
        const SIZE: usize = 48 << 20;
        // Node 0: the head, which pulls; node 1: the source; node 2: the copy put later.
        let bed = NetBed::new(3);
        // The puller's link at 40 Mbit/s: the pull from the source takes about ten
        // seconds, so the blackhole certainly lands in the middle of it.
        bed.shape(0, 40);
        let dir = TestDir::new();
        let common = ["--rpc-idle-timeout-ms", "3000", "--object-store-memory", "134217728"];
        // The dark source cannot heartbeat either; a long heartbeat timeout keeps it ALIVE,
        // so its death cannot be what frees the pull: only the idle deadline can.
        let head =
            dir.start(&bed.node_opts(0, NodeOpts::head().args(common).args(["--heartbeat-timeout-ms", "600000"])));
        let gcs = head.ready.gcs_address;
        let source = dir.start(&bed.node_opts(1, NodeOpts::join(gcs).args(common)));
        let copy = dir.start(&bed.node_opts(2, NodeOpts::join(gcs).args(common)));
        let data = pattern(SIZE, 21);
        let id = ObjectId::random();
        LocalClient::connect_driver(&source.ready.socket).unwrap().put_with_id(id, &data).unwrap();
        let rx_before = bed.rx_bytes(0);
        // The source holds the only copy: the pull goes to it.
        let getter = get_in_thread(&head, id, Duration::from_secs(180));
        wait_for("the puller to receive 8 MiB from the source", Duration::from_secs(60), || {
            let got = bed.rx_bytes(0) - rx_before;
            if got >= 8 << 20 {
                Ok(Some(()))
            } else {
                Err(format!("{got} bytes so far"))
            }
        });
        LocalClient::connect_driver(&copy.ready.socket).unwrap().put_with_id(id, &data).unwrap();
        bed.blackhole(1);
        assert!(!getter.is_finished(), "the pull ended before the source's link went dark");
        let got = getter.join().unwrap().expect("the pull completes from the other copy");
        assert!(got == data, "received bytes differ from what was put");
        // The source's stalled chunk streams were cut by the puller's idle deadline.
        let cut = bed.run_in(0, || errors_of(&head, "rpc_idle"));
        assert!(cut >= 1, "the puller cut no connection for idleness");
        // One copy and nothing else (as on the node that holds the same one object): no
        // partial buffer or second allocation left behind.
        let stats = bed.run_in(0, || node_stats(&head, bed.token())).store_stats.unwrap();
        let held = bed.run_in(2, || node_stats(&copy, bed.token())).store_stats.unwrap();
        assert_eq!(stats.object_store_bytes_used, held.object_store_bytes_used, "store bytes on the puller: {stats:?}");
        assert_eq!(stats.num_local_objects, 1, "objects on the puller: {stats:?}");
        head.assert_no_panic();
        copy.assert_no_panic();
    });
}

#[test]
fn a_long_poll_on_an_idle_connection_is_not_cut() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let idle = ["--rpc-idle-timeout-ms", "500"];
        let head = dir.start(&NodeOpts::head().args(idle));
        // The joiner long-polls the head's node table (5 s per poll) on its own connection.
        let b = dir.start(&NodeOpts::join(head.ready.gcs_address).args(idle));
        dir.wait_state(&b.ready.node_id, "ALIVE", Duration::from_secs(20));
        let mut gcs = BlockingClient::new(head.ready.gcs_address, head.ready.token());
        let now = node_info_gcs_service::blocking::get_all_node_info(
            &mut gcs,
            &GetAllNodeInfoRequest { known_version: 0, wait_ms: 0 },
            CallOpts::once(Duration::from_secs(10)),
        )
        .unwrap();
        // Nothing changes in the node table: the poll waits its full 3 s, six deadlines,
        // with no byte moving either way. Not retried, so a cut would show as an error.
        let r = node_info_gcs_service::blocking::get_all_node_info(
            &mut gcs,
            &GetAllNodeInfoRequest { known_version: now.version, wait_ms: 3000 },
            CallOpts::once(Duration::from_secs(10)),
        );
        match r {
            Ok(reply) => assert_eq!(reply.version, now.version, "the table changed during the poll"),
            Err(RpcError::Closed(e)) => panic!("the long-poll's connection was cut: {e}"),
            Err(e) => panic!("the long-poll failed: {e}"),
        }
        // Meanwhile the joiner's own long-polls ran as long; neither side cut anything.
        for n in [&head, &b] {
            assert_eq!(errors_of(n, "rpc_idle"), 0, "node {} cut a connection for idleness", n.pid);
            assert!(!n.stderr().contains("cutting the connection"), "node {} cut a client connection", n.pid);
        }
        head.assert_no_panic();
        b.assert_no_panic();
    });
}
