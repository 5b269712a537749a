//! A client's view of a store segment: the descriptor received by `SCM_RIGHTS`, mapped
//! shared (read-only when the raylet passed it `O_RDONLY`: a plasma-directory store or a
//! fallback segment, see `store::arena`), and bounds-checked slices into it for object
//! reads (in place, zero-copy) and for writing an object this client created and has not
//! sealed yet.

use memmap2::{MmapOptions, MmapRaw};
use std::os::fd::{AsRawFd, OwnedFd};

/// Why a segment or range is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// Mapping failed.
    #[error("cannot map the store segment: {0}")]
    Map(#[from] std::io::Error),
    /// The segment was passed read-only and a write was asked for.
    #[error("the segment is read-only")]
    ReadOnly,
    /// The raylet named a range outside the segment.
    #[error("range [{offset}, +{len}) is outside the segment of {size} bytes")]
    OutOfBounds {
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
        /// Segment size.
        size: u64,
    },
}

/// One mapped segment.
#[derive(Debug)]
pub struct Segment {
    _fd: OwnedFd,
    map: MmapRaw,
    writable: bool,
    /// (device, inode): which file this is.
    file_id: (u64, u64),
}

fn file_id(fd: &OwnedFd) -> Result<(u64, u64), SegmentError> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(std::io::Error::from)?;
    Ok((st.st_dev, st.st_ino))
}

impl Segment {
    /// Maps the whole of `fd`, read-write or read-only as the descriptor allows.
    pub fn map(fd: OwnedFd) -> Result<Self, SegmentError> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
        let writable = OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE != OFlag::O_RDONLY;
        let map = if writable { MmapRaw::map_raw(&fd)? } else { MmapOptions::new().map_raw_read_only(&fd)? };
        Ok(Self { file_id: file_id(&fd)?, _fd: fd, map, writable })
    }

    /// The descriptor the raylet passed for this segment.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self._fd.as_fd()
    }

    /// Whether `fd` is the file this segment maps (a fallback segment passed again).
    pub fn same_file(&self, fd: &OwnedFd) -> bool {
        file_id(fd).is_ok_and(|id| id == self.file_id)
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), SegmentError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(SegmentError::OutOfBounds { offset, len, size: self.len() }),
        }
    }

    /// A sealed object's bytes, read in place.
    pub fn bytes(&self, offset: u64, len: u64) -> Result<&[u8], SegmentError> {
        self.check(offset, len)?;
        // SAFETY: in bounds (checked above). The raylet names only sealed objects in a Get
        // reply and keeps them allocated while this client holds its reference (until the
        // view is released), so the range stays mapped, allocated and unmodified.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset as usize), len as usize) })
    }

    /// The writable range of an object this client created and has not sealed.
    #[allow(clippy::mut_from_ref)]
    pub fn bytes_mut(&self, offset: u64, len: u64) -> Result<&mut [u8], SegmentError> {
        if !self.writable {
            return Err(SegmentError::ReadOnly);
        }
        self.check(offset, len)?;
        // SAFETY: in bounds (checked above) of a mapping made writable (checked above). The
        // raylet hands an unsealed object's range to its creator alone; the client library hands it to one `ObjectWriter`, which is
        // consumed by seal/abort, so the `&mut` is unique for its lifetime.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset as usize), len as usize) })
    }
}
