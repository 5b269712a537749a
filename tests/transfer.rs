//! Objects move between two nodes started from the built binary.

use raylet::client::LocalClient;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Node {
    child: Child,
    socket: PathBuf,
    gcs: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, args: &[&str]) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raylet"))
        .args(["start", "--port", "0", "--shards", "2", "--temp-dir"])
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("raylet ready "), "no ready line: {line:?}");
    let field = |k: &str| line.split_whitespace().find_map(|kv| kv.strip_prefix(k)).unwrap().to_string();
    Node { child, socket: field("socket=").into(), gcs: field("gcs_address=") }
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u8(..)).collect()
}

#[test]
fn a_64_mib_object_put_on_a_is_read_on_b_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), &["--head", "--object-store-memory", "268435456"]);
    let b = start(dir.path(), &["--address", &a.gcs, "--object-store-memory", "268435456"]);
    let data = pattern(64 << 20, 7);
    let mut ca = LocalClient::connect_driver(&a.socket).unwrap();
    let id = ca.put(&data).unwrap();
    let mut cb = LocalClient::connect_driver(&b.socket).unwrap();
    let v = cb.get(&[id], Some(Duration::from_secs(30))).unwrap();
    let got = v[0].as_ref().expect("object arrives on B");
    assert_eq!(got.len(), data.len());
    assert!(got[..] == data[..], "bytes differ");
    // Small objects too, several at once.
    let small: Vec<_> = (0..8).map(|i| pattern(1000 * i + 1, i as u64)).collect();
    let ids: Vec<_> = small.iter().map(|d| ca.put(d).unwrap()).collect();
    let v = cb.get(&ids, Some(Duration::from_secs(30))).unwrap();
    for (d, v) in small.iter().zip(&v) {
        assert_eq!(&v.as_ref().unwrap()[..], &d[..]);
    }
}

#[test]
fn primaries_spilled_on_a_are_restored_there_and_pulled_by_b() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), &["--head", "--object-store-memory", "67108864"]);
    let b =
        start(dir.path(), &["--address", &a.gcs, "--object-store-memory", "134217728", "--fetch-timeout-ms", "5000"]);
    // 160 MiB of pinned primaries in A's 64 MiB store: most of them are only on A's disk.
    let mut ca = LocalClient::connect_driver(&a.socket).unwrap();
    let objects: Vec<_> = (0..20)
        .map(|i| {
            let data = pattern(8 << 20, 100 + i);
            (ca.put(&data).unwrap(), data)
        })
        .collect();
    let mut cb = LocalClient::connect_driver(&b.socket).unwrap();
    for (i, (id, data)) in objects.iter().enumerate() {
        let v = cb.get(&[*id], Some(Duration::from_secs(30))).unwrap();
        let got = v[0].as_ref().unwrap_or_else(|| panic!("object {i} of 20 never reached B"));
        assert!(got[..] == data[..], "object {i} differs on B");
        drop(v);
        cb.delete(&[*id]).unwrap();
    }
}

#[test]
fn a_get_on_b_waits_for_an_object_that_is_put_on_a_later() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), &["--head", "--object-store-memory", "134217728"]);
    let b = start(dir.path(), &["--address", &a.gcs, "--object-store-memory", "134217728"]);
    let id = raylet::ids::ObjectId::random();
    let data = pattern(3 << 20, 11);
    // The get starts before any node has the object; it waits for a copy to appear.
    let (tx, rx) = std::sync::mpsc::channel();
    let sock = b.socket.clone();
    let getter = std::thread::spawn(move || {
        let mut c = LocalClient::connect_driver(&sock).unwrap();
        tx.send(()).unwrap();
        let v = c.get(&[id], Some(Duration::from_secs(30))).unwrap();
        v[0].as_ref().map(|v| v.to_vec())
    });
    rx.recv().unwrap();
    LocalClient::connect_driver(&a.socket).unwrap().put_with_id(id, &data).unwrap();
    let got = getter.join().unwrap().expect("the get on B returns the object put on A after it began");
    assert!(got == data, "bytes differ");
}
