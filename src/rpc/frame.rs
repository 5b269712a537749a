//! RPC framing: a fixed 32-byte header, a prost payload, and an optional raw trailer.
//!
//! Pure code: no IO. Both transports (glommio in `rpc::conn`, std in `rpc::blocking`) and
//! the fuzz/property tests use it. Layout, little-endian:
//!
//! ```text
//! 0  u32 magic "RYL1"      4  u32 payload_len     8  u32 trailer_len
//! 12 u8  kind              13 u8  flags           14 u16 service
//! 16 u16 method            18 u16 reserved (0)    20 u32 timeout_ms
//! 24 u64 call_id
//! ```
//!
//! The trailer carries raw bytes after the payload (object chunks): the receiver reads it
//! straight into its destination buffer, so it never passes through a protobuf `bytes`.
//! A non-empty trailer is followed by its CRC32C ([`TRAILER_CRC_LEN`] bytes).
//! Every length is capped by [`FrameLimits`]; anything malformed is a [`FrameError`].

use thiserror::Error;

/// Header size in bytes.
pub const HEADER_LEN: usize = 32;

/// Bytes after every non-empty trailer: the trailer's CRC32C, little-endian. The sender
/// computes it block by block as it writes each block (while the block is in cache), the
/// receiver as each block lands, so checking a multi-megabyte chunk costs no extra pass
/// over its memory on either side.
pub const TRAILER_CRC_LEN: usize = 4;
/// First four bytes of every frame.
pub const MAGIC: u32 = u32::from_le_bytes(*b"RYL1");
/// Protocol version carried in the hello.
pub const PROTOCOL_VERSION: u32 = 2;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Connection hello (client → server), payload `Hello`.
    Hello = 1,
    /// Hello answer (server → client), payload `HelloAck`.
    HelloAck = 2,
    /// A call; the reply carries the same call id.
    Request = 3,
    /// A successful reply.
    Response = 4,
    /// A failed reply, payload `RpcStatus`.
    Error = 5,
}

impl FrameKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Hello,
            2 => Self::HelloAck,
            3 => Self::Request,
            4 => Self::Response,
            5 => Self::Error,
            _ => return None,
        })
    }
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame is.
    pub kind: FrameKind,
    /// Reserved for future use; must be 0.
    pub flags: u8,
    /// Service id (see the generated `SERVICE_ID` constants).
    pub service: u16,
    /// Method id within the service.
    pub method: u16,
    /// Caller's deadline relative to sending, in ms; 0 = none.
    pub timeout_ms: u32,
    /// Matches replies to requests.
    pub call_id: u64,
    /// Length of the prost payload.
    pub payload_len: u32,
    /// Length of the raw trailer after the payload.
    pub trailer_len: u32,
}

/// Caps applied to every incoming header.
#[derive(Debug, Clone, Copy)]
pub struct FrameLimits {
    /// Largest accepted prost payload.
    pub max_payload: u32,
    /// Largest accepted raw trailer (a chunk).
    pub max_trailer: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self { max_payload: 64 << 20, max_trailer: 64 << 20 }
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The magic number was wrong: not our protocol.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    /// Non-zero reserved bits.
    #[error("reserved header fields are not zero")]
    Reserved,
    /// Payload over the cap.
    #[error("payload of {len} bytes exceeds the cap of {max}")]
    PayloadTooLarge {
        /// Announced length.
        len: u32,
        /// Cap.
        max: u32,
    },
    /// Trailer over the cap, or on a kind that cannot carry one.
    #[error("trailer of {len} bytes not allowed (cap {max})")]
    TrailerNotAllowed {
        /// Announced length.
        len: u32,
        /// Cap for this kind.
        max: u32,
    },
}

impl FrameHeader {
    /// A request header.
    pub fn request(service: u16, method: u16, call_id: u64, timeout_ms: u32) -> Self {
        Self {
            kind: FrameKind::Request,
            flags: 0,
            service,
            method,
            timeout_ms,
            call_id,
            payload_len: 0,
            trailer_len: 0,
        }
    }

    /// A header of `kind` answering `req` (same service, method and call id).
    pub fn reply_to(req: &Self, kind: FrameKind) -> Self {
        Self { kind, timeout_ms: 0, payload_len: 0, trailer_len: 0, ..*req }
    }

    /// A hello or hello-ack header.
    pub fn control(kind: FrameKind) -> Self {
        Self { kind, flags: 0, service: 0, method: 0, timeout_ms: 0, call_id: 0, payload_len: 0, trailer_len: 0 }
    }

    /// Writes the header into `out`.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&self.payload_len.to_le_bytes());
        out[8..12].copy_from_slice(&self.trailer_len.to_le_bytes());
        out[12] = self.kind as u8;
        out[13] = self.flags;
        out[14..16].copy_from_slice(&self.service.to_le_bytes());
        out[16..18].copy_from_slice(&self.method.to_le_bytes());
        out[18..20].copy_from_slice(&0u16.to_le_bytes());
        out[20..24].copy_from_slice(&self.timeout_ms.to_le_bytes());
        out[24..32].copy_from_slice(&self.call_id.to_le_bytes());
    }

    /// Parses and validates a header against `limits`.
    pub fn decode(b: &[u8; HEADER_LEN], limits: &FrameLimits) -> Result<Self, FrameError> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let kind = FrameKind::from_u8(b[12]).ok_or(FrameError::BadKind(b[12]))?;
        if b[13] != 0 || u16_at(18) != 0 {
            return Err(FrameError::Reserved);
        }
        let payload_len = u32_at(4);
        if payload_len > limits.max_payload {
            return Err(FrameError::PayloadTooLarge { len: payload_len, max: limits.max_payload });
        }
        let trailer_len = u32_at(8);
        let trailer_cap = match kind {
            FrameKind::Request | FrameKind::Response => limits.max_trailer,
            _ => 0,
        };
        if trailer_len > trailer_cap {
            return Err(FrameError::TrailerNotAllowed { len: trailer_len, max: trailer_cap });
        }
        let mut call = [0u8; 8];
        call.copy_from_slice(&b[24..32]);
        Ok(Self {
            kind,
            flags: 0,
            service: u16_at(14),
            method: u16_at(16),
            timeout_ms: u32_at(20),
            call_id: u64::from_le_bytes(call),
            payload_len,
            trailer_len,
        })
    }
}

/// Header plus payload as one buffer, ready to write (the trailer, if any, is written
/// separately from wherever it lives).
pub fn encode_frame(mut header: FrameHeader, payload: &[u8], trailer_len: u32) -> Vec<u8> {
    header.payload_len = payload.len() as u32;
    header.trailer_len = trailer_len;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    let mut h = [0u8; HEADER_LEN];
    header.encode(&mut h);
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out
}

/// A complete frame as decoded from a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: FrameHeader,
    /// The prost payload.
    pub payload: Vec<u8>,
    /// The raw trailer.
    pub trailer: Vec<u8>,
    /// Whether the trailer's CRC32C footer matched it (true when there is no trailer).
    pub trailer_crc_ok: bool,
}

/// Incremental decoder over an arbitrary byte stream (used by the blocking transport and
/// by the property tests). Never panics; after an error it stays failed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    limits: FrameLimits,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder applying `limits`.
    pub fn new(limits: FrameLimits) -> Self {
        Self { buf: Vec::new(), limits, failed: None }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&self.buf[..HEADER_LEN]);
        let header = match FrameHeader::decode(&h, &self.limits) {
            Ok(h) => h,
            Err(e) => {
                self.failed = Some(e.clone());
                return Err(e);
            }
        };
        let p = header.payload_len as usize;
        let t = header.trailer_len as usize;
        let footer = if t > 0 { TRAILER_CRC_LEN } else { 0 };
        if self.buf.len() < HEADER_LEN + p + t + footer {
            return Ok(None);
        }
        let payload = self.buf[HEADER_LEN..HEADER_LEN + p].to_vec();
        let trailer = self.buf[HEADER_LEN + p..HEADER_LEN + p + t].to_vec();
        let trailer_crc_ok = footer == 0 || {
            let f = &self.buf[HEADER_LEN + p + t..HEADER_LEN + p + t + footer];
            u32::from_le_bytes([f[0], f[1], f[2], f[3]]) == crate::checksum::crc32c(&trailer)
        };
        self.buf.drain(..HEADER_LEN + p + t + footer);
        Ok(Some(Frame { header, payload, trailer, trailer_crc_ok }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trips() {
        let mut h = FrameHeader::request(3, 7, 0xdead_beef_0102, 250);
        h.payload_len = 10;
        h.trailer_len = 5;
        let mut b = [0u8; HEADER_LEN];
        h.encode(&mut b);
        assert_eq!(FrameHeader::decode(&b, &FrameLimits::default()).unwrap(), h);
    }

    #[test]
    fn oversized_lengths_are_refused() {
        let limits = FrameLimits { max_payload: 100, max_trailer: 10 };
        let mut h = FrameHeader::request(1, 1, 1, 0);
        h.payload_len = 101;
        let mut b = [0u8; HEADER_LEN];
        h.encode(&mut b);
        assert!(matches!(FrameHeader::decode(&b, &limits), Err(FrameError::PayloadTooLarge { .. })));
        h.payload_len = 0;
        h.trailer_len = 11;
        h.encode(&mut b);
        assert!(matches!(FrameHeader::decode(&b, &limits), Err(FrameError::TrailerNotAllowed { .. })));
    }

    #[test]
    fn hello_cannot_carry_a_trailer() {
        let mut h = FrameHeader::control(FrameKind::Hello);
        h.trailer_len = 1;
        let mut b = [0u8; HEADER_LEN];
        h.encode(&mut b);
        assert!(FrameHeader::decode(&b, &FrameLimits::default()).is_err());
    }

    #[test]
    fn decoder_reassembles_split_frames() {
        let a = encode_frame(FrameHeader::request(1, 2, 3, 0), b"hello", 0);
        let mut b = encode_frame(FrameHeader::request(1, 2, 4, 0), b"xy", 3);
        b.extend_from_slice(b"abc");
        b.extend_from_slice(&crate::checksum::crc32c(b"abc").to_le_bytes());
        let mut c = encode_frame(FrameHeader::request(1, 2, 5, 0), b"", 2);
        c.extend_from_slice(b"zz");
        c.extend_from_slice(&[0; TRAILER_CRC_LEN]);
        let all: Vec<u8> = a.iter().chain(b.iter()).chain(c.iter()).copied().collect();
        let mut d = FrameDecoder::new(FrameLimits::default());
        let mut frames = Vec::new();
        for byte in all {
            d.feed(&[byte]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].payload, b"hello");
        assert!(frames[0].trailer_crc_ok, "no trailer, nothing to check");
        assert_eq!((frames[1].trailer.as_slice(), frames[1].trailer_crc_ok), (b"abc".as_slice(), true));
        assert_eq!(frames[1].header.call_id, 4);
        assert_eq!((frames[2].trailer.as_slice(), frames[2].trailer_crc_ok), (b"zz".as_slice(), false));
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..20)) {
            let mut d = FrameDecoder::new(FrameLimits { max_payload: 1 << 16, max_trailer: 1 << 16 });
            for c in chunks {
                d.feed(&c);
                while let Ok(Some(_)) = d.next_frame() {}
            }
        }

        #[test]
        fn header_decode_never_panics(b in proptest::array::uniform32(any::<u8>())) {
            let _ = FrameHeader::decode(&b, &FrameLimits::default());
        }

        #[test]
        fn valid_frames_survive_arbitrary_splits(payload in proptest::collection::vec(any::<u8>(), 0..300), split in 0usize..400) {
            let bytes = encode_frame(FrameHeader::request(9, 9, 42, 1), &payload, 0);
            let split = split.min(bytes.len());
            let mut d = FrameDecoder::new(FrameLimits::default());
            d.feed(&bytes[..split]);
            let first = d.next_frame().unwrap();
            d.feed(&bytes[split..]);
            let f = match first { Some(f) => f, None => d.next_frame().unwrap().unwrap() };
            prop_assert_eq!(f.payload, payload);
        }
    }
}
