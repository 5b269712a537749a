//! Command-line interface (DESIGN.md §7) and its translation into a [`NodeConfig`].

use crate::config::NodeConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// raylet: a thread-per-core re-implementation of Ray's per-node daemon.
#[derive(Debug, Parser)]
#[command(name = "raylet", version, about, args_override_self = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node in the foreground until SIGTERM/SIGINT or ShutdownRaylet.
    Start(Box<StartArgs>),
    /// Show every node of the cluster with its resources.
    Status(StatusArgs),
    /// Gracefully stop nodes (ShutdownRaylet).
    Stop(StopArgs),
    /// Run the default worker process (started by a node's worker pool).
    Worker(crate::worker::WorkerArgs),
    /// Run the minimal agent process (started by a node with --agent-command).
    Agent(super::agent::AgentArgs),
    /// Object store usage of every node and its objects.
    Memory(MemoryArgs),
    /// Put, get or delete an object through a local raylet.
    Object(ObjectArgs),
}

/// `raylet memory`.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// The cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `raylet object ...`.
#[derive(Debug, Args)]
pub struct ObjectArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ObjectCommand,
}

/// Object subcommands.
#[derive(Debug, Subcommand)]
pub enum ObjectCommand {
    /// Store FILE as a new pinned primary copy on the node; prints its id.
    Put {
        /// The file.
        file: PathBuf,
        /// The raylet socket (default: the head of the newest local session).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Root of session directories.
        #[arg(long, default_value = "/tmp/raylet")]
        temp_dir: PathBuf,
    },
    /// Write an object's bytes (pulled from another node when needed) to stdout or -o FILE.
    Get {
        /// The object id (hex).
        id: String,
        /// The raylet socket (default: the head of the newest local session).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Output file.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// How long to wait for the object, in ms.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
        /// Root of session directories.
        #[arg(long, default_value = "/tmp/raylet")]
        temp_dir: PathBuf,
    },
    /// Delete an object on every alive node (unpins the primary copy, frees pulled copies).
    Delete {
        /// The object id (hex).
        id: String,
        /// The raylet socket (default: the head of the newest local session).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Root of session directories.
        #[arg(long, default_value = "/tmp/raylet")]
        temp_dir: PathBuf,
    },
}

/// Output format of inspection commands.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON object for programs.
    Json,
}

/// Where a CLI command finds the cluster.
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// GCS address HOST:PORT (default: the newest local cluster via <temp-dir>/session_latest).
    #[arg(long)]
    pub address: Option<String>,
    /// Root of session directories.
    #[arg(long, default_value = "/tmp/raylet")]
    pub temp_dir: PathBuf,
    /// File holding the cluster auth token (default: RAYLET_AUTH_TOKEN, then the local session).
    #[arg(long)]
    pub auth_token_file: Option<PathBuf>,
}

/// `raylet status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `raylet stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// The cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Stop only this node.
    #[arg(long, conflicts_with = "all")]
    pub node_id: Option<String>,
    /// Stop every node, the head last (the default when no node is named).
    #[arg(long)]
    pub all: bool,
    /// How long to wait for the nodes to go away.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
}

/// `raylet start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Run the GCS in this node (the head).
    #[arg(long, conflicts_with = "address")]
    pub head: bool,
    /// GCS address HOST:PORT to join.
    #[arg(long)]
    pub address: Option<String>,
    /// GCS port on the head (0 = pick one).
    #[arg(long, default_value_t = 6379)]
    pub port: u16,
    /// IP address this node advertises and binds to.
    #[arg(long, default_value = "127.0.0.1")]
    pub node_ip_address: std::net::IpAddr,
    /// NodeManagerService port (0 = pick one).
    #[arg(long, default_value_t = 0)]
    pub node_manager_port: u16,
    /// ObjectManagerService port (0 = pick one).
    #[arg(long, default_value_t = 0)]
    pub object_manager_port: u16,
    /// Prometheus port (0 = pick one).
    #[arg(long, default_value_t = 0)]
    pub metrics_export_port: u16,
    /// Address the metrics endpoint binds to.
    #[arg(long, default_value = "127.0.0.1")]
    pub metrics_bind_address: std::net::IpAddr,
    /// Number of shards (default: CPUs available to the process).
    #[arg(long)]
    pub shards: Option<usize>,
    /// CPUs this node offers (default: CPUs available to the process).
    #[arg(long)]
    pub num_cpus: Option<f64>,
    /// GPUs this node offers.
    #[arg(long)]
    pub num_gpus: Option<f64>,
    /// Memory resource in bytes.
    #[arg(long)]
    pub memory: Option<f64>,
    /// Custom resources as a JSON object, e.g. '{"accel": 2}'.
    #[arg(long)]
    pub resources: Option<String>,
    /// Object store capacity in bytes.
    #[arg(long, default_value_t = 256 << 20)]
    pub object_store_memory: u64,
    /// Put the store in a file in this directory (e.g. a hugetlbfs mount) instead of a sealed
    /// memfd; clients then write new objects through a staging memfd, copied at seal
    #[arg(long)]
    pub plasma_directory: Option<PathBuf>,
    /// Directory of fallback segments: disk-backed files for objects that do not fit in the
    /// store after eviction and spilling (default: <session>/fallback)
    #[arg(long)]
    pub fallback_directory: Option<PathBuf>,
    /// Most bytes of fallback segments at once; 0 disables fallback allocation (default:
    /// the size of the fallback directory's filesystem)
    #[arg(long)]
    pub fallback_allocation_limit: Option<u64>,
    /// Directory for spilled objects (default: <session>/spill); nodes may share one (each
    /// spills into a subdirectory of its own).
    #[arg(long)]
    pub spill_directory: Option<PathBuf>,
    /// Root of session directories.
    #[arg(long, default_value = "/tmp/raylet")]
    pub temp_dir: PathBuf,
    /// File holding the cluster auth token.
    #[arg(long)]
    pub auth_token_file: Option<PathBuf>,
    /// Heartbeat period to the GCS, in ms.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_period_ms: u64,
    /// A node silent this long is marked DEAD, in ms.
    #[arg(long, default_value_t = 5000)]
    pub heartbeat_timeout_ms: u64,
    /// Microseconds an idle shard spins before parking (0 = park at once). Spinning helps
    /// when clients run on other CPUs than the shards; on a small machine where drivers
    /// and workers share the shards' CPUs it costs them the CPU (`raylet-bench tasks`
    /// measured sync tasks at 85 us p50 with 0 and 170-200 us with 50 on 2 CPUs).
    #[arg(long, default_value_t = 0)]
    pub spin_us: u64,
    /// Cap on local-protocol payloads, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_local_frame: u64,
    /// Most TCP connections before their hello, node-wide (all listeners and shards);
    /// past it the oldest of them is dropped for the newcomer.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_UNAUTHENTICATED)]
    pub max_unauthenticated_connections: usize,
    /// Most TCP connections, node-wide; lowered at start to leave a quarter of the fd
    /// limit (at least 64 fds) to everything else.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// System config JSON stored in the GCS KV (head only).
    #[arg(long, default_value = "{}")]
    pub system_config: String,
    /// Node name shown in status.
    #[arg(long, default_value = "")]
    pub node_name: String,
    /// Worker command line, split on whitespace (default: this binary's `worker`).
    #[arg(long)]
    pub worker_command: Option<String>,
    /// Idle workers started with the node.
    #[arg(long, default_value_t = 0)]
    pub num_prestart_workers: usize,
    /// Most worker processes starting at once (default: the node's CPU count).
    #[arg(long)]
    pub maximum_startup_concurrency: Option<usize>,
    /// Seconds a started worker has to register and announce its port.
    #[arg(long, default_value_t = 60.0)]
    pub worker_register_timeout_s: f64,
    /// An idle worker may be reaped after this many ms.
    #[arg(long, default_value_t = 1000)]
    pub idle_worker_killing_time_threshold_ms: u64,
    /// Period of the idle-worker reaping pass in ms (0 disables reaping).
    #[arg(long, default_value_t = 200)]
    pub kill_idle_workers_interval_ms: u64,
    /// Idle workers are reaped while more than this many run (-1: available CPUs).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub num_workers_soft_limit: i64,
    /// ms between SIGTERM and SIGKILL when a worker is killed.
    #[arg(long, default_value_t = 1000)]
    pub kill_worker_timeout_ms: u64,
    /// Agent command line, split on whitespace; the raylet supervises it.
    #[arg(long)]
    pub agent_command: Option<String>,
    /// First delay in ms before a dead agent is restarted (doubles up to 30 s).
    #[arg(long, default_value_t = 1000)]
    pub agent_restart_interval_ms: u64,
    /// Seconds an agent has to register before it is killed and restarted.
    #[arg(long, default_value_t = 30.0)]
    pub agent_register_timeout_s: f64,
    /// GCS (head): period of its RequestResourceReport pulls, in ms.
    #[arg(long, default_value_t = 100)]
    pub gcs_resource_poll_period_ms: u64,
    /// A pull with no copy of the object anywhere fails after this many ms.
    #[arg(long, default_value_t = 60_000)]
    pub fetch_timeout_ms: u64,
    /// Lease requests this node holds undecided at once; more are refused
    /// (ResourceExhausted).
    #[arg(long, default_value_t = 100_000)]
    pub max_queued_leases: usize,
    /// A TCP connection between processes with a frame part-way through and no byte moving
    /// either way for this many ms is cut (a stalled peer); TCP keepalive finds a vanished
    /// one in about as long. Waiting for a reply or a long-poll is not idleness.
    #[arg(long, default_value_t = 30_000)]
    pub rpc_idle_timeout_ms: u64,
}

fn split_command(flag: &str, cmd: &Option<String>) -> Result<Vec<String>, String> {
    let words: Vec<String> = cmd.as_deref().unwrap_or("").split_whitespace().map(str::to_string).collect();
    if cmd.is_some() && words.is_empty() {
        return Err(format!("{flag} is empty"));
    }
    Ok(words)
}

fn seconds(flag: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("{flag} must be a non-negative number of seconds"))
}

impl StartArgs {
    fn sched_config(&self, cpus: f64) -> Result<crate::config::SchedConfig, String> {
        let cpus_whole = if cpus.is_finite() && cpus >= 1.0 { cpus as usize } else { 1 };
        Ok(crate::config::SchedConfig {
            worker_command: split_command("--worker-command", &self.worker_command)?,
            num_prestart_workers: self.num_prestart_workers,
            maximum_startup_concurrency: self.maximum_startup_concurrency.unwrap_or(cpus_whole),
            worker_register_timeout: seconds("--worker-register-timeout-s", self.worker_register_timeout_s)?,
            idle_worker_killing_time_threshold: Duration::from_millis(self.idle_worker_killing_time_threshold_ms),
            kill_idle_workers_interval: Duration::from_millis(self.kill_idle_workers_interval_ms),
            num_workers_soft_limit: usize::try_from(self.num_workers_soft_limit).ok(),
            kill_worker_timeout: Duration::from_millis(self.kill_worker_timeout_ms),
            agent_command: split_command("--agent-command", &self.agent_command)?,
            agent_restart_interval: Duration::from_millis(self.agent_restart_interval_ms.max(1)),
            agent_register_timeout: seconds("--agent-register-timeout-s", self.agent_register_timeout_s)?,
            gcs_resource_poll_period: Duration::from_millis(self.gcs_resource_poll_period_ms),
            max_queued_leases: self.max_queued_leases,
            ..Default::default()
        })
    }

    /// Builds the node configuration (session and token are settled by `cli::session`).
    pub fn to_config(&self) -> Result<NodeConfig, String> {
        let mut cfg = NodeConfig::new(self.temp_dir.clone());
        cfg.head = self.head;
        cfg.gcs_address = match &self.address {
            Some(a) => Some(super::session::resolve_addr(a)?),
            None => None,
        };
        cfg.gcs_port = self.port;
        cfg.node_ip = self.node_ip_address;
        cfg.node_manager_port = self.node_manager_port;
        cfg.object_manager_port = self.object_manager_port;
        cfg.metrics_port = self.metrics_export_port;
        cfg.metrics_bind = self.metrics_bind_address;
        if let Some(s) = self.shards {
            cfg.shards = s;
        }
        cfg.spin_before_park = (self.spin_us > 0).then(|| Duration::from_micros(self.spin_us));
        let cpus = self.num_cpus.unwrap_or(crate::config::available_cpus() as f64);
        let mut res = vec![("CPU".to_string(), cpus)];
        if let Some(g) = self.num_gpus {
            res.push(("GPU".into(), g));
        }
        if let Some(m) = self.memory {
            res.push(("memory".into(), m));
        }
        res.push(("object_store_memory".into(), self.object_store_memory as f64));
        if let Some(json) = &self.resources {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(json).map_err(|e| format!("--resources is not a JSON object: {e}"))?;
            for (k, v) in map {
                let q = v.as_f64().ok_or_else(|| format!("--resources: {k} is not a number"))?;
                if ["CPU", "GPU", "memory", "object_store_memory"].contains(&k.as_str()) {
                    return Err(format!("--resources may not set {k}; use its own flag"));
                }
                res.push((k, q));
            }
        }
        cfg.resources = res;
        cfg.object_store_memory = self.object_store_memory;
        cfg.plasma_directory = self.plasma_directory.clone();
        cfg.fallback_directory = self.fallback_directory.clone();
        cfg.fallback_allocation_limit = self.fallback_allocation_limit;
        cfg.spill_directory = self.spill_directory.clone();
        cfg.heartbeat_period = Duration::from_millis(self.heartbeat_period_ms);
        cfg.heartbeat_timeout = Duration::from_millis(self.heartbeat_timeout_ms);
        cfg.max_local_frame = self.max_local_frame;
        cfg.max_unauthenticated_connections = self.max_unauthenticated_connections;
        cfg.max_connections = self.max_connections;
        cfg.system_config = self.system_config.clone();
        cfg.node_name = self.node_name.clone();
        cfg.sched = self.sched_config(cpus)?;
        cfg.fetch_timeout = Duration::from_millis(self.fetch_timeout_ms);
        cfg.rpc_idle_timeout = Duration::from_millis(self.rpc_idle_timeout_ms);
        Ok(cfg)
    }
}
