//! The Redis GCS store against a real `redis-server` (started by each test on a free
//! loopback port, no persistence, killed at the end): round trips, namespaces, refusals,
//! and Redis killed and restarted empty while the writer runs.

mod common;

use common::redis_server::{free_port, RedisServer};
use common::{wait_for, with_timeout};
use raylet::gcs_storage::meta::{FORMAT_VERSION, FORMAT_VERSION_KEY, INCARNATION_KEY};
use raylet::gcs_storage::redis_store::RedisTarget;
use raylet::gcs_storage::{
    destroy, open, BackendConfig, Batch, OpenError, Storage, StorageConfig, Table, WriteError, WriterOptions,
};
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

fn config(url: &str, writer: WriterOptions) -> StorageConfig {
    StorageConfig { backend: BackendConfig::Redis(RedisTarget::parse(url).unwrap()), writer }
}

fn fast() -> WriterOptions {
    WriterOptions {
        retry_interval: Duration::from_millis(20),
        probe_interval: Duration::from_millis(20),
        io_timeout: Duration::from_secs(1),
        ..WriterOptions::default()
    }
}

fn records(n: usize, tag: &str) -> Batch {
    let mut b = Batch::new();
    for i in 0..n {
        b.put(Table::PlacementGroups, format!("{tag}-{i}").into_bytes(), format!("pg {tag} {i}").into_bytes());
    }
    b.put(Table::Counters, b"job_id".to_vec(), 5u64.to_le_bytes().to_vec());
    b
}

/// A hash as Redis holds it right now.
fn hgetall(server: &RedisServer, key: &str) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let client = redis::Client::open(format!("redis://{}", server.addr())).map_err(|e| e.to_string())?;
    let mut c = client.get_connection_with_timeout(Duration::from_secs(1)).map_err(|e| e.to_string())?;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL").arg(key).query(&mut c).map_err(|e| e.to_string())?;
    Ok(pairs.into_iter().collect())
}

fn key(ns: &str, t: Table) -> String {
    RedisTarget::parse(&format!("redis://h:1/{ns}")).unwrap().key(t)
}

#[test]
fn redis_tables_round_trip_and_the_incarnation_grows() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = RedisServer::start(dir.path());
        let cfg = config(&server.url("rt"), fast());
        let (s, snap) = open(&cfg).unwrap();
        assert!(snap.is_fresh());
        s.write(records(100, "a")).wait().unwrap();
        let mut del = Batch::new();
        del.delete(Table::PlacementGroups, b"a-7".to_vec());
        s.write_nowait(del).unwrap();
        s.close().wait().unwrap();
        assert_eq!(hgetall(&server, &key("rt", Table::PlacementGroups)).unwrap().len(), 99);

        let (s, snap) = open(&cfg).unwrap();
        assert_eq!(snap.incarnation, 2);
        assert_eq!(snap.table(Table::PlacementGroups).len(), 99);
        assert_eq!(snap.tables.get(Table::PlacementGroups, b"a-8"), Some(&b"pg a 8"[..]));
        assert_eq!(snap.tables.get(Table::PlacementGroups, b"a-7"), None);
        s.clear().wait().unwrap();
        for t in Table::ALL {
            assert!(hgetall(&server, &key("rt", t)).unwrap().is_empty(), "{t:?} left after clear");
        }
    });
}

#[test]
fn two_namespaces_on_one_redis_do_not_see_each_other() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = RedisServer::start(dir.path());
        let (a, b) = (config(&server.url("cluster-a"), fast()), config(&server.url("cluster-b"), fast()));
        let (sa, _) = open(&a).unwrap();
        let (sb, _) = open(&b).unwrap();
        sa.write(records(10, "a")).wait().unwrap();
        sb.write(records(3, "b")).wait().unwrap();
        sa.close().wait().unwrap();
        sb.close().wait().unwrap();

        let (sa, snap_a) = open(&a).unwrap();
        let keys: Vec<_> = snap_a.table(Table::PlacementGroups).keys().cloned().collect();
        assert_eq!(keys.len(), 10);
        assert!(keys.iter().all(|k| k.starts_with(b"a-")), "{keys:?}");
        sa.close().wait().unwrap();

        destroy(&a).unwrap();
        let (sb, snap_b) = open(&b).unwrap();
        assert_eq!(snap_b.incarnation, 2, "destroying cluster-a touched cluster-b");
        assert_eq!(snap_b.table(Table::PlacementGroups).len(), 3);
        sb.close().wait().unwrap();
        let (_, snap_a) = open(&a).unwrap();
        assert!(snap_a.is_fresh());
    });
}

#[test]
fn redis_unreachable_at_start_is_a_clear_error() {
    let port = free_port();
    let start = Instant::now();
    let err = open(&config(&format!("redis://127.0.0.1:{port}/x"), fast())).unwrap_err();
    assert!(matches!(err, OpenError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("unreachable"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_wrong_type_or_a_newer_format_in_redis_is_refused_and_left_alone() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = RedisServer::start(dir.path());
        let client = redis::Client::open(format!("redis://{}", server.addr())).unwrap();
        let mut c = client.get_connection().unwrap();

        let _: () = redis::cmd("SET").arg(key("junk", Table::Nodes)).arg("not a hash").query(&mut c).unwrap();
        let err = open(&config(&server.url("junk"), fast())).unwrap_err();
        assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
        let v: String = redis::cmd("GET").arg(key("junk", Table::Nodes)).query(&mut c).unwrap();
        assert_eq!(v, "not a hash");

        let meta = key("future", Table::Meta);
        let _: () = redis::cmd("HSET")
            .arg(&meta)
            .arg(FORMAT_VERSION_KEY)
            .arg(&(FORMAT_VERSION + 1).to_le_bytes()[..])
            .arg(INCARNATION_KEY)
            .arg(&9u64.to_le_bytes()[..])
            .query(&mut c)
            .unwrap();
        let before = hgetall(&server, &meta).unwrap();
        let err = open(&config(&server.url("future"), fast())).unwrap_err();
        assert!(matches!(err, OpenError::NewerFormat { found, .. } if found == FORMAT_VERSION + 1), "{err:?}");
        assert_eq!(hgetall(&server, &meta).unwrap(), before);
    });
}

/// Log lines of the whole test process (the writer logs from its own thread).
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct W;
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                captured_logs().lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt().with_ansi(false).with_writer(|| W).try_init();
        Mutex::new(Vec::new())
    })
}

fn log_lines_with(what: &str, location: &str) -> usize {
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
    logs.lines().filter(|l| l.contains(what) && l.contains(location)).count()
}

#[test]
fn redis_killed_and_restarted_empty_gets_the_whole_state_back() {
    captured_logs();
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let mut server = RedisServer::start(dir.path());
        let url = server.url("ft");
        // Retries every 20 ms, but one log line per hour at most.
        let writer = WriterOptions { log_interval: Duration::from_secs(3600), ..fast() };
        let (s, _) = open(&config(&url, writer)).unwrap();
        s.write(records(200, "before")).wait().unwrap();

        server.kill9();
        let err = s.write(records(1, "refused")).wait().unwrap_err();
        assert!(
            matches!(&err, WriteError::Unavailable { location, .. } if location.contains(&server.addr().to_string())),
            "{err:?}"
        );
        s.write_nowait(records(50, "during")).unwrap();
        for i in 0..20 {
            let r = s.write(records(1, &format!("refused{i}"))).wait();
            assert!(matches!(r, Err(WriteError::Unavailable { .. })), "{r:?}");
        }

        server.restart();
        // No write from here on: the writer finds Redis back (and empty) on its own.
        let pgs = wait_for("the whole state back in Redis", Duration::from_secs(30), || {
            let meta = hgetall(&server, &key("ft", Table::Meta))?;
            let pgs = hgetall(&server, &key("ft", Table::PlacementGroups))?;
            Ok((meta.contains_key(FORMAT_VERSION_KEY) && pgs.len() >= 271).then_some(pgs))
        });
        for (tag, n) in [("before", 200), ("during", 50), ("refused", 1)] {
            for i in 0..n {
                let k = format!("{tag}-{i}");
                assert_eq!(pgs.get(k.as_bytes()), Some(&format!("pg {tag} {i}").into_bytes()), "{k} missing");
            }
        }
        assert_eq!(hgetall(&server, &key("ft", Table::Counters)).unwrap().len(), 1);
        s.write(records(1, "after")).wait().unwrap();

        let location = s.location().to_string();
        assert_eq!(log_lines_with(" lost: ", &location), 1, "one line when the store was lost");
        assert_eq!(log_lines_with("still unavailable", &location), 0, "retries logged more than once per interval");
        assert_eq!(log_lines_with(" is back after ", &location), 1);

        s.close().wait().unwrap();
        let (s, snap) = open(&config(&url, fast())).unwrap();
        assert_eq!(snap.incarnation, 2);
        assert_eq!(snap.table(Table::PlacementGroups).len(), 272);
        s.close().wait().unwrap();
    });
}

#[test]
fn redis_restarted_empty_while_the_writer_is_idle_gets_the_state_back() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let mut server = RedisServer::start(dir.path());
        let (s, _) = open(&config(&server.url("idle"), fast())).unwrap();
        s.write(records(30, "x")).wait().unwrap();
        server.restart();
        // Nothing is written: only the writer's probe can find that Redis lost everything.
        wait_for("the state back in the restarted Redis", Duration::from_secs(30), || {
            let pgs = hgetall(&server, &key("idle", Table::PlacementGroups))?;
            let meta = hgetall(&server, &key("idle", Table::Meta))?;
            Ok((pgs.len() == 30 && meta.len() == 2).then_some(()))
        });
        s.close().wait().unwrap();
    });
}

/// Prints durable one-record writes per second through Redis, one client and many at once.
#[test]
fn redis_group_commit_throughput() {
    with_timeout(LIMIT, || {
        let dir = tempfile::tempdir().unwrap();
        let server = RedisServer::start(dir.path());
        let (s, _) = open(&config(&server.url("bench"), fast())).unwrap();
        let per_case = 3840;
        let mut rows = Vec::new();
        for clients in [1usize, 4, 16, 64] {
            let rate = closed_loop(&s, clients, per_case / clients, &format!("c{clients}"));
            rows.push(format!("{clients} clients {rate:.0}/s"));
        }
        assert_eq!(hgetall(&server, &key("bench", Table::PlacementGroups)).unwrap().len(), per_case * 4);
        s.close().wait().unwrap();
        eprintln!("redis durable 100-byte writes: {}", rows.join(", "));
    });
}

fn closed_loop(storage: &Storage, clients: usize, per_client: usize, tag: &str) -> f64 {
    let start = Instant::now();
    std::thread::scope(|sc| {
        for c in 0..clients {
            let storage = storage.clone();
            sc.spawn(move || {
                for i in 0..per_client {
                    let mut b = Batch::new();
                    b.put(Table::PlacementGroups, format!("{tag}-{c}-{i}").into_bytes(), vec![7u8; 100]);
                    storage.write(b).wait().expect("durable write");
                }
            });
        }
    });
    (clients * per_client) as f64 / start.elapsed().as_secs_f64()
}
