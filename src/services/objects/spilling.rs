//! Spilling pinned primary copies to fused files in the spill directory, and restoring
//! them on a get. File IO runs on glommio's blocking pool (bulk work, off the executor);
//! the executor only updates the table.
//!
//! File layout per record (see `logic::spill`): `[u64 data_size | u64 metadata_size |
//! 28-byte id | data | metadata]`; a URL names one record of one file.

use super::store::ShardStore;
use crate::ids::ObjectId;
use crate::logic::objects::ObjectState;
use crate::logic::spill::{
    file_name, PlannedFile, RecordHeader, SpillFilePlanner, SpillObject, SpillUrl, RECORD_HEADER_LEN,
};
use crate::shard::Shard;
use crate::store::arena::Arena;
use std::cell::RefCell;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

/// This shard's spill files.
#[derive(Debug)]
pub struct Spiller {
    dir: PathBuf,
    planner: RefCell<SpillFilePlanner>,
}

impl Spiller {
    /// Spill files of this shard go to the node's spill directory.
    pub fn new(shard: &Shard) -> Self {
        Self { dir: shard.cfg.spill_dir(), planner: RefCell::new(SpillFilePlanner::new(shard.id)) }
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
}

/// What one file write needs, sendable to a blocking thread.
struct FileJob {
    path: PathBuf,
    records: Vec<(RecordHeader, u64)>,
}

fn write_file(arena: &Arena, job: &FileJob) -> std::io::Result<()> {
    if let Some(dir) = job.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&job.path)?);
    for (header, offset) in &job.records {
        f.write_all(&header.encode())?;
        let len = header.data_size + header.metadata_size;
        let bytes = arena.bytes(*offset, len).map_err(std::io::Error::other)?;
        f.write_all(bytes)?;
    }
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_data()
}

/// Spills up to `max_bytes` of this shard's pinned, unreferenced primaries; returns the
/// bytes spilled (now evictable).
pub async fn spill(shard: &Rc<Shard>, store: &ShardStore, max_bytes: u64) -> u64 {
    let ids = store.table.borrow().spill_candidates(max_bytes, 2000);
    spill_ids(shard, store, &ids).await.iter().map(|(_, url)| url.len - RECORD_HEADER_LEN).sum()
}

/// Spills one object now (RequestObjectSpillage); returns its URL.
pub async fn spill_one(shard: &Rc<Shard>, store: &ShardStore, id: ObjectId) -> Result<SpillUrl, String> {
    if let Some(url) = store.table.borrow().spilled_url(&id) {
        return Ok(url);
    }
    if !store.table.borrow().entry(&id).is_some_and(|e| e.is_spill_candidate()) {
        return Err(format!("object {id} is not a pinned, unreferenced primary copy in memory on this node"));
    }
    match spill_ids(shard, store, &[id]).await.first() {
        Some((_, url)) => Ok(*url),
        None => Err(format!("writing object {id} to {} failed", store.spill.dir.display())),
    }
}

/// Spills `ids` into fused files; returns the (id, url) of every object spilled.
async fn spill_ids(shard: &Rc<Shard>, store: &ShardStore, ids: &[ObjectId]) -> Vec<(ObjectId, SpillUrl)> {
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
            return Vec::new();
        }
    };
    let mut done = Vec::new();
    for file in files {
        let job = FileJob {
            path: store.spill.dir.join(file_name(file.file)),
            records: file.records.iter().map(|r| (r.header, offsets[&r.header.id])).collect(),
        };
        let arena = store.arena.clone();
        let result = glommio::executor().spawn_blocking(move || write_file(&arena, &job)).await;
        if let Err(e) = &result {
            tracing::error!("spilling to {}: {e}", store.spill.dir.display());
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
    store.counters.borrow_mut().spill_time += started.elapsed();
    store.drain(shard);
    done
}

fn read_record(path: &PathBuf, url: &SpillUrl, id: &ObjectId, dst: &mut [u8]) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(url.offset)).map_err(|e| e.to_string())?;
    let mut h = [0u8; RECORD_HEADER_LEN as usize];
    f.read_exact(&mut h).map_err(|e| e.to_string())?;
    let header = RecordHeader::decode(&h).map_err(|e| e.to_string())?;
    header.check(url, id).map_err(|e| e.to_string())?;
    if header.data_size + header.metadata_size != dst.len() as u64 {
        return Err(format!("record holds {} bytes, expected {}", header.data_size + header.metadata_size, dst.len()));
    }
    f.read_exact(dst).map_err(|e| e.to_string())
}

/// Brings a spilled object back into memory.
pub async fn restore(shard: &Rc<Shard>, store: &ShardStore, id: ObjectId) -> Result<(), String> {
    let (size, state) = match store.table.borrow().entry(&id) {
        Some(e) => (e.size(), e.state),
        None => return Err(format!("object {id} is unknown")),
    };
    if state != ObjectState::SpilledOut {
        return Ok(());
    }
    let started = Instant::now();
    let placement = store.memory.allocate(shard, store, size).await.map_err(|(_, m)| m)?;
    let url = match store.table.borrow_mut().restore_started(&id, placement) {
        Ok(u) => u,
        Err(e) => {
            store.memory.free(shard, placement.offset, placement.alloc_len);
            return Err(e.to_string());
        }
    };
    let path = store.spill.path(&url);
    let arena = store.arena.clone();
    let offset = placement.offset;
    let result = glommio::executor()
        .spawn_blocking(move || {
            let dst = arena.bytes_mut(offset, size).map_err(|e| e.to_string())?;
            read_record(&path, &url, &id, dst)
        })
        .await;
    let out = match result {
        Ok(()) => {
            store.table.borrow_mut().restore_done(&id).map_err(|e| e.to_string())?;
            let mut c = store.counters.borrow_mut();
            c.restored_objects += 1;
            c.restored_bytes += size;
            c.restore_time += started.elapsed();
            Ok(())
        }
        Err(e) => {
            let _ = store.table.borrow_mut().restore_failed(&id);
            Err(e)
        }
    };
    store.drain(shard);
    out
}
