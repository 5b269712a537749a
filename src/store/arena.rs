//! The raylet's shared-memory arena: the store's segment mapped shared, and above it, in
//! the same reserved range of address space, the fallback segments (disk-backed files, one
//! per object, for objects that do not fit in the store). Every shard of the process uses
//! this one mapping and addresses it by offset: an offset below [`Arena::len`] is in the
//! store, one at or above [`Arena::fallback_base`] is in a fallback segment, so the chunk,
//! spill and push paths read and write both alike. Clients map the same files through the
//! descriptors they receive by `SCM_RIGHTS`.
//!
//! # The segments are safe from their clients
//!
//! A client that truncates a file the raylet maps would make the raylet's next access to
//! it fault with SIGBUS, and would destroy the sealed objects in it. So no client is ever
//! given a descriptor that can change a mapped file's size:
//! - **Default store: a sealed memfd** (`F_SEAL_SHRINK | F_SEAL_GROW`). Clients get it
//!   read-write and write the objects they create in place; `ftruncate` fails with `EPERM`.
//! - **`--plasma-directory DIR`: a file there**, whose blocks are reserved with `fallocate`
//!   at start (a directory too small for the store is a clear start error, not a SIGBUS at
//!   prefault). Clients get an `O_RDONLY` descriptor (`ftruncate` fails with `EINVAL`; the
//!   inode is 0400, so `/proc/self/fd` cannot reopen it for writing). The objects they
//!   create are written in a sealed memfd of the store's size, the staging segment, at the
//!   same offset; at seal the raylet copies them into the file with `pread` (a kernel copy)
//!   and punches the staging range out, so the memfd holds memory only while objects are
//!   being written. This costs a put one copy and first touches of the staging pages; the
//!   default store has neither.
//! - **Fallback segments: files in the fallback directory**, reserved with `fallocate`,
//!   passed to clients `O_RDONLY` (mode 0400). A client creating an object in fallback
//!   writes a staging file of its own in that directory (read-write, never mapped by the
//!   raylet); at seal the raylet copies it into the object's segment with `pread`, so a
//!   staging file truncated by its creator makes that seal fail, never the raylet fault.
//!
//! What is left: a client running as root, or one that `fchmod`s the inode back and
//! reopens it through `/proc`, can still truncate. Such a process can equally `ptrace` or
//! kill the raylet; the guarantee is that no descriptor the raylet hands out can do harm.
//!
//! Who may touch which bytes is a protocol rule, not a type rule: an object's range belongs
//! to its creator until sealed (a client, or the raylet when it receives or restores the
//! object), and is read-only afterwards. The raylet only reads sealed ranges (push, spill)
//! and only writes unsealed ranges it created (chunk receive, restore) or that it copies a
//! staged object into at seal. All `unsafe` for the raylet's view of the mapping is here.

use super::segments::{self, FallbackTable};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Address-space alignment of the store and of the start of the fallback range (huge pages).
const HUGE: u64 = 2 << 20;
/// Alignment of every fallback segment (a page).
pub const FALLBACK_ALIGN: u64 = 4096;

/// Why the arena could not be set up or a range is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    /// Creating, sizing or mapping the memory failed.
    #[error("shared memory ({what}): {err}")]
    Setup {
        /// What was being set up.
        what: String,
        /// The OS error.
        err: std::io::Error,
    },
    /// The plasma directory cannot hold the store.
    #[error(
        "the plasma directory {dir} has room for {available} bytes, the store needs {needed} (--object-store-memory): \
         give a larger directory or a smaller store"
    )]
    DirectoryTooSmall {
        /// The directory.
        dir: String,
        /// The store's size.
        needed: u64,
        /// What its filesystem has free.
        available: u64,
    },
    /// A range falls outside the store and every fallback segment.
    #[error("range [{offset}, +{len}) is outside the arena of {size} bytes and its fallback segments")]
    OutOfBounds {
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
        /// Arena size.
        size: u64,
    },
}

/// Where the store lives.
#[derive(Debug, Clone)]
pub struct ArenaOptions {
    /// Store capacity in bytes.
    pub len: u64,
    /// `None`: a sealed memfd; `Some(dir)`: a file in `dir`.
    pub plasma_directory: Option<PathBuf>,
    /// Address space reserved above the store for fallback segments (their total limit).
    pub fallback_limit: u64,
    /// Where fallback files are created.
    pub fallback_directory: PathBuf,
}

#[derive(Debug)]
enum Backing {
    Memfd(OwnedFd),
    File {
        /// Kept open so the mapping's file stays the raylet's (mapped read-write).
        rw: File,
        ro: File,
        staging: File,
    },
}

/// The mapped store memory and the fallback segments above it.
#[derive(Debug)]
pub struct Arena {
    /// Start of the reserved range (an address, kept as an integer so the arena is Send).
    base: usize,
    /// Reserved bytes: the store, rounded up to [`HUGE`], then the fallback range.
    span: u64,
    len: u64,
    fallback_base: u64,
    backing: Backing,
    /// The fallback segments mapped now.
    pub fallback: FallbackTable,
}

fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArenaError {
    let what = what.into();
    move |err| ArenaError::Setup { what, err }
}

impl Arena {
    /// Creates the store's memory (see the module doc) and maps it, with `fallback_limit`
    /// bytes of address space reserved above it.
    pub fn create(o: &ArenaOptions) -> Result<Self, ArenaError> {
        let backing = match &o.plasma_directory {
            None => Backing::Memfd(segments::sealed_memfd("raylet-plasma", o.len).map_err(setup("memfd"))?),
            Some(dir) => {
                let (rw, ro) = segments::unlinked_file(dir, "raylet-plasma", o.len, true).map_err(|err| {
                    if err.raw_os_error() == Some(libc::ENOSPC) {
                        let available = segments::free_bytes(dir).unwrap_or(0);
                        ArenaError::DirectoryTooSmall { dir: dir.display().to_string(), needed: o.len, available }
                    } else {
                        ArenaError::Setup { what: format!("plasma directory {}", dir.display()), err }
                    }
                })?;
                let staging = segments::sealed_memfd("raylet-staging", o.len).map_err(setup("staging memfd"))?;
                Backing::File { rw, ro: ro.expect("asked for a read-only copy"), staging: staging.into() }
            }
        };
        let fallback_base = o.len.div_ceil(HUGE) * HUGE;
        let span = fallback_base + o.fallback_limit.div_ceil(HUGE) * HUGE;
        let base = reserve(span)?;
        let arena = Self {
            base,
            span,
            len: o.len,
            fallback_base,
            backing,
            fallback: FallbackTable::new(o.fallback_directory.clone()),
        };
        let store_fd = match &arena.backing {
            Backing::Memfd(fd) => fd.as_fd(),
            Backing::File { rw, .. } => rw.as_fd(),
        };
        if o.len > 0 {
            arena.map_fixed(0, o.len, store_fd).map_err(setup("mapping the store"))?;
        }
        Ok(arena)
    }

    /// Store size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// First offset of the fallback range.
    pub fn fallback_base(&self) -> u64 {
        self.fallback_base
    }

    /// Bytes of address space for fallback segments.
    pub fn fallback_limit(&self) -> u64 {
        self.span - self.fallback_base
    }

    /// The descriptor clients map for the store (segment 0): read-write for a memfd,
    /// read-only for a plasma-directory file.
    pub fn fd(&self) -> RawFd {
        match &self.backing {
            Backing::Memfd(fd) => fd.as_raw_fd(),
            Backing::File { ro, .. } => ro.as_raw_fd(),
        }
    }

    /// The staging segment's descriptor (segment 1), with a plasma-directory store only.
    pub fn staging_fd(&self) -> Option<RawFd> {
        match &self.backing {
            Backing::Memfd(_) => None,
            Backing::File { staging, .. } => Some(staging.as_raw_fd()),
        }
    }

    /// Whether clients write the objects they create in the staging segment.
    pub fn stages_creates(&self) -> bool {
        self.staging_fd().is_some()
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), ArenaError> {
        let oob = || ArenaError::OutOfBounds { offset, len, size: self.len };
        let end = offset.checked_add(len).ok_or_else(oob)?;
        if end <= self.len {
            return Ok(());
        }
        // Above the store, only ranges inside one mapped fallback segment are readable.
        if offset >= self.fallback_base && self.fallback.containing(offset, len).is_some() {
            return Ok(());
        }
        Err(oob())
    }

    /// Maps `len` bytes of `fd` shared and read-write at `offset` of the reserved range.
    fn map_fixed(&self, offset: u64, len: u64, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        debug_assert!(offset.checked_add(len).is_some_and(|e| e <= self.span));
        // SAFETY: `[base + offset, + len)` lies inside the range this arena reserved (the
        // callers check it against `span`) and owns until drop, so MAP_FIXED replaces only
        // our own reservation or a fallback mapping being installed; nothing else in the
        // process lives there. The raylet touches a range only after it is mapped and while
        // its allocation is live (module doc).
        let p = unsafe {
            libc::mmap(
                (self.base + offset as usize) as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Maps a fallback file of `len` bytes at `offset` (from the fallback allocator) and
    /// registers it; returns its segment index.
    pub fn add_fallback(&self, offset: u64, len: u64, rw: File, ro: File) -> Result<u32, ArenaError> {
        let end = offset.checked_add(len);
        if offset < self.fallback_base || end.is_none_or(|e| e > self.span) {
            return Err(ArenaError::OutOfBounds { offset, len, size: self.len });
        }
        self.map_fixed(offset, len, rw.as_fd()).map_err(setup("mapping a fallback segment"))?;
        Ok(self.fallback.insert(offset, len, rw, ro))
    }

    /// Unmaps and forgets the fallback segment at `offset`; returns it so the caller can
    /// drop it (closing the last descriptor of a large file can take a while).
    pub fn remove_fallback(&self, offset: u64) -> Option<segments::FallbackFile> {
        let seg = self.fallback.remove(offset)?;
        // SAFETY: the segment was mapped by `add_fallback` at this range inside our
        // reservation; its object has been freed, so nothing reads or writes it any more.
        // Mapping the reservation back (PROT_NONE, MAP_FIXED) replaces it atomically, so no
        // other mapping of the process can land in the hole.
        let p = unsafe {
            libc::mmap(
                (self.base + seg.offset as usize) as *mut libc::c_void,
                seg.len as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            tracing::error!("unmapping fallback segment {}: {}", seg.index, std::io::Error::last_os_error());
        }
        Some(seg)
    }

    /// Touches every page of `[offset, offset + len)` of the store so later writes never
    /// fault (`MADV_POPULATE_WRITE`; falls back to writing one byte per page). Blocking: run
    /// it on a blocking thread.
    pub fn prefault(&self, offset: u64, len: u64) -> Result<Duration, ArenaError> {
        if offset.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(ArenaError::OutOfBounds { offset, len, size: self.len });
        }
        let started = Instant::now();
        let ptr = (self.base + offset as usize) as *mut libc::c_void;
        // SAFETY: the range is inside the store's mapping (checked above); MADV_POPULATE_WRITE
        // only faults pages in, it changes no byte.
        let populated = unsafe { libc::madvise(ptr, len as usize, libc::MADV_POPULATE_WRITE) } == 0;
        if !populated {
            let page = 4096u64;
            let mut at = offset;
            while at < offset + len {
                // SAFETY: `at` is inside the mapping (checked above). The range is not yet
                // handed to anyone (start-up), so writing a zero byte races with no reader.
                unsafe { std::ptr::write_volatile((self.base + at as usize) as *mut u8, 0) };
                at += page;
            }
        }
        Ok(started.elapsed())
    }

    /// Read access to a sealed object's bytes.
    pub fn bytes(&self, offset: u64, len: u64) -> Result<&[u8], ArenaError> {
        self.check(offset, len)?;
        // SAFETY: in bounds of a live mapping (checked). Sealed ranges are immutable by
        // protocol (module doc); `u8` has no invalid values, so even a misbehaving client
        // writing into a sealed object can change what we read but not make the read
        // unsound for us. No client can shrink a mapped file (module doc), so no SIGBUS.
        Ok(unsafe { std::slice::from_raw_parts((self.base + offset as usize) as *const u8, len as usize) })
    }

    /// Write access to an unsealed range the raylet itself is filling (chunk receive,
    /// restore, a staged object copied at seal). The caller owns the range until it seals.
    #[allow(clippy::mut_from_ref)]
    pub fn bytes_mut(&self, offset: u64, len: u64) -> Result<&mut [u8], ArenaError> {
        self.check(offset, len)?;
        // SAFETY: in bounds of a live mapping (checked). The object table hands an unsealed
        // range to exactly one writer (the raylet task receiving, restoring or copying it);
        // no client holds it writable and no other task writes it until it is sealed or
        // aborted, so this `&mut` is unique.
        Ok(unsafe { std::slice::from_raw_parts_mut((self.base + offset as usize) as *mut u8, len as usize) })
    }

    /// Copies a staged object (`len` bytes of `src` from `src_offset`) into
    /// `[offset, offset + len)`, with `pread`: a source that a client shrank gives a short
    /// count (returned), never a fault. Blocking.
    pub fn copy_from_staging(&self, offset: u64, len: u64, src: &File, src_offset: u64) -> Result<u64, ArenaError> {
        use std::os::unix::fs::FileExt;
        let dst = self.bytes_mut(offset, len)?;
        let mut done = 0usize;
        while done < dst.len() {
            match src.read_at(&mut dst[done..], src_offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(ArenaError::Setup { what: "copying a staged object".into(), err }),
            }
        }
        Ok(done as u64)
    }

    /// Returns the staging segment's pages of `[offset, offset + len)` to the system.
    pub fn release_staging(&self, offset: u64, len: u64) {
        use nix::fcntl::{fallocate, FallocateFlags};
        let Backing::File { staging, .. } = &self.backing else { return };
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        if let Err(e) = fallocate(staging.as_raw_fd(), mode, offset as i64, len as i64) {
            tracing::warn!("releasing staging pages: {e}");
        }
    }

    /// The staging segment as a file (the source of [`Self::copy_from_staging`]).
    pub fn staging_file(&self) -> Option<&File> {
        match &self.backing {
            Backing::Memfd(_) => None,
            Backing::File { staging, .. } => Some(staging),
        }
    }
}

/// Reserves `span` bytes of address space (no memory, no access), aligned to [`HUGE`].
fn reserve(span: u64) -> Result<usize, ArenaError> {
    let len = (span + HUGE) as usize;
    // SAFETY: a fresh anonymous PROT_NONE mapping chosen by the kernel; it aliases nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(ArenaError::Setup { what: "reserving address space".into(), err: std::io::Error::last_os_error() });
    }
    let start = p as usize;
    let aligned = start.div_ceil(HUGE as usize) * HUGE as usize;
    // SAFETY: the head and tail slack lie inside the reservation just made and are not
    // used; unmapping them leaves exactly `[aligned, aligned + span)` reserved.
    unsafe {
        if aligned > start {
            libc::munmap(p, aligned - start);
        }
        let tail = start + len - (aligned + span as usize);
        if tail > 0 {
            libc::munmap((aligned + span as usize) as *mut libc::c_void, tail);
        }
    }
    Ok(aligned)
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `[base, base + span)` is the reservation made in `create`, with the store
        // and fallback segments mapped inside it; the arena is dropped last (every user
        // holds an `Arc`), so no slice into it outlives this.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.span as usize) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn opts(dir: Option<&Path>, fallback: &Path) -> ArenaOptions {
        ArenaOptions {
            len: 1 << 20,
            plasma_directory: dir.map(Path::to_path_buf),
            fallback_limit: 8 << 20,
            fallback_directory: fallback.to_path_buf(),
        }
    }

    #[test]
    fn arena_is_unlinked_sized_and_bounds_checked() {
        let dir = tempfile::tempdir().unwrap();
        for plasma in [None, Some(dir.path())] {
            let a = Arena::create(&opts(plasma, dir.path())).unwrap();
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "file is unlinked");
            assert_eq!(a.len(), 1 << 20);
            assert_eq!(a.stages_creates(), plasma.is_some());
            a.prefault(0, 1 << 20).unwrap();
            a.bytes_mut(4096, 3).unwrap().copy_from_slice(b"abc");
            assert_eq!(a.bytes(4096, 3).unwrap(), b"abc");
            assert!(a.bytes((1 << 20) - 1, 2).is_err());
            assert!(a.bytes(u64::MAX, 2).is_err());
            assert!(a.bytes(a.fallback_base(), 1).is_err(), "no fallback segment there yet");
        }
    }

    #[test]
    fn fallback_segments_map_above_the_store_and_go_away() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arena::create(&opts(None, dir.path())).unwrap();
        let at = a.fallback_base() + 2 * FALLBACK_ALIGN;
        let (rw, ro) = segments::unlinked_file(dir.path(), "f", 3 * FALLBACK_ALIGN, true).unwrap();
        let index = a.add_fallback(at, 3 * FALLBACK_ALIGN, rw, ro.unwrap()).unwrap();
        a.bytes_mut(at + 10, 5).unwrap().copy_from_slice(b"hello");
        let seg = a.fallback.client_fd(index).map(File::from).unwrap();
        let mut got = [0u8; 5];
        std::os::unix::fs::FileExt::read_exact_at(&seg, &mut got, 10).unwrap();
        assert_eq!(&got, b"hello", "the client's descriptor sees the raylet's writes");
        assert!(a.bytes(at + 3 * FALLBACK_ALIGN - 1, 2).is_err(), "past the segment");
        assert!(a.add_fallback(a.fallback_base() + a.fallback_limit(), 4096, seg.try_clone().unwrap(), seg).is_err());
        assert!(a.remove_fallback(at).is_some());
        assert!(a.bytes(at + 10, 5).is_err());
    }

    #[test]
    fn a_staged_copy_reports_a_short_source() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arena::create(&opts(Some(dir.path()), dir.path())).unwrap();
        let staging = a.staging_file().unwrap();
        std::os::unix::fs::FileExt::write_all_at(staging, b"xyz", 128).unwrap();
        assert_eq!(a.copy_from_staging(128, 3, staging, 128).unwrap(), 3);
        assert_eq!(a.bytes(128, 3).unwrap(), b"xyz");
        a.release_staging(0, 4096);
        let (rw, _) = segments::unlinked_file(dir.path(), "s", 8, false).unwrap();
        rw.set_len(2).unwrap();
        assert_eq!(a.copy_from_staging(256, 8, &rw, 0).unwrap(), 2, "short source is reported");
    }
}
