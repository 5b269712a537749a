//! The `rpc` suite (DESIGN.md §7, issue 2 item 9).
//!
//! - `local_rtt`: a driver's `AnnounceWorkerPort` → `AnnounceWorkerPortReply` on an
//!   already-registered local connection served by shard 0 (the client table's owner, so
//!   no cross-shard hop). The local protocol has no echo; this is its cheapest real
//!   request with a reply, idempotent for the same port. With 2+ shards,
//!   `local_rtt_cross_shard` is the same on a connection owned by another shard, whose
//!   request crosses the mesh to shard 0 and back. Baseline `raw_uds_rtt`, same sizes.
//! - `tcp_rpc_rtt`: `NodeManagerService.GetSystemConfig` over one `BlockingClient`
//!   connection served by shard 0 (found through GetNodeStats). Baseline `raw_tcp_rtt`,
//!   same request and reply sizes.
//! - `tcp_rpc_throughput_c<N>`: N client threads, each with its own connection, in closed
//!   loops of GetSystemConfig. Baseline `raw_tcp_throughput_c<N>` against a
//!   thread-per-connection echo server.
//!
//! Cases and their baselines alternate in rounds: latency loops on the calling thread,
//! throughput runs each with fresh threads and connections (merged as total operations
//! over total time).

use crate::baseline::{Sizes, TcpEcho, UdsPingPong};
use crate::cluster::{Placement, Target};
use crate::measure::{latency_interleaved, throughput, LatencyCfg, Op, PinGuard, Rate, RateCfg};
use crate::report::{Measured, Report};
use crate::{Opts, Res};
use prost::Message;
use raylet::client::LocalClient;
use raylet::ids::JobId;
use raylet::local::codec::{encode, ClientKind, LocalMessage, Register};
use raylet::rpc::{frame, BlockingClient, CallOpts};
use raylet::wire::rpc::{node_manager_service, GetSystemConfigReply, GetSystemConfigRequest};
use std::path::Path;
use std::time::Duration;

/// The port the bench's driver announces. The node only records it, so any valid value
/// works; repeating it keeps the request idempotent.
const ANNOUNCED_PORT: u16 = 10_001;

/// Runs the suite.
pub(crate) fn run(opts: &Opts, report: &mut Report) -> Res<()> {
    let target = Target::obtain(opts)?;
    report.note(target.describe());
    let place = target.placement(opts.pin)?;
    report.note(&place.describe);
    let cfg = LatencyCfg { warmup: opts.warmup, iters: opts.iters, rounds: opts.rounds };
    report.note(format!(
        "rounds: {r} interleaved with the baseline; latency: {} warm-up + {} timed iterations per case; throughput: {:.1} s per case, each run after {:.1} s warm-up",
        cfg.warmup,
        cfg.iters,
        opts.duration_s,
        opts.warmup_s,
        r = cfg.rounds
    ));
    match &target.socket {
        Some(s) => local_latency(s, target.shards.unwrap_or(1), &cfg, &place, report)?,
        None => report.note("local_rtt skipped: the node's socket is not reachable from here"),
    }
    let (mut rpc, rpc_shard) = rpc_client_on_shard0(&target)?;
    let reply = get_system_config(&mut rpc)?;
    let sizes = Sizes {
        req: frame::HEADER_LEN + GetSystemConfigRequest {}.encoded_len(),
        resp: frame::HEADER_LEN + reply.encoded_len(),
    };
    report.note(format!(
        "TCP: GetSystemConfig request {} B, reply {} B on the wire; tcp_rpc_rtt served by shard {}; throughput connections where SO_REUSEPORT puts them",
        sizes.req,
        sizes.resp,
        rpc_shard.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())
    ));
    tcp_latency(&mut rpc, sizes, &cfg, &place, report)?;
    drop(rpc);
    tcp_throughput(&target, sizes, opts, &place, report)
}

pub(crate) fn rpc_client(target: &Target) -> Res<BlockingClient> {
    let mut c = BlockingClient::new(target.node_manager, target.token.clone());
    c.connect(Duration::from_secs(5)).map_err(|e| format!("connecting to {}: {e}", target.node_manager))?;
    Ok(c)
}

/// A connection served by shard 0, like `local_rtt`'s, so both cases have the same
/// placement (the hello ack names the serving shard; SO_REUSEPORT picks it). Falls back to
/// the last connection tried.
fn rpc_client_on_shard0(target: &Target) -> Res<(BlockingClient, Option<usize>)> {
    let mut c = rpc_client(target)?;
    for _ in 1..8 * target.shards.unwrap_or(1).max(1) {
        if c.shard() == Some(0) {
            break;
        }
        c = rpc_client(target)?;
    }
    let shard = c.shard().map(|s| s as usize);
    Ok((c, shard))
}

fn get_system_config(c: &mut BlockingClient) -> Res<GetSystemConfigReply> {
    node_manager_service::blocking::get_system_config(
        c,
        &GetSystemConfigRequest {},
        CallOpts::once(Duration::from_secs(10)),
    )
    .map_err(|e| format!("GetSystemConfig: {e}"))
}

/// Connects and registers a driver; returns the client and the shard serving it.
fn register_driver(socket: &Path) -> Res<(LocalClient, u16)> {
    let mut c = LocalClient::connect(socket).map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    c.send(&LocalMessage::Register(Register {
        kind: ClientKind::Driver,
        worker_id: c.worker_id(),
        pid: i64::from(std::process::id()),
        startup_token: -1,
        // Drivers need a non-nil job; the node does not check it further.
        job_id: JobId([0xbe, 0x4c, 0, 1]),
        ip_address: "127.0.0.1".into(),
    }))
    .map_err(|e| e.to_string())?;
    match c.recv().map_err(|e| e.to_string())? {
        LocalMessage::RegisterReply(r) if r.success => Ok((c, r.shard)),
        LocalMessage::RegisterReply(r) => Err(format!("registration refused: {}", r.failure_reason)),
        other => Err(format!("unexpected reply to Register: {other:?}")),
    }
}

/// A driver connection on shard 0 and, with 2+ shards, one on another shard. The node
/// hands connections out round robin, so a few tries find both.
fn driver_connections(socket: &Path, shards: usize) -> Res<(LocalClient, Option<(LocalClient, u16)>)> {
    let (mut home, mut cross) = (None, None);
    for _ in 0..2 * shards + 2 {
        let (c, shard) = register_driver(socket)?;
        match shard {
            0 if home.is_none() => home = Some(c),
            s if s != 0 && cross.is_none() => cross = Some((c, s)),
            _ => c.disconnect().map_err(|e| e.to_string())?,
        }
        if home.is_some() && (cross.is_some() || shards < 2) {
            break;
        }
    }
    let home = home.ok_or("no local connection landed on shard 0")?;
    Ok((home, cross))
}

fn announce(c: &mut LocalClient) -> Res<()> {
    c.announce_port(ANNOUNCED_PORT, true).map_err(|e| format!("AnnounceWorkerPort: {e}"))
}

fn local_latency(socket: &Path, shards: usize, cfg: &LatencyCfg, place: &Placement, report: &mut Report) -> Res<()> {
    let (mut home, mut cross) = driver_connections(socket, shards)?;
    let sizes = Sizes {
        req: encode(&LocalMessage::AnnounceWorkerPort { port: i32::from(ANNOUNCED_PORT) }).len(),
        resp: encode(&LocalMessage::AnnounceWorkerPortReply { success: true, failure_reason: String::new() }).len(),
    };
    report.note(format!(
        "local: AnnounceWorkerPort request {} B, reply {} B; local_rtt on shard 0{}",
        sizes.req,
        sizes.resp,
        cross.as_ref().map(|(_, s)| format!(", local_rtt_cross_shard on shard {s}")).unwrap_or_default()
    ));
    eprintln!("rpc: local_rtt vs raw_uds_rtt ...");
    let mut raw = UdsPingPong::new(sizes, place.server)?;
    let hists = {
        let _pin = PinGuard::new(place.client)?;
        let mut raw_op = || raw.rtt();
        let mut home_op = || announce(&mut home);
        let mut cross_op = cross.as_mut().map(|(c, _)| move || announce(c));
        let mut ops: Vec<Op<'_>> = vec![&mut raw_op, &mut home_op];
        if let Some(op) = cross_op.as_mut() {
            ops.push(op);
        }
        latency_interleaved(cfg, &mut ops)?
    };
    let base = Measured::latency("raw_uds_rtt", &hists[0]);
    report.push(Measured::latency("local_rtt", &hists[1]), base.clone());
    if let Some(h) = hists.get(2) {
        report.push(Measured::latency("local_rtt_cross_shard", h).with_note("via the mesh to shard 0"), base);
    }
    home.disconnect().map_err(|e| e.to_string())?;
    if let Some((c, _)) = cross {
        c.disconnect().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn tcp_latency(
    rpc: &mut BlockingClient,
    sizes: Sizes,
    cfg: &LatencyCfg,
    place: &Placement,
    report: &mut Report,
) -> Res<()> {
    eprintln!("rpc: tcp_rpc_rtt vs raw_tcp_rtt ...");
    let echo = TcpEcho::start(sizes, place.server)?;
    let mut raw = echo.connect()?;
    let hists = {
        let _pin = PinGuard::new(place.client)?;
        let mut raw_op = || raw.rtt();
        let mut rpc_op = || get_system_config(rpc).map(drop);
        latency_interleaved(cfg, &mut [&mut raw_op, &mut rpc_op])?
    };
    report.push(Measured::latency("tcp_rpc_rtt", &hists[1]), Measured::latency("raw_tcp_rtt", &hists[0]));
    Ok(())
}

fn tcp_throughput(target: &Target, sizes: Sizes, opts: &Opts, place: &Placement, report: &mut Report) -> Res<()> {
    let rounds = opts.rounds.max(1);
    for &clients in &opts.concurrency {
        // One client runs where the latency client runs, beside a baseline echo placed
        // like the latency one; several clients and their echo threads are unpinned.
        let pin = if clients <= 1 { (place.client, place.server) } else { (None, None) };
        let echo = TcpEcho::start(sizes, pin.1)?;
        let cfg = RateCfg {
            clients: clients.max(1),
            warmup: opts.warmup_time(),
            duration: opts.duration() / rounds,
            pin: pin.0,
        };
        eprintln!("rpc: tcp_rpc_throughput_c{} vs raw_tcp_throughput_c{} ...", cfg.clients, cfg.clients);
        let (mut raw, mut real) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            raw.push(throughput(&cfg, |_| echo.connect(), |c| c.rtt())?);
            real.push(throughput(&cfg, |_| rpc_client(target), |c| get_system_config(c).map(drop))?);
        }
        report.push(
            Measured::rate(format!("tcp_rpc_throughput_c{}", cfg.clients), &Rate::merge(real)?),
            Measured::rate(format!("raw_tcp_throughput_c{}", cfg.clients), &Rate::merge(raw)?),
        );
    }
    Ok(())
}
