//! Transfer under bad input and failure: chunks with a wrong checksum, size, index or
//! chunk size, for objects nobody pulls; a push connection cut in the middle of a chunk;
//! the source dying mid-object, with and without a second copy elsewhere (a fake peer, so
//! the source and how far the transfer got are certain, and a real node killed -9). Also
//! the cluster-wide chunk size from the head's system config, and a pull resumed from a
//! new source with more than one push window already received.
//!
//! A `FakePeer` registers itself in the GCS as a node with its own object-manager port,
//! claims copies in the object directory, records the Pull requests it receives, and pushes
//! exactly the chunks each test wants; dropped, it dies as a killed node would.

mod common;

use common::*;
use prost::Message;
use raylet::client::LocalClient;
use raylet::ids::{NodeId, ObjectId};
use raylet::rpc::frame::{encode_frame, FrameDecoder, FrameHeader, FrameKind, PROTOCOL_VERSION};
use raylet::rpc::{BlockingClient, CallOpts, RpcError};
use raylet::wire::rpc::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const CHUNK: usize = 5 << 20;

struct FakePeer {
    node_id: NodeId,
    gcs: BlockingClient,
    pulls: mpsc::Receiver<ObjectId>,
    om_addr: SocketAddr,
    /// Set when the peer dies; the accept loop stops at its next connection.
    dead: Arc<AtomicBool>,
    /// While set, connections accepted from then on stop reading after their hello (a
    /// puller that hangs with its connections open).
    stall_reads: Arc<AtomicBool>,
    /// Every connection accepted, to cut when the peer dies.
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// Dropping it stops the heartbeats at once.
    stop_heartbeats: Option<mpsc::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl FakePeer {
    fn register(gcs_addr: SocketAddr, token: &str) -> Self {
        let node_id = NodeId::random();
        let om = TcpListener::bind("127.0.0.1:0").unwrap();
        let om_addr = om.local_addr().unwrap();
        let mut gcs = BlockingClient::new(gcs_addr, token);
        let info = GcsNodeInfo {
            node_id: node_id.to_vec(),
            node_manager_address: "127.0.0.1".into(),
            node_manager_port: 1,
            object_manager_port: i32::from(om_addr.port()),
            ..Default::default()
        };
        node_info_gcs_service::blocking::register_node(
            &mut gcs,
            &RegisterNodeRequest { node_info: Some(info) },
            CallOpts::default(),
        )
        .unwrap();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let tok = token.to_string();
        let heartbeats = std::thread::spawn(move || {
            let mut hb = BlockingClient::new(gcs_addr, tok);
            let req = ReportHeartbeatRequest { node_id: node_id.to_vec() };
            loop {
                let _ = heartbeat_info_gcs_service::blocking::report_heartbeat(&mut hb, &req, CallOpts::default());
                if stop_rx.recv_timeout(Duration::from_millis(100)) != Err(mpsc::RecvTimeoutError::Timeout) {
                    return;
                }
            }
        });
        let (tx, pulls) = mpsc::channel();
        let dead = Arc::new(AtomicBool::new(false));
        let stall_reads = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (d, c, st) = (dead.clone(), conns.clone(), stall_reads.clone());
        let listener = std::thread::spawn(move || {
            for conn in om.incoming() {
                let Ok(conn) = conn else { return };
                if d.load(Ordering::SeqCst) {
                    return;
                }
                c.lock().unwrap().push(conn.try_clone().unwrap());
                let tx = tx.clone();
                let stall = st.load(Ordering::SeqCst).then(|| d.clone());
                std::thread::spawn(move || serve_pulls(conn, tx, stall));
            }
        });
        Self {
            node_id,
            gcs,
            pulls,
            om_addr,
            dead,
            stall_reads,
            conns,
            stop_heartbeats: Some(stop_tx),
            threads: vec![heartbeats, listener],
        }
    }

    fn claim(&mut self, id: ObjectId, size: u64) {
        let u = ObjectLocationUpdate {
            object_id: id.to_vec(),
            change: LocationChange::Added as i32,
            size,
            ..Default::default()
        };
        let req = ReportObjectLocationsRequest { node_id: self.node_id.to_vec(), updates: vec![u] };
        object_directory_gcs_service::blocking::report_object_locations(&mut self.gcs, &req, CallOpts::default())
            .unwrap();
    }

    /// Claims the only copy of `id` (`size` bytes), starts a get of it on `head` and waits
    /// for the head's Pull; returns the get and a client to push chunks to the head with.
    fn offer(
        &mut self,
        head: &Node,
        id: ObjectId,
        size: usize,
        get_timeout: Duration,
    ) -> (std::thread::JoinHandle<Option<Vec<u8>>>, BlockingClient) {
        self.claim(id, size as u64);
        let getter = get_in_thread(head, id, get_timeout);
        assert_eq!(self.next_pull(), id);
        (getter, BlockingClient::new(head.ready.object_manager_address, head.ready.token()))
    }

    fn next_pull(&self) -> ObjectId {
        self.pulls.recv_timeout(Duration::from_secs(20)).expect("the puller sends a Pull")
    }

    /// Dies as a node killed -9 would: when this returns, no heartbeat will follow, the
    /// object-manager port is closed and every connection to it is cut.
    fn die(self) {
        drop(self);
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop_heartbeats = None;
        self.dead.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees `dead` and closes the listener.
        let _ = TcpStream::connect(self.om_addr);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Answers hellos and Pull requests on one connection, reporting each pulled id. With
/// `stall_until`, stops reading after the hello until that flag is set (the peer dies).
fn serve_pulls(mut conn: TcpStream, tx: mpsc::Sender<ObjectId>, stall_until: Option<Arc<AtomicBool>>) {
    let mut d = FrameDecoder::new(Default::default());
    let mut buf = [0u8; 4096];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        d.feed(&buf[..n]);
        while let Ok(Some(f)) = d.next_frame() {
            let reply = match f.header.kind {
                FrameKind::Hello => {
                    let ack = HelloAck {
                        protocol_version: PROTOCOL_VERSION,
                        ok: true,
                        message: String::new(),
                        shard: 0,
                        shards: 1,
                    };
                    encode_frame(FrameHeader::control(FrameKind::HelloAck), &ack.encode_to_vec(), 0)
                }
                FrameKind::Request => {
                    if let Ok(p) = PullRequest::decode(f.payload.as_slice()) {
                        let _ = tx.send(ObjectId::from_bytes(&p.object_id).unwrap());
                    }
                    encode_frame(
                        FrameHeader::reply_to(&f.header, FrameKind::Response),
                        &PullReply {}.encode_to_vec(),
                        0,
                    )
                }
                _ => return,
            };
            if conn.write_all(&reply).is_err() {
                return;
            }
            if let (FrameKind::Hello, Some(dead)) = (f.header.kind, &stall_until) {
                // A hung process: the connection stays open, its kernel still answers, and
                // nothing more is read. Polling a flag is fine in a fake.
                while !dead.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        }
    }
}

struct Chunk<'a> {
    id: ObjectId,
    from: NodeId,
    index: u32,
    total: u64,
    crc: u32,
    chunk_size: u64,
    bytes: &'a [u8],
}

impl<'a> Chunk<'a> {
    fn of(id: ObjectId, from: NodeId, data: &'a [u8], index: usize) -> Self {
        Self::sized(id, from, data, index, CHUNK)
    }

    /// Chunk `index` of `data` laid out in chunks of `size` bytes.
    fn sized(id: ObjectId, from: NodeId, data: &'a [u8], index: usize, size: usize) -> Self {
        let bytes = &data[index * size..((index + 1) * size).min(data.len())];
        Self {
            id,
            from,
            index: index as u32,
            total: data.len() as u64,
            crc: raylet::checksum::crc32c(bytes),
            chunk_size: size as u64,
            bytes,
        }
    }

    fn frame_parts(&self) -> (Vec<u8>, &'a [u8]) {
        let req = PushRequest {
            push_id: Vec::new(),
            object_id: self.id.to_vec(),
            node_id: self.from.to_vec(),
            chunk_index: self.index,
            data_size: self.total,
            metadata_size: 0,
            chunk_size: self.chunk_size,
        };
        (req.encode_to_vec(), self.bytes)
    }

    /// Sends the chunk's header and half of its bytes to `to` on a connection of its own,
    /// and returns that connection, which the caller drops to cut the push.
    fn push_half(&self, to: SocketAddr, token: &str) -> BlockingClient {
        let (payload, trailer) = self.frame_parts();
        let mut frame = encode_frame(
            FrameHeader::request(object_manager_service::SERVICE_ID, object_manager_service::method::PUSH, 1, 10_000),
            &payload,
            trailer.len() as u32,
        );
        frame.extend_from_slice(&trailer[..trailer.len() / 2]);
        let mut conn = BlockingClient::new(to, token);
        conn.write_raw(&frame, Duration::from_secs(5)).unwrap();
        conn
    }

    /// Pushes the chunk with `crc` as its frame's trailer footer.
    fn push(&self, to: &mut BlockingClient) -> Result<Vec<u8>, RpcError> {
        let (payload, trailer) = self.frame_parts();
        to.call_with_trailer_crc(
            object_manager_service::SERVICE_ID,
            object_manager_service::method::PUSH,
            &payload,
            trailer,
            self.crc,
            Duration::from_secs(20),
        )
    }
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u8(..)).collect()
}

fn refused(r: Result<Vec<u8>, RpcError>, what: &str) {
    match r {
        Err(RpcError::Status(s)) => eprintln!("{what}: refused as expected: {s}"),
        other => panic!("{what}: expected an error reply, got {other:?}"),
    }
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
fn chunks_nobody_pulls_are_refused_and_the_node_keeps_serving() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let token = head.ready.token();
        let mut om = BlockingClient::new(head.ready.object_manager_address, token);
        let data = pattern(1000, 1);
        refused(Chunk::of(ObjectId::random(), NodeId::random(), &data, 0).push(&mut om), "unpulled object");
        let mut c = Chunk::of(ObjectId::random(), NodeId::random(), &data, 0);
        c.chunk_size = 1 << 20;
        refused(c.push(&mut om), "foreign chunk size");
        let status = dir.status();
        assert_eq!(status["nodes"].as_array().unwrap().len(), 1);
        head.assert_no_panic();
    });
}

#[test]
fn bad_chunks_are_refused_and_good_ones_complete_the_pull() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let token = head.ready.token();
        let mut fake = FakePeer::register(head.ready.gcs_address, &token);
        let data = pattern(2 * CHUNK + 12345, 2);
        let id = ObjectId::random();
        let (getter, mut om) = fake.offer(&head, id, data.len(), Duration::from_secs(60));
        let mut bad = Chunk::of(id, fake.node_id, &data, 0);
        bad.crc ^= 1;
        refused(bad.push(&mut om), "wrong checksum");
        let mut bad = Chunk::of(id, fake.node_id, &data, 1);
        bad.index = 3;
        refused(bad.push(&mut om), "index out of range");
        let mut bad = Chunk::of(id, fake.node_id, &data, 2);
        bad.bytes = &bad.bytes[1..];
        refused(bad.push(&mut om), "wrong size");
        let mut bad = Chunk::of(id, fake.node_id, &data, 1);
        bad.total += 1;
        refused(bad.push(&mut om), "object size mismatch");
        for i in 0..3 {
            Chunk::of(id, fake.node_id, &data, i).push(&mut om).unwrap_or_else(|e| panic!("chunk {i}: {e}"));
        }
        let got = getter.join().unwrap().expect("the pull completes");
        assert!(got == data, "received bytes differ from what was pushed");
        head.assert_no_panic();
    });
}

#[test]
fn a_push_cut_mid_chunk_is_retried_and_completes() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let token = head.ready.token();
        let mut fake = FakePeer::register(head.ready.gcs_address, &token);
        let data = pattern(CHUNK + 4096, 3);
        let id = ObjectId::random();
        let (getter, mut om) = fake.offer(&head, id, data.len(), Duration::from_secs(60));
        Chunk::of(id, fake.node_id, &data, 0).push(&mut om).unwrap();
        // Chunk 1: the header and half of the bytes, then the connection drops.
        drop(Chunk::of(id, fake.node_id, &data, 1).push_half(head.ready.object_manager_address, &token));
        // The puller gives up on the broken transfer and asks again.
        assert_eq!(fake.next_pull(), id);
        let mut om = BlockingClient::new(head.ready.object_manager_address, token);
        Chunk::of(id, fake.node_id, &data, 1).push(&mut om).unwrap();
        let got = getter.join().unwrap().expect("the pull completes after the retry");
        assert!(got == data);
        head.assert_no_panic();
    });
}

#[test]
fn the_chunk_size_of_the_heads_system_config_lays_out_every_transfer_in_the_cluster() {
    with_timeout(Duration::from_secs(90), || {
        const SMALL: usize = 64 << 10;
        let dir = TestDir::new();
        let cfg = format!("{{\"object_manager_default_chunk_size\": {SMALL}}}");
        let head = dir.start(&NodeOpts::head().args(["--system-config", cfg.as_str()]));
        let token = head.ready.token();
        // The head lays a pulled object out in 64 KiB chunks: 5 MiB ones are refused, and
        // the 64 KiB ones complete it.
        let mut fake = FakePeer::register(head.ready.gcs_address, &token);
        let data = pattern(3 * SMALL + 777, 6);
        let id = ObjectId::random();
        let (getter, mut om) = fake.offer(&head, id, data.len(), Duration::from_secs(60));
        refused(Chunk::of(id, fake.node_id, &data, 0).push(&mut om), "a chunk of the default size");
        for i in 0..4 {
            Chunk::sized(id, fake.node_id, &data, i, SMALL).push(&mut om).unwrap_or_else(|e| panic!("chunk {i}: {e}"));
        }
        let got = getter.join().unwrap().expect("the pull completes");
        assert!(got == data, "received bytes differ from what was pushed");
        // A node that joins takes the head's size, without being told on its command line:
        // its pushes to the head (and the head's to it) agree with the head's layout.
        let b = dir.start(&NodeOpts::join(head.ready.gcs_address));
        let data = pattern(20 * SMALL + 5, 7);
        let id = LocalClient::connect_driver(&b.ready.socket).unwrap().put(&data).unwrap();
        let got = get_in_thread(&head, id, Duration::from_secs(30)).join().unwrap();
        assert!(got.expect("the head pulls the object from the node that joined") == data);
        let data = pattern(9 * SMALL + 3, 8);
        let id = LocalClient::connect_driver(&head.ready.socket).unwrap().put(&data).unwrap();
        let got = get_in_thread(&b, id, Duration::from_secs(30)).join().unwrap();
        assert!(got.expect("the node that joined pulls the object from the head") == data);
        head.assert_no_panic();
        b.assert_no_panic();
    });
}

/// Starts a get of `id` on `head` while the only copy is on a fake peer, so the Pull goes
/// to the fake (no luck involved: nothing else is listed); chunks `0..landed` of `data` land,
/// the next one is half sent when the fake dies (the connection carrying it drops with it),
/// and this returns the running get once the GCS has declared the fake DEAD. Whatever
/// completes the object from here on cannot come from the fake: its port is closed, its
/// connections cut.
fn source_dies_mid_object(
    dir: &TestDir,
    head: &Node,
    id: ObjectId,
    data: &[u8],
    landed: usize,
    get_timeout: Duration,
) -> std::thread::JoinHandle<Option<Vec<u8>>> {
    let token = head.ready.token();
    let mut fake = FakePeer::register(head.ready.gcs_address, &token);
    let (getter, mut om) = fake.offer(head, id, data.len(), get_timeout);
    for i in 0..landed {
        Chunk::of(id, fake.node_id, data, i).push(&mut om).unwrap_or_else(|e| panic!("chunk {i}: {e}"));
    }
    let cut = Chunk::of(id, fake.node_id, data, landed).push_half(head.ready.object_manager_address, &token);
    let fake_id = fake.node_id.to_string();
    fake.die();
    drop(cut);
    dir.wait_state(&fake_id, "DEAD", Duration::from_secs(20));
    getter
}

#[test]
fn a_source_that_dies_mid_object_is_replaced_by_a_copy_on_another_node() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start(&NodeOpts::head().fast_heartbeat());
        let b = dir.start(&NodeOpts::join(head.ready.gcs_address).fast_heartbeat());
        let data = pattern(2 * CHUNK + 12345, 9);
        let id = ObjectId::random();
        let getter = source_dies_mid_object(&dir, &head, id, &data, 1, Duration::from_secs(30));
        // The pull outlives its source (the fetch timeout is the default minute) and waits
        // for another copy; node B's is the only one that can finish it.
        assert!(!getter.is_finished(), "the get ended when the source died");
        LocalClient::connect_driver(&b.ready.socket).unwrap().put_with_id(id, &data).unwrap();
        let got = getter.join().unwrap().expect("the pull completes from node B's copy");
        assert!(got == data, "received bytes differ from what was put");
        head.assert_no_panic();
        b.assert_no_panic();
    });
}

#[test]
fn a_source_that_dies_mid_object_with_no_copy_left_fails_after_the_fetch_timeout() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start(&NodeOpts::head().fast_heartbeat().args(["--fetch-timeout-ms", "1500"]));
        let data = pattern(2 * CHUNK + 12345, 10);
        let id = ObjectId::random();
        let started = Instant::now();
        let getter = source_dies_mid_object(&dir, &head, id, &data, 1, Duration::from_secs(60));
        // The get's reply says only that the object is missing (ObjectSpec.found): why
        // (`NoLocation` after the fetch timeout) reaches the raylet's log, not the client.
        assert!(getter.join().unwrap().is_none(), "no copy is left, yet the get returned the object");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(30),
            "the pull must give up after --fetch-timeout-ms, not the get's minute: {took:?}"
        );
        // The partial buffer is given back.
        let token = head.ready.token();
        wait_for("the aborted receive buffer to be freed", Duration::from_secs(20), || {
            let used = node_stats(&head, &token).store_stats.unwrap().object_store_bytes_used;
            if used == 0 {
                Ok(Some(()))
            } else {
                Err(format!("{used} bytes still used"))
            }
        });
        head.assert_no_panic();
    });
}

/// A pull resumed from a new source when more than that source's first push window (256 MiB
/// in flight) is already here: the new push starts at chunk 0, and the puller turning those
/// duplicates down must not end the push before it reaches the missing chunks.
#[test]
fn a_pull_resumed_with_more_than_a_push_window_already_here_completes() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let store = ["--object-store-memory", "335544320"];
        let head = dir.start(&NodeOpts::head().fast_heartbeat().args(store));
        let b = dir.start(&NodeOpts::join(head.ready.gcs_address).fast_heartbeat().args(store));
        let data = pattern(60 * CHUNK, 11);
        let id = ObjectId::random();
        let getter = source_dies_mid_object(&dir, &head, id, &data, 52, Duration::from_secs(30));
        LocalClient::connect_driver(&b.ready.socket).unwrap().put_with_id(id, &data).unwrap();
        let got = getter.join().unwrap().expect("the pull completes from node B's copy");
        assert!(got == data, "received bytes differ from what was put");
        head.assert_no_panic();
        b.assert_no_panic();
    });
}

/// A source alive and connected that stops writing in the middle of a chunk: its kernel
/// still answers and it keeps heartbeating, so neither keepalive nor node death can free
/// the chunk it claimed. The puller's idle deadline cuts the connection, the claim goes,
/// and the pull completes from another copy.
#[test]
fn a_source_that_stops_mid_chunk_is_cut_at_the_idle_deadline_and_another_copy_completes_the_pull() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let idle = ["--rpc-idle-timeout-ms", "1000"];
        let head = dir.start(&NodeOpts::head().args(idle));
        let b = dir.start(&NodeOpts::join(head.ready.gcs_address).args(idle));
        let token = head.ready.token();
        let mut fake = FakePeer::register(head.ready.gcs_address, &token);
        let data = pattern(2 * CHUNK + 12345, 12);
        let id = ObjectId::random();
        let (getter, mut om) = fake.offer(&head, id, data.len(), Duration::from_secs(60));
        Chunk::of(id, fake.node_id, &data, 0).push(&mut om).unwrap();
        let stalled = Chunk::of(id, fake.node_id, &data, 1).push_half(head.ready.object_manager_address, &token);
        LocalClient::connect_driver(&b.ready.socket).unwrap().put_with_id(id, &data).unwrap();
        let got = getter.join().unwrap().expect("the pull completes from node B's copy");
        assert!(got == data, "received bytes differ from what was put");
        assert!(errors_of(&head, "rpc_idle") >= 1, "the head cut no connection for idleness");
        // One copy and nothing else (node B holds the same one object): the buffer the
        // stalled chunk was claimed in is the object's, complete, and nothing else is held.
        let used = |n: &Node| node_stats(n, &token).store_stats.unwrap().object_store_bytes_used;
        assert_eq!(used(&head), used(&b), "store bytes of the puller and of the holder of one copy");
        drop(stalled);
        head.assert_no_panic();
        b.assert_no_panic();
    });
}

/// A puller that stops reading in the middle of the chunks pushed to it (alive, its kernel
/// answering, its receive window full): the holder's idle deadline cuts the push
/// connections, and the push lets go of the object it pinned.
#[test]
fn a_puller_that_stops_reading_is_cut_and_the_holder_unpins_the_object() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head =
            dir.start(&NodeOpts::head().args(["--rpc-idle-timeout-ms", "1000", "--object-store-memory", "134217728"]));
        let token = head.ready.token();
        let fake = FakePeer::register(head.ready.gcs_address, &token);
        fake.stall_reads.store(true, Ordering::SeqCst);
        // 60 MiB over the holder's two push connections: far more than loopback socket
        // buffers hold, so its writes block.
        let data = pattern(12 * CHUNK, 13);
        let id = LocalClient::connect_driver(&head.ready.socket).unwrap().put(&data).unwrap();
        let refs = || -> i32 {
            let mut c = head.node_manager(&token);
            let req = GetNodeStatsRequest { include_memory_info: true };
            let r = node_manager_service::blocking::get_node_stats(
                &mut c,
                &req,
                CallOpts::idempotent(Duration::from_secs(10)),
            )
            .unwrap();
            r.objects.iter().find(|o| o.object_id == id.to_vec()).map(|o| o.ref_count).expect("the object is listed")
        };
        let before = refs();
        let mut om = BlockingClient::new(head.ready.object_manager_address, &token);
        let req = PullRequest { node_id: fake.node_id.to_vec(), object_id: id.to_vec() };
        object_manager_service::blocking::pull(&mut om, &req, CallOpts::once(Duration::from_secs(10))).unwrap();
        wait_for("the holder to cut the stalled push and unpin the object", Duration::from_secs(30), || {
            let cut = head.stderr().contains("cutting the connection");
            let now = refs();
            if cut && now == before {
                Ok(Some(()))
            } else {
                Err(format!("cut: {cut}, references {now} (before the push {before})"))
            }
        });
        drop(fake);
        head.assert_no_panic();
    });
}

fn three_nodes(dir: &TestDir, puller_args: &[&str]) -> (Node, Node, Node) {
    let head = dir.start(&NodeOpts::head().fast_heartbeat().args(["--object-store-memory", "134217728"]));
    let gcs = head.ready.gcs_address;
    let a = dir.start(&NodeOpts::join(gcs).fast_heartbeat().args(["--object-store-memory", "134217728"]));
    let b = dir.start(
        &NodeOpts::join(gcs)
            .fast_heartbeat()
            .args(["--object-store-memory", "134217728"])
            .args(puller_args.iter().copied()),
    );
    (head, a, b)
}

/// The real-process variant: a holder killed -9 while a pull may be using it. Which copy
/// the puller picked and how far the transfer got are left to chance here (the fake-peer
/// tests above pin both down); whatever happened, the pull completes from the head's copy.
#[test]
fn a_holder_killed_during_a_pull_leaves_it_to_the_other_copy() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let (head, mut a, b) = three_nodes(&dir, &[]);
        let data = pattern(64 << 20, 4);
        let id = ObjectId::random();
        LocalClient::connect_driver(&a.ready.socket).unwrap().put_with_id(id, &data).unwrap();
        LocalClient::connect_driver(&head.ready.socket).unwrap().put_with_id(id, &data).unwrap();
        let getter = get_in_thread(&b, id, Duration::from_secs(60));
        a.kill9();
        let got = getter.join().unwrap().expect("the pull completes from the head's copy");
        assert!(got == data);
        b.assert_no_panic();
    });
}

/// The real-process variant without a copy: the only holder is killed -9 and declared dead
/// before the get; the CLI's get fails after the puller's --fetch-timeout-ms (1.5 s), well
/// before its own minute.
#[test]
fn a_get_of_an_object_whose_only_holder_died_fails_after_the_fetch_timeout() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let (_head, mut a, b) = three_nodes(&dir, &["--fetch-timeout-ms", "1500"]);
        let data = pattern(1 << 20, 5);
        let mut ca = LocalClient::connect_driver(&a.ready.socket).unwrap();
        let id = ca.put(&data).unwrap();
        a.kill9();
        dir.wait_state(&a.ready.node_id, "DEAD", Duration::from_secs(20));
        let started = Instant::now();
        let out = dir.cli(&[
            "object",
            "get",
            &id.to_string(),
            "--socket",
            &b.ready.socket.display().to_string(),
            "--timeout-ms",
            "60000",
        ]);
        let took = started.elapsed();
        assert!(!out.status.success(), "get of a lost object must fail");
        assert!(out.stderr.contains("not available"), "clear error expected, got: {}", out.stderr);
        assert!(out.stderr.contains("gave up fetching"), "the error says the node gave up: {}", out.stderr);
        assert!(took < Duration::from_secs(30), "the get must end after --fetch-timeout-ms, not its minute: {took:?}");
        b.assert_no_panic();
    });
}
