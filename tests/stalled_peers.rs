//! Stalled peers (issue 11, item 3): connections between processes have an idle deadline
//! (`--rpc-idle-timeout-ms`) and TCP keepalive.
//!
//! - A source whose link goes dark in the middle of a pull (nodes in network namespaces,
//!   the source's packets silently dropped by nftables): its chunk streams are cut at the
//!   puller's idle deadline (or by keepalive), and the pull completes from another copy
//!   byte for byte with nothing else held; with no other copy, the partial buffer is
//!   freed once the get gives up (it is held while a stalled stream may still write).
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

type Getter = std::thread::JoinHandle<Option<Vec<u8>>>;

/// Starts a get of `id` on `node` in a thread; returns the bytes it ends with.
fn get_in_thread(node: &Node, id: ObjectId, timeout: Duration) -> Getter {
    let sock = node.ready.socket.clone();
    std::thread::spawn(move || {
        let mut c = LocalClient::connect_driver(&sock).unwrap();
        let v = c.get(&[id], Some(timeout)).unwrap();
        v[0].as_ref().map(|v| v.to_vec())
    })
}

const SIZE: usize = 48 << 20;

/// Node 0 (the head, which pulls, behind a 40 Mbit/s link so that a pull takes about ten
/// seconds) and `n - 1` nodes joined to it, all in `bed`. The head's heartbeat timeout is
/// long: a source whose link is dark cannot heartbeat, and its death must not be what
/// frees the pull.
fn cluster(bed: &NetBed, dir: &TestDir, n: usize) -> Vec<Node> {
    bed.shape(0, 40);
    let common = ["--rpc-idle-timeout-ms", "3000", "--object-store-memory", "134217728"];
    let head = dir.start(&bed.node_opts(0, NodeOpts::head().args(common).args(["--heartbeat-timeout-ms", "600000"])));
    let gcs = head.ready.gcs_address;
    let mut nodes = vec![head];
    for i in 1..n {
        nodes.push(dir.start(&bed.node_opts(i, NodeOpts::join(gcs).args(common))));
    }
    nodes
}

/// Starts a get on the head (node 0) of `data`, whose only copy is put on node 1 under
/// `id`, and returns once 8 MiB of it have arrived: the pull is certainly from node 1 and
/// certainly in the middle of a chunk stream.
fn pull_from_node_1(bed: &NetBed, nodes: &[Node], id: ObjectId, data: &[u8], get: Duration) -> Getter {
    LocalClient::connect_driver(&nodes[1].ready.socket).unwrap().put_with_id(id, data).unwrap();
    let rx_before = bed.rx_bytes(0);
    let getter = get_in_thread(&nodes[0], id, get);
    wait_for("the puller to receive 8 MiB from the source", Duration::from_secs(60), || {
        let got = bed.rx_bytes(0) - rx_before;
        if got >= 8 << 20 {
            Ok(Some(()))
        } else {
            Err(format!("{got} bytes so far"))
        }
    });
    getter
}

/// Waits until the head has closed the object-manager connections node 1 was streaming
/// chunks on (cut at the idle deadline, or by keepalive, whichever noticed first).
fn wait_streams_from_node_1_cut(bed: &NetBed, head: &Node) {
    let from = format!("peer={}:", bed.ip(1));
    wait_for("the head to cut the dark source's chunk streams", Duration::from_secs(60), || {
        let log = head.stderr();
        let cut = log
            .lines()
            .filter(|l| l.contains("closing connection") && l.contains("label=\"object_manager\"") && l.contains(&from))
            .count();
        Ok((cut > 0).then_some(()))
    });
}

fn store_used(bed: &NetBed, i: usize, node: &Node) -> ObjectStoreStats {
    bed.run_in(i, || node_stats(node, bed.token())).store_stats.unwrap()
}

#[test]
fn a_pull_whose_source_link_goes_dark_completes_from_another_copy() {
    with_timeout(Duration::from_secs(240), || {
        // Node 1: the source; node 2: the copy, put once the pull from node 1 is under way.
        let bed = NetBed::new(3);
        let dir = TestDir::new();
        let nodes = cluster(&bed, &dir, 3);
        let data = pattern(SIZE, 21);
        let id = ObjectId::random();
        let getter = pull_from_node_1(&bed, &nodes, id, &data, Duration::from_secs(180));
        LocalClient::connect_driver(&nodes[2].ready.socket).unwrap().put_with_id(id, &data).unwrap();
        bed.blackhole(1);
        assert!(!getter.is_finished(), "the pull ended before the source's link went dark");
        let got = getter.join().unwrap().expect("the pull completes from the other copy");
        assert!(got == data, "received bytes differ from what was put");
        // The source's chunk streams stalled mid-chunk: they are cut, so a late byte can
        // never land in the buffer, which is the object's now.
        wait_streams_from_node_1_cut(&bed, &nodes[0]);
        // One copy and nothing else (as on the node that holds the same one object): no
        // partial buffer or second allocation left behind.
        let (puller, holder) = (store_used(&bed, 0, &nodes[0]), store_used(&bed, 2, &nodes[2]));
        assert_eq!(puller.object_store_bytes_used, holder.object_store_bytes_used, "puller: {puller:?}");
        assert_eq!(puller.num_local_objects, 1, "objects on the puller: {puller:?}");
        nodes[0].assert_no_panic();
        nodes[2].assert_no_panic();
    });
}

#[test]
fn a_pull_whose_only_source_goes_dark_gives_its_buffer_back_when_the_get_ends() {
    with_timeout(Duration::from_secs(240), || {
        let bed = NetBed::new(2);
        let dir = TestDir::new();
        let nodes = cluster(&bed, &dir, 2);
        let data = pattern(SIZE, 22);
        let id = ObjectId::random();
        let getter = pull_from_node_1(&bed, &nodes, id, &data, Duration::from_secs(8));
        bed.blackhole(1);
        // No other copy: the pull waits (the source is still listed) until the get gives up.
        assert!(getter.join().unwrap().is_none(), "the get returned an object no node could send");
        // Its partial buffer is freed once the chunk writes into it end: the stalled
        // streams must be cut for that.
        wait_for("the puller's receive buffer to be freed", Duration::from_secs(60), || {
            let used = store_used(&bed, 0, &nodes[0]).object_store_bytes_used;
            if used == 0 {
                Ok(Some(()))
            } else {
                Err(format!("{used} bytes still used"))
            }
        });
        wait_streams_from_node_1_cut(&bed, &nodes[0]);
        nodes[0].assert_no_panic();
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
