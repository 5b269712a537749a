//! Process-level start of a node: rlimits, signal handling, one pinned glommio executor per
//! shard joined into a mesh, and the exit code.
//!
//! Threads beside the executors: one that waits for SIGTERM/SIGINT, and one that accepts
//! local connections (both only block in the kernel and forward what they get to shard 0
//! over an async channel). Nothing else runs outside the executors except glommio's
//! blocking pool.

use super::mesh::ShardMsg;
use super::run::{run_shard, ProcessInputs};
use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::services::objects::spill_dir::SpillDirClaim;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

/// Depth of each mesh channel.
const MESH_DEPTH: usize = 1024;

/// Runs a node until it stops; returns the process exit code.
pub fn run(cfg: NodeConfig) -> i32 {
    raise_memlock(cfg.shards);
    let admission = admission_for(&cfg, raise_nofile());
    let (sig_tx, sig_rx) = futures_channel::mpsc::channel::<i32>(4);
    let (exit_tx, exit_rx) = futures_channel::mpsc::channel::<ChildExit>(1024);
    if let Err(e) = spawn_signal_thread(sig_tx, exit_tx) {
        tracing::error!("cannot install signal handling: {e}");
        return 1;
    }
    // Before any shard can spill: the node's own directory, locked, with the files of gone
    // nodes that shared the spill directory swept away.
    let spill_dir = match SpillDirClaim::claim(&cfg.spill_dir(), cfg.node_id) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("raylet: start failed: {e}");
            return 1;
        }
    };
    let metrics = Metrics::new(cfg.shards);
    let mesh = MeshBuilder::<ShardMsg, _>::full(cfg.shards, MESH_DEPTH);
    let cpus = allowed_cpus();
    let mut inputs = Some(ProcessInputs { signals: sig_rx, child_exits: exit_rx });
    let mut handles = Vec::with_capacity(cfg.shards);
    for i in 0..cfg.shards {
        let placement = match cpus.get(i % cpus.len().max(1)) {
            Some(&cpu) if cfg.shards <= cpus.len() => Placement::Fixed(cpu),
            _ => Placement::Unbound,
        };
        let mut b = LocalExecutorBuilder::new(placement).name(&format!("shard-{i}"));
        if let Some(spin) = cfg.spin_before_park {
            b = b.spin_before_park(spin);
        }
        let (cfg, mesh, metrics, admission) = (cfg.clone(), mesh.clone(), metrics.clone(), admission.clone());
        let process = if i == 0 { inputs.take() } else { None };
        match b.spawn(move || run_shard(i, cfg, mesh, metrics, admission, process)) {
            Ok(h) => handles.push(h),
            Err(e) => {
                // The shards already spawned wait in the mesh join with a timeout and
                // unwind on their own.
                tracing::error!("cannot start shard {i}: {e}");
                for h in handles {
                    let _ = h.join();
                }
                spill_dir.release();
                return 1;
            }
        }
    }
    let mut code = 0;
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(c) if i == 0 => code = c,
            Ok(c) if c != 0 && code == 0 => code = c,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("shard {i} failed: {e}");
                code = 1;
            }
        }
    }
    // Every shard has stopped: nothing can spill or restore any more, and the spilled
    // objects die with this process.
    spill_dir.release();
    code
}

/// A panic on any thread of a node process (a shard, the signal thread, a blocking job)
/// ends the whole process at once, with the panic message and a backtrace in the log. A
/// shard that unwinds alone would leave shard 0 heartbeating for a node that no longer
/// serves its objects, workers or RPCs (glommio does not catch a task's panic: it unwinds
/// the executor's thread). Exit code 101, Rust's code for a panic. Not `abort`: a core
/// dump would include the mapped object store.
///
/// Called by `main` for `raylet start` only: tests that run a node in-process keep the
/// test harness's own panic handling.
pub fn end_process_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!("thread '{}' {info}; ending the node\n{backtrace}", thread.name().unwrap_or("<unnamed>"));
        std::process::exit(101);
    }));
}

/// glommio locks memory for its rings; raise the limit for `shards` executors. The soft
/// limit can always go up to the hard one; the hard one only with CAP_SYS_RESOURCE. Since
/// Linux 5.12 io_uring charges its rings to the memory cgroup instead, so a refusal here is
/// only worth a debug line.
fn raise_memlock(shards: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let want = (64u64 << 20) * shards as u64 + (64 << 20);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_MEMLOCK) else { return };
    if soft == RLIM_INFINITY || soft >= want {
        return;
    }
    if setrlimit(Resource::RLIMIT_MEMLOCK, want, hard.max(want)).is_ok() {
        return;
    }
    let capped = if hard == RLIM_INFINITY { want } else { hard.min(want) };
    match setrlimit(Resource::RLIMIT_MEMLOCK, capped, hard) {
        Ok(()) => tracing::debug!("RLIMIT_MEMLOCK raised to the hard limit {capped}"),
        Err(e) => tracing::debug!("cannot raise RLIMIT_MEMLOCK (now {soft}): {e}"),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (every peer and client holds an fd,
/// and the common soft limit of 1024 is a few hundred peers); returns the soft limit in
/// force afterwards.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        tracing::warn!("cannot read RLIMIT_NOFILE; assuming 1024");
        return 1024;
    };
    if soft >= hard {
        tracing::info!("RLIMIT_NOFILE is {soft}, the hard limit");
        return soft;
    }
    // An unlimited hard limit still stops at the kernel's fs.nr_open.
    let want = if hard == RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(soft)
    } else {
        hard
    };
    match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
        Ok(()) => {
            tracing::info!("RLIMIT_NOFILE raised from {soft} to {want}, the hard limit");
            want
        }
        Err(e) => {
            tracing::warn!("cannot raise RLIMIT_NOFILE from {soft} to {want}: {e}");
            soft
        }
    }
}

/// The node-wide connection caps, fitted to the fd limit `nofile`.
fn admission_for(cfg: &NodeConfig, nofile: u64) -> std::sync::Arc<crate::rpc::admission::NodeAdmission> {
    let configured = crate::logic::admission::AdmissionLimits {
        max_unauthenticated: cfg.max_unauthenticated_connections,
        max_connections: cfg.max_connections,
    };
    let (limits, lowered) = configured.fitted(nofile);
    if lowered {
        tracing::warn!(
            "--max-connections {} lowered to {} to fit RLIMIT_NOFILE {nofile} (raise the hard limit for more)",
            configured.max_connections,
            limits.max_connections
        );
    }
    tracing::info!(
        "TCP connections capped at {} ({} before their hello), node-wide",
        limits.max_connections,
        limits.max_unauthenticated
    );
    crate::rpc::admission::NodeAdmission::new(limits)
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => (0..crate::config::available_cpus()).collect(),
    }
}

/// A child process that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildExit {
    /// Its pid.
    pub pid: i32,
    /// Exit code, or `128 + signal` when killed by a signal.
    pub code: i32,
}

/// One thread receives SIGTERM, SIGINT and SIGCHLD through signal-hook (no signal masks are
/// touched, so children start with default handling). Termination signals go to shard 0;
/// on SIGCHLD the thread reaps every exited child with `waitpid(WNOHANG)` and forwards
/// each exit, so the worker pool learns of deaths at once without polling.
fn spawn_signal_thread(
    mut sigs: futures_channel::mpsc::Sender<i32>,
    mut exits: futures_channel::mpsc::Sender<ChildExit>,
) -> std::io::Result<()> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGCHLD])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            if sig != SIGCHLD {
                let _ = sigs.try_send(sig);
                continue;
            }
            loop {
                let exit = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => ChildExit { pid: pid.as_raw(), code },
                    Ok(WaitStatus::Signaled(pid, sig, _)) => ChildExit { pid: pid.as_raw(), code: 128 + sig as i32 },
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                };
                let sent = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| exits.poll_ready(cx)))
                    .and_then(|_| exits.start_send(exit));
                if sent.is_err() {
                    break;
                }
            }
        }
    })?;
    Ok(())
}
