//! Blocking framed IO over a std `TcpStream` for the client library and the default
//! worker: read one frame with two `read_exact`s (header, then payload), write one frame
//! with one `write_all`. Lower latency than the buffered decoder of `rpc::blocking` for
//! the one-request-one-reply pattern of leases and tasks.

use crate::rpc::frame::{encode_frame, FrameError, FrameHeader, FrameKind, FrameLimits, HEADER_LEN, PROTOCOL_VERSION};
use crate::wire::rpc::{Hello, HelloAck};
use prost::Message;
use std::io::{self, Read, Write};
use std::net::TcpStream;

/// A frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    /// The socket failed or closed.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The header was invalid.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Reads one frame; its trailer (if any) is read and dropped.
pub fn read_frame(s: &mut TcpStream, limits: &FrameLimits) -> Result<(FrameHeader, Vec<u8>), FrameIoError> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h)?;
    let header = FrameHeader::decode(&h, limits)?;
    let mut payload = vec![0u8; header.payload_len as usize];
    s.read_exact(&mut payload)?;
    if header.trailer_len > 0 {
        io::copy(&mut Read::by_ref(s).take(u64::from(header.trailer_len)), &mut io::sink())?;
    }
    Ok((header, payload))
}

/// Writes one frame without a trailer.
pub fn write_frame(s: &mut TcpStream, header: FrameHeader, payload: &[u8]) -> io::Result<()> {
    s.write_all(&encode_frame(header, payload, 0))
}

/// Server side of the hello: true when the peer presented `token` (an ack is sent either
/// way; a refusal carries the reason).
pub fn accept_hello(s: &mut TcpStream, token: &str, limits: &FrameLimits) -> Result<bool, FrameIoError> {
    let (h, p) = read_frame(s, limits)?;
    let hello = (h.kind == FrameKind::Hello).then(|| Hello::decode(p.as_slice()).ok()).flatten();
    let (ok, message) = match hello {
        None => (false, "expected a hello".to_string()),
        Some(h) if h.protocol_version != PROTOCOL_VERSION => {
            (false, format!("protocol version {} not supported", h.protocol_version))
        }
        Some(h) if !constant_time_eq(h.auth_token.as_bytes(), token.as_bytes()) => {
            (false, "wrong auth token".to_string())
        }
        Some(_) => (true, String::new()),
    };
    let ack = HelloAck { protocol_version: PROTOCOL_VERSION, ok, message };
    write_frame(s, FrameHeader::control(FrameKind::HelloAck), &ack.encode_to_vec())?;
    Ok(ok)
}

/// Client side of the hello.
pub fn send_hello(s: &mut TcpStream, token: &str, limits: &FrameLimits) -> Result<Result<(), String>, FrameIoError> {
    let hello = Hello { protocol_version: PROTOCOL_VERSION, auth_token: token.to_string() };
    write_frame(s, FrameHeader::control(FrameKind::Hello), &hello.encode_to_vec())?;
    let (h, p) = read_frame(s, limits)?;
    if h.kind != FrameKind::HelloAck {
        return Ok(Err(format!("expected a hello ack, got {:?}", h.kind)));
    }
    match HelloAck::decode(p.as_slice()) {
        Ok(a) if a.ok => Ok(Ok(())),
        Ok(a) => Ok(Err(a.message)),
        Err(e) => Ok(Err(format!("undecodable hello ack: {e}"))),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
