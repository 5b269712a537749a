//! The store's segments (`store::arena`): fallback segments for objects larger than the
//! store (pulled and put), the clear errors when even fallback cannot take an object, and
//! the segments' safety from clients: a client that truncates every descriptor it received
//! harms no sealed object and does not crash the raylet (default memfd store, a
//! `--plasma-directory` store, and with fallback segments present); a plasma directory too
//! small for the store is a clear start error.

mod common;

use common::segments::{held_files, SmallTmpfs};
use common::*;
use raylet::client::{ClientError, LocalClient};
use raylet::ids::ObjectId;
use raylet::local::codec::StoreError;
use raylet::rpc::CallOpts;
use raylet::wire::rpc::*;
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8).collect()
}

/// Gets `id` through `socket` and checks it is `want`, byte for byte.
fn assert_reads(socket: &std::path::Path, id: ObjectId, want: &[u8], what: &str) {
    let mut c = LocalClient::connect_driver(socket).unwrap();
    let got = c.get_or_why(&[id], Some(Duration::from_secs(60))).unwrap().pop().unwrap();
    match got {
        Ok(v) => assert!(v[..] == want[..], "{what}: {id} came back with other bytes"),
        Err(why) => panic!("{what}: {id} is missing: {why:?}"),
    }
}

fn wait_released(pid: u32, dir: &std::path::Path) {
    let needle = dir.display().to_string();
    wait_for("fallback files unmapped and closed", Duration::from_secs(20), || {
        let held = held_files(pid, &needle);
        Ok(held.is_empty().then_some(()))
    });
}

#[test]
fn an_object_larger_than_the_pullers_store_arrives_through_a_fallback_segment() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        let fb = dir.path().join("fallback-b");
        let head = dir.start(&NodeOpts::head().args(["--object-store-memory", &(256 * MIB).to_string()]));
        let b = dir.start(&NodeOpts::join(head.ready.gcs_address).args([
            "--object-store-memory",
            &(128 * MIB).to_string(),
            "--fallback-directory",
            fb.to_str().unwrap(),
        ]));
        let data = pattern(200 * MIB, 7);
        let mut a = LocalClient::connect_driver(&head.ready.socket).unwrap();
        let id = a.put(&data).unwrap();
        let mut c = LocalClient::connect_driver(&b.ready.socket).unwrap();
        let v = c.get_or_why(&[id], Some(Duration::from_secs(60))).unwrap().pop().unwrap().unwrap();
        assert!(v[..] == data[..], "the 200 MiB object arrived with other bytes");
        let needle = fb.display().to_string();
        assert!(!held_files(b.pid, &needle).is_empty(), "B holds the object in a fallback segment");
        let fallback_bytes =
            |n: &Node| node_stats(n, &head.ready.token()).store_stats.map_or(0, |s| s.object_store_bytes_fallback);
        assert!(fallback_bytes(&b) >= (200 * MIB) as i64, "GetNodeStats reports the fallback bytes");
        assert!(!held_files(std::process::id(), &needle).is_empty(), "the client maps that segment");
        drop(v);
        assert!(held_files(std::process::id(), &needle).is_empty(), "the client unmapped it with its last view");
        // Freed everywhere: B unmaps and closes its fallback file.
        let freed = c.free(&[id]).unwrap();
        assert_eq!(freed.errors, vec![StoreError::Ok]);
        wait_released(b.pid, &fb);
        wait_for("no fallback bytes left", Duration::from_secs(10), || Ok((fallback_bytes(&b) == 0).then_some(())));
        b.assert_no_panic();
    });
}

#[test]
fn a_put_larger_than_the_store_is_written_in_fallback_and_reads_back() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let fb = dir.path().join("fallback");
        let head = dir.start(&NodeOpts::head().args(["--fallback-directory", fb.to_str().unwrap()]));
        let data = pattern(48 * MIB, 3);
        let mut c = LocalClient::connect_driver(&head.ready.socket).unwrap();
        let id = c.put(&data).unwrap();
        assert_reads(&head.ready.socket, id, &data, "another client");
        let v = c.get(&[id], Some(Duration::from_secs(10))).unwrap().pop().flatten().unwrap();
        assert!(v[..] == data[..]);
        drop(v);
        assert_eq!(c.delete(&[id]).unwrap(), vec![StoreError::Ok]);
        wait_released(head.pid, &fb);
        local_still_serves(&head);
    });
}

#[test]
fn an_object_too_big_for_store_and_fallback_limit_fails_at_once_saying_why() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        let head = dir.start_head();
        let b = dir.start(
            &NodeOpts::join(head.ready.gcs_address).args(["--fallback-allocation-limit", &(8 * MIB).to_string()]),
        );
        // 40 MiB: in fallback on the head (32 MiB store), too big for B (32 MiB + 8 MiB).
        let size = 40 * MIB;
        let mut a = LocalClient::connect_driver(&head.ready.socket).unwrap();
        let id = a.put(&pattern(size, 1)).unwrap();
        // The pull fails with the reason long before this get's hour-long timeout.
        let sock = b.ready.socket.display().to_string();
        let out = dir.cli(&["object", "get", &id.to_string(), "--socket", &sock, "--timeout-ms", "3600000"]);
        assert!(!out.status.success(), "the get must fail: {}", out.stderr);
        assert!(
            out.stderr.contains("gave up fetching") && out.stderr.contains(&size.to_string()),
            "the error says why and how big: {}",
            out.stderr
        );
        assert!(out.stderr.contains("fallback limit"), "{}", out.stderr);
        // A local create of the same size on B says so too.
        let mut c = LocalClient::connect_driver(&b.ready.socket).unwrap();
        match c.create(ObjectId::random(), size + 1, 0, true) {
            Err(ClientError::Store { code: StoreError::ObjectStoreFull, message }) => {
                assert!(message.contains(&(size + 1).to_string()) && message.contains("fallback limit"), "{message}");
            }
            other => panic!("expected ObjectStoreFull, got {other:?}"),
        }
        local_still_serves(&b);
    });
}

#[test]
fn a_plasma_directory_smaller_than_the_store_is_a_clear_start_error() {
    with_timeout(Duration::from_secs(60), || {
        let dir = TestDir::new();
        let small = SmallTmpfs::mount(dir.path(), 16 * MIB);
        let opts = NodeOpts::head().args([
            "--plasma-directory",
            small.path().to_str().unwrap(),
            "--object-store-memory",
            &(64 * MIB).to_string(),
        ]);
        let (status, _, stderr) = dir.start_expect_failure(&opts, Duration::from_secs(30));
        assert_exit_code(status, 1, "a start with a too small plasma directory");
        assert!(
            stderr.contains("plasma directory") && stderr.contains(&(64 * MIB).to_string()),
            "the error names the directory and the size: {stderr}"
        );
    });
}

/// A client truncates every descriptor it received; afterwards every sealed object still
/// reads, pushes and spills byte for byte, and the node still serves.
fn truncation_harms_nothing(extra: &[&str], with_fallback: bool) {
    let dir = TestDir::new();
    let head = dir.start(&NodeOpts::head().args(extra.iter().copied()));
    let b = dir.start(&NodeOpts::join(head.ready.gcs_address));
    let mut c = LocalClient::connect_driver(&head.ready.socket).unwrap();
    let mut sizes = vec![8 << 10, MIB, 3 * MIB];
    if with_fallback {
        sizes.push(40 * MIB);
    }
    let mut objects: Vec<(ObjectId, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let data = pattern(n, i as u8);
            (c.put(&data).unwrap(), data)
        })
        .collect();
    let ids: Vec<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
    let views = c.get(&ids, Some(Duration::from_secs(10))).unwrap();
    assert!(views.iter().all(Option::is_some));
    // One object still being written: in the store, the staging segment or a staging file.
    let open = (ObjectId::random(), pattern(if with_fallback { 36 * MIB } else { MIB }, 9));
    let mut w = c.create(open.0, open.1.len() as u64, 0, true).unwrap();
    w.data_mut().copy_from_slice(&open.1);

    let fds = c.segment_fds();
    assert!(!fds.is_empty());
    if with_fallback {
        assert!(fds.iter().any(|(i, _)| *i >= 2), "fallback segments were passed: {fds:?}");
    }
    let mut truncated = Vec::new();
    for (seg, fd) in &fds {
        // SAFETY: `fd` is open (the client's segment holds it); ftruncate touches no memory.
        if unsafe { libc::ftruncate(*fd, 0) } == 0 {
            truncated.push(*seg);
        }
    }
    // Only a creator's own fallback staging file may shrink; the rest refuse.
    assert_eq!(truncated.len(), usize::from(with_fallback), "truncated {truncated:?} of {fds:?}");
    let open_id = open.0;
    match c.seal(w) {
        Ok(_) => objects.push(open),
        Err(ClientError::Store { message, .. }) if !truncated.is_empty() => {
            assert!(message.contains("truncated"), "a truncated staging file fails its seal clearly: {message}");
        }
        Err(e) => panic!("seal failed: {e}"),
    }
    drop(views);
    c.release(&[open_id]).unwrap();

    for (id, data) in &objects {
        assert_reads(&head.ready.socket, *id, data, "served");
        assert_reads(&b.ready.socket, *id, data, "pushed");
    }
    // Spill every sealed object (retrying while a push still pins it), push them out of
    // memory with a filler, and read them back (restored where evicted).
    let mut nm = head.node_manager(&head.ready.token());
    for (id, _) in &objects {
        wait_for("the object spilled", Duration::from_secs(20), || {
            let r = node_manager_service::blocking::request_object_spillage(
                &mut nm,
                &RequestObjectSpillageRequest { object_id: id.to_vec() },
                CallOpts::default(),
            )
            .map_err(|e| e.to_string())?;
            Ok(r.success.then_some(()))
        });
    }
    let filler = c.put(&pattern(28 * MIB, 5)).unwrap();
    c.delete(&[filler]).unwrap();
    for (id, data) in &objects {
        assert_reads(&head.ready.socket, *id, data, "restored");
    }
    let stats = node_stats(&head, &head.ready.token());
    let restored = stats.store_stats.map_or(0, |s| s.restored_objects_total);
    assert!(restored > 0, "the filler pushed spilled objects out and gets restored them");
    head.assert_no_panic();
    local_still_serves(&head);
}

#[test]
fn truncating_the_default_memfd_store_harms_nothing() {
    with_timeout(Duration::from_secs(120), || truncation_harms_nothing(&[], false));
}

#[test]
fn truncating_a_plasma_directory_store_harms_nothing() {
    with_timeout(Duration::from_secs(120), || {
        let tmp = TestDir::new();
        let plasma = SmallTmpfs::mount(tmp.path(), 48 * MIB);
        truncation_harms_nothing(&["--plasma-directory", plasma.path().to_str().unwrap()], false);
    });
}

#[test]
fn truncating_fallback_segments_harms_nothing() {
    with_timeout(Duration::from_secs(150), || truncation_harms_nothing(&[], true));
}
