//! The storage the GCS writes its tables through, so that a restarted head resumes
//! (issue 12, RAY-NOTES.md §14).
//!
//! # Model
//!
//! Every GCS table is a map of opaque `key bytes -> value bytes` records ([`Table`]); the
//! GCS encodes its records with prost and keeps the live state in its own memory, as
//! today. Storage is written, never read, while the GCS runs: [`open`] loads every table
//! once at start ([`Snapshot`]), and from then on the GCS sends [`Batch`]es of puts and
//! deletes through the [`Storage`] handle.
//!
//! # Threads
//!
//! [`open`] blocks (it opens a file or connects to Redis and loads everything): call it
//! before the executors start or from `spawn_blocking`. It then starts one writer thread
//! (`gcs-storage`), fed through a bounded crossbeam channel. The writer takes whatever is
//! queued, applies it as one batch (one redb transaction, one Redis `MULTI`/`EXEC`), then
//! completes every write of that batch: group commit. [`Storage::write`] never blocks; it
//! returns a [`Durable`] future (a cross-thread oneshot, so a glommio executor can await
//! it) and [`Storage::write_nowait`] is fire-and-forget. Writes are applied in the order
//! they were submitted from one thread. Leases, tasks and object transfers never come here.
//!
//! # What durable means
//!
//! A [`Durable`] resolves `Ok` once its batch is stored so that it survives `kill -9` of
//! this process: committed to the redb file (see [`SyncMode`] for fsync), or acknowledged
//! by Redis (`EXEC` replied). Otherwise it resolves to a [`WriteError`] and the caller
//! must not acknowledge what it wrote. The memory backend completes every write at once.
//!
//! # Faults
//!
//! The writer keeps a copy of every table (for Redis and redb alike). When a batch fails,
//! or Redis answers without our data (it restarted empty), the writer reconnects and writes
//! the whole state back in one transaction, retrying every
//! [`WriterOptions::retry_interval`]; meanwhile durable writes fail at once with
//! [`WriteError::Unavailable`], and the failures are logged once per
//! [`WriterOptions::log_interval`], not per write.
//!
//! # Files
//! - [`records`]: tables, batches, snapshots, key and value encodings.
//! - [`writer`]: the writer thread, the [`Storage`] handle, [`Durable`].
//! - [`embedded`]: the redb backend (the default).
//! - [`redis_store`]: the Redis backend.
//! - [`meta`]: the format version and the incarnation counter, checked at open.

pub mod embedded;
#[cfg(test)]
mod embedded_tests;
pub mod meta;
pub mod records;
pub mod redis_store;
pub mod writer;
#[cfg(test)]
mod writer_tests;

pub use records::{Batch, Op, Snapshot, Table, Tables};
pub use writer::{Durable, Storage, WriteError, WriterOptions};

use std::path::PathBuf;

/// Whether the embedded store fsyncs each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Each batch is written to the file (the kernel's page cache) before it completes, with
    /// no fsync: it survives `kill -9` of the process, not a power loss or kernel crash,
    /// after which the newest batches may be gone or the file refused as corrupt. The
    /// default: the GCS's "durable" is survival of a process crash, and a cluster does not
    /// outlive its machines' power anyway.
    Process,
    /// Each batch is also fsynced before it completes (redb `Durability::Immediate`).
    Fsync,
}

/// Where the tables live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// Nowhere: writes complete at once and nothing survives the process (benchmarks).
    Memory,
    /// A redb database in this directory (created if missing).
    Embedded {
        /// The directory (the GCS uses `<temp-dir>/gcs_storage/<port>`).
        dir: PathBuf,
        /// fsync per batch or not.
        sync: SyncMode,
    },
    /// A Redis server.
    Redis(redis_store::RedisTarget),
}

/// What [`open`] opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// The backend.
    pub backend: BackendConfig,
    /// The writer's tunables.
    pub writer: WriterOptions,
}

/// A `--gcs-storage` value that names no backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A `redis://` URL that does not parse.
    #[error("--gcs-storage {value}: {reason}")]
    BadRedisUrl {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither `memory`, `redis://...` nor a directory.
    #[error("--gcs-storage {0}: expected `memory`, `redis://HOST:PORT[/NAMESPACE]` or an absolute directory")]
    Unknown(String),
}

impl StorageConfig {
    /// The config a `--gcs-storage` flag names: absent means the embedded store in
    /// `default_dir`; `memory`; `redis://HOST:PORT[/NAMESPACE]`; or an absolute directory
    /// for the embedded store.
    pub fn from_flag(flag: Option<&str>, default_dir: PathBuf) -> Result<Self, ConfigError> {
        let backend = match flag {
            None => BackendConfig::Embedded { dir: default_dir, sync: SyncMode::Process },
            Some("memory") => BackendConfig::Memory,
            Some(v) if v.starts_with("redis://") => BackendConfig::Redis(
                redis_store::RedisTarget::parse(v)
                    .map_err(|reason| ConfigError::BadRedisUrl { value: v.to_string(), reason })?,
            ),
            Some(v) if v.starts_with('/') => BackendConfig::Embedded { dir: PathBuf::from(v), sync: SyncMode::Process },
            Some(v) => return Err(ConfigError::Unknown(v.to_string())),
        };
        Ok(Self { backend, writer: WriterOptions::default() })
    }

    /// An embedded store in `dir` with default options.
    pub fn embedded(dir: impl Into<PathBuf>, sync: SyncMode) -> Self {
        Self { backend: BackendConfig::Embedded { dir: dir.into(), sync }, writer: WriterOptions::default() }
    }

    /// The memory backend.
    pub fn memory() -> Self {
        Self { backend: BackendConfig::Memory, writer: WriterOptions::default() }
    }
}

/// Why [`open`] refused. Nothing is changed in the store when it does.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The embedded store's directory or file could not be created or read.
    #[error("GCS storage {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The stored data is not a GCS store this version can read (garbage, a broken file,
    /// records that do not decode); it is left as it is.
    #[error(
        "GCS storage {location} is corrupt ({reason}); it was left untouched: move it away to start an empty cluster"
    )]
    Corrupt {
        /// The file or Redis namespace.
        location: String,
        /// What was found.
        reason: String,
    },
    /// The store was written by a newer raylet.
    #[error("GCS storage {location} has format version {found}, newer than the {supported} this raylet reads; it was left untouched")]
    NewerFormat {
        /// The file or Redis namespace.
        location: String,
        /// The version stored.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// Another process (another GCS) has the embedded store open.
    #[error("GCS storage {0} is in use by another process (is another head running with this --temp-dir and port?)")]
    InUse(PathBuf),
    /// Redis could not be reached or refused a command.
    #[error("GCS storage {location}: Redis unreachable: {reason}")]
    Unreachable {
        /// The Redis address and namespace.
        location: String,
        /// The client's error.
        reason: String,
    },
    /// The store opened but could not be written (the first write records the new
    /// incarnation).
    #[error("GCS storage {location}: {reason}")]
    Backend {
        /// The file or Redis namespace.
        location: String,
        /// What failed.
        reason: String,
    },
}

/// Opens the store: loads every table, checks the format version, bumps the incarnation
/// (stored before this returns), and starts the writer. Blocks; see the module docs.
pub fn open(config: &StorageConfig) -> Result<(Storage, Snapshot), OpenError> {
    match &config.backend {
        BackendConfig::Memory => Ok((Storage::memory(), Snapshot { tables: Tables::default(), incarnation: 1 })),
        BackendConfig::Embedded { dir, sync } => {
            let (store, tables) = embedded::EmbeddedStore::open(dir, *sync)?;
            writer::start(Box::new(store), tables, config.writer.clone())
        }
        BackendConfig::Redis(target) => {
            let (store, tables) = redis_store::RedisStore::open(target, config.writer.io_timeout)?;
            writer::start(Box::new(store), tables, config.writer.clone())
        }
    }
}

/// Removes every stored table without opening a writer, for when no GCS runs (a
/// running GCS clears through [`Storage::clear`]). The embedded store's directory is
/// deleted; a Redis namespace's keys are deleted.
pub fn destroy(config: &StorageConfig) -> Result<(), OpenError> {
    match &config.backend {
        BackendConfig::Memory => Ok(()),
        BackendConfig::Embedded { dir, .. } => embedded::destroy(dir),
        BackendConfig::Redis(target) => redis_store::destroy(target, config.writer.io_timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gcs_storage_flag_names_a_backend_or_is_refused() {
        let default = PathBuf::from("/tmp/raylet/gcs_storage/6379");
        let cfg = |f| StorageConfig::from_flag(f, default.clone()).map(|c| c.backend);
        assert_eq!(cfg(None), Ok(BackendConfig::Embedded { dir: default.clone(), sync: SyncMode::Process }));
        assert_eq!(cfg(Some("memory")), Ok(BackendConfig::Memory));
        assert_eq!(
            cfg(Some("/var/lib/gcs")),
            Ok(BackendConfig::Embedded { dir: "/var/lib/gcs".into(), sync: SyncMode::Process })
        );
        let Ok(BackendConfig::Redis(t)) = cfg(Some("redis://127.0.0.1:7000/c1")) else { panic!("not redis") };
        assert_eq!((t.addr.as_str(), t.namespace.as_str()), ("127.0.0.1:7000", "c1"));
        assert!(matches!(cfg(Some("redis://h:1/bad ns")), Err(ConfigError::BadRedisUrl { .. })));
        let e = cfg(Some("rocksdb")).unwrap_err();
        assert!(matches!(e, ConfigError::Unknown(_)) && e.to_string().contains("memory"), "{e}");
    }
}
