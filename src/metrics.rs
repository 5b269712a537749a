//! Per-shard counters and an RPC latency histogram, rendered as Prometheus text.
//!
//! The only shared-memory state between shards: plain atomics, written by the owning shard
//! with `Relaxed` stores and read by the `/metrics` endpoint. No domain state lives here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Errors counted by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A TCP frame failed validation.
    RpcBadFrame,
    /// A TCP peer sent no hello, a bad hello, or the wrong protocol version.
    RpcBadHello,
    /// A TCP peer sent the wrong auth token.
    RpcBadToken,
    /// A request payload did not decode or named an unknown method.
    RpcBadRequest,
    /// A handler returned an error status.
    RpcHandlerError,
    /// A TCP connection failed mid-frame.
    RpcIo,
    /// A TCP connection was cut: no byte moved for its idle deadline mid-frame.
    RpcIdle,
    /// A local-protocol frame had a bad cookie, type, length or failed verification.
    LocalBadFrame,
    /// A local peer failed the SO_PEERCRED check.
    LocalBadPeer,
    /// A local connection failed mid-frame.
    LocalIo,
    /// A TCP connection was dropped (the oldest unauthenticated) or refused to keep the
    /// node within `--max-unauthenticated-connections` / `--max-connections`.
    RpcOverCapacity,
    /// An accept failed (out of fds, or anything else that made the loop pause).
    AcceptFailed,
    /// Writing a spill file failed (a full or failing disk).
    SpillWrite,
    /// A spilled copy read back was corrupt, truncated or gone.
    SpillCorrupt,
}

impl ErrorKind {
    const ALL: [Self; 14] = [
        Self::RpcBadFrame,
        Self::RpcBadHello,
        Self::RpcBadToken,
        Self::RpcBadRequest,
        Self::RpcHandlerError,
        Self::RpcIo,
        Self::RpcIdle,
        Self::LocalBadFrame,
        Self::LocalBadPeer,
        Self::LocalIo,
        Self::RpcOverCapacity,
        Self::AcceptFailed,
        Self::SpillWrite,
        Self::SpillCorrupt,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::RpcBadFrame => "rpc_bad_frame",
            Self::RpcBadHello => "rpc_bad_hello",
            Self::RpcBadToken => "rpc_bad_token",
            Self::RpcBadRequest => "rpc_bad_request",
            Self::RpcHandlerError => "rpc_handler_error",
            Self::RpcIo => "rpc_io",
            Self::RpcIdle => "rpc_idle",
            Self::LocalBadFrame => "local_bad_frame",
            Self::LocalBadPeer => "local_bad_peer",
            Self::LocalIo => "local_io",
            Self::RpcOverCapacity => "rpc_over_capacity",
            Self::AcceptFailed => "accept_failed",
            Self::SpillWrite => "spill_write",
            Self::SpillCorrupt => "spill_corrupt",
        }
    }
}

/// The accept loops of a node, for their per-listener gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// NodeManagerService.
    NodeManager,
    /// ObjectManagerService.
    ObjectManager,
    /// The GCS (head, shard 0).
    Gcs,
    /// The Prometheus endpoint.
    Metrics,
    /// The main local socket (shard 0).
    Local,
    /// A shard's own local socket.
    LocalShard,
}

impl Listener {
    const ALL: [Self; 6] =
        [Self::NodeManager, Self::ObjectManager, Self::Gcs, Self::Metrics, Self::Local, Self::LocalShard];

    /// Its name in logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::NodeManager => "node_manager",
            Self::ObjectManager => "object_manager",
            Self::Gcs => "gcs",
            Self::Metrics => "metrics",
            Self::Local => "local",
            Self::LocalShard => "local_shard",
        }
    }
}

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 100_000, 1_000_000];
/// Methods per service tracked individually.
const METHODS: usize = 64;
/// Service ids tracked (ids are below this).
const SERVICES: usize = 16;

/// One shard's counters.
#[derive(Debug)]
pub struct ShardMetrics {
    /// TCP frames received.
    pub rpc_frames_in: AtomicU64,
    /// TCP frames sent.
    pub rpc_frames_out: AtomicU64,
    /// Local-protocol frames received.
    pub local_frames_in: AtomicU64,
    /// Local-protocol frames sent.
    pub local_frames_out: AtomicU64,
    /// Open TCP connections.
    pub rpc_connections: AtomicU64,
    /// Open local connections.
    pub local_connections: AtomicU64,
    /// Long-polls waiting on the GCS's tables (shard 0 of the head).
    pub long_poll_waiters: AtomicU64,
    /// Open TCP connections that have not finished their hello.
    pub rpc_unauthenticated: AtomicU64,
    accept_pause_ms: Vec<AtomicU64>,
    calls: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
    buckets: Vec<AtomicU64>,
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
}

impl ShardMetrics {
    fn new() -> Self {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Self {
            rpc_frames_in: AtomicU64::new(0),
            rpc_frames_out: AtomicU64::new(0),
            local_frames_in: AtomicU64::new(0),
            local_frames_out: AtomicU64::new(0),
            rpc_connections: AtomicU64::new(0),
            local_connections: AtomicU64::new(0),
            long_poll_waiters: AtomicU64::new(0),
            rpc_unauthenticated: AtomicU64::new(0),
            accept_pause_ms: zeros(Listener::ALL.len()),
            calls: zeros(SERVICES * METHODS),
            errors: zeros(ErrorKind::ALL.len()),
            buckets: zeros(BUCKETS_US.len() + 1),
            latency_sum_us: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
        }
    }

    /// Counts one served call of (service, method) that took `took`.
    pub fn record_call(&self, service: u16, method: u16, took: Duration) {
        let (s, m) = (service as usize, method as usize);
        if s < SERVICES && m < METHODS {
            self.calls[s * METHODS + m].fetch_add(1, Relaxed);
        }
        let us = took.as_micros() as u64;
        let i = BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
    }

    /// Counts one error of `kind`.
    pub fn error(&self, kind: ErrorKind) {
        let i = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.errors[i].fetch_add(1, Relaxed);
    }

    /// Sets the pause `listener`'s accept loop is in (zero when it accepts again).
    pub fn set_accept_pause(&self, listener: Listener, pause: Duration) {
        let i = Listener::ALL.iter().position(|l| *l == listener).unwrap_or(0);
        self.accept_pause_ms[i].store(pause.as_millis() as u64, Relaxed);
    }

    /// Current count of errors of `kind`.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        let i = ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.errors[i].load(Relaxed)
    }
}

/// Every shard's counters; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    shards: Arc<Vec<ShardMetrics>>,
}

impl Metrics {
    /// Counters for `n` shards.
    pub fn new(n: usize) -> Self {
        Self { shards: Arc::new((0..n).map(|_| ShardMetrics::new()).collect()) }
    }

    /// The counters of shard `i`.
    pub fn shard(&self, i: usize) -> &ShardMetrics {
        &self.shards[i]
    }

    /// Prometheus text exposition of every counter. `method_name(service, method)` names
    /// the calls.
    pub fn render(&self, method_name: impl Fn(u16, u16) -> Option<String>) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, f: &dyn Fn(&ShardMetrics) -> u64| {
            let _ = writeln!(out, "# HELP raylet_{name} {help}\n# TYPE raylet_{name} {kind}");
            for (i, s) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "raylet_{name}{{shard=\"{i}\"}} {}", f(s));
            }
        };
        gauge(&mut out, "rpc_frames_in_total", "TCP frames received", "counter", &|s| s.rpc_frames_in.load(Relaxed));
        gauge(&mut out, "rpc_frames_out_total", "TCP frames sent", "counter", &|s| s.rpc_frames_out.load(Relaxed));
        gauge(&mut out, "local_frames_in_total", "Local frames received", "counter", &|s| {
            s.local_frames_in.load(Relaxed)
        });
        gauge(&mut out, "local_frames_out_total", "Local frames sent", "counter", &|s| {
            s.local_frames_out.load(Relaxed)
        });
        gauge(&mut out, "rpc_connections", "Open TCP connections", "gauge", &|s| s.rpc_connections.load(Relaxed));
        gauge(&mut out, "local_connections", "Open local connections", "gauge", &|s| s.local_connections.load(Relaxed));
        gauge(&mut out, "long_poll_waiters", "Long-polls waiting on GCS tables", "gauge", &|s| {
            s.long_poll_waiters.load(Relaxed)
        });
        gauge(&mut out, "rpc_unauthenticated_connections", "Open TCP connections before their hello", "gauge", &|s| {
            s.rpc_unauthenticated.load(Relaxed)
        });
        let _ = writeln!(
            out,
            "# HELP raylet_accept_pause_ms Back-off of an accept loop after failures (0: accepting)\n# TYPE raylet_accept_pause_ms gauge"
        );
        for (i, s) in self.shards.iter().enumerate() {
            for (k, l) in Listener::ALL.iter().enumerate() {
                let v = s.accept_pause_ms[k].load(Relaxed);
                let _ = writeln!(out, "raylet_accept_pause_ms{{shard=\"{i}\",listener=\"{}\"}} {v}", l.label());
            }
        }

        let _ = writeln!(out, "# HELP raylet_rpc_calls_total RPCs served\n# TYPE raylet_rpc_calls_total counter");
        for (i, s) in self.shards.iter().enumerate() {
            for (k, c) in s.calls.iter().enumerate() {
                let v = c.load(Relaxed);
                if v == 0 {
                    continue;
                }
                let (svc, m) = ((k / METHODS) as u16, (k % METHODS) as u16);
                let name = method_name(svc, m).unwrap_or_else(|| format!("{svc}.{m}"));
                let _ = writeln!(out, "raylet_rpc_calls_total{{shard=\"{i}\",method=\"{name}\"}} {v}");
            }
        }
        let _ = writeln!(out, "# HELP raylet_errors_total Errors by kind\n# TYPE raylet_errors_total counter");
        for (i, s) in self.shards.iter().enumerate() {
            for (k, kind) in ErrorKind::ALL.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "raylet_errors_total{{shard=\"{i}\",kind=\"{}\"}} {}",
                    kind.label(),
                    s.errors[k].load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP raylet_rpc_latency_seconds RPC handling latency\n# TYPE raylet_rpc_latency_seconds histogram"
        );
        for (i, s) in self.shards.iter().enumerate() {
            let mut cum = 0;
            for (b, bound) in BUCKETS_US.iter().enumerate() {
                cum += s.buckets[b].load(Relaxed);
                let le = *bound as f64 / 1e6;
                let _ = writeln!(out, "raylet_rpc_latency_seconds_bucket{{shard=\"{i}\",le=\"{le}\"}} {cum}");
            }
            cum += s.buckets[BUCKETS_US.len()].load(Relaxed);
            let _ = writeln!(out, "raylet_rpc_latency_seconds_bucket{{shard=\"{i}\",le=\"+Inf\"}} {cum}");
            let sum = s.latency_sum_us.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "raylet_rpc_latency_seconds_sum{{shard=\"{i}\"}} {sum}");
            let _ =
                writeln!(out, "raylet_rpc_latency_seconds_count{{shard=\"{i}\"}} {}", s.latency_count.load(Relaxed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_calls_errors_and_buckets() {
        let m = Metrics::new(2);
        m.shard(1).record_call(1, 2, Duration::from_micros(30));
        m.shard(0).error(ErrorKind::RpcBadToken);
        let text = m.render(|s, k| Some(format!("S{s}.M{k}")));
        assert!(text.contains("raylet_rpc_calls_total{shard=\"1\",method=\"S1.M2\"} 1"));
        assert!(text.contains("raylet_errors_total{shard=\"0\",kind=\"rpc_bad_token\"} 1"));
        assert!(text.contains("raylet_rpc_latency_seconds_bucket{shard=\"1\",le=\"0.00005\"} 1"));
        assert!(text.contains("raylet_rpc_latency_seconds_count{shard=\"1\"} 1"));
    }
}
