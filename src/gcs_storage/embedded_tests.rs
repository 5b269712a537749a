//! The redb store in temp dirs: round trips through close and reopen in both sync modes,
//! clear, restore, and the refusals (garbage file, newer format, second opener), each of
//! which must leave the file byte for byte as it was. The `kill -9` test is
//! `tests/gcs_storage_embedded.rs`.

use super::embedded::{destroy, EmbeddedStore, FILE_NAME};
use super::meta::{check_and_bump, FORMAT_VERSION, FORMAT_VERSION_KEY};
use super::records::{encode_u64, kv_key, Batch, Table, Tables};
use super::writer::Backend;
use super::{open, OpenError, StorageConfig, SyncMode};
use std::path::Path;

fn config(dir: &Path, sync: SyncMode) -> StorageConfig {
    StorageConfig::embedded(dir.join("gcs_storage/6379"), sync)
}

fn sample() -> Batch {
    let mut b = Batch::new();
    b.put(Table::Nodes, vec![1u8; 28], b"node-a".to_vec())
        .put(Table::Nodes, vec![2u8; 28], b"node-b".to_vec())
        .put(Table::Kv, kv_key("cluster", "system_config"), b"{}".to_vec())
        .put(Table::PlacementGroups, vec![7u8; 18], b"pg".to_vec())
        .put(Table::Objects, vec![9u8; 28], b"locations".to_vec())
        .put(Table::Counters, b"job_id".to_vec(), encode_u64(41))
        .put(Table::Meta, b"auth_token".to_vec(), b"secret".to_vec())
        .delete(Table::Nodes, vec![2u8; 28]);
    b
}

#[test]
fn tables_survive_close_and_reopen_in_both_sync_modes() {
    for sync in [SyncMode::Process, SyncMode::Fsync] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), sync);
        let (s, snap) = open(&cfg).unwrap();
        assert!(snap.is_fresh());
        s.write(sample()).wait().unwrap();
        let mut more = Batch::new();
        more.put(Table::Counters, b"job_id".to_vec(), encode_u64(42));
        s.write_nowait(more).unwrap();
        s.close().wait().unwrap();

        let (s2, snap) = open(&cfg).unwrap();
        assert_eq!(snap.incarnation, 2, "{sync:?}");
        assert_eq!(snap.table(Table::Nodes).len(), 1);
        assert_eq!(snap.tables.get(Table::Nodes, &[1u8; 28]), Some(&b"node-a"[..]));
        assert_eq!(snap.tables.get(Table::Counters, b"job_id"), Some(&encode_u64(42)[..]));
        assert_eq!(snap.tables.get(Table::Kv, &kv_key("cluster", "system_config")), Some(&b"{}"[..]));
        assert_eq!(snap.tables.get(Table::Meta, b"auth_token"), Some(&b"secret"[..]));
        s2.close().wait().unwrap();
    }
}

#[test]
fn clear_leaves_an_empty_store_and_the_next_open_is_fresh() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), SyncMode::Process);
    let (s, _) = open(&cfg).unwrap();
    s.write(sample()).wait().unwrap();
    s.clear().wait().unwrap();
    let (s2, snap) = open(&cfg).unwrap();
    assert!(snap.is_fresh());
    assert_eq!(snap.tables.len(), 2, "only the new format version and incarnation");
    s2.close().wait().unwrap();
}

#[test]
fn restore_replaces_everything_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let (mut store, _) = EmbeddedStore::open(&dir, SyncMode::Process).unwrap();
    store.apply(sample().ops()).unwrap();
    let mut want = Tables::default();
    check_and_bump(&want).unwrap().ops.iter().for_each(|op| want.apply(op));
    want.insert(Table::Kv, b"only".to_vec(), b"this".to_vec());
    store.restore(&want).unwrap();
    drop(store);
    let (_, loaded) = EmbeddedStore::open(&dir, SyncMode::Process).unwrap();
    assert_eq!(loaded, want);
}

fn file_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("gcs_storage/6379").join(FILE_NAME)).unwrap()
}

#[test]
fn a_garbage_file_is_refused_as_corrupt_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gcs_storage/6379");
    std::fs::create_dir_all(&dir).unwrap();
    let garbage: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join(FILE_NAME), &garbage).unwrap();
    let err = open(&config(tmp.path(), SyncMode::Process)).unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(FILE_NAME) && msg.contains("corrupt") && msg.contains("untouched"), "{msg}");
    assert_eq!(file_bytes(tmp.path()), garbage, "the garbage file was changed");
}

#[test]
fn a_newer_format_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), SyncMode::Process);
    let (s, _) = open(&cfg).unwrap();
    s.write(sample()).wait().unwrap();
    let mut future = Batch::new();
    future.put(Table::Meta, FORMAT_VERSION_KEY.to_vec(), (FORMAT_VERSION + 1).to_le_bytes().to_vec());
    s.write(future).wait().unwrap();
    s.close().wait().unwrap();
    let before = file_bytes(tmp.path());

    let err = open(&cfg).unwrap_err();
    assert!(
        matches!(err, OpenError::NewerFormat { found, supported, .. } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
    assert_eq!(file_bytes(tmp.path()), before, "a refused open changed the file");
}

#[test]
fn destroy_removes_the_store_and_its_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), SyncMode::Process);
    let (s, _) = open(&cfg).unwrap();
    s.write(sample()).wait().unwrap();
    s.close().wait().unwrap();
    let dir = tmp.path().join("gcs_storage/6379");
    destroy(&dir).unwrap();
    assert!(!dir.exists());
    destroy(&dir).unwrap();
    let (_, snap) = open(&cfg).unwrap();
    assert!(snap.is_fresh());
}

#[test]
fn an_unusable_directory_is_a_clear_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = open(&StorageConfig::embedded(file.join("sub"), SyncMode::Process)).unwrap_err();
    assert!(matches!(err, OpenError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn a_second_opener_of_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), SyncMode::Process);
    let (s, _) = open(&cfg).unwrap();
    let err = open(&cfg).unwrap_err();
    assert!(matches!(err, OpenError::InUse(_)), "{err:?}");
    assert!(err.to_string().contains("in use"), "{err}");
    s.close().wait().unwrap();
    let (s, snap) = open(&cfg).unwrap();
    assert_eq!(snap.incarnation, 2);
    s.close().wait().unwrap();
}
