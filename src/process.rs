//! Child processes of a node: worker processes and the agent. The only code that spawns
//! or signals processes (DESIGN.md §8).
//!
//! Spawning (`fork`/`exec`, opening log files, writing `oom_score_adj`) is blocking work
//! and runs on glommio's blocking pool through [`spawn`], never on an executor. Exits are
//! not polled here: the signal thread (`shard::bootstrap`) reaps every child on SIGCHLD and
//! shard 0 routes each exit to whoever owns that pid.
//!
//! Killing follows Ray's `KillWorker`: SIGTERM, then SIGKILL if the process is still alive
//! after a timeout; SIGKILL at once when forced ([`signal`] sends one signal; the caller
//! owns the escalation timer because only it knows when the exit arrived).
//!
//! Children start with default signal handling (signal-hook installs handlers, it does not
//! mask signals) and with stdin from /dev/null, stdout and stderr appended to a log file.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variables a child process of the node receives.
pub mod env {
    /// The cluster auth token (for RPC hellos).
    pub const AUTH_TOKEN: &str = "RAYLET_AUTH_TOKEN";
    /// The raylet's local socket.
    pub const SOCKET: &str = "RAYLET_SOCKET";
    /// The node id (hex).
    pub const NODE_ID: &str = "RAYLET_NODE_ID";
    /// The address the node advertises; workers bind their server to it.
    pub const NODE_IP: &str = "RAYLET_NODE_IP";
    /// The GCS address.
    pub const GCS_ADDRESS: &str = "RAYLET_GCS_ADDRESS";
    /// The node manager address (agents register there).
    pub const NODE_MANAGER_ADDRESS: &str = "RAYLET_NODE_MANAGER_ADDRESS";
    /// A worker's startup token.
    pub const STARTUP_TOKEN: &str = "RAYLET_STARTUP_TOKEN";
    /// An agent's id.
    pub const AGENT_ID: &str = "RAYLET_AGENT_ID";
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Program and arguments; an empty program means this binary.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go (appended).
    pub log: PathBuf,
    /// Written to `/proc/<pid>/oom_score_adj` after the spawn, if set.
    pub oom_score_adj: Option<i32>,
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The command line is empty.
    #[error("empty command line")]
    Empty,
    /// The program does not exist or is not executable.
    #[error("{0}: not an executable file")]
    NotExecutable(String),
    /// The OS refused.
    #[error("{what}: {err}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        err: io::Error,
    },
}

/// The command line that runs this binary with `subcommand`.
pub fn this_binary(subcommand: &str) -> io::Result<Vec<String>> {
    let exe = std::env::current_exe()?;
    Ok(vec![exe.display().to_string(), subcommand.to_string()])
}

/// Spawns `spec` now (blocking); returns the child's pid. Call through [`spawn`] from an
/// executor.
pub fn spawn_blocking(spec: &SpawnSpec) -> Result<u32, SpawnError> {
    let (program, args) = spec.argv.split_first().ok_or(SpawnError::Empty)?;
    let program = resolve(program).ok_or_else(|| SpawnError::NotExecutable(program.clone()))?;
    let io_err = |what: &str| {
        let what = what.to_string();
        move |err| SpawnError::Io { what, err }
    };
    let log = OpenOptions::new().create(true).append(true).open(&spec.log).map_err(io_err("log file"))?;
    let log2 = log.try_clone().map_err(io_err("log file"))?;
    let mut cmd = Command::new(&program);
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let child = spawn_unpinned(&mut cmd).map_err(io_err(&program.display().to_string()))?;
    let pid = child.id();
    // Dropping `Child` neither waits nor kills; the signal thread reaps it.
    drop(child);
    if let Some(adj) = spec.oom_score_adj {
        // Best effort: the child may already have exited.
        if let Err(e) = std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.clamp(0, 1000).to_string()) {
            tracing::debug!(pid, "cannot set oom_score_adj: {e}");
        }
    }
    Ok(pid)
}

/// A child inherits the CPU affinity of the thread that forks it: here a blocking-pool
/// thread pinned to its shard's CPU. That thread takes the whole process's CPU set (the
/// main thread's, which is never pinned) for the fork and gets its own back after, so the
/// child starts unpinned, before any thread of its own exists, and workers do not all
/// share one shard's core.
fn spawn_unpinned(cmd: &mut Command) -> io::Result<std::process::Child> {
    use nix::sched::{sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let this_thread = Pid::from_raw(0);
    let own = sched_getaffinity(this_thread).ok();
    match sched_getaffinity(Pid::this()).and_then(|wide| sched_setaffinity(this_thread, &wide)) {
        Ok(()) => {}
        Err(e) => tracing::debug!("cannot widen the CPU affinity for a child: {e}"),
    }
    let child = cmd.spawn();
    if let Some(own) = own {
        if let Err(e) = sched_setaffinity(this_thread, &own) {
            tracing::warn!("cannot restore this thread's CPU affinity after a spawn: {e}");
        }
    }
    child
}

/// Spawns `spec` on the blocking pool of the current executor.
pub async fn spawn(spec: SpawnSpec) -> Result<u32, SpawnError> {
    glommio::executor().spawn_blocking(move || spawn_blocking(&spec)).await
}

/// Finds an executable file for `program` (a path, or a name on `PATH`).
fn resolve(program: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| is_exec(p))
}

/// Which signal [`signal`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// SIGTERM: ask to exit.
    Term,
    /// SIGKILL: end now.
    Kill,
}

/// Sends one signal to a child. `ESRCH` (already gone) is not an error.
pub fn signal(pid: u32, how: Kill) -> io::Result<()> {
    use nix::sys::signal::{kill, Signal};
    let pid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    if pid <= 0 {
        return Err(io::Error::other("refusing to signal a process group"));
    }
    let sig = match how {
        Kill::Term => Signal::SIGTERM,
        Kill::Kill => Signal::SIGKILL,
    };
    match kill(nix::unistd::Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// For a child process: dies with SIGKILL when the thread that spawned it (the raylet's
/// blocking pool, alive as long as the raylet) goes away. (A raylet that died before this
/// call leaves no socket to register on, so the child exits on its own.)
pub fn die_with_parent() {
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        tracing::debug!("cannot set the parent-death signal: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_finds_programs_on_path_and_refuses_missing_ones() {
        assert!(resolve("sh").is_some());
        assert!(resolve("/bin/sh").is_some());
        assert!(resolve("/nonexistent/raylet-test-binary").is_none());
        assert!(resolve("raylet-surely-not-a-program").is_none());
    }

    #[test]
    fn spawning_an_empty_or_missing_command_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let spec =
            |argv: Vec<String>| SpawnSpec { argv, env: vec![], log: dir.path().join("log"), oom_score_adj: None };
        assert!(matches!(spawn_blocking(&spec(vec![])), Err(SpawnError::Empty)));
        assert!(matches!(spawn_blocking(&spec(vec!["/nonexistent/x".into()])), Err(SpawnError::NotExecutable(_))));
    }

    #[test]
    fn signalling_pid_zero_or_negative_is_refused() {
        assert!(signal(0, Kill::Term).is_err());
        assert!(signal(u32::MAX, Kill::Term).is_err());
    }
}
