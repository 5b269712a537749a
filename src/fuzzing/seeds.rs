//! Built-in seed inputs per target: well-formed frames and records the fuzzer mutates
//! from (it rarely finds a cookie or a magic number by itself), and fixed pseudo-random
//! event streams for the state machines. `scripts/fuzz.sh` writes them into a fresh
//! corpus; the replay test runs them on every `cargo test`.

use crate::ids::{JobId, NodeId, ObjectId, WorkerId};
use crate::local::codec::{
    self, ClientKind, DisconnectKind, LocalMessage, ObjectSpec, Register, RegisterReply, StoreError,
};
use crate::logic::spill::RecordHeader;
use crate::rpc::frame::{encode_frame, FrameHeader, FrameKind};

/// The seeds of target `name` (none for an unknown name).
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "rpc_frames" => rpc_frames(),
        "local_codec" => local_messages().iter().map(codec::encode).collect(),
        "spill_record" => {
            let h = RecordHeader { data_size: 10, metadata_size: 3, id: ObjectId([9; 28]), payload_crc: 0x1234_5678 };
            vec![h.encode().to_vec(), b"spill-281474976710657?offset=44&size=57".to_vec()]
        }
        "pull_queue" | "push_queue" | "object_table" | "lease_queue" => {
            let mut rng = fastrand::Rng::with_seed(name.len() as u64);
            [64, 256, 1024, 4096].iter().map(|&n| (0..n).map(|_| rng.u8(..)).collect()).collect()
        }
        _ => Vec::new(),
    }
}

fn rpc_frames() -> Vec<Vec<u8>> {
    let mut stream = encode_frame(FrameHeader::control(FrameKind::Hello), b"hello payload", 0);
    stream.extend(encode_frame(FrameHeader::request(1, 2, 3, 100), b"request", 0));
    let trailer = b"chunk bytes".as_slice();
    stream.extend(encode_frame(FrameHeader::request(4, 5, 6, 0), b"chunk header", trailer.len() as u32));
    stream.extend_from_slice(trailer);
    stream.extend_from_slice(&crate::checksum::crc32c(trailer).to_le_bytes());
    let req = FrameHeader::request(1, 1, 9, 0);
    stream.extend(encode_frame(FrameHeader::reply_to(&req, FrameKind::Response), &[7; 9000], 0));
    stream.extend(encode_frame(FrameHeader::reply_to(&req, FrameKind::Error), b"status", 0));
    let mut out = Vec::new();
    for (split, mode) in [(0u8, 0u8), (1, 1), (4, 3), (5, 6)] {
        let mut s = vec![split, mode];
        s.extend_from_slice(&stream);
        out.push(s);
    }
    let mut cut = vec![2, 1];
    cut.extend_from_slice(&stream[..stream.len() - 5]);
    out.push(cut);
    out
}

/// One message of every type.
fn local_messages() -> Vec<LocalMessage> {
    let id = ObjectId([9; 28]);
    let spec = ObjectSpec { id, found: true, segment: 1, offset: 4096, data_size: 10, metadata_size: 2 };
    let (e, m) = (StoreError::ObjectExists, "why".to_string());
    vec![
        LocalMessage::Register(Register {
            kind: ClientKind::Driver,
            worker_id: WorkerId([7; 28]),
            pid: 42,
            startup_token: -1,
            job_id: JobId([1, 2, 3, 4]),
            ip_address: "127.0.0.1".into(),
        }),
        LocalMessage::RegisterReply(RegisterReply {
            success: true,
            failure_reason: String::new(),
            node_id: NodeId([3; 28]),
            port: 5,
            shard: 1,
            num_shards: 2,
            shard_sockets: vec!["/a".into(), "/b".into()],
        }),
        LocalMessage::AnnounceWorkerPort { port: 1234 },
        LocalMessage::AnnounceWorkerPortReply { success: false, failure_reason: m.clone() },
        LocalMessage::Disconnect { kind: DisconnectKind::UserError, detail: m.clone() },
        LocalMessage::DisconnectReply,
        LocalMessage::Attach { worker_id: WorkerId([1; 28]) },
        LocalMessage::AttachReply { success: true, failure_reason: String::new(), shard: 1 },
        LocalMessage::Create { id, data_size: 3, metadata_size: 1, primary: true, inline: Some(vec![1, 2, 3, 4]) },
        LocalMessage::CreateReply { error: e, message: m.clone(), spec, mmap_size: 1 << 20 },
        LocalMessage::Seal { id },
        LocalMessage::SealReply { error: e, message: m.clone() },
        LocalMessage::Abort { id },
        LocalMessage::AbortReply { error: e, message: m },
        LocalMessage::Release { ids: vec![id, ObjectId([8; 28])] },
        LocalMessage::Delete { ids: vec![id], local_only: false },
        LocalMessage::DeleteReply { errors: vec![StoreError::Ok, e], peer_failures: vec!["node x".into()] },
        LocalMessage::Contains { id },
        LocalMessage::ContainsReply { has_object: true },
        LocalMessage::Get { ids: vec![id], timeout_ms: 500 },
        LocalMessage::GetReply {
            objects: vec![spec, ObjectSpec::default()],
            mmap_size: 1 << 30,
            errors: vec![String::new(), "no room".into()],
        },
        LocalMessage::Wait { ids: vec![id], num_required: 1, timeout_ms: 5 },
        LocalMessage::WaitReply { ready: vec![id], remaining: vec![ObjectId([8; 28])] },
    ]
}
