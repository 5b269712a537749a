//! Target `rpc_frames`: the RPC frame reader of every TCP connection
//! ([`FrameReader`] over its [`ReadAhead`](crate::rpc::readahead::ReadAhead) buffer),
//! checked against the pure [`FrameDecoder`] of the blocking transport.
//!
//! The read-ahead buffer alone is also driven as the local protocol's connection task
//! drives it, with its `closed()` watch polled between reads.
//!
//! Input: byte 0 picks the read sizes the fake socket hands out (one byte at a time up to
//! everything at once, including sizes around the read-ahead's direct-read threshold);
//! byte 1 picks whether trailers are read or discarded, and the read sizes of the plain
//! read-ahead pass; the rest is the byte stream a peer sent.
//!
//! Invariants:
//! - neither reader panics, whatever the bytes and however they are split;
//! - both see the same frames (header, payload, trailer and its CRC verdict) in the same
//!   order, and stop for the same reason: a clean end between frames, the same
//!   [`FrameError`], or a stream cut inside a frame;
//! - a header that decodes re-encodes to the same 32 bytes;
//! - the read-ahead returns the stream's bytes in order whatever the read sizes and the
//!   `closed()` watches between them, ends cleanly only at the end of the stream, and
//!   reports a read cut by the end as `UnexpectedEof`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::future::{block_on, poll_once};
use futures_lite::AsyncRead;

use crate::rpc::conn::{FrameReader, ReadError};
use crate::rpc::frame::{Frame, FrameDecoder, FrameError, FrameHeader, FrameLimits, HEADER_LEN};
use crate::rpc::readahead::{ReadAhead, READ_AHEAD};

/// Caps small enough that a fuzz input can carry a frame at the cap, large enough that
/// payloads and trailers take the read-ahead's direct path (half the buffer or more).
const LIMITS: FrameLimits =
    FrameLimits { max_payload: 3 * READ_AHEAD as u32 / 2, max_trailer: 3 * READ_AHEAD as u32 / 2 };

/// Read sizes a fake socket cycles through, picked by byte 0.
const STEPS: [&[usize]; 8] = [
    &[usize::MAX],
    &[1],
    &[7, 1, 32],
    &[HEADER_LEN - 1, 3],
    &[READ_AHEAD / 2 - 1, 5],
    &[READ_AHEAD / 2, READ_AHEAD + 1],
    &[100, READ_AHEAD - 3, 2],
    &[13, 4096],
];

/// Reads no smaller than a 256th of the stream: tiny reads over a long stream would only
/// make the target slow, and short streams still get every read size.
fn floor(stream: &[u8]) -> usize {
    stream.len() / 256
}

/// A socket that hands out `data` in reads of the given sizes (cycled), then ends.
struct Socket {
    data: Vec<u8>,
    pos: usize,
    steps: &'static [usize],
    turn: usize,
    floor: usize,
}

impl Socket {
    fn new(data: &[u8], steps: &'static [usize]) -> Self {
        Self { data: data.to_vec(), pos: 0, steps, turn: 0, floor: floor(data) }
    }

    fn next_len(&mut self, want: usize) -> usize {
        let step = self.steps[self.turn % self.steps.len()].max(self.floor);
        self.turn += 1;
        step.min(want).min(self.data.len() - self.pos)
    }
}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = self.next_len(buf.len());
        let pos = self.pos;
        buf[..n].copy_from_slice(&self.data[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(n))
    }
}

/// How a reader stopped.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Clean end between frames.
    Clean,
    /// A header was refused.
    Refused(FrameError),
    /// The stream ended inside a frame.
    Cut,
}

/// A frame as both readers can report it (`trailer` is `None` when it was discarded).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    header: FrameHeader,
    payload: Vec<u8>,
    trailer: Option<(Vec<u8>, bool)>,
}

/// The target body.
pub fn run(data: &[u8]) {
    let (Some(&split), Some(&mode)) = (data.first(), data.get(1)) else { return };
    let stream = &data[2..];
    let steps = STEPS[usize::from(split) % STEPS.len()];
    let keep_trailers = mode & 1 != 0;
    let (via_reader, reader_end) = block_on(read_all(stream, steps, keep_trailers));
    let (via_decoder, decoder_end) = decode_all(stream, steps, keep_trailers);
    assert_eq!(via_reader, via_decoder, "the frame reader and the decoder disagree on the frames");
    assert_eq!(reader_end, decoder_end, "the frame reader and the decoder stop differently");
    for f in &via_reader {
        let mut b = [0u8; HEADER_LEN];
        f.header.encode(&mut b);
        assert_eq!(FrameHeader::decode(&b, &LIMITS), Ok(f.header), "header does not round-trip");
    }
    let reads = STEPS[usize::from(mode >> 1) % STEPS.len()];
    block_on(read_ahead_pass(stream, steps, reads));
}

/// Reads `stream` through a bare read-ahead in `reads` sizes, watching for the end before
/// each read as the local connection task does.
async fn read_ahead_pass(stream: &[u8], steps: &'static [usize], reads: &'static [usize]) {
    let mut r = ReadAhead::new(Socket::new(stream, steps));
    let mut got = 0;
    let mut buf = vec![0u8; 4 * READ_AHEAD];
    for turn in 0.. {
        // Resolves once the socket is drained into the buffer, or pends when it is full:
        // either way the reads after it must see the same bytes.
        let _ = poll_once(r.closed()).await;
        let want = reads[turn % reads.len()].max(floor(stream)).min(buf.len());
        let buf = &mut buf[..want];
        match r.read_exact_or_eof(buf).await {
            Ok(true) => {
                assert_eq!(*buf, stream[got..got + want], "read-ahead returned other bytes");
                got += want;
            }
            Ok(false) => {
                assert_eq!(got, stream.len(), "clean end before the end of the stream");
                return;
            }
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                assert!(stream.len() - got < want && got < stream.len(), "cut read with the bytes there");
                return;
            }
        }
    }
}

async fn read_all(stream: &[u8], steps: &'static [usize], keep: bool) -> (Vec<Seen>, End) {
    let mut r = FrameReader::new(Socket::new(stream, steps), LIMITS);
    let mut out = Vec::new();
    loop {
        let header = match r.read_header().await {
            Ok(h) => h,
            Err(ReadError::Eof) => return (out, End::Clean),
            Err(ReadError::Frame(e)) => return (out, End::Refused(e)),
            Err(ReadError::Io(_)) => return (out, End::Cut),
        };
        let Ok(payload) = r.read_payload(&header).await else { return (out, End::Cut) };
        let trailer = if keep {
            let mut t = vec![0u8; header.trailer_len as usize];
            match r.read_trailer(&header, &mut t).await {
                Ok(ok) => Some((t, ok)),
                Err(_) => return (out, End::Cut),
            }
        } else {
            if r.discard_trailer(header.trailer_len as usize).await.is_err() {
                return (out, End::Cut);
            }
            None
        };
        out.push(Seen { header, payload, trailer });
    }
}

fn decode_all(stream: &[u8], steps: &'static [usize], keep: bool) -> (Vec<Seen>, End) {
    let mut d = FrameDecoder::new(LIMITS);
    let mut sock = Socket::new(stream, steps);
    let mut out = Vec::new();
    loop {
        let n = sock.next_len(usize::MAX);
        d.feed(&sock.data[sock.pos..sock.pos + n]);
        sock.pos += n;
        loop {
            match d.next_frame() {
                Ok(Some(Frame { header, payload, trailer, trailer_crc_ok })) => {
                    let trailer = keep.then_some((trailer, trailer_crc_ok));
                    out.push(Seen { header, payload, trailer });
                }
                Ok(None) => break,
                Err(e) => return (out, End::Refused(e)),
            }
        }
        if sock.pos == sock.data.len() {
            // Everything is fed: whatever the decoder still holds is a cut frame.
            let consumed: usize = out.iter().map(|s| HEADER_LEN + s.payload.len() + trailer_wire_len(&s.header)).sum();
            return (out, if consumed == stream.len() { End::Clean } else { End::Cut });
        }
    }
}

fn trailer_wire_len(h: &FrameHeader) -> usize {
    match h.trailer_len as usize {
        0 => 0,
        n => n + crate::rpc::frame::TRAILER_CRC_LEN,
    }
}
