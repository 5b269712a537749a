//! The default worker process (`raylet worker`): what the worker pool starts unless
//! `--worker-command` names something else.
//!
//! Start-up: die with the raylet (parent-death signal), register on the local socket with
//! the startup token from `RAYLET_STARTUP_TOKEN` (refused → exit 1), bind a TCP listener on
//! the node's address, announce its port, then serve `WorkerService` until told to exit.
//! The registered local connection lives on its own thread ([`store`]), which runs the
//! object-store work of `produce` and `consume`.
//!
//! # Server design
//! One thread holds every connection until its hello ([`gate`]: bounded, with a hello
//! deadline and an accept back-off), then a blocking thread per authenticated connection
//! over `rpc::frame` (see [`server`]). A leased worker
//! serves one lessee at a time, over one connection, one task after another, so the
//! lowest-latency shape is a thread that sits in `read` and answers in place: a request
//! costs one `read` and one `write` with no executor hand-off or wake-up. The raylet's
//! own calls (`Exit`, `LocalGC`) come on their own connections and get their own threads,
//! so a long `sleep` task never delays a reaping decision. Connections are few (one per
//! lessee that ever held this worker, plus the raylet's), so threads are cheap here; an
//! executor would add a wake-up per request for no gain.
//!
//! Built-in tasks: `noop`, `sleep(ms)`, `stats` (counters), `produce(bytes, seed)` (a new
//! object with `client::tasks::fill` content; returns its id) and `consume(object_id)`
//! (gets it, pulling from another node if needed; returns its CRC32C and size).

mod gate;
mod server;
mod store;

use crate::process::env;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// What the worker needs to start; each field also comes from the environment the
/// worker pool sets.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The startup token the raylet gave this process.
    #[arg(long, env = env::STARTUP_TOKEN)]
    pub startup_token: i64,
    /// The raylet's local socket.
    #[arg(long, env = env::SOCKET)]
    pub socket: PathBuf,
    /// The address to serve WorkerService on.
    #[arg(long, env = env::NODE_IP, default_value = "127.0.0.1")]
    pub node_ip: IpAddr,
    /// Microseconds a connection polls for the next request before blocking (0 = block
    /// at once); see `client::wire_io::FrameStream::set_spin`.
    #[arg(long, env = "RAYLET_WORKER_SPIN_US", default_value_t = 200)]
    pub spin_us: u64,
}

/// Runs the worker until it is told to exit; returns the process exit code.
pub fn run(args: &WorkerArgs) -> i32 {
    crate::process::die_with_parent();
    match start(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("raylet worker: {e}");
            1
        }
    }
}

fn start(args: &WorkerArgs) -> Result<(), String> {
    let auth = std::env::var(env::AUTH_TOKEN).map_err(|_| format!("{} is not set", env::AUTH_TOKEN))?;
    let (id, listener, jobs) = store::start(args.socket.clone(), args.startup_token, args.node_ip)?;
    let spin = std::time::Duration::from_micros(args.spin_us);
    let worker = Arc::new(server::Worker::new(id, jobs, spin));
    gate::run(listener, worker, auth).map_err(|e| format!("cannot serve WorkerService: {e}"))
}
