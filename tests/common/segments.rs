//! Helpers for the store-segment tests: a small tmpfs mounted for one test (unmounted on
//! drop, even when the test fails) and what a raylet maps and holds open of its fallback
//! directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` bytes at a fresh path under `parent`; unmounted and removed on drop.
#[derive(Debug)]
pub struct SmallTmpfs {
    path: PathBuf,
}

impl SmallTmpfs {
    /// Mounts it (the test needs root or CAP_SYS_ADMIN).
    pub fn mount(parent: &Path, size: u64) -> Self {
        let path = parent.join(format!("tmpfs-{}-{:x}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir(&path).expect("mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs at {} failed: {st}", path.display());
        Self { path }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Lines of `/proc/<pid>/maps` and targets of `/proc/<pid>/fd/*` naming a file whose
/// name contains `needle` (fallback files are `raylet-fallback-*`, staging files
/// `raylet-staging-*`; both are unlinked, so the names end in "(deleted)").
pub fn held_files(pid: u32, needle: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| format!("map {l}"))
        .collect();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                if t.to_string_lossy().contains(needle) {
                    out.push(format!("fd {}", t.display()));
                }
            }
        }
    }
    out
}
