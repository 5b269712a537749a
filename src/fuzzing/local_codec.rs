//! Target `local_codec`: the local protocol's header check and payload decoder
//! ([`decode_header`], [`decode_message`]), for every message type, as the raylet's
//! connection task and the client library run them on bytes from the other side.
//!
//! Input: a whole frame (cookie, type, length, payload) when it starts with the cookie;
//! otherwise byte 0 picks the message type (0 up to two past the schema's last) and the
//! rest is the payload, so every type's decoder is reached without a valid header.
//!
//! Invariants:
//! - neither function panics, whatever the bytes;
//! - an accepted header's length is within the cap;
//! - a decoded message re-encodes to a frame whose header passes and whose payload
//!   decodes to the same message (no decoded value the encoder cannot carry).

use crate::local::codec::{decode_header, decode_message, encode, COOKIE, HEADER_LEN};
use crate::wire::local as fb;

/// Frame cap of the fuzzed headers (the raylet's default is 64 MiB; any value will do).
const MAX_LEN: u64 = 1 << 20;

/// The target body.
pub fn run(data: &[u8]) {
    let (msg_type, payload) = match data.get(..HEADER_LEN) {
        Some(h) if h[..8] == COOKIE.to_le_bytes() => {
            let h: &[u8; HEADER_LEN] = h.try_into().expect("sliced to HEADER_LEN");
            let Ok(header) = decode_header(h, MAX_LEN) else { return };
            assert!(header.len <= MAX_LEN, "header over the cap accepted");
            let rest = &data[HEADER_LEN..];
            // The connection reads exactly `len` bytes; a short input is a cut frame.
            let Some(payload) = rest.get(..header.len as usize) else { return };
            (header.msg_type, payload)
        }
        _ => {
            let Some((&t, payload)) = data.split_first() else { return };
            (u64::from(t) % (fb::Message::ENUM_MAX as u64 + 3), payload)
        }
    };
    let Ok(msg) = decode_message(msg_type, payload) else { return };
    let frame = encode(&msg);
    let h: &[u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().expect("encode writes a header");
    let header = decode_header(h, u64::MAX).expect("an encoded header passes");
    assert_eq!(header.msg_type, msg_type, "re-encoded under another type");
    let again = decode_message(header.msg_type, &frame[HEADER_LEN..]).expect("an encoded message decodes");
    assert_eq!(again, msg, "decode(encode(m)) != m");
}
