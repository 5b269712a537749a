//! The local protocol codec: frame headers, FlatBuffers verification, and conversion
//! between the wire tables and the domain [`LocalMessage`]. Pure; used by the raylet's
//! connection tasks and by the `raylet::client` library alike.
//!
//! Frame: `u64 cookie | u64 type | u64 length | payload` (little-endian). The payload is one
//! verified `Envelope`; its union discriminant must equal `type`.

use crate::ids::{JobId, NodeId, WorkerId};
use crate::wire::local as fb;
use flatbuffers::FlatBufferBuilder;

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

/// Kind of client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// A pool worker.
    Worker,
    /// A driver.
    Driver,
}

/// Why a client disconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectKind {
    /// It meant to.
    Intended,
    /// Something broke.
    SystemError,
    /// User code failed.
    UserError,
}

/// A registration request.
#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    /// Worker or driver.
    pub kind: ClientKind,
    /// Its id.
    pub worker_id: WorkerId,
    /// Its pid.
    pub pid: i64,
    /// The token the pool gave a worker it started; -1 for drivers.
    pub startup_token: i64,
    /// Its job.
    pub job_id: JobId,
    /// Its address.
    pub ip_address: String,
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterReply {
    /// Accepted.
    pub success: bool,
    /// Why not.
    pub failure_reason: String,
    /// This node.
    pub node_id: NodeId,
    /// Port to bind the worker's server to (0 = any).
    pub port: i32,
    /// The shard serving the connection.
    pub shard: u16,
}

/// Every local message, both directions.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalMessage {
    /// Client → raylet.
    Register(Register),
    /// Raylet → client.
    RegisterReply(RegisterReply),
    /// Client → raylet: its WorkerService port is open.
    AnnounceWorkerPort {
        /// The port.
        port: i32,
    },
    /// Raylet → client.
    AnnounceWorkerPortReply {
        /// Accepted.
        success: bool,
        /// Why not.
        failure_reason: String,
    },
    /// Client → raylet: graceful goodbye.
    Disconnect {
        /// Why.
        kind: DisconnectKind,
        /// Details.
        detail: String,
    },
    /// Raylet → client: goodbye acknowledged; the raylet closes next.
    DisconnectReply,
}

fn ids<const N: usize>(a: flatbuffers::Array<'_, u8, N>) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in a.iter().enumerate() {
        out[i] = b;
    }
    out
}

/// Verifies and converts one payload of type `msg_type`.
pub fn decode_message(msg_type: u64, payload: &[u8]) -> Result<LocalMessage, CodecError> {
    let opts = flatbuffers::VerifierOptions { max_depth: 16, max_tables: 10_000, ..Default::default() };
    let env = fb::root_as_envelope_with_opts(&opts, payload).map_err(|e| CodecError::Invalid(e.to_string()))?;
    let inner = env.message_type().0 as u64;
    if inner != msg_type {
        return Err(CodecError::TypeMismatch { header: msg_type, payload: inner });
    }
    let missing = CodecError::Missing;
    Ok(match env.message_type() {
        fb::Message::RegisterClientRequest => {
            let r = env.message_as_register_client_request().ok_or(missing("register"))?;
            LocalMessage::Register(Register {
                kind: if r.worker_type() == fb::WorkerType::Driver { ClientKind::Driver } else { ClientKind::Worker },
                worker_id: WorkerId(ids(r.worker_id().ok_or(missing("worker_id"))?.b())),
                pid: r.worker_pid(),
                startup_token: r.startup_token(),
                job_id: r.job_id().map(|j| JobId(ids(j.b()))).unwrap_or(JobId::NIL),
                ip_address: r.ip_address().unwrap_or("").to_string(),
            })
        }
        fb::Message::RegisterClientReply => {
            let r = env.message_as_register_client_reply().ok_or(missing("register reply"))?;
            LocalMessage::RegisterReply(RegisterReply {
                success: r.success(),
                failure_reason: r.failure_reason().unwrap_or("").to_string(),
                node_id: r.node_id().map(|n| NodeId(ids(n.b()))).unwrap_or(NodeId::NIL),
                port: r.port(),
                shard: r.shard(),
            })
        }
        fb::Message::AnnounceWorkerPort => {
            let r = env.message_as_announce_worker_port().ok_or(missing("announce"))?;
            LocalMessage::AnnounceWorkerPort { port: r.port() }
        }
        fb::Message::AnnounceWorkerPortReply => {
            let r = env.message_as_announce_worker_port_reply().ok_or(missing("announce reply"))?;
            LocalMessage::AnnounceWorkerPortReply {
                success: r.success(),
                failure_reason: r.failure_reason().unwrap_or("").to_string(),
            }
        }
        fb::Message::DisconnectClientRequest => {
            let r = env.message_as_disconnect_client_request().ok_or(missing("disconnect"))?;
            LocalMessage::Disconnect {
                kind: match r.disconnect_type() {
                    fb::DisconnectType::SystemError => DisconnectKind::SystemError,
                    fb::DisconnectType::UserError => DisconnectKind::UserError,
                    _ => DisconnectKind::Intended,
                },
                detail: r.disconnect_detail().unwrap_or("").to_string(),
            }
        }
        fb::Message::DisconnectClientReply => LocalMessage::DisconnectReply,
        other => return Err(CodecError::UnknownType(other.0 as u64)),
    })
}

/// Encodes `msg` as a complete frame (header included).
pub fn encode(msg: &LocalMessage) -> Vec<u8> {
    let mut b = FlatBufferBuilder::with_capacity(128);
    let (kind, body) = match msg {
        LocalMessage::Register(r) => {
            let ip = b.create_string(&r.ip_address);
            let wid = fb::WorkerId::new(&r.worker_id.0);
            let jid = fb::JobId::new(&r.job_id.0);
            let t = fb::RegisterClientRequest::create(
                &mut b,
                &fb::RegisterClientRequestArgs {
                    worker_type: match r.kind {
                        ClientKind::Driver => fb::WorkerType::Driver,
                        ClientKind::Worker => fb::WorkerType::Worker,
                    },
                    worker_id: Some(&wid),
                    worker_pid: r.pid,
                    startup_token: r.startup_token,
                    language: fb::Language::Rust,
                    job_id: Some(&jid),
                    ip_address: Some(ip),
                },
            );
            (fb::Message::RegisterClientRequest, t.as_union_value())
        }
        LocalMessage::RegisterReply(r) => {
            let reason = b.create_string(&r.failure_reason);
            let nid = fb::NodeId::new(&r.node_id.0);
            let t = fb::RegisterClientReply::create(
                &mut b,
                &fb::RegisterClientReplyArgs {
                    success: r.success,
                    failure_reason: Some(reason),
                    node_id: Some(&nid),
                    port: r.port,
                    shard: r.shard,
                },
            );
            (fb::Message::RegisterClientReply, t.as_union_value())
        }
        LocalMessage::AnnounceWorkerPort { port } => {
            let t = fb::AnnounceWorkerPort::create(&mut b, &fb::AnnounceWorkerPortArgs { port: *port });
            (fb::Message::AnnounceWorkerPort, t.as_union_value())
        }
        LocalMessage::AnnounceWorkerPortReply { success, failure_reason } => {
            let reason = b.create_string(failure_reason);
            let t = fb::AnnounceWorkerPortReply::create(
                &mut b,
                &fb::AnnounceWorkerPortReplyArgs { success: *success, failure_reason: Some(reason) },
            );
            (fb::Message::AnnounceWorkerPortReply, t.as_union_value())
        }
        LocalMessage::Disconnect { kind, detail } => {
            let d = b.create_string(detail);
            let t = fb::DisconnectClientRequest::create(
                &mut b,
                &fb::DisconnectClientRequestArgs {
                    disconnect_type: match kind {
                        DisconnectKind::Intended => fb::DisconnectType::Intended,
                        DisconnectKind::SystemError => fb::DisconnectType::SystemError,
                        DisconnectKind::UserError => fb::DisconnectType::UserError,
                    },
                    disconnect_detail: Some(d),
                },
            );
            (fb::Message::DisconnectClientRequest, t.as_union_value())
        }
        LocalMessage::DisconnectReply => {
            let t = fb::DisconnectClientReply::create(&mut b, &fb::DisconnectClientReplyArgs {});
            (fb::Message::DisconnectClientReply, t.as_union_value())
        }
    };
    let env = fb::Envelope::create(&mut b, &fb::EnvelopeArgs { message_type: kind, message: Some(body) });
    b.finish(env, None);
    frame(kind.0 as u64, b.finished_data())
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
        }));
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
