//! Node configuration: every setting a raylet runs with, its default and its validation.
//! Built once by `main.rs` from the CLI and passed down by value; nothing reads a global.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A setting was out of range or inconsistent with another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// Ray's system-config key for the size of the chunks objects move between nodes in.
pub const CHUNK_SIZE_KEY: &str = "object_manager_default_chunk_size";
pub use crate::logic::transfer::chunks::DEFAULT_CHUNK_SIZE;
/// The smallest chunk size accepted: smaller ones only multiply per-chunk work.
pub const MIN_CHUNK_SIZE: u64 = 4 << 10;
/// Ray's key for the fraction of the store above which pinned primaries spill.
pub const SPILLING_THRESHOLD_KEY: &str = "object_spilling_threshold";
/// Ray's key for how long a create that finds the store full keeps waiting for room.
pub const FULL_TIMEOUT_KEY: &str = "oom_grace_period_s";

/// The GCS's caps on state its clients add (head only), from the head's system config;
/// each key is named after what it bounds. Ray has none of these as settings (its bounds
/// are the gRPC message size and the dead-node cache), so the names are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcsLimits {
    /// Long-polls waiting at once, per table (`gcs_max_long_polls`).
    pub max_long_polls: usize,
    /// KV entries (`gcs_kv_max_entries`).
    pub kv_max_entries: usize,
    /// Bytes of one KV value (`gcs_kv_max_value_bytes`).
    pub kv_max_value_bytes: usize,
    /// Bytes of every KV key and value together (`gcs_kv_max_total_bytes`).
    pub kv_max_total_bytes: usize,
    /// Locations in the object directory: copies on nodes plus spilled copies
    /// (`gcs_object_directory_max_locations`).
    pub max_locations: usize,
    /// Placement groups not removed (`gcs_max_placement_groups`).
    pub max_placement_groups: usize,
    /// Bundles in one placement group (`gcs_max_bundles_per_placement_group`).
    pub max_bundles_per_group: usize,
}

impl Default for GcsLimits {
    fn default() -> Self {
        Self {
            max_long_polls: 10_000,
            kv_max_entries: 100_000,
            kv_max_value_bytes: 8 << 20,
            kv_max_total_bytes: 512 << 20,
            max_locations: 1_000_000,
            max_placement_groups: 10_000,
            max_bundles_per_group: 1_000,
        }
    }
}

/// Where a [`GcsLimits`] key is stored.
type LimitField = fn(&mut GcsLimits) -> &mut usize;

impl GcsLimits {
    /// Every key and the field it sets.
    const KEYS: [(&'static str, LimitField); 7] = [
        ("gcs_max_long_polls", |l| &mut l.max_long_polls),
        ("gcs_kv_max_entries", |l| &mut l.kv_max_entries),
        ("gcs_kv_max_value_bytes", |l| &mut l.kv_max_value_bytes),
        ("gcs_kv_max_total_bytes", |l| &mut l.kv_max_total_bytes),
        ("gcs_object_directory_max_locations", |l| &mut l.max_locations),
        ("gcs_max_placement_groups", |l| &mut l.max_placement_groups),
        ("gcs_max_bundles_per_placement_group", |l| &mut l.max_bundles_per_group),
    ];

    /// The limits `system_config` sets; each must be a whole number of at least 1.
    pub fn of(system_config: &str) -> Result<Self, ConfigError> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(system_config)
            .map_err(|e| ConfigError(format!("the system config is not a JSON object: {e}")))?;
        let mut out = Self::default();
        for (key, field) in Self::KEYS {
            if let Some(v) = map.get(key) {
                *field(&mut out) = v
                    .as_u64()
                    .filter(|n| *n >= 1)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| ConfigError(format!("{key} must be a whole number of at least 1, not {v}")))?;
            }
        }
        Ok(out)
    }
}

/// Default of `--max-unauthenticated-connections`. A real peer finishes its hello within
/// a round trip, so even a whole cluster reconnecting at once has few mid-hello at any
/// instant; 128 of them hold at most 128 fds and 128 hello buffers of 4 KiB.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 128;
/// Default of `--max-connections` (Redis's `maxclients`): far above what a node's peers
/// and clients need, and lowered at start to fit the fd limit, as Redis does.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The object plane's cluster-wide settings, from the head's system config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectPlaneConfig {
    /// Bytes per transfer chunk (`object_manager_default_chunk_size`, 5 MiB).
    pub chunk_size: u64,
    /// Spill pinned primaries above this fraction of the store (`object_spilling_threshold`, 0.8).
    pub spilling_threshold: f64,
    /// A create waits this long for room before `ObjectStoreFull` (`oom_grace_period_s`;
    /// 5 s here: it covers spilling what is needed, which Ray waits out separately).
    pub full_timeout: Duration,
}

impl Default for ObjectPlaneConfig {
    fn default() -> Self {
        Self { chunk_size: DEFAULT_CHUNK_SIZE, spilling_threshold: 0.8, full_timeout: Duration::from_secs(5) }
    }
}

/// Everything one raylet process needs to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id.
    pub node_id: crate::ids::NodeId,
    /// Run the GCS in this process.
    pub head: bool,
    /// The GCS to join (non-head), or the head's own GCS address once bound.
    pub gcs_address: Option<SocketAddr>,
    /// GCS port on the head (0 = pick one).
    pub gcs_port: u16,
    /// The address this node advertises and binds its TCP listeners to.
    pub node_ip: IpAddr,
    /// NodeManagerService port (0 = pick one).
    pub node_manager_port: u16,
    /// ObjectManagerService port (0 = pick one).
    pub object_manager_port: u16,
    /// Prometheus endpoint port (0 = pick one).
    pub metrics_port: u16,
    /// Address the metrics endpoint binds to.
    pub metrics_bind: IpAddr,
    /// Number of shards (glommio executors).
    pub shards: usize,
    /// Spin this long before an idle executor parks (latency vs. CPU).
    pub spin_before_park: Option<Duration>,
    /// Resources this node offers (CPU, GPU, memory, custom...).
    pub resources: Vec<(String, f64)>,
    /// Object store capacity in bytes.
    pub object_store_memory: u64,
    /// `None`: the store is a sealed memfd; `Some(dir)`: a file in `dir` (unlinked at once,
    /// clients get it read-only and write through a staging memfd: `store::arena`).
    pub plasma_directory: Option<PathBuf>,
    /// Where fallback segments are created (default `<session>/fallback`).
    pub fallback_directory: Option<PathBuf>,
    /// Most bytes of fallback segments at once (0 disables fallback; default: the size of
    /// the fallback directory's filesystem).
    pub fallback_allocation_limit: Option<u64>,
    /// Where spilled objects go (default `<session>/spill`).
    pub spill_directory: Option<PathBuf>,
    /// Root of session directories.
    pub temp_dir: PathBuf,
    /// This node's session directory (created at start).
    pub session_dir: PathBuf,
    /// The cluster auth token.
    pub auth_token: String,
    /// Heartbeat period to the GCS.
    pub heartbeat_period: Duration,
    /// A node silent for this long is marked DEAD by the GCS.
    pub heartbeat_timeout: Duration,
    /// Cap on local-protocol payloads.
    pub max_local_frame: u64,
    /// Cap on RPC payloads and trailers.
    pub max_rpc_frame: u32,
    /// Cap on TCP connections that have not finished their hello, node-wide; over it the
    /// oldest of them is dropped.
    pub max_unauthenticated_connections: usize,
    /// Cap on all TCP connections, node-wide; lowered at start to fit the fd limit.
    pub max_connections: usize,
    /// Extra system config (JSON object) the head stores in the GCS KV.
    pub system_config: String,
    /// Node name shown in status.
    pub node_name: String,
    /// Worker pool, leases, agent and resource reporting.
    pub sched: SchedConfig,
    /// A pull with no copy anywhere fails after this long.
    pub fetch_timeout: Duration,
    /// A TCP connection with a frame part-way through and no byte moving for this long is
    /// cut; keepalive finds a vanished peer within about as long (`rpc::idle`, `rpc::sockopt`).
    pub rpc_idle_timeout: Duration,
    /// Test knob, not on the CLI: shard `i` (i >= 1) reports a failed start after binding
    /// its listeners, so tests can check that a failed start unwinds the other shards
    /// without hanging (`tests/shard_start.rs`). `None` in every real configuration.
    pub fail_start_on_shard: Option<usize>,
}

/// Scheduling-plane settings (RAY-NOTES.md §12.6, §12.3).
#[derive(Debug, Clone)]
pub struct SchedConfig {
    /// Worker command line; empty means this binary's `worker` subcommand.
    pub worker_command: Vec<String>,
    /// Idle workers started when the node starts.
    pub num_prestart_workers: usize,
    /// Most worker processes starting at once; 0 = the node's CPU count.
    pub maximum_startup_concurrency: usize,
    /// A worker must register and announce its port within this long.
    pub worker_register_timeout: Duration,
    /// An idle worker may be reaped after this long.
    pub idle_worker_killing_time_threshold: Duration,
    /// Period of the reaping pass; zero disables reaping.
    pub kill_idle_workers_interval: Duration,
    /// Idle workers are reaped while more than this many run; `None` = available CPUs.
    pub num_workers_soft_limit: Option<usize>,
    /// SIGTERM, then SIGKILL after this long.
    pub kill_worker_timeout: Duration,
    /// Written to each worker's `/proc/<pid>/oom_score_adj` (0..=1000).
    pub worker_oom_score_adj: i32,
    /// Agent command line; empty means no agent.
    pub agent_command: Vec<String>,
    /// First delay before restarting a dead agent (doubles up to 30 s).
    pub agent_restart_interval: Duration,
    /// An agent must register within this long or it is killed and restarted.
    pub agent_register_timeout: Duration,
    /// GCS (head): how often it pulls every raylet's resource report.
    pub gcs_resource_poll_period: Duration,
    /// Lease requests this node holds undecided (queued, infeasible, waiting for their
    /// arguments or a worker); more are refused with `ResourceExhausted`.
    pub max_queued_leases: usize,
}

impl Default for SchedConfig {
    fn default() -> Self {
        Self {
            worker_command: Vec::new(),
            num_prestart_workers: 0,
            maximum_startup_concurrency: 0,
            worker_register_timeout: Duration::from_secs(60),
            idle_worker_killing_time_threshold: Duration::from_secs(1),
            kill_idle_workers_interval: Duration::from_millis(200),
            num_workers_soft_limit: None,
            kill_worker_timeout: Duration::from_millis(1000),
            worker_oom_score_adj: 1000,
            agent_command: Vec::new(),
            agent_restart_interval: Duration::from_secs(1),
            agent_register_timeout: Duration::from_secs(30),
            gcs_resource_poll_period: Duration::from_millis(100),
            max_queued_leases: 100_000,
        }
    }
}

impl NodeConfig {
    /// Defaults for a node under `temp_dir`; `main.rs` overrides from the CLI.
    pub fn new(temp_dir: PathBuf) -> Self {
        let cpus = available_cpus();
        Self {
            node_id: crate::ids::NodeId::random(),
            head: false,
            gcs_address: None,
            gcs_port: 6379,
            node_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            node_manager_port: 0,
            object_manager_port: 0,
            metrics_port: 0,
            metrics_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            shards: cpus,
            spin_before_park: Some(Duration::from_micros(50)),
            resources: vec![("CPU".into(), cpus as f64)],
            object_store_memory: 256 << 20,
            plasma_directory: None,
            fallback_directory: None,
            fallback_allocation_limit: None,
            spill_directory: None,
            session_dir: temp_dir.join("session_unset"),
            temp_dir,
            auth_token: String::new(),
            heartbeat_period: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            max_local_frame: 64 << 20,
            max_rpc_frame: 64 << 20,
            max_unauthenticated_connections: DEFAULT_MAX_UNAUTHENTICATED,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            system_config: "{}".into(),
            node_name: String::new(),
            sched: SchedConfig::default(),
            fetch_timeout: Duration::from_secs(60),
            rpc_idle_timeout: crate::rpc::idle::DEFAULT_IDLE_TIMEOUT,
            fail_start_on_shard: None,
        }
    }

    /// Checks ranges and cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_string()));
        if self.shards == 0 || self.shards > 256 {
            return err("--shards must be between 1 and 256");
        }
        if !self.head && self.gcs_address.is_none() {
            return err("a non-head node needs --address HOST:PORT of the GCS");
        }
        if self.heartbeat_period.is_zero() || self.heartbeat_timeout < self.heartbeat_period * 2 {
            return err("the heartbeat timeout must be at least two heartbeat periods");
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&self.rpc_idle_timeout) {
            return err("--rpc-idle-timeout-ms must be from 100 ms to one hour");
        }
        if self.object_store_memory < (1 << 20) {
            return err("--object-store-memory must be at least 1 MiB");
        }
        if self.auth_token.is_empty() {
            return err("no auth token");
        }
        if self.auth_token.len() > crate::rpc::admission::MAX_AUTH_TOKEN_LEN {
            return Err(ConfigError(format!(
                "the auth token is {} bytes long; at most {} fit in a hello",
                self.auth_token.len(),
                crate::rpc::admission::MAX_AUTH_TOKEN_LEN
            )));
        }
        if self.max_unauthenticated_connections == 0 || self.max_connections == 0 {
            return err("--max-unauthenticated-connections and --max-connections must be at least 1");
        }
        for (name, v) in &self.resources {
            if !v.is_finite() || *v < 0.0 {
                return Err(ConfigError(format!("resource {name} has invalid quantity {v}")));
            }
        }
        let sc = &self.sched;
        if sc.worker_register_timeout.is_zero() || sc.agent_register_timeout.is_zero() {
            return err("registration timeouts must be positive");
        }
        if sc.gcs_resource_poll_period.is_zero() {
            return err("--gcs-resource-poll-period-ms must be positive");
        }
        if !(0..=1000).contains(&sc.worker_oom_score_adj) {
            return err("the worker oom_score_adj must be within 0..=1000");
        }
        if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&self.system_config).is_err() {
            return err("--system-config must be a JSON object");
        }
        self.object_plane_of(&self.system_config)?;
        GcsLimits::of(&self.system_config)?;
        if self.sched.max_queued_leases == 0 {
            return err("--max-queued-leases must be at least 1");
        }
        Ok(())
    }

    /// The object-plane settings `system_config` sets (the head's, which every node learns
    /// when it registers, so pushers and pullers lay chunks out alike), each defaulting to
    /// Ray's value. A chunk travels as one frame trailer, so it cannot exceed the frame cap.
    pub fn object_plane_of(&self, system_config: &str) -> Result<ObjectPlaneConfig, ConfigError> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(system_config)
            .map_err(|e| ConfigError(format!("the system config is not a JSON object: {e}")))?;
        let mut out = ObjectPlaneConfig::default();
        if let Some(v) = map.get(CHUNK_SIZE_KEY) {
            let max = u64::from(self.max_rpc_frame);
            out.chunk_size = v.as_u64().filter(|n| (MIN_CHUNK_SIZE..=max).contains(n)).ok_or_else(|| {
                ConfigError(format!(
                    "{CHUNK_SIZE_KEY} must be a whole number of bytes from {MIN_CHUNK_SIZE} to {max}, not {v}"
                ))
            })?;
        }
        if let Some(v) = map.get(SPILLING_THRESHOLD_KEY) {
            out.spilling_threshold = v.as_f64().filter(|t| *t > 0.0 && *t <= 1.0).ok_or_else(|| {
                ConfigError(format!("{SPILLING_THRESHOLD_KEY} must be a fraction of the store in (0, 1], not {v}"))
            })?;
        }
        if let Some(v) = map.get(FULL_TIMEOUT_KEY) {
            out.full_timeout = v
                .as_f64()
                .filter(|s| (0.0..=3600.0).contains(s))
                .map(Duration::from_secs_f64)
                .ok_or_else(|| ConfigError(format!("{FULL_TIMEOUT_KEY} must be 0 to 3600 seconds, not {v}")))?;
        }
        Ok(out)
    }

    /// The local-protocol socket path.
    pub fn socket_path(&self) -> PathBuf {
        self.session_dir.join("sockets").join("raylet")
    }

    /// The logs directory.
    pub fn logs_dir(&self) -> PathBuf {
        self.session_dir.join("logs")
    }

    /// Fallback directory, defaulting into the session.
    pub fn fallback_dir(&self) -> PathBuf {
        self.fallback_directory.clone().unwrap_or_else(|| self.session_dir.join("fallback"))
    }

    /// Spill directory, defaulting into the session.
    pub fn spill_dir(&self) -> PathBuf {
        self.spill_directory.clone().unwrap_or_else(|| self.session_dir.join("spill"))
    }
}

/// CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
