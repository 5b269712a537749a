//! The shared-memory store over the local protocol, from the built binary.

use raylet::client::{ClientError, LocalClient};
use raylet::ids::ObjectId;
use raylet::local::codec::StoreError;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Node {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self._dir.path().join("stderr")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- node stderr (last lines) ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
    }
}

fn start(extra: &[&str]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_raylet"))
        .args(["start", "--head", "--port", "0", "--shards", "2", "--temp-dir"])
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("raylet ready "), "no ready line: {line:?}");
    let socket = line.split_whitespace().find_map(|kv| kv.strip_prefix("socket=")).unwrap().into();
    Node { child, socket, _dir: dir }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn put_get_round_trips_in_place_across_shards() {
    let node = start(&["--object-store-memory", "67108864"]);
    let mut c = LocalClient::connect_driver(&node.socket).unwrap();
    let mut ids = Vec::new();
    for i in 0..16 {
        let data = pattern(1000 + i * 4096, i as u8);
        ids.push((c.put(&data).unwrap(), data));
    }
    let only_ids: Vec<ObjectId> = ids.iter().map(|(id, _)| *id).collect();
    let views = c.get(&only_ids, Some(Duration::from_secs(1))).unwrap();
    for ((_, data), v) in ids.iter().zip(&views) {
        assert_eq!(&v.as_ref().unwrap()[..], &data[..]);
    }
    assert!(c.contains(&only_ids[0]).unwrap());
    let mut other = LocalClient::connect_driver(&node.socket).unwrap();
    let v = other.get(&only_ids[3..4], None).unwrap();
    assert_eq!(&v[0].as_ref().unwrap()[..], &ids[3].1[..]);
}

#[test]
fn get_of_unknown_id_times_out_with_none() {
    let node = start(&[]);
    let mut c = LocalClient::connect_driver(&node.socket).unwrap();
    let started = std::time::Instant::now();
    let v = c.get(&[ObjectId::random()], Some(Duration::from_millis(200))).unwrap();
    assert!(v[0].is_none());
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn get_waits_for_a_seal_by_another_client() {
    let node = start(&[]);
    let mut writer = LocalClient::connect_driver(&node.socket).unwrap();
    let id = ObjectId::random();
    let mut w = writer.create(id, 5, 0, true).unwrap();
    w.data_mut().copy_from_slice(b"hello");
    let sock = node.socket.clone();
    let reader = std::thread::spawn(move || {
        let mut r = LocalClient::connect_driver(&sock).unwrap();
        let v = r.get(&[id], Some(Duration::from_secs(10))).unwrap();
        v[0].as_ref().map(|v| v.to_vec())
    });
    // The reader is blocked in its get until the seal; the seal is what it observes.
    writer.seal(w).unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), b"hello");
}

#[test]
fn delete_of_object_in_use_is_deferred_until_release() {
    let node = start(&[]);
    let mut c = LocalClient::connect_driver(&node.socket).unwrap();
    let id = c.put(b"abc").unwrap();
    let views = c.get(&[id], Some(Duration::ZERO)).unwrap();
    let mut other = LocalClient::connect_driver(&node.socket).unwrap();
    assert_eq!(other.delete(&[id]).unwrap(), vec![StoreError::ObjectInUse]);
    drop(views);
    c.release(&[]).unwrap();
    // The deferred delete completes once the last reference goes.
    assert!(!c.contains(&id).unwrap());
}

#[test]
fn create_that_cannot_fit_fails_with_store_full() {
    // 16 MiB: larger than the 8 MiB store plus the 4 MiB of fallback allowed.
    let node = start(&["--object-store-memory", "8388608", "--fallback-allocation-limit", "4194304"]);
    let mut c = LocalClient::connect_driver(&node.socket).unwrap();
    match c.create(ObjectId::random(), 16 << 20, 0, true) {
        Err(ClientError::Store { code: StoreError::ObjectStoreFull, message }) => {
            assert!(message.contains("16777216") && message.contains("fallback limit of 4194304"), "{message}");
        }
        other => panic!("expected ObjectStoreFull, got {other:?}"),
    }
    // With fallback off, an object larger than the store fails too, saying so.
    let off = start(&["--object-store-memory", "8388608", "--fallback-allocation-limit", "0"]);
    let mut c = LocalClient::connect_driver(&off.socket).unwrap();
    match c.create(ObjectId::random(), 9 << 20, 0, true) {
        Err(ClientError::Store { code: StoreError::ObjectStoreFull, message }) => {
            assert!(message.contains("9437184"), "{message}");
        }
        other => panic!("expected ObjectStoreFull, got {other:?}"),
    }
}

#[test]
fn an_object_of_the_whole_capacity_fits_after_both_shards_held_small_objects() {
    let node = start(&["--object-store-memory", "67108864"]);
    let mut c = LocalClient::connect_driver(&node.socket).unwrap();
    // A small object on each shard: each shard takes a slab of the arena for it, and keeps
    // it as a spare once the object is gone.
    let small: Vec<ObjectId> = (0..2)
        .map(|shard| {
            let id = std::iter::repeat_with(ObjectId::random)
                .find(|id| raylet::shard::route::owner_of_object(id, 2).index() == shard)
                .unwrap();
            c.put_with_id(id, &[shard as u8; 1000]).unwrap();
            id
        })
        .collect();
    assert_eq!(c.delete(&small).unwrap(), vec![StoreError::Ok; 2]);
    // The whole store in one object fits only once the spare slabs go back to the arena.
    let data = pattern(64 << 20, 3);
    let id = c.put(&data).unwrap();
    let v = c.get(&[id], Some(Duration::from_secs(10))).unwrap();
    assert!(v[0].as_ref().is_some_and(|got| got[..] == data[..]), "the object reads back intact");
}

#[test]
fn filling_past_capacity_spills_and_every_pinned_object_stays_readable() {
    let node = start(&["--object-store-memory", "67108864"]);
    let mut c = LocalClient::connect_driver(&node.socket).unwrap();
    let objects: Vec<(ObjectId, Vec<u8>)> = (0..20)
        .map(|i| {
            let data = pattern(8 << 20, i as u8);
            (c.put(&data).unwrap(), data)
        })
        .collect();
    // 160 MiB of pinned primaries in a 64 MiB store: most of them live on disk now, and
    // every one reads back intact (restored on get).
    for (id, data) in &objects {
        let v = c.get(&[*id], Some(Duration::from_secs(30))).unwrap();
        let got = v[0].as_ref().unwrap_or_else(|| panic!("object {id} lost"));
        assert!(got[..] == data[..], "object {id} corrupted");
    }
}

#[test]
fn a_client_that_dies_holding_references_gives_the_memory_back() {
    let node = start(&["--object-store-memory", "33554432"]);
    let mut c = LocalClient::connect_driver(&node.socket).unwrap();
    // An unsealed 20 MiB object and a referenced, unpinned one, then the client vanishes.
    let _w = c.create(ObjectId::random(), 20 << 20, 0, false).unwrap();
    let id = ObjectId::random();
    let w = c.create(id, 8 << 20, 0, false).unwrap();
    c.seal(w).unwrap();
    drop(c);
    // A new 24 MiB object fits only once both were released (the sealed one evicted).
    let mut d = LocalClient::connect_driver(&node.socket).unwrap();
    let w = d.create(ObjectId::random(), 24 << 20, 0, true).unwrap();
    d.seal(w).unwrap();
}

/// A fresh id owned by `shard` (of 2).
fn id_on(shard: usize) -> ObjectId {
    std::iter::repeat_with(ObjectId::random)
        .find(|id| raylet::shard::route::owner_of_object(id, 2).index() == shard)
        .unwrap()
}

#[test]
fn a_client_that_goes_while_blocked_in_a_get_gives_everything_back_at_once() {
    use raylet::local::codec::LocalMessage;
    let node = start(&[]);
    let mut d = LocalClient::connect_driver(&node.socket).unwrap();
    let held = [id_on(0), id_on(1)];
    for id in held {
        d.put_with_id(id, &[5; 1000]).unwrap();
    }
    // Client c takes a reference to each, then blocks in a get that never ends by itself
    // (objects nobody has, on both shards, no timeout).
    let mut c = LocalClient::connect_driver(&node.socket).unwrap();
    c.send(&LocalMessage::Get { ids: held.to_vec(), timeout_ms: 0 }).unwrap();
    match c.recv().unwrap() {
        LocalMessage::GetReply { objects, .. } => assert!(objects.iter().all(|o| o.found), "{objects:?}"),
        other => panic!("expected a GetReply, got {other:?}"),
    }
    let absent = [id_on(0), id_on(1)];
    c.send(&LocalMessage::Get { ids: absent.to_vec(), timeout_ms: -1 }).unwrap();
    assert_eq!(d.delete(&held).unwrap(), vec![StoreError::ObjectInUse; 2], "c holds them");
    drop(c);
    // Its references go back though its get never returned: the deferred deletes happen.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while held.iter().any(|id| d.contains(id).unwrap()) {
        assert!(std::time::Instant::now() < deadline, "a gone client still holds its objects");
        std::thread::yield_now();
    }
    // And the get it left behind pins nothing for it when its objects appear.
    for id in absent {
        d.put_with_id(id, &[6; 1000]).unwrap();
    }
    assert_eq!(d.delete(&absent).unwrap(), vec![StoreError::Ok; 2], "nothing pinned for a gone client");
}

#[test]
fn a_client_that_goes_while_its_get_restores_spilled_objects_leaves_them_readable() {
    use raylet::local::codec::LocalMessage;
    let node = start(&["--object-store-memory", "67108864"]);
    let mut d = LocalClient::connect_driver(&node.socket).unwrap();
    // 160 MiB of pinned primaries in a 64 MiB store: most are on disk.
    let objects: Vec<(ObjectId, Vec<u8>)> = (0..20u8)
        .map(|i| {
            let data = pattern(8 << 20, i);
            (d.put(&data).unwrap(), data)
        })
        .collect();
    // Clients ask for the objects one shard owns and go meanwhile. Main connections go to
    // the shards in turn, so for each shard one of two consecutive clients is served by
    // that shard itself: its get starts restoring at once on the connection's own task.
    let shard_of = |id: &ObjectId| raylet::shard::route::owner_of_object(id, 2).index();
    for shard in [0, 0, 1, 1] {
        let ids: Vec<ObjectId> = objects.iter().map(|(id, _)| *id).filter(|id| shard_of(id) == shard).collect();
        let mut c = LocalClient::connect_driver(&node.socket).unwrap();
        c.send(&LocalMessage::Get { ids, timeout_ms: -1 }).unwrap();
        drop(c);
    }
    // No restore is left half done: every object still reads back.
    for (id, data) in &objects {
        let v = d.get(&[*id], Some(Duration::from_secs(20))).unwrap();
        let got = v[0].as_ref().unwrap_or_else(|| panic!("object {id} cannot be read after the client went"));
        assert!(got[..] == data[..], "object {id} corrupted");
    }
}

#[test]
fn wait_returns_when_enough_objects_are_ready() {
    let node = start(&[]);
    let mut c = LocalClient::connect_driver(&node.socket).unwrap();
    let present: Vec<ObjectId> = (0..3).map(|i| c.put(&[i]).unwrap()).collect();
    let absent = ObjectId::random();
    let mut ids = present.clone();
    ids.push(absent);
    let (ready, remaining) = c.wait(&ids, 2, Some(Duration::from_secs(5))).unwrap();
    assert!(ready.len() >= 2 && ready.iter().all(|id| present.contains(id)));
    assert!(remaining.contains(&absent));
    let (ready, remaining) = c.wait(&ids, 4, Some(Duration::from_millis(100))).unwrap();
    assert_eq!(ready.len(), 3);
    assert_eq!(remaining, vec![absent]);
}
