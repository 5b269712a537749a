//! raylet-bench: benchmark suites with same-run baselines (DESIGN.md §7).
//!
//! `raylet-bench <suite> [--address A] [--json] [--iters N] [--duration-s S] ...`
//!
//! Each suite starts its own local node (the `raylet` binary next to this one) unless
//! given `--address`, measures the real path and a raw baseline in the same run, and
//! reports value, tails and the ratio to the baseline. Stdout carries only the report: a
//! human table, or with `--json` exactly one JSON object. Progress goes to stderr, the
//! node's own logs to a file in its temp dir.
//!
//! Adding a suite: one file with `pub(crate) fn run(opts: &Opts, report: &mut Report) ->
//! Res<()>` built from [`cluster::Target`], the loops in [`measure`], the servers in
//! [`baseline`] and the constructors in [`report`]; then one line in [`SUITES`].

mod baseline;
mod cluster;
mod lease;
mod measure;
mod objects;
mod pg;
mod report;
mod rpc;
mod soak;
mod tasks;

use clap::{Parser, ValueEnum};
use report::Report;
use std::path::PathBuf;
use std::time::Duration;

/// The same allocator as the `raylet` binary, so the client side of a case is measured
/// as users linking it would run it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Errors are messages for the operator; a bench has nothing to recover from.
pub(crate) type Res<T> = Result<T, String>;

/// One suite: a name on the command line and the function that runs it.
struct Suite {
    name: &'static str,
    about: &'static str,
    run: fn(&Opts, &mut Report) -> Res<()>,
}

/// Every suite, in the order `--help` lists them.
const SUITES: &[Suite] = &[
    Suite {
        name: "rpc",
        about: "local-protocol and TCP RPC round trips and TCP RPC throughput; baselines raw UDS and raw TCP",
        run: rpc::run,
    },
    Suite {
        name: "putget",
        about: "put and get of 1 KiB, 1 MiB, 256 MiB objects; baselines warm memcpy and raw UDS",
        run: objects::run_putget,
    },
    Suite {
        name: "transfer",
        about: "pulls of 1 MiB..1 GiB between two local nodes; baseline raw loopback TCP",
        run: objects::run_transfer,
    },
    Suite {
        name: "lease",
        about: "lease + return latency at 1/4/16 clients and throughput, idle workers prestarted; baselines raw TCP",
        run: lease::run,
    },
    Suite {
        name: "tasks",
        about: "sync task (lease, noop, return) latency and noop tasks/s on held leases; baselines raw TCP",
        run: tasks::run,
    },
    Suite {
        name: "pg",
        about: "placement-group create + wait ready + remove per second; baseline raw TCP round trips/s",
        run: pg::run,
    },
    Suite {
        name: "soak",
        about: "head + joiner under mixed traffic for --minutes; RSS and fds of each raylet every --sample-s, with a verdict (not a benchmark: scripts/soak.sh)",
        run: soak::run,
    },
];

/// Whether and how to pin the bench's latency threads (the node always pins its shards to
/// the first allowed CPUs; throughput clients are never pinned: there are more of them
/// than CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Pin {
    /// `shared` when this bench started the node (so it knows the shards' CPUs), else
    /// `off`. Unpinned, the p50 of `local_rtt` flipped between about 14 and 60 us from run
    /// to run on a 2-vCPU VM, depending on whether the kernel put the client on the
    /// serving shard's CPU; cross-vCPU wake-ups there cost tens of microseconds.
    Auto,
    /// Pin nothing; the kernel places the client and baseline threads for both alike.
    Off,
    /// Latency client and baseline echo thread both on shard 0's CPU: same-core ping-pong
    /// for the baseline and for cases served by shard 0.
    Shared,
    /// Latency client on a CPU no shard uses, baseline echo thread on shard 0's CPU:
    /// cross-core ping-pong for both (needs a free CPU, e.g. `--shards 1` on 2 CPUs).
    Split,
}

/// Command line of every suite.
#[derive(Debug, Parser)]
#[command(name = "raylet-bench", about = "raylet benchmarks with same-run baselines (DESIGN.md §7)")]
pub(crate) struct Opts {
    /// The suite: rpc (see the list printed for an unknown name).
    pub(crate) suite: String,
    /// GCS address of a running cluster to measure instead of starting a node.
    #[arg(long)]
    pub(crate) address: Option<String>,
    /// Auth token file for `--address` (else RAYLET_AUTH_TOKEN, else the local session's).
    #[arg(long)]
    pub(crate) auth_token_file: Option<PathBuf>,
    /// With `--address`: where `session_latest` lives (default /tmp/raylet). Otherwise the
    /// parent of the started node's fresh temp dir (default $TMPDIR).
    #[arg(long)]
    pub(crate) temp_dir: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Timed iterations per latency case (split over the rounds).
    #[arg(long, default_value_t = 20_000)]
    pub(crate) iters: u64,
    /// Untimed warm-up iterations per latency case.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) warmup: u64,
    /// Cases and their baselines alternate in this many rounds, so drift (clock scaling,
    /// a noisy neighbour, thread placement) hits both alike.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: u32,
    /// Measured seconds per throughput case, split over the rounds.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) duration_s: f64,
    /// Untimed seconds before each throughput run (after its clients connect).
    #[arg(long, default_value_t = 0.2)]
    pub(crate) warmup_s: f64,
    /// Client thread counts of the throughput cases (each thread its own connection).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16])]
    pub(crate) concurrency: Vec<usize>,
    /// Shards of the node this bench starts.
    #[arg(long, default_value_t = 2)]
    pub(crate) shards: usize,
    /// Thread pinning of the bench side.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) pin: Pin,
    /// The raylet binary (default: `raylet` next to this executable).
    #[arg(long)]
    pub(crate) raylet: Option<PathBuf>,
    /// Extra argument for `raylet start`, repeatable (e.g. `--node-arg=--spin-us=0`).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub(crate) node_args: Vec<String>,
    /// Keep the started node's temp dir (logs) instead of deleting it.
    #[arg(long)]
    pub(crate) keep_temp: bool,
    /// tasks: leases held at once in `task_held_lease` (one client thread each).
    #[arg(long, default_value_t = 2)]
    pub(crate) held_leases: usize,
    /// tasks: tasks in flight per held lease in `task_held_lease` (push_tasks window).
    #[arg(long, default_value_t = 32)]
    pub(crate) window: usize,
    /// tasks: tasks per push_tasks call in `task_held_lease`.
    #[arg(long, default_value_t = 256)]
    pub(crate) batch: usize,
    /// pg: also measure on two nodes (a joiner started here), STRICT_SPREAD over both.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) two_nodes: bool,
    /// soak: how long the traffic runs.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) minutes: f64,
    /// soak: seconds between two samples of every raylet's RSS and open fds.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) sample_s: f64,
}

impl Opts {
    /// Warm-up before each throughput measurement.
    pub(crate) fn warmup_time(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s.max(0.0))
    }

    /// Measured time of each throughput case.
    pub(crate) fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s.max(0.01))
    }
}

fn main() {
    let opts = Opts::parse();
    let Some(suite) = SUITES.iter().find(|s| s.name == opts.suite) else {
        eprintln!("raylet-bench: unknown suite {:?}; suites:", opts.suite);
        for s in SUITES {
            eprintln!("  {:<10} {}", s.name, s.about);
        }
        std::process::exit(2);
    };
    let mut report = Report::new(suite.name);
    if let Err(e) = (suite.run)(&opts, &mut report) {
        eprintln!("raylet-bench {}: {e}", suite.name);
        std::process::exit(1);
    }
    if opts.json {
        eprintln!("raylet-bench: {}", report.quietness());
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
}
