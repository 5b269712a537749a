//! The embedded default: one redb database file, `<dir>/gcs.redb`, one redb table per
//! [`Table`] (`&[u8] -> &[u8]`). Driven only by the writer thread after [`EmbeddedStore::open`].
//!
//! Every batch is one write transaction committed with `Durability::Immediate`: its pages
//! and then the header naming the new root are written to the file before the commit
//! returns. In [`SyncMode::Process`] the backend skips the fsyncs ([`NoFsync`]), so the
//! bytes are in the kernel's page cache: a `kill -9` of the process loses nothing
//! committed (the kernel still writes them), a power loss may. redb's
//! `Durability::None` would not do: its commits stay in redb's own memory until a later
//! durable commit, so a killed process loses them.
//!
//! redb takes a lock on the file, so a second GCS on the same directory is refused
//! ([`OpenError::InUse`]). A file redb cannot read is refused as corrupt and left as it is.

use super::meta;
use super::records::{Op, Table, Tables};
use super::writer::{Backend, BackendError};
use super::{OpenError, SyncMode};
use redb::backends::FileBackend;
use redb::{
    BackendError as RedbBackendError, Database, DatabaseError, ReadableDatabase, StorageBackend, TableDefinition,
};
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// The database file inside the storage directory.
pub const FILE_NAME: &str = "gcs.redb";

fn def(t: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(t.name())
}

/// An open redb store.
#[derive(Debug)]
pub struct EmbeddedStore {
    db: Database,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (or creates) `<dir>/gcs.redb` and loads every table. Blocks.
    pub fn open(dir: &Path, sync: SyncMode) -> Result<(Self, Tables), OpenError> {
        let path = dir.join(FILE_NAME);
        let io = |source| OpenError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io { path: dir.to_path_buf(), source })?;
        // redb writes to a file it opens for writing (even one it then reads only), so an
        // existing file is first opened read-only and checked: a refused open leaves it
        // byte for byte as it was. One left by a crash cannot be opened read-only (redb
        // must repair its allocator state first); it is checked after the repair.
        let existing = std::fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false);
        if existing {
            match redb::Builder::new().open_read_only(&path) {
                Ok(ro) => {
                    let tables = load(&ro).map_err(|e| corrupt(&path, e))?;
                    meta::check_and_bump(&tables).map_err(|e| meta::open_error(path.display().to_string(), e))?;
                }
                Err(DatabaseError::RepairAborted) => {}
                Err(e) => return Err(open_error(&path, e)),
            }
        }
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        let builder = redb::Builder::new();
        let opened = match sync {
            SyncMode::Fsync => builder.create_with_backend(FileBackend::new(file)),
            SyncMode::Process => builder.create_with_backend(NoFsync(FileBackend::new(file))),
        };
        let db = opened.map_err(|e| open_error(&path, e))?;
        let tables = load(&db).map_err(|e| corrupt(&path, e))?;
        Ok((Self { db, path }, tables))
    }

    fn write(&mut self, ops: &[Op]) -> Result<(), redb::Error> {
        let tx = self.db.begin_write()?;
        {
            let mut open: [Option<redb::Table<'_, &'static [u8], &'static [u8]>>; Table::ALL.len()] =
                Default::default();
            for op in ops {
                match op {
                    Op::Put { table, key, value } => {
                        let t = open_slot(&tx, &mut open, *table)?;
                        t.insert(key.as_slice(), value.as_slice())?;
                    }
                    Op::Delete { table, key } => {
                        let t = open_slot(&tx, &mut open, *table)?;
                        t.remove(key.as_slice())?;
                    }
                    Op::ClearAll => {
                        open.iter_mut().for_each(|slot| *slot = None);
                        for t in Table::ALL {
                            tx.delete_table(def(t))?;
                        }
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn rewrite(&mut self, all: &Tables) -> Result<(), redb::Error> {
        let tx = self.db.begin_write()?;
        for t in Table::ALL {
            tx.delete_table(def(t))?;
            let mut table = tx.open_table(def(t))?;
            for (k, v) in all.table(t) {
                table.insert(k.as_slice(), v.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn open_slot<'a, 't>(
    tx: &'t redb::WriteTransaction,
    open: &'a mut [Option<redb::Table<'t, &'static [u8], &'static [u8]>>; Table::ALL.len()],
    table: Table,
) -> Result<&'a mut redb::Table<'t, &'static [u8], &'static [u8]>, redb::Error> {
    let slot = &mut open[table.index()];
    if slot.is_none() {
        *slot = Some(tx.open_table(def(table))?);
    }
    Ok(slot.as_mut().expect("just opened"))
}

impl Backend for EmbeddedStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), BackendError> {
        self.write(ops).map_err(|e| BackendError::Failed(e.to_string()))
    }

    fn restore(&mut self, all: &Tables) -> Result<(), BackendError> {
        self.rewrite(all).map_err(|e| BackendError::Failed(e.to_string()))
    }
}

fn load(db: &impl ReadableDatabase) -> Result<Tables, redb::Error> {
    use redb::ReadableTable as _;
    let tx = db.begin_read()?;
    let mut tables = Tables::default();
    for t in Table::ALL {
        let table = match tx.open_table(def(t)) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in table.iter()? {
            let (k, v) = entry?;
            tables.insert(t, k.value().to_vec(), v.value().to_vec());
        }
    }
    Ok(tables)
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> OpenError {
    OpenError::Corrupt { location: path.display().to_string(), reason: e.to_string() }
}

fn open_error(path: &Path, e: DatabaseError) -> OpenError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            OpenError::InUse(path.to_path_buf())
        }
        // redb reports a file without its magic number as invalid data.
        DatabaseError::Storage(redb::StorageError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            corrupt(path, e)
        }
        DatabaseError::Storage(redb::StorageError::Io(source)) => OpenError::Io { path: path.to_path_buf(), source },
        DatabaseError::UpgradeRequired(v) => corrupt(path, format!("an older redb file format ({v})")),
        other => corrupt(path, other),
    }
}

/// Removes the database file of `dir`, and `dir` itself when that leaves it empty.
pub fn destroy(dir: &Path) -> Result<(), OpenError> {
    let path = dir.join(FILE_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(OpenError::Io { path, source }),
    }
    // Not empty (something else lives there) or already gone: leave it.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// A file backend whose `sync_data` does nothing ([`SyncMode::Process`]); every other call,
/// the file locks included, goes to redb's own [`FileBackend`].
#[derive(Debug)]
struct NoFsync(FileBackend);

type R<T> = Result<T, RedbBackendError>;

impl StorageBackend for NoFsync {
    fn len(&self) -> R<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> R<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> R<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> R<()> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> R<()> {
        self.0.write(offset, data)
    }
    fn close(&self) -> R<()> {
        self.0.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> R<bool> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> R<bool> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> R<()> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> R<()> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> R<()> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> R<bool> {
        self.0.query_lock_range(start, end)
    }
}
