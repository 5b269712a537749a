//! The store under memory pressure with the cluster's settings from the head's system
//! config: `object_spilling_threshold` (when pinned primaries start spilling) and
//! `oom_grace_period_s` (how long a create waits for room before `ObjectStoreFull`).

mod common;

use common::*;
use raylet::client::{ClientError, LocalClient};
use raylet::ids::ObjectId;
use raylet::local::codec::StoreError;
use std::time::{Duration, Instant};

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed)).collect()
}

fn head_with(dir: &TestDir, store: u64, system_config: &str) -> Node {
    dir.start(&NodeOpts::head().args(["--object-store-memory", &store.to_string(), "--system-config", system_config]))
}

fn spilled(node: &Node) -> i64 {
    node_stats(node, &node.ready.token()).store_stats.map(|s| s.spilled_objects_total).unwrap_or(0)
}

/// Puts five 8 MiB pinned primaries (40 MiB) and reads them back.
fn put_forty_mib(node: &Node) -> Vec<(ObjectId, Vec<u8>)> {
    let mut c = LocalClient::connect_driver(&node.ready.socket).unwrap();
    (0..5u8).map(|i| (c.put(&pattern(8 << 20, i)).unwrap(), pattern(8 << 20, i))).collect()
}

fn all_readable(node: &Node, objects: &[(ObjectId, Vec<u8>)]) {
    let mut c = LocalClient::connect_driver(&node.ready.socket).unwrap();
    for (id, data) in objects {
        let v = c.get(&[*id], Some(Duration::from_secs(30))).unwrap();
        assert!(v[0].as_ref().is_some_and(|v| v[..] == data[..]), "object {id} lost or changed");
    }
}

#[test]
fn pinned_primaries_spill_above_the_configured_threshold_and_not_below() {
    with_timeout(Duration::from_secs(90), || {
        let dir = TestDir::new();
        // 40 MiB of 64 MiB is 62%: under Ray's default threshold of 0.8, nothing spills.
        let default = head_with(&dir, 64 << 20, "{}");
        let objects = put_forty_mib(&default);
        assert_eq!(spilled(&default), 0, "nothing spills under the default threshold");
        all_readable(&default, &objects);
        drop(default);
        // With a threshold of 0.25 the same puts go over it, and primaries spill.
        let low = head_with(&dir, 64 << 20, r#"{"object_spilling_threshold": 0.25}"#);
        let objects = put_forty_mib(&low);
        let n = wait_for("primaries to spill above a 0.25 threshold", Duration::from_secs(30), || {
            Ok(Some(spilled(&low)).filter(|n| *n > 0))
        });
        eprintln!("{n} objects spilled above the 0.25 threshold");
        all_readable(&low, &objects);
        low.assert_no_panic();
    });
}

#[test]
fn a_create_waits_the_configured_grace_for_room_and_gets_it_when_room_appears() {
    with_timeout(Duration::from_secs(120), || {
        let dir = TestDir::new();
        // Fallback off: with it, the create would go to a fallback segment after the wait.
        let node = dir.start(&NodeOpts::head().args([
            "--object-store-memory",
            &(32u64 << 20).to_string(),
            "--system-config",
            r#"{"oom_grace_period_s": 8}"#,
            "--fallback-allocation-limit",
            "0",
        ]));
        let mut c = LocalClient::connect_driver(&node.ready.socket).unwrap();
        // 27 MiB held unsealed by this client: not evictable, not spillable.
        let held: Vec<_> = (0..3).map(|_| c.create(ObjectId::random(), 9 << 20, 0, false).unwrap()).collect();
        let t = Instant::now();
        match c.create(ObjectId::random(), 8 << 20, 0, true) {
            Err(ClientError::Store { code: StoreError::ObjectStoreFull, message }) => {
                assert!(message.contains("after 8s"), "the error names the wait: {message}")
            }
            other => panic!("expected ObjectStoreFull, got {other:?}"),
        }
        // A lower bound only: the create cannot give up before the configured 8 s (Ray's
        // and this node's default would be shorter).
        assert!(t.elapsed() >= Duration::from_secs(8), "gave up after {:?}", t.elapsed());
        // A create that is waiting gets the room as soon as it appears.
        let sock = node.ready.socket.clone();
        let waiter = std::thread::spawn(move || {
            let mut d = LocalClient::connect_driver(&sock).unwrap();
            let w = d.create(ObjectId::random(), 8 << 20, 0, true);
            w.map(|w| d.seal(w))
        });
        for w in held {
            c.abort(w).unwrap();
        }
        waiter.join().unwrap().expect("the waiting create succeeds once room appears").unwrap();
        node.assert_no_panic();
    });
}
