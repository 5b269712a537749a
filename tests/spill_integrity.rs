//! Spilled data at rest, from the built binary: corrupt spill files never come back as
//! wrong bytes (a get fails clearly, or gets another node's copy); spill files are private,
//! per node, removed at a graceful stop, never clobbered by a node sharing the spill
//! directory, swept when their writer is gone and kept while it lives; a full spill disk
//! fails the create clearly and leaves the node up.

mod common;

use common::spill::*;
use common::*;
use raylet::client::{ClientError, LocalClient};
use raylet::ids::ObjectId;
use raylet::local::codec::StoreError;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const MIB: usize = 1 << 20;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed)).collect()
}

fn node_with(dir: &TestDir, opts: NodeOpts, store: usize, spill_dir: Option<&Path>) -> Node {
    let mut opts = opts.args(["--object-store-memory", &store.to_string()]);
    if let Some(d) = spill_dir {
        opts = opts.args(["--spill-directory", &d.display().to_string()]);
    }
    dir.start(&opts)
}

fn put_all(node: &Node, n: usize, size: usize, seed: u8) -> Vec<(ObjectId, Vec<u8>)> {
    let mut c = LocalClient::connect_driver(&node.ready.socket).unwrap();
    (0..n)
        .map(|i| {
            let data = pattern(size, seed.wrapping_add(i as u8));
            (c.put(&data).expect("put"), data)
        })
        .collect()
}

fn assert_all_readable(node: &Node, objects: &[(ObjectId, Vec<u8>)]) {
    let mut c = LocalClient::connect_driver(&node.ready.socket).unwrap();
    for (id, data) in objects {
        let v = c.get(&[*id], Some(Duration::from_secs(30))).unwrap();
        let got = v[0].as_ref().unwrap_or_else(|| panic!("object {id} cannot be read"));
        assert!(got[..] == data[..], "object {id} came back with other bytes");
    }
}

/// The node's own spill file directory under `root`.
fn node_spill_dir(root: &Path, node: &Node) -> std::path::PathBuf {
    root.join(format!("raylet-spill-{}", node.ready.node_id))
}

fn store_bytes_used(node: &Node) -> i64 {
    node_stats(node, &node.ready.token()).store_stats.map(|s| s.object_store_bytes_used).unwrap_or(-1)
}

#[test]
fn corrupt_spill_files_never_give_wrong_bytes_and_the_get_fails_clearly() {
    with_timeout(Duration::from_secs(240), || {
        let dir = TestDir::new();
        let spill_root = dir.path().join("spill-root");
        let node = node_with(&dir, NodeOpts::head(), 64 * MIB, Some(&spill_root));
        // 192 MiB of pinned primaries in a 64 MiB store: most of them only on disk.
        let objects = put_all(&node, 8, 24 * MIB, 1);
        let records = spilled_records(&spill_root);
        assert!(!records.is_empty(), "nothing spilled");
        for path in records.keys() {
            flip_middle_byte(path);
        }
        // The CLI's get of an object only on disk exits non-zero with a reason, at once:
        // the node knows no other copy exists anywhere.
        let on_disk = object_states(&dir, &node).into_iter().find(|(_, s)| s == "SPILLED").expect("a spilled object").0;
        let sock = node.ready.socket.display().to_string();
        let out = dir.cli(&["object", "get", &on_disk, "--socket", &sock, "--timeout-ms", "60000"]);
        assert!(!out.status.success(), "the get of a corrupt object succeeded");
        assert!(out.stderr.contains("not available") && out.stderr.contains("gave up"), "unclear: {}", out.stderr);
        let mut c = LocalClient::connect_driver(&node.ready.socket).unwrap();
        let first = ObjectId::from_hex(&on_disk).unwrap();
        let (mut right, mut failed) = (BTreeSet::new(), BTreeSet::from([first]));
        for (id, data) in objects.iter().filter(|(id, _)| *id != first) {
            let v = c.get(&[*id], Some(Duration::from_secs(20))).unwrap();
            match v[0].as_ref() {
                Some(got) => {
                    assert!(got[..] == data[..], "object {id}: a corrupt spilled copy came back as its bytes");
                    right.insert(*id);
                }
                None => {
                    failed.insert(*id);
                }
            }
        }
        eprintln!(
            "{} of {} gets right, {} failed, {} spill files flipped",
            right.len(),
            8,
            failed.len(),
            records.len()
        );
        assert_eq!(errors_of(&node, "spill_corrupt"), failed.len() as u64, "each refused restore is counted");
        // Nothing is left half restored, and the lost objects are gone from the node.
        let states = object_states(&dir, &node);
        assert!(!states.values().any(|s| s == "RESTORING"), "{states:?}");
        for id in &failed {
            assert!(!states.contains_key(&id.to_string()), "lost object {id} still listed: {states:?}");
        }
        // A file whose every record was lost is deleted (its records were released).
        wait_for("spill files of lost objects to be deleted", Duration::from_secs(20), || {
            let left: Vec<_> = records
                .iter()
                .filter(|(p, ids)| ids.iter().all(|id| failed.contains(id)) && p.exists())
                .map(|(p, _)| p.clone())
                .collect();
            if left.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!("{left:?}"))
            }
        });
        // The node serves on, and once everything is deleted no memory or file is held.
        let survivors: Vec<ObjectId> = right.iter().copied().collect();
        drop(c);
        let mut d = LocalClient::connect_driver(&node.ready.socket).unwrap();
        let small = pattern(1000, 9);
        let id = d.put(&small).unwrap();
        assert!(d.get(&[id], Some(Duration::from_secs(5))).unwrap()[0].as_ref().is_some_and(|v| v[..] == small[..]));
        let mut all = survivors;
        all.push(id);
        d.delete(&all).unwrap();
        wait_for("the store and the spill directory to empty", Duration::from_secs(20), || {
            let (used, files) = (store_bytes_used(&node), spill_files(&spill_root));
            if used == 0 && files.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!("{used} bytes in use, files {files:?}"))
            }
        });
        node.assert_no_panic();
    });
}

#[test]
fn a_corrupt_spilled_copy_is_replaced_by_another_nodes_copy_and_pinned_again() {
    with_timeout(Duration::from_secs(240), || {
        let dir = TestDir::new();
        let spill_root = dir.path().join("spill-root");
        let a = node_with(&dir, NodeOpts::head(), 64 * MIB, Some(&spill_root));
        let b = node_with(&dir, NodeOpts::join(a.ready.gcs_address), 128 * MIB, None);
        let (x, data) = put_all(&a, 1, 24 * MIB, 50).remove(0);
        // B takes a copy of X, then A's store fills and X goes to A's disk only.
        let mut cb = LocalClient::connect_driver(&b.ready.socket).unwrap();
        assert!(cb.get(&[x], Some(Duration::from_secs(30))).unwrap()[0].as_ref().is_some_and(|v| v[..] == data[..]));
        let others = put_all(&a, 3, 24 * MIB, 60);
        wait_object_state(&dir, &a, &x, "SPILLED");
        let records = spilled_records(&spill_root);
        let file = records.iter().find(|(_, ids)| ids.contains(&x)).map(|(p, _)| p.clone()).expect("X's spill file");
        assert_eq!(records[&file], vec![x], "X has a file of its own");
        flip_middle_byte(&file);
        // The get on A refuses its corrupt copy and pulls B's instead.
        let mut ca = LocalClient::connect_driver(&a.ready.socket).unwrap();
        let v = ca.get(&[x], Some(Duration::from_secs(30))).unwrap();
        assert!(v[0].as_ref().is_some_and(|v| v[..] == data[..]), "X did not come back from B intact");
        drop(v);
        assert_eq!(errors_of(&a, "spill_corrupt"), 1);
        // A holds X as its primary copy again, and the rest is intact.
        wait_object_state(&dir, &a, &x, "PINNED");
        assert_all_readable(&a, &others);
        a.assert_no_panic();
    });
}

#[test]
fn spill_files_are_private_named_per_node_and_removed_at_a_graceful_stop() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let spill_root = dir.path().join("spill-root");
        let mut node = node_with(&dir, NodeOpts::head(), 32 * MIB, Some(&spill_root));
        let objects = put_all(&node, 6, 8 * MIB, 3);
        let mine = node_spill_dir(&spill_root, &node);
        let lock = spill_root.join(format!("raylet-spill-{}.lock", node.ready.node_id));
        let files = spill_files(&spill_root);
        assert!(!files.is_empty(), "nothing spilled");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for f in &files {
            assert_eq!(f.parent(), Some(mine.as_path()), "{} is outside the node's directory", f.display());
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
        assert_eq!(mode(&mine), 0o700);
        assert_eq!(mode(&lock), 0o600);
        assert_eq!(std::fs::read_to_string(&lock).unwrap().trim(), node.pid.to_string(), "the lock names its pid");
        assert_all_readable(&node, &objects);
        let out = dir.cli(&["stop", "--all"]);
        assert!(out.status.success(), "stop failed: {}", out.stderr);
        assert_exit_code(node.wait_exit(Duration::from_secs(30)), 0, "graceful stop");
        assert!(!mine.exists() && !lock.exists(), "spill files left after a graceful stop");
        assert_eq!(std::fs::read_dir(&spill_root).unwrap().count(), 0);
    });
}

#[test]
fn two_nodes_sharing_a_spill_directory_never_clobber_each_other() {
    with_timeout(Duration::from_secs(180), || {
        let dir = TestDir::new();
        let shared = dir.path().join("shared-spill");
        let a = node_with(&dir, NodeOpts::head(), 32 * MIB, Some(&shared));
        let b = node_with(&dir, NodeOpts::join(a.ready.gcs_address), 32 * MIB, Some(&shared));
        // Both spill the same number of objects, so both write the same file numbers.
        let on_a = put_all(&a, 8, 8 * MIB, 10);
        let on_b = put_all(&b, 8, 8 * MIB, 90);
        let (dir_a, dir_b) = (node_spill_dir(&shared, &a), node_spill_dir(&shared, &b));
        let files = spill_files(&shared);
        assert!(files.iter().any(|f| f.starts_with(&dir_a)) && files.iter().any(|f| f.starts_with(&dir_b)));
        assert!(files.iter().all(|f| f.starts_with(&dir_a) || f.starts_with(&dir_b)), "{files:?}");
        // Each node's records hold only its own objects, and all read back on their node.
        let ids_a: BTreeSet<ObjectId> = on_a.iter().map(|(id, _)| *id).collect();
        for (path, ids) in spilled_records(&shared) {
            let from_a = path.starts_with(&dir_a);
            assert!(
                ids.iter().all(|id| ids_a.contains(id) == from_a),
                "{} holds the other node's objects",
                path.display()
            );
        }
        assert_all_readable(&a, &on_a);
        assert_all_readable(&b, &on_b);
        a.assert_no_panic();
        b.assert_no_panic();
    });
}

#[test]
fn stale_spill_files_of_a_dead_node_are_swept_at_start_and_a_live_nodes_are_kept() {
    with_timeout(Duration::from_secs(180), || {
        let dir = TestDir::new();
        let shared = dir.path().join("shared-spill");
        let live = node_with(&dir, NodeOpts::head(), 32 * MIB, Some(&shared));
        let kept = put_all(&live, 6, 8 * MIB, 20);
        let mut dead = node_with(&dir, NodeOpts::join(live.ready.gcs_address), 32 * MIB, Some(&shared));
        put_all(&dead, 6, 8 * MIB, 30);
        let (live_dir, dead_dir) = (node_spill_dir(&shared, &live), node_spill_dir(&shared, &dead));
        assert!(!spill_files(&dead_dir).is_empty() && !spill_files(&live_dir).is_empty(), "both spilled");
        let live_files = spill_files(&live_dir);
        dead.kill9();
        // The dead node's files outlive it until a node using the directory starts.
        assert!(dead_dir.exists());
        let newcomer = node_with(&dir, NodeOpts::join(live.ready.gcs_address), 32 * MIB, Some(&shared));
        let dead_lock = shared.join(format!("raylet-spill-{}.lock", dead.ready.node_id));
        assert!(!dead_dir.exists() && !dead_lock.exists(), "the dead node's spill files were not swept");
        for f in &live_files {
            assert!(f.exists(), "a live node's spill file {} was removed", f.display());
        }
        assert_all_readable(&live, &kept);
        assert!(node_spill_dir(&shared, &newcomer).exists());
        live.assert_no_panic();
    });
}

#[test]
fn a_full_spill_disk_fails_the_create_clearly_backs_off_and_leaves_the_node_up() {
    with_timeout(Duration::from_secs(180), || {
        let disk = Tmpfs::mount(16 << 20);
        let dir = TestDir::new();
        // No fallback allocation: the create must find the store full, not a disk-backed file.
        let opts = NodeOpts::head()
            .args(["--system-config", r#"{"oom_grace_period_s": 3}"#])
            .args(["--fallback-allocation-limit", "0"]);
        let node = node_with(&dir, opts, 64 * MIB, Some(disk.path()));
        // 24 MiB objects never fit on the 16 MiB disk: every spill write fails.
        let mut c = LocalClient::connect_driver(&node.ready.socket).unwrap();
        let first = put_all(&node, 2, 24 * MIB, 40);
        let err = c.put(&pattern(24 * MIB, 42)).expect_err("a third 24 MiB object cannot fit");
        let msg = err.to_string();
        assert!(
            matches!(&err, ClientError::Store { code: StoreError::ObjectStoreFull, .. }),
            "expected ObjectStoreFull, got {msg}"
        );
        assert!(msg.contains("spilling to disk failed") && msg.contains("No space left"), "unclear: {msg}");
        // Over the 3 s the create waited, spilling backed off (100 ms doubling: at most six
        // writes a shard) instead of rewriting the disk's worth on every 10 ms retry
        // (hundreds).
        let writes = errors_of(&node, "spill_write");
        eprintln!("{writes} failed spill writes during the create");
        assert!((1..=16).contains(&writes), "{writes} failed spill writes");
        // No partial file is left on the full disk, and the node serves on.
        assert!(spill_files(disk.path()).is_empty(), "{:?}", spill_files(disk.path()));
        dir.status();
        c.delete(&[first[0].0]).unwrap();
        let id = c.put(&pattern(24 * MIB, 43)).expect("a put fits once an object is deleted");
        assert_all_readable(&node, &[(id, pattern(24 * MIB, 43)), first[1].clone()]);
        node.assert_no_panic();
        drop(node);
    });
}
