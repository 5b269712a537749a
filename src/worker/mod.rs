//! The default worker process (`raylet worker`): what the worker pool starts unless
//! `--worker-command` names something else.
//!
//! Start-up: die with the raylet (parent-death signal), register on the local socket with
//! the startup token from `RAYLET_STARTUP_TOKEN` (refused → exit 1), bind a TCP listener on
//! the node's address, announce its port, then serve `WorkerService` until told to exit.
//!
//! # Server design
//! A blocking thread per connection over `rpc::frame` (see [`server`]). A leased worker
//! serves one lessee at a time, over one connection, one task after another, so the
//! lowest-latency shape is a thread that sits in `read` and answers in place: a request
//! costs one `read` and one `write` with no executor hand-off or wake-up. The raylet's
//! own calls (`Exit`, `LocalGC`) come on their own connections and get their own threads,
//! so a long `sleep` task never delays a reaping decision. Connections are few (one per
//! lessee that ever held this worker, plus the raylet's), so threads are cheap here; an
//! executor would add a wake-up per request for no gain.
//!
//! Built-in tasks: `noop`, `sleep(ms)`, `stats` (counters), and — with the object store
//! client — `produce(bytes, seed)` and `consume(object_id)`.

mod server;

use crate::client::LocalClient;
use crate::process::env;
use std::net::{IpAddr, TcpListener};
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
    let mut local = LocalClient::connect(&args.socket)
        .map_err(|e| format!("cannot connect to the raylet at {}: {e}", args.socket.display()))?;
    local.register_worker(args.startup_token).map_err(|e| format!("registration refused: {e}"))?;
    let listener = TcpListener::bind((args.node_ip, 0)).map_err(|e| format!("cannot bind a port: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let worker = Arc::new(server::Worker::new(local.worker_id(), auth));
    local.announce_port(port, false).map_err(|e| format!("cannot announce port {port}: {e}"))?;
    worker.set_local(local);
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                let w = worker.clone();
                if let Err(e) = std::thread::Builder::new().name("worker-conn".into()).spawn(move || w.serve(s)) {
                    eprintln!("raylet worker: cannot start a connection thread: {e}");
                }
            }
            Err(e) => eprintln!("raylet worker: accept failed: {e}"),
        }
    }
    Ok(())
}
