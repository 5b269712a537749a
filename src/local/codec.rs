//! The local protocol codec: frame headers, FlatBuffers verification, and conversion
//! between the wire tables and the domain [`LocalMessage`]. Pure; used by the raylet's
//! connection tasks and by the `raylet::client` library alike.
//!
//! Frame: `u64 cookie | u64 type | u64 length | payload` (little-endian). The payload is one
//! verified `Envelope`; its union discriminant must equal `type`.

pub use super::msg::*;

use crate::wire::local as fb;

#[path = "codec_decode.rs"]
mod decode;
#[path = "codec_encode.rs"]
mod encode;

pub use decode::decode_message;
pub use encode::encode;

/// Ray's cookie, "RAY" in the high bytes.
pub const COOKIE: u64 = 0x5241_5900_0000_0000;
/// Header size.
pub const HEADER_LEN: usize = 24;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Not our cookie.
    #[error("wrong cookie {0:#018x}")]
    BadCookie(u64),
    /// Not a message type of this schema.
    #[error("unknown message type {0}")]
    UnknownType(u64),
    /// Longer than the configured cap.
    #[error("payload length {len} exceeds the cap of {max}")]
    TooLong {
        /// Announced length.
        len: u64,
        /// Cap.
        max: u64,
    },
    /// The FlatBuffers verifier refused the payload.
    #[error("payload failed verification: {0}")]
    Invalid(String),
    /// The header's type and the payload's union disagree.
    #[error("header says type {header} but the payload holds {payload}")]
    TypeMismatch {
        /// Type in the header.
        header: u64,
        /// Union type inside.
        payload: u64,
    },
    /// A required field is missing.
    #[error("{0} is missing")]
    Missing(&'static str),
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalHeader {
    /// Message type (the union discriminant).
    pub msg_type: u64,
    /// Payload length.
    pub len: u64,
}

/// Validates a header.
pub fn decode_header(b: &[u8; HEADER_LEN], max_len: u64) -> Result<LocalHeader, CodecError> {
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let (cookie, msg_type, len) = (word(0), word(8), word(16));
    if cookie != COOKIE {
        return Err(CodecError::BadCookie(cookie));
    }
    if msg_type == 0 || msg_type > fb::Message::ENUM_MAX as u64 {
        return Err(CodecError::UnknownType(msg_type));
    }
    if len > max_len {
        return Err(CodecError::TooLong { len, max: max_len });
    }
    Ok(LocalHeader { msg_type, len })
}

/// Prefixes `payload` with a header of type `msg_type`.
pub fn frame(msg_type: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&COOKIE.to_le_bytes());
    out.extend_from_slice(&msg_type.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{JobId, NodeId, ObjectId, WorkerId};
    use proptest::prelude::*;

    fn round_trip(m: LocalMessage) {
        let f = encode(&m);
        let h = decode_header(f[..HEADER_LEN].try_into().unwrap(), 1 << 20).unwrap();
        assert_eq!(h.len as usize, f.len() - HEADER_LEN);
        assert_eq!(decode_message(h.msg_type, &f[HEADER_LEN..]).unwrap(), m);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(LocalMessage::Register(Register {
            kind: ClientKind::Driver,
            worker_id: WorkerId([7; 28]),
            pid: 42,
            startup_token: -1,
            job_id: JobId([1, 2, 3, 4]),
            ip_address: "127.0.0.1".into(),
        }));
        round_trip(LocalMessage::RegisterReply(RegisterReply {
            success: false,
            failure_reason: "nope".into(),
            node_id: NodeId([3; 28]),
            port: 5,
            shard: 1,
            num_shards: 2,
            shard_sockets: vec!["/a".into(), "/b".into()],
        }));
        let id = ObjectId([9; 28]);
        let spec = ObjectSpec { id, found: true, segment: 0, offset: 4096, data_size: 10, metadata_size: 2 };
        round_trip(LocalMessage::Attach { worker_id: WorkerId([1; 28]) });
        round_trip(LocalMessage::AttachReply { success: true, failure_reason: String::new(), shard: 1 });
        round_trip(LocalMessage::Create { id, data_size: 1 << 40, metadata_size: 3, primary: false, inline: None });
        round_trip(LocalMessage::Create {
            id,
            data_size: 2,
            metadata_size: 1,
            primary: true,
            inline: Some(vec![1, 2, 3]),
        });
        round_trip(LocalMessage::CreateReply {
            error: StoreError::ObjectStoreFull,
            message: "full".into(),
            spec,
            mmap_size: 7,
        });
        round_trip(LocalMessage::Seal { id });
        round_trip(LocalMessage::SealReply { error: StoreError::Ok, message: String::new() });
        round_trip(LocalMessage::Abort { id });
        round_trip(LocalMessage::AbortReply { error: StoreError::ObjectSealed, message: "x".into() });
        round_trip(LocalMessage::Release { ids: vec![id, id] });
        round_trip(LocalMessage::Delete { ids: vec![id], local_only: true });
        round_trip(LocalMessage::Delete { ids: vec![id, id], local_only: false });
        round_trip(LocalMessage::DeleteReply {
            errors: vec![StoreError::ObjectInUse, StoreError::Ok],
            peer_failures: vec![],
        });
        round_trip(LocalMessage::DeleteReply { errors: vec![], peer_failures: vec!["node x: refused".into()] });
        round_trip(LocalMessage::Contains { id });
        round_trip(LocalMessage::ContainsReply { has_object: true });
        round_trip(LocalMessage::Get { ids: vec![id], timeout_ms: -1 });
        round_trip(LocalMessage::GetReply {
            objects: vec![spec, ObjectSpec::default()],
            mmap_size: 1 << 30,
            errors: vec![],
        });
        round_trip(LocalMessage::GetReply {
            objects: vec![spec, ObjectSpec::default()],
            mmap_size: 1 << 30,
            errors: vec![String::new(), "too big".into()],
        });
        round_trip(LocalMessage::Wait { ids: vec![id], num_required: 1, timeout_ms: 5 });
        round_trip(LocalMessage::WaitReply { ready: vec![id], remaining: vec![] });
        round_trip(LocalMessage::AnnounceWorkerPort { port: 1234 });
        round_trip(LocalMessage::AnnounceWorkerPortReply { success: true, failure_reason: String::new() });
        round_trip(LocalMessage::Disconnect { kind: DisconnectKind::UserError, detail: "x".into() });
        round_trip(LocalMessage::DisconnectReply);
    }

    #[test]
    fn bad_headers_are_refused() {
        let mut f = encode(&LocalMessage::DisconnectReply);
        let h: [u8; HEADER_LEN] = f[..HEADER_LEN].try_into().unwrap();
        assert!(decode_header(&h, 3).is_err(), "length over the cap");
        f[0] ^= 1;
        assert!(matches!(decode_header(f[..HEADER_LEN].try_into().unwrap(), 1 << 20), Err(CodecError::BadCookie(_))));
        let unknown = frame(200, &[]);
        assert!(matches!(
            decode_header(unknown[..HEADER_LEN].try_into().unwrap(), 1 << 20),
            Err(CodecError::UnknownType(200))
        ));
        let huge = frame(1, &[]);
        let mut h: [u8; HEADER_LEN] = huge[..HEADER_LEN].try_into().unwrap();
        h[16..24].copy_from_slice(&(1u64 << 63).to_le_bytes());
        assert!(matches!(decode_header(&h, 64 << 20), Err(CodecError::TooLong { .. })));
    }

    #[test]
    fn header_type_must_match_the_union() {
        let f = encode(&LocalMessage::AnnounceWorkerPort { port: 1 });
        assert!(matches!(decode_message(5, &f[HEADER_LEN..]), Err(CodecError::TypeMismatch { .. })));
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(t in 0u64..10, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_message(t, &bytes);
        }

        #[test]
        fn arbitrary_headers_never_panic(b in proptest::array::uniform24(any::<u8>())) {
            let _ = decode_header(&b, 1 << 20);
        }
    }
}
