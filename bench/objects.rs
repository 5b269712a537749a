//! The object-plane suites (DESIGN.md §7, issue 3 item 9).
//!
//! `putget`, on one node started here: `put_<size>` (create, copy in, seal, release of a
//! new primary copy) and `get_<size>` (a get of an object already local: a round trip
//! that returns where the bytes are; the client reads them in place). Small puts and every
//! get are latencies beside `raw_uds_rtt` (same request and reply sizes as a Get); puts of
//! 1 MiB and up are bandwidths beside `memcpy_<size>`, a warm copy into touched memory.
//!
//! `transfer`, on two nodes started here: `pull_<size>` is the time from a get on node B
//! of an object only node A holds to the bytes being sealed and readable on B, reported
//! as bandwidth (and as latency in `pull_<size>_latency`), beside `raw_tcp_<size>`: the
//! same bytes over one loopback TCP connection written in 5 MiB chunks into touched
//! memory, request to last byte, one raw copy right after each pull. Every transferred
//! object is checked byte for byte.

use crate::baseline::{Sizes, UdsPingPong};
use crate::cluster::{raylet_bin, LocalNode};
use crate::measure::{histogram, latency_interleaved, LatencyCfg, Op};
use crate::report::{Measured, Report};
use crate::{Opts, Res};
use hdrhistogram::Histogram;
use raylet::client::LocalClient;
use raylet::ids::ObjectId;
use raylet::local::codec::{encode, LocalMessage, HEADER_LEN};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn size_name(n: usize) -> String {
    match n {
        n if n >= 1 << 30 => format!("{}GiB", n >> 30),
        n if n >= MIB => format!("{}MiB", n >> 20),
        n => format!("{}KiB", n >> 10),
    }
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    v
}

fn start_node(opts: &Opts, extra: &[String]) -> Res<LocalNode> {
    let parent = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut args: Vec<String> = vec!["--shards".into(), opts.shards.to_string()];
    args.extend(extra.iter().cloned());
    args.extend(opts.node_args.iter().cloned());
    LocalNode::start(&raylet_bin(opts)?, &parent, &args, opts.keep_temp)
}

fn socket(n: &LocalNode) -> Res<PathBuf> {
    n.ready.get("socket").map(PathBuf::from).ok_or_else(|| "ready line lacks socket".into())
}

/// Bytes on the wire of a one-object Get request and its reply.
fn get_sizes() -> Sizes {
    let id = ObjectId::random();
    let req = encode(&LocalMessage::Get { ids: vec![id], timeout_ms: 0 }).len();
    let spec = raylet::local::codec::ObjectSpec { id, found: true, ..Default::default() };
    let resp = encode(&LocalMessage::GetReply { objects: vec![spec], mmap_size: 1 << 30, errors: vec![] }).len();
    debug_assert!(req > HEADER_LEN);
    Sizes { req, resp }
}

/// Times `f` `iters` times after `warmup` untimed runs.
fn time(warmup: u64, iters: u64, mut f: impl FnMut() -> Res<()>) -> Res<Histogram<u64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut h = histogram();
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    Ok(h)
}

/// A warm copy of `size` bytes into memory touched beforehand.
fn memcpy(size: usize, iters: u64) -> Res<Histogram<u64>> {
    let src = pattern(size, 1);
    let mut dst = vec![1u8; size];
    time(2, iters, || {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
        Ok(())
    })
}

/// Runs `putget`.
pub(crate) fn run_putget(opts: &Opts, report: &mut Report) -> Res<()> {
    let store = 1u64 << 30;
    let node = start_node(
        opts,
        &["--head".into(), "--port".into(), "0".into(), "--object-store-memory".into(), store.to_string()],
    )?;
    report.note(format!(
        "node: started here, {} shard(s), 1 GiB store, temp dir {}",
        opts.shards,
        node.dir.path.display()
    ));
    let mut c = LocalClient::connect_driver(&socket(&node)?).map_err(|e| e.to_string())?;
    // Same placement for the node's path and the baseline (`--pin`): every object used
    // hashes to shard 0; `shared` runs the bench thread and the raw echo thread on shard
    // 0's CPU (same-core ping-pong in both cases), `split` runs the bench thread on a CPU
    // no shard uses (cross-core in both cases).
    let place = crate::cluster::placement(opts.shards, true, opts.pin)?;
    let _pin = crate::measure::PinGuard::new(place.client)?;
    report.note(format!("{}; every object used is owned by shard 0", place.describe));
    let mut uds = UdsPingPong::new(get_sizes(), place.server)?;
    let cfg = LatencyCfg { warmup: opts.warmup.min(1000), iters: opts.iters.min(10_000), rounds: opts.rounds };
    let mut rtt = || uds.rtt();
    let base = latency_interleaved(&cfg, &mut [&mut rtt as Op<'_>])?.remove(0);
    let uds_rtt = Measured::latency("raw_uds_rtt", &base);
    report.note(format!(
        "raw_uds_rtt with the sizes of a one-object Get: {} / {} bytes",
        get_sizes().req,
        get_sizes().resp
    ));
    let mut ids = ShardIds { shards: opts.shards, last: ObjectId::NIL };
    for size in [KIB, MIB, 256 * MIB] {
        let data = pattern(size, size as u64);
        let iters = if size >= 64 * MIB {
            10
        } else if size >= MIB {
            200
        } else {
            cfg.iters.min(5000)
        };
        // Time the put alone; the delete that keeps the store from filling is untimed.
        let mut h = histogram();
        for i in 0..iters + 2 {
            let t = Instant::now();
            c.put_with_id(ids.next(), &data).map_err(|e| e.to_string())?;
            let took = t.elapsed();
            c.delete(&[ids.last]).map_err(|e| e.to_string())?;
            if i >= 2 {
                h.saturating_record(took.as_nanos() as u64);
            }
        }
        let name = size_name(size);
        if size >= MIB {
            let base = Measured::gbps(format!("memcpy_{name}"), size as u64, &memcpy(size, iters)?);
            report.push(Measured::gbps(format!("put_{name}"), size as u64, &h), base);
        } else {
            report.push(Measured::latency(format!("put_{name}"), &h), uds_rtt.clone());
        }
        // Get of a local object: the reply says where it is; reading is in place.
        let id = ids.next();
        c.put_with_id(id, &data).map_err(|e| e.to_string())?;
        let check = c.get(&[id], Some(Duration::ZERO)).map_err(|e| e.to_string())?;
        let ok = check[0].as_ref().is_some_and(|v| v[..] == data[..]);
        drop(check);
        if !ok {
            return Err(format!("get of a {name} object returned other bytes"));
        }
        let mut get = || -> Res<()> {
            let v = c.get(&[id], Some(Duration::ZERO)).map_err(|e| e.to_string())?;
            if v[0].is_none() {
                return Err("object vanished".into());
            }
            Ok(())
        };
        let h = latency_interleaved(&cfg, &mut [&mut get as Op<'_>])?.remove(0);
        report.push(Measured::latency(format!("get_{name}"), &h), uds_rtt.clone());
        c.delete(&[id]).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Fresh object ids owned by shard 0.
struct ShardIds {
    shards: usize,
    last: ObjectId,
}

impl ShardIds {
    fn next(&mut self) -> ObjectId {
        loop {
            let id = ObjectId::random();
            if raylet::shard::route::owner_of_object(&id, self.shards).index() == 0 {
                self.last = id;
                return id;
            }
        }
    }
}

/// A loopback TCP server that answers an 8-byte length with that many bytes, written
/// in 5 MiB chunks from memory (like the chunked push).
fn raw_tcp_server(max: usize) -> Res<(std::net::SocketAddr, std::thread::JoinHandle<()>)> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let src = pattern(max, 9);
    let h = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let _ = s.set_nodelay(true);
        let mut req = [0u8; 8];
        while s.read_exact(&mut req).is_ok() {
            let n = (u64::from_le_bytes(req) as usize).min(max);
            for chunk in src[..n].chunks(5 * MIB) {
                if s.write_all(chunk).is_err() {
                    return;
                }
            }
        }
    });
    Ok((addr, h))
}

/// Runs `transfer`.
pub(crate) fn run_transfer(opts: &Opts, report: &mut Report) -> Res<()> {
    let sizes = [MIB, 16 * MIB, 256 * MIB, 1 << 30];
    let store = (5u64 << 30) / 2;
    let store_arg = store.to_string();
    let a = start_node(
        opts,
        &["--head".into(), "--port".into(), "0".into(), "--object-store-memory".into(), store_arg.clone()],
    )?;
    let gcs = a.ready.get("gcs_address").ok_or("no gcs_address")?.to_string();
    let session = PathBuf::from(a.ready.get("session_dir").ok_or("no session_dir")?);
    let token_file = session.join("auth_token");
    let b = start_node(
        opts,
        &[
            "--address".into(),
            gcs,
            "--auth-token-file".into(),
            token_file.display().to_string(),
            "--object-store-memory".into(),
            store_arg,
        ],
    )?;
    report.note(format!("nodes: A (head) and B started here, {} shard(s) each, 2.5 GiB stores", opts.shards));
    let mut ca = LocalClient::connect_driver(&socket(&a)?).map_err(|e| e.to_string())?;
    let mut cb = LocalClient::connect_driver(&socket(&b)?).map_err(|e| e.to_string())?;
    let token = raylet::cli::session::read_token(&token_file)?;
    let gcs_addr = raylet::cli::session::resolve_addr(a.ready.get("gcs_address").ok_or("no gcs_address")?)?;
    let mut gcs = raylet::rpc::BlockingClient::new(gcs_addr, token);
    let (addr, _server) = raw_tcp_server(1 << 30)?;
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut sink = vec![1u8; 1 << 30];
    for size in sizes {
        let name = size_name(size);
        let iters: u64 = match size {
            s if s <= MIB => 200,
            s if s <= 16 * MIB => 30,
            s if s <= 256 * MIB => 8,
            _ => 5,
        };
        let data = pattern(size, size as u64 ^ 0x55);
        let mut h = histogram();
        // The raw copy runs right after each pull (same moment, same machine state), so
        // noise that comes and goes on a shared VM hits both sides alike.
        let mut raw = histogram();
        let mut raw_copy = || -> Res<()> {
            tcp.write_all(&(size as u64).to_le_bytes()).map_err(|e| e.to_string())?;
            tcp.read_exact(&mut sink[..size]).map_err(|e| e.to_string())
        };
        for i in 0..iters + 1 {
            let id = ObjectId::random();
            ca.put_with_id(id, &data).map_err(|e| e.to_string())?;
            // Let A's location report reach the GCS first: measure the transfer, not the
            // directory's reporting delay.
            wait_located(&mut gcs, id)?;
            let t = Instant::now();
            let v = cb.get(&[id], Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
            let took = t.elapsed();
            let got = v[0].as_ref().ok_or_else(|| format!("pull of {name} timed out"))?;
            if got[..] != data[..] {
                return Err(format!("pulled {name} object differs from what was put"));
            }
            drop(v);
            cb.delete(&[id]).map_err(|e| e.to_string())?;
            ca.delete(&[id]).map_err(|e| e.to_string())?;
            let t = Instant::now();
            raw_copy()?;
            let raw_took = t.elapsed();
            if i > 0 {
                h.saturating_record(took.as_nanos() as u64);
                raw.saturating_record(raw_took.as_nanos() as u64);
            }
        }
        let base = Measured::gbps(format!("raw_tcp_{name}"), size as u64, &raw);
        report.push(Measured::gbps(format!("pull_{name}"), size as u64, &h), base.clone());
        // The same pulls beside a warm memcpy of the same size: the ceiling of any copy.
        let copy = Measured::gbps(format!("memcpy_{name}"), size as u64, &memcpy(size, iters)?);
        report.push(Measured::gbps(format!("pull_{name}_of_memcpy"), size as u64, &h), copy);
        report.push(
            Measured::latency(format!("pull_{name}_latency"), &h),
            Measured::latency(format!("raw_tcp_{name}_latency"), &raw_as_latency(&base, size)),
        );
    }
    Ok(())
}

/// The raw baseline's median time as a one-sample histogram (for the latency rows).
fn raw_as_latency(m: &Measured, size: usize) -> Histogram<u64> {
    let mut h = histogram();
    h.saturating_record((size as f64 / m.value.max(1e-9)) as u64);
    h
}

/// Waits until the GCS object directory lists a copy of `id`.
fn wait_located(gcs: &mut raylet::rpc::BlockingClient, id: ObjectId) -> Res<()> {
    use raylet::wire::rpc::{object_directory_gcs_service, GetObjectLocationsRequest};
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut version = 0;
    loop {
        let req = GetObjectLocationsRequest { object_ids: vec![id.to_vec()], known_version: version, wait_ms: 1000 };
        let r = object_directory_gcs_service::blocking::get_object_locations(
            gcs,
            &req,
            raylet::rpc::CallOpts::idempotent(Duration::from_secs(5)),
        )
        .map_err(|e| format!("GetObjectLocations: {e}"))?;
        if r.locations.first().is_some_and(|l| !l.node_ids.is_empty()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the directory never listed {id}"));
        }
        version = r.version;
    }
}
