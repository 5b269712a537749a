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
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

/// Depth of each mesh channel.
const MESH_DEPTH: usize = 1024;

/// Runs a node until it stops; returns the process exit code.
pub fn run(cfg: NodeConfig) -> i32 {
    raise_memlock(cfg.shards);
    let (sig_tx, sig_rx) = futures_channel::mpsc::channel::<i32>(4);
    if let Err(e) = spawn_signal_thread(sig_tx) {
        tracing::error!("cannot install signal handling: {e}");
        return 1;
    }
    let metrics = Metrics::new(cfg.shards);
    let mesh = MeshBuilder::<ShardMsg, _>::full(cfg.shards, MESH_DEPTH);
    let cpus = allowed_cpus();
    let mut inputs = Some(ProcessInputs { signals: sig_rx });
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
        let (cfg, mesh, metrics) = (cfg.clone(), mesh.clone(), metrics.clone());
        let process = if i == 0 { inputs.take() } else { None };
        match b.spawn(move || run_shard(i, cfg, mesh, metrics, process)) {
            Ok(h) => handles.push(h),
            Err(e) => {
                // The shards already spawned wait in the mesh join with a timeout and
                // unwind on their own.
                tracing::error!("cannot start shard {i}: {e}");
                for h in handles {
                    let _ = h.join();
                }
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
    code
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

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => (0..crate::config::available_cpus()).collect(),
    }
}

/// Blocks SIGTERM and SIGINT in every thread (the mask is inherited by threads spawned
/// later) and forwards them from one thread that waits in `sigwait`.
fn spawn_signal_thread(mut tx: futures_channel::mpsc::Sender<i32>) -> std::io::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().map_err(std::io::Error::from)?;
    std::thread::Builder::new().name("signals".into()).spawn(move || loop {
        match set.wait() {
            Ok(sig) => {
                if tx.try_send(sig as i32).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    })?;
    Ok(())
}
