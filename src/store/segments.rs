//! The files behind the store's segments and the table of fallback segments. No mapping
//! happens here ([`super::arena`] maps); this module creates, sizes, seals and hands out
//! descriptors.
//!
//! Segment indexes, as the local protocol names them in an `ObjectSpec`:
//! - [`ARENA_SEGMENT`] (0): the store itself.
//! - [`STAGING_SEGMENT`] (1): with `--plasma-directory` only, a sealed memfd the size of the
//!   store where clients write the objects they create (see the arena's module doc).
//! - 2 and up: fallback segments, one file per object, and the staging files of objects a
//!   client creates in fallback. Indexes are handed out in increasing order and not reused
//!   while the counter has not wrapped, so a client never confuses two files.
//!
//! Every file is unlinked as soon as it is open: its space lives as long as a descriptor or
//! a mapping does, and a crash leaves nothing behind. A file clients may only read is
//! created with mode 0400 and passed as an `O_RDONLY` descriptor, which `ftruncate` refuses
//! and `/proc/self/fd` cannot reopen for writing (the inode denies write to its owner).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The store's own segment.
pub const ARENA_SEGMENT: u32 = 0;
/// Where clients write unsealed objects when the store is a `--plasma-directory` file.
pub const STAGING_SEGMENT: u32 = 1;
const FIRST_FALLBACK_SEGMENT: u32 = 2;

/// `MFD_NOEXEC_SEAL` (Linux 6.3): the memfd can never be made executable. Older kernels
/// refuse the flag and get a memfd without it.
const MFD_NOEXEC_SEAL: u32 = 0x0008;

/// A sealed memfd of `len` bytes: it can neither shrink nor grow, whoever holds it, so a
/// mapping of its first `len` bytes never faults with SIGBUS.
pub fn sealed_memfd(name: &str, len: u64) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    let base = MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING;
    let fd = match memfd_create(&name, base | MemFdCreateFlag::from_bits_retain(MFD_NOEXEC_SEAL)) {
        Err(nix::errno::Errno::EINVAL) => memfd_create(&name, base)?,
        other => other?,
    };
    let file = File::from(fd);
    file.set_len(len)?;
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(file.into())
}

/// A file of `len` bytes in `dir`, its blocks reserved (`fallocate`), unlinked: the raylet's
/// read-write descriptor and, when `read_only_copy`, an `O_RDONLY` one for clients (the
/// inode is then made 0400).
pub fn unlinked_file(
    dir: &Path,
    prefix: &str,
    len: u64,
    read_only_copy: bool,
) -> std::io::Result<(File, Option<File>)> {
    let mut rnd = [0u8; 8];
    crate::ids::os_random(&mut rnd);
    let path = dir.join(format!("{prefix}-{}-{}", std::process::id(), crate::ids::hex_encode(&rnd)));
    let rw = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    let ro = if read_only_copy { std::fs::File::open(&path).map(Some) } else { Ok(None) };
    let _ = std::fs::remove_file(&path);
    let ro = ro?;
    if ro.is_some() {
        use std::os::unix::fs::PermissionsExt;
        rw.set_permissions(std::fs::Permissions::from_mode(0o400))?;
    }
    reserve(&rw, len)?;
    Ok((rw, ro))
}

/// Gives `file` `len` bytes backed by real blocks, so writing through a mapping can never
/// hit a full disk (SIGBUS): `fallocate`, or where the filesystem lacks it, a size check
/// against its free space before extending the file.
fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    if len == 0 {
        return Ok(());
    }
    match fallocate(file.as_raw_fd(), FallocateFlags::empty(), 0, len as i64) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => {
            let st = nix::sys::statvfs::fstatvfs(file)?;
            let free = st.blocks_available() as u64 * st.fragment_size() as u64;
            if free < len {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            file.set_len(len)
        }
        Err(e) => Err(e.into()),
    }
}

/// Bytes free for an unprivileged writer in the filesystem holding `dir` (for messages).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// One fallback segment: the file holding one object, mapped by the arena at `offset`.
#[derive(Debug)]
pub struct FallbackFile {
    /// Segment index in replies.
    pub index: u32,
    /// Where the arena maps it (an offset above the store).
    pub offset: u64,
    /// Mapped length.
    pub len: u64,
    /// The raylet's descriptor (mapped read-write).
    pub rw: File,
    /// What clients get.
    pub ro: File,
    /// The file the creating client writes before sealing, if a client creates it.
    pub staging: Option<(u32, File)>,
}

/// Where one object's bytes are, as a client addresses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// Segment index.
    pub segment: u32,
    /// Offset in that segment.
    pub offset: u64,
}

#[derive(Debug, Default)]
struct Table {
    by_offset: BTreeMap<u64, FallbackFile>,
    /// Segment index -> (mapping offset, whether it is the staging file).
    by_index: HashMap<u32, (u64, bool)>,
    next_index: u32,
}

impl Table {
    fn new_index(&mut self) -> u32 {
        loop {
            let i = self.next_index.max(FIRST_FALLBACK_SEGMENT);
            self.next_index = i.checked_add(1).unwrap_or(FIRST_FALLBACK_SEGMENT);
            if !self.by_index.contains_key(&i) {
                return i;
            }
        }
    }
}

/// The fallback segments that exist now. Shared by every shard (through the arena): the
/// shard that owns an object creates and frees its segment, and the shard whose connection
/// answers a client passes the descriptor. The lock is taken only for fallback objects,
/// never on the path of an object in the store.
#[derive(Debug)]
pub struct FallbackTable {
    /// Where fallback files are created.
    pub dir: PathBuf,
    table: Mutex<Table>,
}

impl FallbackTable {
    /// An empty table creating files in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, table: Mutex::new(Table::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock ends the process (a panicking shard does), so a
        // poisoned table is never seen by a live node; tests may still see it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a mapped file; returns its segment index.
    pub(super) fn insert(&self, offset: u64, len: u64, rw: File, ro: File) -> u32 {
        let mut t = self.lock();
        let index = t.new_index();
        t.by_index.insert(index, (offset, false));
        t.by_offset.insert(offset, FallbackFile { index, offset, len, rw, ro, staging: None });
        index
    }

    /// Gives the segment at `offset` a staging file for its creator; returns its index.
    pub fn attach_staging(&self, offset: u64, file: File) -> Option<u32> {
        let mut t = self.lock();
        if !t.by_offset.contains_key(&offset) {
            return None;
        }
        let index = t.new_index();
        t.by_index.insert(index, (offset, true));
        let seg = t.by_offset.get_mut(&offset).expect("checked above");
        if let Some((old, _)) = seg.staging.replace((index, file)) {
            t.by_index.remove(&old);
        }
        Some(index)
    }

    /// Takes the staging file of the segment at `offset` (at seal).
    pub fn take_staging(&self, offset: u64) -> Option<File> {
        let mut t = self.lock();
        let (index, file) = t.by_offset.get_mut(&offset)?.staging.take()?;
        t.by_index.remove(&index);
        Some(file)
    }

    /// Removes the segment at `offset`; the caller unmaps it, then drops it.
    pub(super) fn remove(&self, offset: u64) -> Option<FallbackFile> {
        let mut t = self.lock();
        let seg = t.by_offset.remove(&offset)?;
        t.by_index.remove(&seg.index);
        if let Some((i, _)) = &seg.staging {
            t.by_index.remove(i);
        }
        Some(seg)
    }

    /// The segment holding `[offset, offset + len)` entirely, as (its offset, its length).
    pub fn containing(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        let t = self.lock();
        let (&base, seg) = t.by_offset.range(..=offset).next_back()?;
        let end = offset.checked_add(len)?;
        (end <= base + seg.len).then_some((base, seg.len))
    }

    /// Where a client finds the object at arena offset `offset` (the staging file while its
    /// creator writes it, when `staged`).
    pub fn locate(&self, offset: u64, staged: bool) -> Option<Located> {
        let t = self.lock();
        let (&base, seg) = t.by_offset.range(..=offset).next_back()?;
        if offset >= base + seg.len {
            return None;
        }
        match (&seg.staging, staged) {
            (Some((index, _)), true) => Some(Located { segment: *index, offset: offset - base }),
            _ => Some(Located { segment: seg.index, offset: offset - base }),
        }
    }

    /// A new descriptor of segment `index` for a client: read-only for a mapped segment,
    /// read-write for a staging file.
    pub fn client_fd(&self, index: u32) -> Option<OwnedFd> {
        let t = self.lock();
        let &(offset, staging) = t.by_index.get(&index)?;
        let seg = t.by_offset.get(&offset)?;
        let fd = if staging { seg.staging.as_ref()?.1.as_fd() } else { seg.ro.as_fd() };
        fd.try_clone_to_owned().ok()
    }

    /// Number of segments and their mapped bytes.
    pub fn usage(&self) -> (usize, u64) {
        let t = self.lock();
        (t.by_offset.len(), t.by_offset.values().map(|s| s.len).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_memfd_cannot_shrink_or_grow() {
        let fd = sealed_memfd("t", 1 << 20).unwrap();
        let f = File::from(fd);
        assert_eq!(f.metadata().unwrap().len(), 1 << 20);
        assert!(f.set_len(0).is_err(), "shrink is sealed");
        assert!(f.set_len(2 << 20).is_err(), "grow is sealed");
    }

    #[test]
    fn read_only_copy_refuses_truncation_and_files_are_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let (rw, ro) = unlinked_file(dir.path(), "f", 1 << 16, true).unwrap();
        let ro = ro.unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(ro.set_len(0).is_err(), "O_RDONLY descriptor cannot truncate");
        assert_eq!(rw.metadata().unwrap().len(), 1 << 16);
    }

    #[test]
    fn indexes_are_not_reused_and_staging_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let t = FallbackTable::new(dir.path().into());
        let file = || {
            let (rw, ro) = unlinked_file(dir.path(), "f", 4096, true).unwrap();
            (rw, ro.unwrap())
        };
        let (rw, ro) = file();
        let a = t.insert(1 << 30, 4096, rw, ro);
        assert_eq!(a, FIRST_FALLBACK_SEGMENT);
        let s = t.attach_staging(1 << 30, file().0).unwrap();
        assert_eq!(t.locate((1 << 30) + 64, true), Some(Located { segment: s, offset: 64 }));
        assert_eq!(t.locate((1 << 30) + 64, false), Some(Located { segment: a, offset: 64 }));
        assert!(t.client_fd(s).is_some() && t.client_fd(a).is_some());
        assert!(t.take_staging(1 << 30).is_some());
        assert!(t.client_fd(s).is_none(), "staging gone");
        assert!(t.remove(1 << 30).is_some());
        let (rw, ro) = file();
        let b = t.insert(1 << 30, 4096, rw, ro);
        assert!(b > s, "indexes are not reused");
        assert_eq!(t.containing((1 << 30) + 4000, 96), Some((1 << 30, 4096)));
        assert_eq!(t.containing((1 << 30) + 4000, 97), None);
    }
}
