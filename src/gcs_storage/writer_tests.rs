//! Writer tests against a scripted backend: coalescing, ordering, when durable writes
//! complete, failures, restores and stopping. The real backends have their own tests
//! (`embedded_tests.rs`, `tests/gcs_storage_redis.rs`).

use super::meta::{FORMAT_VERSION_KEY, INCARNATION_KEY};
use super::records::{decode_u64, Batch, Op, Table, Tables};
use super::writer::{start, Backend, BackendError, Durable, Storage, WriteError, WriterOptions};
use super::{OpenError, Snapshot};
use crossbeam_channel::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Script {
    applied: Vec<Vec<Op>>,
    restored: Vec<Tables>,
    fail_apply: bool,
    fail_restore: bool,
    probe_lost: bool,
    threads: Vec<String>,
}

/// A backend whose applies can be held at a gate and made to fail.
#[derive(Debug)]
struct Fake {
    script: Arc<Mutex<Script>>,
    /// Told when an apply starts; the apply then waits for a token on `gate`.
    entered: Option<(Sender<()>, Receiver<()>)>,
}

impl Backend for Fake {
    fn location(&self) -> String {
        "fake".into()
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), BackendError> {
        if let Some((entered, gate)) = &self.entered {
            entered.send(()).unwrap();
            gate.recv().unwrap();
        }
        let mut s = self.script.lock().unwrap();
        s.threads.push(std::thread::current().name().unwrap_or("").to_string());
        if s.fail_apply {
            return Err(BackendError::Unreachable("scripted".into()));
        }
        s.applied.push(ops.to_vec());
        Ok(())
    }

    fn restore(&mut self, all: &Tables) -> Result<(), BackendError> {
        let mut s = self.script.lock().unwrap();
        if s.fail_restore {
            return Err(BackendError::Unreachable("scripted".into()));
        }
        s.fail_apply = false;
        s.probe_lost = false;
        s.restored.push(all.clone());
        Ok(())
    }

    fn probe(&mut self) -> Result<bool, BackendError> {
        Ok(!self.script.lock().unwrap().probe_lost)
    }
}

fn fast() -> WriterOptions {
    WriterOptions {
        retry_interval: Duration::from_millis(5),
        probe_interval: Duration::from_millis(5),
        ..WriterOptions::default()
    }
}

struct Rig {
    storage: Storage,
    snapshot: Snapshot,
    script: Arc<Mutex<Script>>,
    /// With a gate: (apply started, release one apply).
    gate: Option<(Receiver<()>, Sender<()>)>,
}

fn rig(gated: bool, opts: WriterOptions) -> Rig {
    let script = Arc::new(Mutex::new(Script::default()));
    let (entered_tx, entered_rx) = crossbeam_channel::unbounded();
    let (gate_tx, gate_rx) = crossbeam_channel::unbounded();
    let fake = Fake { script: script.clone(), entered: gated.then_some((entered_tx, gate_rx)) };
    // The open's own meta write goes through the gate too: let it pass.
    if gated {
        gate_tx.send(()).unwrap();
    }
    let (storage, snapshot) = start(Box::new(fake), Tables::default(), opts).unwrap();
    if gated {
        entered_rx.recv().unwrap();
    }
    Rig { storage, snapshot, script, gate: gated.then_some((entered_rx, gate_tx)) }
}

fn put(key: &str, value: &str) -> Batch {
    let mut b = Batch::new();
    b.put(Table::Kv, key.as_bytes(), value.as_bytes());
    b
}

fn is_pending(d: &mut Durable) -> bool {
    futures_lite::future::block_on(futures_lite::future::poll_once(d)).is_none()
}

/// Polls `cond` until it holds (10 s at most).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn open_records_format_version_and_incarnation_before_returning() {
    let r = rig(false, fast());
    assert_eq!(r.snapshot.incarnation, 1);
    let s = r.script.lock().unwrap();
    let first = &s.applied[0];
    assert!(first.iter().any(|op| matches!(op, Op::Put { key, .. } if key == FORMAT_VERSION_KEY)));
    assert!(first
        .iter()
        .any(|op| matches!(op, Op::Put { key, value, .. } if key == INCARNATION_KEY && decode_u64(value) == Ok(1))));
}

#[test]
fn open_refuses_a_newer_format_without_writing() {
    let script = Arc::new(Mutex::new(Script::default()));
    let mut tables = Tables::default();
    tables.insert(Table::Meta, FORMAT_VERSION_KEY.to_vec(), 7u32.to_le_bytes().to_vec());
    tables.insert(Table::Meta, INCARNATION_KEY.to_vec(), 3u64.to_le_bytes().to_vec());
    let fake = Fake { script: script.clone(), entered: None };
    let err = start(Box::new(fake), tables, fast()).unwrap_err();
    assert!(matches!(err, OpenError::NewerFormat { found: 7, .. }), "{err}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert!(script.lock().unwrap().applied.is_empty());
}

#[test]
fn writes_queued_while_a_batch_is_stored_are_coalesced_into_the_next_one() {
    let r = rig(true, fast());
    let (entered, release) = r.gate.as_ref().unwrap();
    let first = r.storage.write(put("a", "1"));
    entered.recv().unwrap();
    let rest: Vec<Durable> = ["b", "c", "d"].iter().map(|k| r.storage.write(put(k, "1"))).collect();
    r.storage.write_nowait(put("e", "1")).unwrap();
    release.send(()).unwrap();
    assert_eq!(first.wait(), Ok(()));
    entered.recv().unwrap();
    release.send(()).unwrap();
    for d in rest {
        assert_eq!(d.wait(), Ok(()));
    }
    let s = r.script.lock().unwrap();
    let keys: Vec<Vec<&[u8]>> = s.applied[1..]
        .iter()
        .map(|b| b.iter().map(|op| if let Op::Put { key, .. } = op { key.as_slice() } else { &[][..] }).collect())
        .collect();
    assert_eq!(keys, vec![vec![&b"a"[..]], vec![b"b", b"c", b"d", b"e"]]);
    // The first apply is the open's own, on the opening thread; every write is stored by
    // the writer thread.
    assert!(s.threads[1..].iter().all(|t| t == "gcs-storage"), "{:?}", s.threads);
}

#[test]
fn a_durable_write_completes_only_once_its_batch_is_stored() {
    let r = rig(true, fast());
    let (entered, release) = r.gate.as_ref().unwrap();
    let mut d = r.storage.write(put("k", "v"));
    entered.recv().unwrap();
    assert!(is_pending(&mut d), "completed before the backend stored it");
    release.send(()).unwrap();
    assert_eq!(d.wait(), Ok(()));
    assert_eq!(r.script.lock().unwrap().applied.len(), 2);
}

#[test]
fn writes_are_stored_in_submission_order() {
    let r = rig(false, fast());
    let mut pending = Vec::new();
    for i in 0..2000 {
        let b = put(&format!("k{}", i % 7), &i.to_string());
        if i % 3 == 0 {
            pending.push(r.storage.write(b));
        } else {
            r.storage.write_nowait(b).unwrap();
        }
    }
    r.storage.write(Batch::new()).wait().unwrap();
    pending.into_iter().for_each(|d| d.wait().unwrap());
    let s = r.script.lock().unwrap();
    let values: Vec<usize> = s.applied[1..]
        .iter()
        .flatten()
        .map(|op| match op {
            Op::Put { value, .. } => std::str::from_utf8(value).unwrap().parse().unwrap(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(values, (0..2000).collect::<Vec<_>>());
}

#[test]
fn a_lost_store_fails_durable_writes_then_gets_the_whole_state_back() {
    let r = rig(false, fast());
    r.storage.write(put("before", "1")).wait().unwrap();
    {
        let mut s = r.script.lock().unwrap();
        s.fail_apply = true;
        s.fail_restore = true;
    }
    let e = r.storage.write(put("during", "1")).wait().unwrap_err();
    assert!(matches!(&e, WriteError::Unavailable { location, .. } if location == "fake"), "{e:?}");
    assert!(e.to_string().contains("unavailable"), "{e}");
    r.storage.write_nowait(put("during-nowait", "1")).unwrap();
    assert!(matches!(r.storage.write(put("during2", "1")).wait(), Err(WriteError::Unavailable { .. })));
    assert!(r.script.lock().unwrap().restored.is_empty());

    r.script.lock().unwrap().fail_restore = false;
    // No write needed: the idle writer retries on its own.
    eventually("the state written back", || !r.script.lock().unwrap().restored.is_empty());
    let back = r.script.lock().unwrap().restored[0].clone();
    for k in ["before", "during", "during-nowait", "during2"] {
        assert_eq!(back.get(Table::Kv, k.as_bytes()), Some(&b"1"[..]), "{k} missing from the restore");
    }
    assert_eq!(back.get(Table::Meta, INCARNATION_KEY), Some(&1u64.to_le_bytes()[..]));
    assert_eq!(r.storage.write(put("after", "1")).wait(), Ok(()));
}

#[test]
fn a_failed_batch_is_acknowledged_when_the_immediate_restore_stores_it() {
    let r = rig(false, fast());
    r.script.lock().unwrap().fail_apply = true;
    assert_eq!(r.storage.write(put("k", "v")).wait(), Ok(()));
    let s = r.script.lock().unwrap();
    assert_eq!(s.restored.len(), 1);
    assert_eq!(s.restored[0].get(Table::Kv, b"k"), Some(&b"v"[..]));
}

#[test]
fn a_store_that_lost_our_data_is_rewritten_while_idle() {
    let r = rig(false, fast());
    r.storage.write(put("k", "v")).wait().unwrap();
    r.script.lock().unwrap().probe_lost = true;
    eventually("a restore after the probe", || !r.script.lock().unwrap().restored.is_empty());
    assert_eq!(r.script.lock().unwrap().restored[0].get(Table::Kv, b"k"), Some(&b"v"[..]));
}

#[test]
fn clear_stores_what_was_queued_then_empties_and_stops() {
    let r = rig(false, fast());
    r.storage.write_nowait(put("k", "v")).unwrap();
    assert_eq!(r.storage.clear().wait(), Ok(()));
    assert_eq!(r.storage.write(put("late", "1")).wait(), Err(WriteError::Stopped));
    assert_eq!(r.storage.write_nowait(put("late", "1")), Err(WriteError::Stopped));
    let s = r.script.lock().unwrap();
    let last = s.applied.last().unwrap();
    assert_eq!(last.last(), Some(&Op::ClearAll));
    assert!(matches!(&last[0], Op::Put { key, .. } if key == b"k"));
}

#[test]
fn a_full_queue_refuses_instead_of_blocking() {
    let r = rig(true, WriterOptions { queue_capacity: 1, ..fast() });
    let (entered, release) = r.gate.as_ref().unwrap();
    let held = r.storage.write(put("a", "1"));
    entered.recv().unwrap();
    let queued = r.storage.write(put("b", "1"));
    assert_eq!(r.storage.write(put("c", "1")).wait(), Err(WriteError::Full(1)));
    assert_eq!(r.storage.write_nowait(put("c", "1")), Err(WriteError::Full(1)));
    release.send(()).unwrap();
    release.send(()).unwrap();
    assert_eq!((held.wait(), queued.wait()), (Ok(()), Ok(())));
}

#[test]
fn the_memory_backend_completes_every_write_at_once() {
    let (storage, snapshot) = super::open(&super::StorageConfig::memory()).unwrap();
    assert!(snapshot.is_fresh() && snapshot.tables.is_empty());
    let mut d = storage.write(put("k", "v"));
    assert!(!is_pending(&mut d));
    assert_eq!(storage.write_nowait(put("k", "v")), Ok(()));
}

#[test]
fn a_glommio_task_awaiting_a_durable_write_is_woken_by_the_writer_thread() {
    let r = rig(true, fast());
    let (entered, release) = (r.gate.as_ref().unwrap().0.clone(), r.gate.as_ref().unwrap().1.clone());
    let storage = r.storage.clone();
    let ex = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let mut d = storage.write(put("k", "v"));
            // Still held at the gate: the task parks, and only the writer thread can wake it.
            assert!(futures_lite::future::poll_once(&mut d).await.is_none());
            std::thread::spawn(move || {
                entered.recv().unwrap();
                release.send(()).unwrap();
            });
            d.await
        })
        .expect("glommio executor (needs `ulimit -l unlimited`)");
    assert_eq!(ex.join().unwrap(), Ok(()));
}

#[test]
fn writes_racing_with_close_are_answered_stopped_never_left_waiting() {
    let r = rig(false, fast());
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    for t in 0..4 {
        let s = r.storage.clone();
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let mut stopped = 0;
            for i in 0..3000 {
                match s.write(put(&format!("{t}-{i}"), "v")).wait() {
                    Ok(()) => {}
                    Err(WriteError::Stopped) => stopped += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            done.send(stopped).unwrap();
        });
    }
    eventually("writes flowing", || r.script.lock().unwrap().applied.len() > 10);
    assert_eq!(r.storage.close().wait(), Ok(()));
    let mut stopped = 0;
    for _ in 0..4 {
        stopped += done_rx.recv_timeout(Duration::from_secs(30)).expect("a write was left waiting after close");
    }
    assert!(stopped > 0, "every write finished before the close: the race was not exercised");
}
