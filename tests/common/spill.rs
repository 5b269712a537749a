//! Spill-file helpers: list a spill directory's files and the objects each holds, flip a
//! byte in one, read a node's per-object states, and mount a small tmpfs for one test
//! (unmounted when dropped, also when the test fails).

use super::{wait_for, Node, TestDir};
use raylet::ids::ObjectId;
use raylet::logic::spill::{RecordHeader, RECORD_HEADER_LEN};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Every spill file (`spill-<n>`) under `root`, at any depth, sorted.
pub fn spill_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if e.file_name().to_string_lossy().starts_with("spill-") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The objects whose records a spill file holds, read through the record headers.
pub fn records_of(path: &Path) -> Vec<ObjectId> {
    let f = std::fs::File::open(path).expect("open spill file");
    let len = f.metadata().unwrap().len();
    let (mut at, mut ids) = (0, Vec::new());
    while at + RECORD_HEADER_LEN <= len {
        let mut h = [0u8; RECORD_HEADER_LEN as usize];
        f.read_exact_at(&mut h, at).unwrap();
        let header = RecordHeader::decode(&h).unwrap_or_else(|e| panic!("{}@{at}: {e}", path.display()));
        ids.push(header.id);
        at += header.record_len().unwrap();
    }
    ids
}

/// Every spill file under `root` with the objects it holds.
pub fn spilled_records(root: &Path) -> BTreeMap<PathBuf, Vec<ObjectId>> {
    spill_files(root).into_iter().map(|p| (p.clone(), records_of(&p))).collect()
}

/// Inverts the byte in the middle of `path`.
pub fn flip_middle_byte(path: &Path) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open spill file");
    let mid = f.metadata().unwrap().len() / 2;
    let mut b = [0u8];
    f.read_exact_at(&mut b, mid).unwrap();
    f.write_all_at(&[!b[0]], mid).unwrap();
}

/// `raylet memory --format json` of the cluster: each object's state on `node`
/// (`PINNED`, `SPILLED`, `RESTORING`, ...), by hex id.
pub fn object_states(dir: &TestDir, node: &Node) -> BTreeMap<String, String> {
    let out = dir.cli(&["memory", "--format", "json", "--address", &node.ready.gcs_address.to_string()]);
    assert!(out.status.success(), "raylet memory failed: {}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("memory JSON");
    v["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["node_id"].as_str() == Some(node.ready.node_id.as_str()))
        .map(|o| (o["object_id"].as_str().unwrap_or("").to_string(), o["state"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// Polls until `node` has `id` in `state`.
pub fn wait_object_state(dir: &TestDir, node: &Node, id: &ObjectId, state: &str) {
    let hex = id.to_string();
    wait_for(&format!("object {hex} to be {state}"), Duration::from_secs(30), || {
        let states = object_states(dir, node);
        match states.get(&hex) {
            Some(s) if s == state => Ok(Some(())),
            other => Err(format!("state {other:?}")),
        }
    })
}

/// A tmpfs of a given size, mounted at a fresh temp path; unmounted and removed on drop.
#[derive(Debug)]
pub struct Tmpfs {
    mount_point: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (mode 0700). Panics if mounting fails (the tests run as
    /// root, as CI does).
    pub fn mount(bytes: u64) -> Self {
        let parent = tempfile::Builder::new().prefix("rl-tmpfs").tempdir().expect("temp dir");
        let mount_point = parent.path().join(format!("spill-{}", std::process::id()));
        std::fs::create_dir(&mount_point).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "tmpfs"])
            .arg(&mount_point)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs at {} failed ({st}); these tests need root", mount_point.display());
        Self { mount_point, _parent: parent }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.mount_point).status().is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process that has not gone yet): detach it now, freed when unused.
            let _ = Command::new("umount").arg("-l").arg(&self.mount_point).status();
        }
    }
}
