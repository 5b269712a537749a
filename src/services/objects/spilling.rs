//! Spilling pinned primary copies to fused files in this node's spill directory, and
//! restoring them on a get. File IO runs on glommio's blocking pool (bulk work, off the
//! executor); the executor only updates the table.
//!
//! Record layout and file names: `logic::spill` (each record carries a CRC32C of the
//! object's bytes). Files are created new (never over an existing file), mode 0600, in the
//! node's own directory that `spill_dir` claimed at start.
//!
//! A restore checks the record header and the checksum before the object becomes readable.
//! A record that is corrupt, truncated or gone makes the object leave the table
//! (`restore_lost`): its memory and record are given back, the object directory hears that
//! the spilled copy is gone, and a get goes on to pull another copy if one exists; a
//! primary copy pulled back that way is pinned again. Any other read error leaves the
//! record in place (`restore_failed`) for a later get to retry.
//!
//! A failed write (a full disk) backs the shard's spilling off, from
//! [`WRITE_BACKOFF_MIN`] doubling to [`WRITE_BACKOFF_MAX`], instead of rewriting up to a
//! disk's worth of bytes on every retry of a waiting create; the failure is what
//! [`Spiller::last_failure`] reports for the create's `ObjectStoreFull`.

use super::store::ShardStore;
use crate::checksum::Crc32c;
use crate::ids::ObjectId;
use crate::logic::objects::{ObjectError, ObjectState};
use crate::logic::spill::{
    file_name, PlannedFile, RecordHeader, SpillError, SpillFilePlanner, SpillObject, SpillUrl, RECORD_HEADER_LEN,
};
use crate::metrics::ErrorKind;
use crate::shard::Shard;
use crate::store::arena::Arena;
use std::cell::RefCell;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Bytes copied, checksummed and written (or read and checksummed) per step.
const IO_PIECE: usize = 1 << 20;
/// First pause of a shard's spilling after a failed write.
pub const WRITE_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause of a shard's spilling after repeated failed writes.
pub const WRITE_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A failed spill write and the pause it set.
#[derive(Debug, Clone)]
struct WriteFailure {
    /// No write is tried before this.
    until: Instant,
    /// The pause, doubled by each further failure.
    backoff: Duration,
    /// What failed.
    error: String,
}

/// This shard's spill files.
#[derive(Debug)]
pub struct Spiller {
    dir: PathBuf,
    planner: RefCell<SpillFilePlanner>,
    failure: RefCell<Option<WriteFailure>>,
}

impl Spiller {
    /// Spill files of this shard go to the node's own directory under the spill directory.
    pub fn new(shard: &Shard) -> Self {
        Self {
            dir: super::spill_dir::node_dir(&shard.cfg.spill_dir(), &shard.node_id),
            planner: RefCell::new(SpillFilePlanner::new(shard.id)),
            failure: RefCell::new(None),
        }
    }

    /// A freed spilled object's record is gone; delete the file once it holds none.
    pub fn release(&self, url: SpillUrl) {
        match self.planner.borrow_mut().release(&url) {
            Ok(Some(file)) => {
                let path = self.dir.join(file_name(file));
                glommio::spawn_local(glommio::executor().spawn_blocking(move || {
                    let _ = std::fs::remove_file(path);
                }))
                .detach();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("spill release: {e}"),
        }
    }

    /// The path of a URL's file.
    pub fn path(&self, url: &SpillUrl) -> PathBuf {
        self.dir.join(file_name(url.file))
    }

    /// The last write failure while spilling is backed off because of it.
    pub fn last_failure(&self) -> Option<String> {
        self.failure.borrow().as_ref().filter(|f| Instant::now() < f.until).map(|f| f.error.clone())
    }

    fn backing_off(&self) -> bool {
        self.failure.borrow().as_ref().is_some_and(|f| Instant::now() < f.until)
    }

    fn write_failed(&self, error: String) {
        let mut f = self.failure.borrow_mut();
        let backoff = f.as_ref().map_or(WRITE_BACKOFF_MIN, |f| (f.backoff * 2).min(WRITE_BACKOFF_MAX));
        *f = Some(WriteFailure { until: Instant::now() + backoff, backoff, error });
    }
}

/// What one file write needs, sendable to a blocking thread.
struct FileJob {
    path: PathBuf,
    /// Planned header and arena offset of each record, in file order.
    records: Vec<(RecordHeader, u64)>,
}

/// Writes one fused file: per record, a header placeholder, then the object's bytes copied
/// piece by piece into a buffer that is checksummed and written, then the real header in
/// place. The checksum covers exactly the bytes written, even if a misbehaving client
/// scribbles on the sealed object meanwhile.
fn write_file(arena: &Arena, job: &FileJob) -> std::io::Result<()> {
    if let Some(dir) = job.path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&job.path)?;
    let mut buf = vec![0u8; IO_PIECE];
    let mut at = 0u64;
    for (planned, offset) in &job.records {
        f.write_all(&[0u8; RECORD_HEADER_LEN as usize])?;
        let len = planned.data_size + planned.metadata_size;
        let bytes = arena.bytes(*offset, len).map_err(std::io::Error::other)?;
        let mut crc = Crc32c::default();
        for piece in bytes.chunks(IO_PIECE) {
            let b = &mut buf[..piece.len()];
            b.copy_from_slice(piece);
            crc.update(b);
            f.write_all(b)?;
        }
        let header = RecordHeader { payload_crc: crc.value(), ..*planned };
        f.write_all_at(&header.encode(), at)?;
        at += RECORD_HEADER_LEN + len;
    }
    f.sync_data()
}

/// Spills up to `max_bytes` of this shard's pinned, unreferenced primaries; returns the
/// bytes spilled (now evictable) and, when spilling is backed off after a failed write,
/// that failure.
pub async fn spill(shard: &Rc<Shard>, store: &ShardStore, max_bytes: u64) -> (u64, Option<String>) {
    if store.spill.backing_off() {
        return (0, store.spill.last_failure());
    }
    let ids = store.table.borrow().spill_candidates(max_bytes, 2000);
    let (done, failure) = spill_ids(shard, store, &ids).await;
    (done.iter().map(|(_, url)| url.len - RECORD_HEADER_LEN).sum(), failure)
}

/// Spills one object now (RequestObjectSpillage); returns its URL.
pub async fn spill_one(shard: &Rc<Shard>, store: &ShardStore, id: ObjectId) -> Result<SpillUrl, String> {
    if let Some(url) = store.table.borrow().spilled_url(&id) {
        return Ok(url);
    }
    if !store.table.borrow().entry(&id).is_some_and(|e| e.is_spill_candidate()) {
        return Err(format!("object {id} is not a pinned, unreferenced primary copy in memory on this node"));
    }
    match spill_ids(shard, store, &[id]).await {
        (done, _) if !done.is_empty() => Ok(done[0].1),
        (_, Some(why)) => Err(format!("writing object {id}: {why}")),
        (_, None) => Err(format!("object {id} could not be spilled")),
    }
}

/// Spills `ids` into fused files; returns the (id, url) of every object spilled, and the
/// error of a failed write if there was one.
async fn spill_ids(
    shard: &Rc<Shard>,
    store: &ShardStore,
    ids: &[ObjectId],
) -> (Vec<(ObjectId, SpillUrl)>, Option<String>) {
    let started = Instant::now();
    let mut objects = Vec::new();
    let mut offsets = std::collections::HashMap::new();
    {
        let mut t = store.table.borrow_mut();
        for id in ids {
            let Some((p, ds, ms)) = t.entry(id).and_then(|e| Some((e.placement?, e.data_size, e.metadata_size))) else {
                continue;
            };
            if t.mark_spilling(id).is_ok() {
                objects.push(SpillObject { id: *id, data_size: ds, metadata_size: ms });
                offsets.insert(*id, p.offset);
            }
        }
    }
    let planned = store.spill.planner.borrow_mut().plan(&objects);
    let files: Vec<PlannedFile> = match planned {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("spill planning failed: {e}");
            for o in &objects {
                let _ = store.table.borrow_mut().spill_failed(&o.id);
            }
            store.drain(shard);
            return (Vec::new(), Some(e.to_string()));
        }
    };
    let mut done = Vec::new();
    let mut failure = None;
    for file in files {
        let job = FileJob {
            path: store.spill.dir.join(file_name(file.file)),
            records: file.records.iter().map(|r| (r.header, offsets[&r.header.id])).collect(),
        };
        let result = if failure.is_some() {
            // One failed write is enough: do not write the rest of this batch into it too.
            Err(None)
        } else {
            let arena = store.arena.clone();
            let path = job.path.clone();
            let r = glommio::executor().spawn_blocking(move || write_file(&arena, &job)).await;
            r.map_err(|e| {
                // Leave no partial file behind (the records' release below would, but only
                // once every record of the file is released).
                let _ = std::fs::remove_file(&path);
                Some(format!("{}: {e}", path.display()))
            })
        };
        if let Err(Some(why)) = &result {
            tracing::error!("spilling failed: {why}; spilling pauses");
            shard.metrics.shard(shard.id.index()).error(ErrorKind::SpillWrite);
            store.spill.write_failed(why.clone());
            failure = Some(why.clone());
        }
        for r in &file.records {
            let id = r.header.id;
            if result.is_ok() && store.table.borrow_mut().spill_done(&id, r.url).is_ok() {
                let mut c = store.counters.borrow_mut();
                c.spilled_objects += 1;
                c.spilled_bytes += r.header.data_size + r.header.metadata_size;
                drop(c);
                super::directory::object_spilled(shard, id, r.header.data_size + r.header.metadata_size, r.url);
                done.push((id, r.url));
            } else {
                let _ = store.table.borrow_mut().spill_failed(&id);
                store.spill.release(r.url);
            }
        }
    }
    if failure.is_none() && !done.is_empty() {
        store.spill.failure.borrow_mut().take();
    }
    store.counters.borrow_mut().spill_time += started.elapsed();
    store.drain(shard);
    (done, failure)
}

/// Why a spilled copy cannot be read back, ever: the object leaves the table.
#[derive(Debug, thiserror::Error)]
pub enum CopyLost {
    /// The record's header or checksum is wrong.
    #[error(transparent)]
    Record(#[from] SpillError),
    /// The file ends inside the record.
    #[error("the file ends inside the record")]
    Truncated,
    /// The file is not there.
    #[error("the file is gone")]
    Missing,
}

/// A restore did not bring the object back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The object is not in this shard's table.
    #[error("object {0} is unknown")]
    Unknown(ObjectId),
    /// No memory could be found for it.
    #[error("no memory to restore into: {0}")]
    NoMemory(String),
    /// The spilled copy is corrupt or gone; the object was dropped here.
    #[error("the spilled copy at {path} is lost ({why}); dropped it")]
    Lost {
        /// The spill file.
        path: PathBuf,
        /// What is wrong with it.
        why: CopyLost,
    },
    /// Reading failed; the spilled copy stays for a later attempt.
    #[error("reading {path}: {source}")]
    Io {
        /// The spill file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The table refused a transition.
    #[error(transparent)]
    Table(#[from] ObjectError),
}

/// How reading one record failed.
enum ReadError {
    Lost(CopyLost),
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Self::Lost(CopyLost::Truncated),
            std::io::ErrorKind::NotFound => Self::Lost(CopyLost::Missing),
            _ => Self::Io(e),
        }
    }
}

impl From<SpillError> for ReadError {
    fn from(e: SpillError) -> Self {
        Self::Lost(CopyLost::Record(e))
    }
}

/// Reads record `url` of object `id` into `dst` and checks it: header, sizes, checksum.
fn read_record(path: &Path, url: &SpillUrl, id: &ObjectId, dst: &mut [u8]) -> Result<(), ReadError> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(url.offset))?;
    let mut h = [0u8; RECORD_HEADER_LEN as usize];
    f.read_exact(&mut h)?;
    let header = RecordHeader::decode(&h)?;
    header.check(url, id)?;
    if header.data_size + header.metadata_size != dst.len() as u64 {
        return Err(SpillError::HeaderMismatch("object size").into());
    }
    let mut crc = Crc32c::default();
    for piece in dst.chunks_mut(IO_PIECE) {
        f.read_exact(piece)?;
        crc.update(piece);
    }
    header.check_payload(crc.value())?;
    Ok(())
}

/// Brings a spilled object back into memory. See the module docs for what a failure leaves.
pub async fn restore(shard: &Rc<Shard>, store: &ShardStore, id: ObjectId) -> Result<(), RestoreError> {
    let (size, state) = match store.table.borrow().entry(&id) {
        Some(e) => (e.size(), e.state),
        None => return Err(RestoreError::Unknown(id)),
    };
    if state != ObjectState::SpilledOut {
        return Ok(());
    }
    let started = Instant::now();
    let placement = store.memory.allocate(shard, store, size).await.map_err(|(_, m)| RestoreError::NoMemory(m))?;
    let url = match store.table.borrow_mut().restore_started(&id, placement) {
        Ok(u) => u,
        Err(e) => {
            store.memory.free(shard, placement.offset, placement.alloc_len);
            return Err(e.into());
        }
    };
    let path = store.spill.path(&url);
    let arena = store.arena.clone();
    let offset = placement.offset;
    let read_path = path.clone();
    let result = glommio::executor()
        .spawn_blocking(move || {
            let dst = arena.bytes_mut(offset, size).map_err(|e| ReadError::Io(std::io::Error::other(e)))?;
            read_record(&read_path, &url, &id, dst)
        })
        .await;
    let out = match result {
        Ok(()) => store.table.borrow_mut().restore_done(&id).map_err(RestoreError::from).map(|()| {
            let mut c = store.counters.borrow_mut();
            c.restored_objects += 1;
            c.restored_bytes += size;
            c.restore_time += started.elapsed();
        }),
        Err(ReadError::Lost(why)) => {
            shard.metrics.shard(shard.id.index()).error(ErrorKind::SpillCorrupt);
            let wanted = store.table.borrow_mut().restore_lost(&id) == Ok(true);
            store.drain(shard);
            store.spilled_copy_lost(shard, id, wanted);
            let e = RestoreError::Lost { path, why };
            tracing::error!(%id, "restore refused: {e}; another copy will be pulled if one exists");
            Err(e)
        }
        Err(ReadError::Io(source)) => {
            let _ = store.table.borrow_mut().restore_failed(&id);
            Err(RestoreError::Io { path, source })
        }
    };
    store.drain(shard);
    out
}
