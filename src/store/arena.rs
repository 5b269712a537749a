//! The raylet's shared-memory arena: one file in the plasma directory (default /dev/shm),
//! unlinked at once, sized to the store capacity and mapped shared. Every shard of the
//! process uses this one mapping; clients map the same file through the descriptor they
//! receive by `SCM_RIGHTS`.
//!
//! Who may touch which bytes is a protocol rule, not a type rule: an object's range belongs
//! to its creator until sealed (a client, or the raylet when it receives or restores the
//! object), and is read-only afterwards. The raylet only reads sealed ranges (push, spill)
//! and only writes unsealed ranges it created (chunk receive, restore). All `unsafe` for
//! the raylet's view of the mapping is here.

use memmap2::{Advice, MmapRaw};
use std::fs::File;
use std::os::unix::io::{AsRawFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// Why the arena could not be set up or a range is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    /// Creating, sizing or mapping the file failed.
    #[error("shared memory in {dir}: {err}")]
    Setup {
        /// The plasma directory.
        dir: String,
        /// The OS error.
        err: std::io::Error,
    },
    /// A range falls outside the arena.
    #[error("range [{offset}, +{len}) is outside the arena of {size} bytes")]
    OutOfBounds {
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
        /// Arena size.
        size: u64,
    },
}

/// The mapped store memory.
#[derive(Debug)]
pub struct Arena {
    file: File,
    map: MmapRaw,
    len: u64,
}

impl Arena {
    /// Creates an unlinked file of `len` bytes in `dir` and maps it.
    pub fn create(dir: &Path, len: u64) -> Result<Self, ArenaError> {
        let err = |err| ArenaError::Setup { dir: dir.display().to_string(), err };
        let mut rnd = [0u8; 8];
        crate::ids::os_random(&mut rnd);
        let path = dir.join(format!("raylet-plasma-{}-{}", std::process::id(), crate::ids::hex_encode(&rnd)));
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(err)?;
        // Unlinked at once: the memory lives as long as a mapping or descriptor does, and
        // nothing is left behind if the process dies.
        std::fs::remove_file(&path).map_err(err)?;
        file.set_len(len).map_err(err)?;
        let map = MmapRaw::map_raw(&file).map_err(err)?;
        Ok(Self { file, map, len })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the arena is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The descriptor clients map.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), ArenaError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(ArenaError::OutOfBounds { offset, len, size: self.len }),
        }
    }

    /// Touches every page of `[offset, offset + len)` so later writes never fault
    /// (`MADV_POPULATE_WRITE`; falls back to writing one byte per page). Blocking: run it
    /// on a blocking thread.
    pub fn prefault(&self, offset: u64, len: u64) -> Result<Duration, ArenaError> {
        self.check(offset, len)?;
        let started = Instant::now();
        if self.map.advise_range(Advice::PopulateWrite, offset as usize, len as usize).is_err() {
            let page = 4096u64;
            let mut at = offset;
            while at < offset + len {
                // SAFETY: `at` is inside the mapping (checked above). The range is not yet
                // handed to anyone (start-up), so writing a zero byte races with no reader.
                unsafe { std::ptr::write_volatile(self.map.as_mut_ptr().add(at as usize), 0) };
                at += page;
            }
        }
        Ok(started.elapsed())
    }

    /// Read access to a sealed object's bytes.
    pub fn bytes(&self, offset: u64, len: u64) -> Result<&[u8], ArenaError> {
        self.check(offset, len)?;
        // SAFETY: in bounds (checked). Sealed ranges are immutable by protocol (module doc);
        // `u8` has no invalid values, so even a misbehaving client writing into a sealed
        // object can change what we read but not make the read unsound for us.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset as usize), len as usize) })
    }

    /// Write access to an unsealed range the raylet itself is filling (chunk receive,
    /// restore). The caller owns the range until it seals it.
    #[allow(clippy::mut_from_ref)]
    pub fn bytes_mut(&self, offset: u64, len: u64) -> Result<&mut [u8], ArenaError> {
        self.check(offset, len)?;
        // SAFETY: in bounds (checked). The object table hands an unsealed range to exactly
        // one writer (the raylet task receiving or restoring it); no client holds it and no
        // other task writes it until it is sealed or aborted, so this `&mut` is unique.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset as usize), len as usize) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_is_unlinked_sized_and_bounds_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arena::create(dir.path(), 1 << 20).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "file is unlinked");
        assert_eq!(a.len(), 1 << 20);
        a.prefault(0, 1 << 20).unwrap();
        a.bytes_mut(4096, 3).unwrap().copy_from_slice(b"abc");
        assert_eq!(a.bytes(4096, 3).unwrap(), b"abc");
        assert!(a.bytes((1 << 20) - 1, 2).is_err());
        assert!(a.bytes(u64::MAX, 2).is_err());
    }
}
