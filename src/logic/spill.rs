//! Fused spill files: URL format, record layout, file planning and per-file reference counts.
//!
//! **Owns** the bookkeeping of the spill files of one shard: which file each spilled object
//! lives in, at which offset, and how many live objects each file still holds.
//!
//! **Called by** the owner shard's objects service: when the object table says objects should
//! be spilled, the service asks [`SpillFilePlanner::plan`] how to pack them into files, writes
//! the files (IO layer), reports per-object success to the object table with the planned
//! [`SpillUrl`], and calls [`SpillFilePlanner::release`] for every URL that is no longer
//! needed (object deleted: `ObjectAction::DeleteSpilled`, or the write of that record
//! failed). When `release` returns `Some(file)` the file can be unlinked.
//!
//! **Must not** do IO: no paths are opened here; [`file_name`] only names a file.
//!
//! # File naming
//!
//! Every node spills into a directory of its own under the spill directory,
//! [`node_dir_name`] (`raylet-spill-<node id hex>`), beside the lock file it holds for its
//! whole life, [`lock_file_name`] (`raylet-spill-<node id hex>.lock`): nodes sharing one
//! spill directory never touch each other's files, and a node's files can be told stale
//! (nobody holds its lock) from live. Inside it, files are `spill-<n>`, `n` decimal. Each
//! shard has its own planner, so the shard index occupies the top 16 bits of `n`
//! (`n = shard << 48 | counter`): names never collide between shards.
//!
//! # Record layout (version 1, little-endian)
//!
//! A file is a concatenation of records, one per object, with no file header:
//!
//! ```text
//! offset 0   [u8; 4]  magic "RSPL"
//! offset 4   u16      version (1)
//! offset 6   u16      flags (0; a reader rejects any other value)
//! offset 8   u64      data_size
//! offset 16  u64      metadata_size
//! offset 24  [u8; 28] object id
//! offset 52  u32      CRC32C of the payload (data then metadata)
//! offset 56  u32      reserved (0)
//! offset 60  u32      CRC32C of bytes 0..60 of this header
//! offset 64  data      (data_size bytes)
//!            metadata  (metadata_size bytes)
//! ```
//!
//! [`RecordHeader::decode`] is a pure function of the header bytes: it refuses a wrong
//! magic, an unknown version, non-zero flags or reserved bytes, a header checksum that does
//! not match, and sizes that overflow, and never panics. The payload checksum is checked by
//! the reader once it has read the payload ([`RecordHeader::check_payload`]), before the
//! object becomes readable.
//!
//! A [`SpillUrl`] points at the *record* (its `offset` is the record start, its `len` is
//! `RECORD_HEADER_LEN + data_size + metadata_size`), as Ray's `url?offset=..&size=..` does.
//! A reader checks the header against the URL and the expected id with
//! [`RecordHeader::check`].
//!
//! # File life cycle
//!
//! ```text
//!  plan() ──> planned (refs = records) ──release() per record──> refs = 0 ──> Some(file): unlink
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::checksum::crc32c;
use crate::ids::{NodeId, ObjectId, ShardId};

/// Bytes of the record header (see the module docs).
pub const RECORD_HEADER_LEN: u64 = 64;
/// The first bytes of every record.
pub const RECORD_MAGIC: [u8; 4] = *b"RSPL";
/// The record layout this code writes and reads.
pub const RECORD_VERSION: u16 = 1;
/// Prefix of a node's spill directory and lock file names.
const NODE_PREFIX: &str = "raylet-spill-";
/// Suffix of a node's lock file name.
const LOCK_SUFFIX: &str = ".lock";
/// Default bound on one fused file's size (256 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;
/// Default bound on the number of objects in one file (Ray's `max_fused_object_count`).
pub const DEFAULT_MAX_OBJECTS_PER_FILE: usize = 2000;

/// A spill URL, a record header or a release was invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpillError {
    /// The text is not `spill-<n>?offset=<o>&size=<s>`.
    #[error("malformed spill url {0:?}")]
    BadUrl(String),
    /// A record header was too short.
    #[error("record header needs {RECORD_HEADER_LEN} bytes, got {0}")]
    ShortHeader(usize),
    /// The bytes do not start with [`RECORD_MAGIC`].
    #[error("not a spill record (bad magic)")]
    BadMagic,
    /// A record of a layout this code does not read.
    #[error("spill record version {0} is not supported (this node reads version {RECORD_VERSION})")]
    UnsupportedVersion(u16),
    /// Flags or reserved bytes that must be zero were not.
    #[error("spill record header has non-zero reserved bits")]
    Reserved,
    /// The header's own checksum does not match its bytes.
    #[error("spill record header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksum {
        /// What the header says.
        stored: u32,
        /// What its bytes give.
        computed: u32,
    },
    /// The payload read back does not match the checksum written with it.
    #[error("spilled bytes are corrupt: checksum {computed:#010x}, written as {stored:#010x}")]
    PayloadChecksum {
        /// What the header says.
        stored: u32,
        /// What the bytes read give.
        computed: u32,
    },
    /// A record header disagrees with its URL or the expected object.
    #[error("record header mismatch: {0}")]
    HeaderMismatch(&'static str),
    /// Object sizes overflow a `u64` record length.
    #[error("object sizes overflow")]
    SizeOverflow,
    /// `release` of a URL this planner did not plan, or already released.
    #[error("spill url {0} is not live")]
    NotLive(SpillUrl),
}

/// Where one spilled object's record is: file number, byte offset, record length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpillUrl {
    /// File number; the file is named [`file_name`]`(file)`.
    pub file: u64,
    /// Offset of the record start within the file.
    pub offset: u64,
    /// Length of the whole record (header, data, metadata).
    pub len: u64,
}

impl SpillUrl {
    /// Parses `spill-<n>?offset=<o>&size=<s>` (decimal numbers, exactly this order).
    pub fn parse(s: &str) -> Result<Self, SpillError> {
        let bad = || SpillError::BadUrl(s.to_owned());
        let rest = s.strip_prefix("spill-").ok_or_else(bad)?;
        let (file, rest) = rest.split_once("?offset=").ok_or_else(bad)?;
        let (offset, len) = rest.split_once("&size=").ok_or_else(bad)?;
        let num = |t: &str| -> Result<u64, SpillError> {
            // `u64::from_str` accepts a leading '+'; the format does not.
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse().map_err(|_| bad())
        };
        let url = Self { file: num(file)?, offset: num(offset)?, len: num(len)? };
        // A record ending past u64::MAX cannot exist (and `payload` would overflow).
        url.offset.checked_add(url.len.max(RECORD_HEADER_LEN)).ok_or_else(bad)?;
        Ok(url)
    }

    /// The payload (data then metadata) range within the file: `(start, len)`.
    pub fn payload(&self) -> (u64, u64) {
        (self.offset + RECORD_HEADER_LEN, self.len.saturating_sub(RECORD_HEADER_LEN))
    }
}

impl fmt::Display for SpillUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}?offset={}&size={}", file_name(self.file), self.offset, self.len)
    }
}

/// The file name of spill file `file` (no directory; it lives in [`node_dir_name`]).
pub fn file_name(file: u64) -> String {
    format!("spill-{file}")
}

/// The directory, under the spill directory, that holds `node`'s spill files.
pub fn node_dir_name(node: &NodeId) -> String {
    format!("{NODE_PREFIX}{node}")
}

/// The lock file, beside [`node_dir_name`], that `node` holds locked while it runs.
pub fn lock_file_name(node: &NodeId) -> String {
    format!("{NODE_PREFIX}{node}{LOCK_SUFFIX}")
}

/// What an entry of the spill directory is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillDirEntry {
    /// A node's spill file directory ([`node_dir_name`]).
    NodeDir(NodeId),
    /// A node's lock file ([`lock_file_name`]).
    Lock(NodeId),
}

impl SpillDirEntry {
    /// Classifies a name found in the spill directory; `None` for anything not ours.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(NODE_PREFIX)?;
        match rest.strip_suffix(LOCK_SUFFIX) {
            Some(hex) => NodeId::from_hex(hex).ok().map(Self::Lock),
            None => NodeId::from_hex(rest).ok().map(Self::NodeDir),
        }
    }
}

/// The fixed header in front of each object's bytes in a spill file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Data bytes that follow the header.
    pub data_size: u64,
    /// Metadata bytes that follow the data.
    pub metadata_size: u64,
    /// The object.
    pub id: ObjectId,
    /// CRC32C of the payload (data then metadata). [`SpillFilePlanner::plan`] leaves it 0;
    /// the writer fills it in from the bytes it writes.
    pub payload_crc: u32,
}

impl RecordHeader {
    /// The little-endian header bytes, with the header checksum.
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN as usize] {
        let mut b = [0u8; RECORD_HEADER_LEN as usize];
        b[0..4].copy_from_slice(&RECORD_MAGIC);
        b[4..6].copy_from_slice(&RECORD_VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.data_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.metadata_size.to_le_bytes());
        b[24..52].copy_from_slice(&self.id.0);
        b[52..56].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates the first [`RECORD_HEADER_LEN`] bytes of `b` (see the module
    /// docs for what is refused). Pure: any input gives a header or an error, never a panic.
    pub fn decode(b: &[u8]) -> Result<Self, SpillError> {
        let h: &[u8; RECORD_HEADER_LEN as usize] = b
            .get(..RECORD_HEADER_LEN as usize)
            .and_then(|h| h.try_into().ok())
            .ok_or(SpillError::ShortHeader(b.len()))?;
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(x)
        };
        if h[0..4] != RECORD_MAGIC {
            return Err(SpillError::BadMagic);
        }
        let version = u16_at(4);
        if version != RECORD_VERSION {
            return Err(SpillError::UnsupportedVersion(version));
        }
        let (stored, computed) = (u32_at(60), crc32c(&h[..60]));
        if stored != computed {
            return Err(SpillError::HeaderChecksum { stored, computed });
        }
        if u16_at(6) != 0 || u32_at(56) != 0 {
            return Err(SpillError::Reserved);
        }
        let mut id = ObjectId::NIL;
        id.0.copy_from_slice(&h[24..52]);
        let header = Self { data_size: u64_at(8), metadata_size: u64_at(16), id, payload_crc: u32_at(52) };
        header.record_len()?;
        Ok(header)
    }

    /// Checks the CRC32C of the payload read back against the one written.
    pub fn check_payload(&self, computed: u32) -> Result<(), SpillError> {
        if computed != self.payload_crc {
            return Err(SpillError::PayloadChecksum { stored: self.payload_crc, computed });
        }
        Ok(())
    }

    /// Length of the whole record this header starts.
    pub fn record_len(&self) -> Result<u64, SpillError> {
        RECORD_HEADER_LEN
            .checked_add(self.data_size)
            .and_then(|x| x.checked_add(self.metadata_size))
            .ok_or(SpillError::SizeOverflow)
    }

    /// Checks that this header (read at `url`) describes object `id` and spans `url.len`.
    pub fn check(&self, url: &SpillUrl, id: &ObjectId) -> Result<(), SpillError> {
        if self.id != *id {
            return Err(SpillError::HeaderMismatch("object id"));
        }
        if self.record_len()? != url.len {
            return Err(SpillError::HeaderMismatch("record length"));
        }
        Ok(())
    }
}

/// One object to spill, as given to [`SpillFilePlanner::plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpillObject {
    /// The object.
    pub id: ObjectId,
    /// Its data size.
    pub data_size: u64,
    /// Its metadata size.
    pub metadata_size: u64,
}

/// One planned record: the object, its header and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRecord {
    /// Header to write at `url.offset`, followed by the object's data and metadata.
    pub header: RecordHeader,
    /// Where the record goes; hand it to the object table on success.
    pub url: SpillUrl,
}

/// One file to write: its records in order, back to back from offset 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// File number (see [`file_name`]).
    pub file: u64,
    /// Records in file order.
    pub records: Vec<PlannedRecord>,
    /// Total file length.
    pub len: u64,
}

/// Packs objects into fused spill files and reference-counts the files. See the module docs.
#[derive(Debug, Clone)]
pub struct SpillFilePlanner {
    max_file_bytes: u64,
    max_objects_per_file: usize,
    file_prefix: u64,
    next_counter: u64,
    /// Live record offsets per file; the file is deletable when its set empties.
    live: BTreeMap<u64, BTreeSet<u64>>,
}

impl SpillFilePlanner {
    /// A planner for `shard` with the default bounds (256 MiB, 2000 objects per file).
    pub fn new(shard: ShardId) -> Self {
        Self::with_limits(shard, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_OBJECTS_PER_FILE)
    }

    /// A planner with explicit bounds. Zero bounds are treated as 1 (one object per file).
    /// An object larger than `max_file_bytes` still gets a file of its own.
    pub fn with_limits(shard: ShardId, max_file_bytes: u64, max_objects_per_file: usize) -> Self {
        Self {
            max_file_bytes: max_file_bytes.max(1),
            max_objects_per_file: max_objects_per_file.max(1),
            file_prefix: u64::from(shard.0) << 48,
            next_counter: 0,
            live: BTreeMap::new(),
        }
    }

    /// Packs `objects`, in order, into new files: a file is closed when the next record would
    /// make it exceed `max_file_bytes` or it holds `max_objects_per_file` records. Every
    /// planned record counts as one reference on its file until [`release`](Self::release).
    /// Fails without planning anything if an object's record length overflows.
    pub fn plan(&mut self, objects: &[SpillObject]) -> Result<Vec<PlannedFile>, SpillError> {
        let mut files: Vec<PlannedFile> = Vec::new();
        let mut counter = self.next_counter;
        for o in objects {
            let header =
                RecordHeader { data_size: o.data_size, metadata_size: o.metadata_size, id: o.id, payload_crc: 0 };
            let rec_len = header.record_len()?;
            let fits = files.last().is_some_and(|f| {
                f.records.len() < self.max_objects_per_file
                    && f.len.checked_add(rec_len).is_some_and(|n| n <= self.max_file_bytes)
            });
            if !fits {
                files.push(PlannedFile {
                    file: self.file_prefix | (counter & ((1 << 48) - 1)),
                    records: Vec::new(),
                    len: 0,
                });
                counter += 1;
            }
            let f = files.last_mut().expect("a file was just pushed if none fit");
            let url = SpillUrl { file: f.file, offset: f.len, len: rec_len };
            f.records.push(PlannedRecord { header, url });
            f.len += rec_len;
        }
        self.next_counter = counter;
        for f in &files {
            self.live.insert(f.file, f.records.iter().map(|r| r.url.offset).collect());
        }
        Ok(files)
    }

    /// Drops the reference `url` holds on its file. Returns `Some(file)` when that was the
    /// file's last live record: the file can now be deleted. Releasing an unknown or already
    /// released URL is an error and changes nothing.
    pub fn release(&mut self, url: &SpillUrl) -> Result<Option<u64>, SpillError> {
        let offsets = self.live.get_mut(&url.file).ok_or(SpillError::NotLive(*url))?;
        if !offsets.remove(&url.offset) {
            return Err(SpillError::NotLive(*url));
        }
        if offsets.is_empty() {
            self.live.remove(&url.file);
            return Ok(Some(url.file));
        }
        Ok(None)
    }

    /// Number of live records in `file` (0 if unknown or deletable).
    pub fn file_refs(&self, file: u64) -> usize {
        self.live.get(&file).map_or(0, BTreeSet::len)
    }

    /// Files that still hold at least one live record, in number order.
    pub fn live_files(&self) -> impl Iterator<Item = u64> + '_ {
        self.live.keys().copied()
    }
}

#[cfg(test)]
mod tests;
