//! This node's place in the spill directory: claimed at start, swept of stale nodes' files,
//! given back at a graceful exit.
//!
//! **Owns** the lock file `raylet-spill-<node>.lock` and the directory
//! `raylet-spill-<node>/` (names from `logic::spill`) under `--spill-directory`, which
//! several nodes may share. The lock file is `flock`ed for the whole life of the process, so
//! the kernel releases it however the process ends: a lock that nobody holds marks files
//! whose writer is gone.
//!
//! **Called by** `shard::bootstrap` before the shards start ([`SpillDirClaim::claim`]) and
//! after they have all stopped ([`SpillDirClaim::release`]); runs on the main thread, never
//! on an executor.
//!
//! **Must not** touch anything in the spill directory but entries named by
//! `logic::spill::SpillDirEntry`, nor the files of a node whose lock is held.
//!
//! # Races
//!
//! A node takes its lock *before* it creates its directory and drops the lock only *after*
//! removing it, so a directory whose lock is held is never swept. A sweeper holds the lock
//! of the node it sweeps while it removes that node's directory and then unlinks the lock
//! file. A starting node whose fresh lock file was unlinked by a sweeper between `open` and
//! `flock` notices it (the locked inode is no longer the one at the path) and starts over.

use crate::ids::NodeId;
use crate::logic::spill::{lock_file_name, node_dir_name, SpillDirEntry};
use nix::errno::Errno;
use nix::fcntl::{flock, FlockArg};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a start waits for a lock that a sweeper holds (it is about to unlink it).
const CLAIM_ATTEMPTS: u32 = 200;

/// The spill directory could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum SpillDirError {
    /// A file system call failed.
    #[error("spill directory {path}: {source}")]
    Io {
        /// What was being opened or created.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Another live process holds this node's lock (the same node id twice).
    #[error("spill directory lock {0} is held by another process")]
    Held(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpillDirError + '_ {
    move |source| SpillDirError::Io { path: path.to_owned(), source }
}

/// Where a node's spill files go under the spill directory `root`.
pub fn node_dir(root: &Path, node: &NodeId) -> PathBuf {
    root.join(node_dir_name(node))
}

/// This node's lock on its spill files; [`release`](Self::release) at a graceful exit.
#[derive(Debug)]
pub struct SpillDirClaim {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

/// Takes `file`'s lock without waiting: `Ok(false)` if another open file holds it.
fn try_lock(file: &File) -> Result<bool, Errno> {
    match flock(file.as_raw_fd(), FlockArg::LockExclusiveNonblock) {
        Ok(()) => Ok(true),
        Err(Errno::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `file` is still the file at `path` (a sweeper may have unlinked it).
fn still_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

impl SpillDirClaim {
    /// Creates `root` if needed (mode 0700), takes `node`'s lock, writes this process's
    /// pid into it, creates the node's directory (mode 0700), then sweeps the files of
    /// nodes that are gone (see [`sweep`]).
    pub fn claim(root: &Path, node: NodeId) -> Result<Self, SpillDirError> {
        DirBuilder::new().recursive(true).mode(0o700).create(root).map_err(io(root))?;
        let lock_path = root.join(lock_file_name(&node));
        let mut attempts = 0;
        let mut lock = loop {
            attempts += 1;
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&lock_path)
                .map_err(io(&lock_path))?;
            match try_lock(&f) {
                Ok(true) if still_at(&f, &lock_path) => break f,
                // A sweeper unlinked it before we locked it: make a new one.
                Ok(true) => continue,
                // A sweeper holds it for a moment, or a process with our node id runs.
                Ok(false) if attempts < CLAIM_ATTEMPTS => std::thread::sleep(Duration::from_millis(10)),
                Ok(false) => return Err(SpillDirError::Held(lock_path)),
                Err(e) => return Err(SpillDirError::Io { path: lock_path, source: e.into() }),
            }
        };
        lock.set_len(0).map_err(io(&lock_path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io(&lock_path))?;
        let dir = node_dir(root, &node);
        DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io(&dir))?;
        let swept = sweep(root, node);
        for (gone, pid) in &swept.removed {
            let pid = pid.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            tracing::info!("removed the spill files of node {gone} (pid {pid}), which is gone");
        }
        if swept.live > 0 {
            tracing::info!(nodes = swept.live, "spill directory {} is shared with live nodes", root.display());
        }
        Ok(Self { dir, lock_path, _lock: lock })
    }

    /// This node's spill file directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Graceful exit: removes this node's spill files and directory, then its lock file
    /// (in that order, so a crash in between leaves a lock nobody holds, which the next
    /// start sweeps).
    pub fn release(self) {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => tracing::info!("removed the spill directory {}", self.dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove the spill directory {}: {e}", self.dir.display()),
        }
        if let Err(e) = std::fs::remove_file(&self.lock_path) {
            tracing::warn!("cannot remove the spill lock {}: {e}", self.lock_path.display());
        }
    }
}

/// What [`sweep`] did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Nodes whose files were removed, with the pid their lock named.
    pub removed: Vec<(NodeId, Option<u32>)>,
    /// Other nodes found alive (their lock is held).
    pub live: usize,
}

/// Removes the spill files of every node but `me` whose writer is gone: its lock file is
/// not held by anyone, or its directory has no lock file at all. Failures are logged and
/// skipped; a sweep never fails a start.
pub fn sweep(root: &Path, me: NodeId) -> Swept {
    let mut out = Swept::default();
    let Ok(entries) = std::fs::read_dir(root) else { return out };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(kind) = name.to_str().and_then(SpillDirEntry::parse) else { continue };
        let node = match kind {
            SpillDirEntry::Lock(n) | SpillDirEntry::NodeDir(n) if n == me => continue,
            SpillDirEntry::Lock(n) => n,
            SpillDirEntry::NodeDir(n) => {
                // A node creates its lock before its directory: a directory without one was
                // left by a writer that is gone. Take a lock of our own while removing it.
                match OpenOptions::new().write(true).create_new(true).mode(0o600).open(root.join(lock_file_name(&n))) {
                    Ok(_) => n,
                    Err(_) => continue,
                }
            }
        };
        let lock_path = root.join(lock_file_name(&node));
        let Ok(mut lock) = OpenOptions::new().read(true).write(true).open(&lock_path) else { continue };
        match try_lock(&lock) {
            Ok(true) if still_at(&lock, &lock_path) => {}
            Ok(true) => continue,
            Ok(false) => {
                out.live += 1;
                continue;
            }
            Err(e) => {
                tracing::warn!("cannot check the spill lock {}: {e}", lock_path.display());
                continue;
            }
        }
        let mut text = String::new();
        let pid = lock.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
        let dir = node_dir(root, &node);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!("cannot remove stale spill files in {}: {e}", dir.display());
                continue;
            }
        }
        if let Err(e) = std::fs::remove_file(&lock_path) {
            tracing::warn!("cannot remove the stale spill lock {}: {e}", lock_path.display());
        }
        out.removed.push((node, pid));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId([n; 28])
    }

    #[test]
    fn a_claim_is_exclusive_private_and_released_cleanly() {
        let root = tempfile::tempdir().unwrap();
        let a = SpillDirClaim::claim(root.path(), node(1)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(a.dir()), 0o700);
        assert_eq!(mode(&root.path().join(lock_file_name(&node(1)))), 0o600);
        // A second process with the same node id would be refused; within one process
        // flock locks are per open file, so a second open stands in for it.
        let other = File::open(root.path().join(lock_file_name(&node(1)))).unwrap();
        assert_eq!(try_lock(&other), Ok(false));
        // Another node's sweep leaves a live node's files alone.
        std::fs::write(a.dir().join("spill-0"), b"x").unwrap();
        let s = sweep(root.path(), node(2));
        assert_eq!((s.removed.len(), s.live), (0, 1));
        assert!(a.dir().join("spill-0").exists());
        a.release();
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "nothing left behind");
    }

    #[test]
    fn a_sweep_reports_the_gone_writer_it_removed() {
        let root = tempfile::tempdir().unwrap();
        let dead = node(3);
        std::fs::write(root.path().join(lock_file_name(&dead)), b"4242\n").unwrap();
        std::fs::create_dir(node_dir(root.path(), &dead)).unwrap();
        let s = sweep(root.path(), node(1));
        assert_eq!(s.removed, vec![(dead, Some(4242))]);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn files_of_gone_nodes_are_swept_and_others_are_left() {
        let root = tempfile::tempdir().unwrap();
        // A node that died: its lock file exists but nobody holds it.
        let dead = node(3);
        std::fs::write(root.path().join(lock_file_name(&dead)), b"4242\n").unwrap();
        std::fs::create_dir(node_dir(root.path(), &dead)).unwrap();
        std::fs::write(node_dir(root.path(), &dead).join("spill-0"), b"x").unwrap();
        // A directory left without any lock file.
        let orphan = node(4);
        std::fs::create_dir(node_dir(root.path(), &orphan)).unwrap();
        // Things that are not ours.
        std::fs::write(root.path().join("spill-7"), b"x").unwrap();
        std::fs::create_dir(root.path().join("something-else")).unwrap();
        let me = SpillDirClaim::claim(root.path(), node(1)).unwrap();
        // The claim swept them; a second sweep finds nothing more to do.
        let again = sweep(root.path(), node(1));
        assert_eq!((again.removed.len(), again.live), (0, 0));
        let mut names: Vec<String> =
            std::fs::read_dir(root.path()).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        names.sort();
        let mut want = vec![
            "something-else".to_string(),
            "spill-7".to_string(),
            node_dir_name(&node(1)),
            lock_file_name(&node(1)),
        ];
        want.sort();
        assert_eq!(names, want);
        me.release();
    }
}
