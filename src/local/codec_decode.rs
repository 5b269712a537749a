//! Verification and conversion of incoming payloads into [`LocalMessage`].

use super::*;
use crate::ids::{JobId, NodeId, ObjectId, WorkerId};

fn bytes<const N: usize>(a: flatbuffers::Array<'_, u8, N>) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in a.iter().enumerate() {
        out[i] = b;
    }
    out
}

fn oid(o: &fb::ObjectId) -> ObjectId {
    ObjectId(bytes(o.b()))
}

fn oids(v: Option<flatbuffers::Vector<'_, fb::ObjectId>>) -> Vec<ObjectId> {
    v.map(|v| v.iter().map(oid).collect()).unwrap_or_default()
}

fn spec(s: &fb::ObjectSpec) -> ObjectSpec {
    ObjectSpec {
        id: oid(s.object_id()),
        found: s.found(),
        segment: s.segment(),
        offset: s.offset(),
        data_size: s.data_size(),
        metadata_size: s.metadata_size(),
    }
}

pub(super) fn store_error(e: fb::StoreError) -> StoreError {
    match e {
        fb::StoreError::Ok => StoreError::Ok,
        fb::StoreError::ObjectExists => StoreError::ObjectExists,
        fb::StoreError::ObjectNonexistent => StoreError::ObjectNonexistent,
        fb::StoreError::ObjectStoreFull => StoreError::ObjectStoreFull,
        fb::StoreError::ObjectNotSealed => StoreError::ObjectNotSealed,
        fb::StoreError::ObjectInUse => StoreError::ObjectInUse,
        fb::StoreError::ObjectSealed => StoreError::ObjectSealed,
        fb::StoreError::WrongShard => StoreError::WrongShard,
        fb::StoreError::InvalidRequest => StoreError::InvalidRequest,
        _ => StoreError::Unexpected,
    }
}

fn text(s: Option<&str>) -> String {
    s.unwrap_or("").to_string()
}

/// Verifies and converts one payload of type `msg_type`.
pub fn decode_message(msg_type: u64, payload: &[u8]) -> Result<LocalMessage, CodecError> {
    let opts = flatbuffers::VerifierOptions { max_depth: 16, max_tables: 100_000, ..Default::default() };
    let env = fb::root_as_envelope_with_opts(&opts, payload).map_err(|e| CodecError::Invalid(e.to_string()))?;
    let inner = env.message_type().0 as u64;
    if inner != msg_type {
        return Err(CodecError::TypeMismatch { header: msg_type, payload: inner });
    }
    let missing = CodecError::Missing;
    use fb::Message as M;
    Ok(match env.message_type() {
        M::RegisterClientRequest => {
            let r = env.message_as_register_client_request().ok_or(missing("register"))?;
            LocalMessage::Register(Register {
                kind: if r.worker_type() == fb::WorkerType::Driver { ClientKind::Driver } else { ClientKind::Worker },
                worker_id: WorkerId(bytes(r.worker_id().ok_or(missing("worker_id"))?.b())),
                pid: r.worker_pid(),
                startup_token: r.startup_token(),
                job_id: r.job_id().map(|j| JobId(bytes(j.b()))).unwrap_or(JobId::NIL),
                ip_address: text(r.ip_address()),
            })
        }
        M::RegisterClientReply => {
            let r = env.message_as_register_client_reply().ok_or(missing("register reply"))?;
            LocalMessage::RegisterReply(RegisterReply {
                success: r.success(),
                failure_reason: text(r.failure_reason()),
                node_id: r.node_id().map(|n| NodeId(bytes(n.b()))).unwrap_or(NodeId::NIL),
                port: r.port(),
                shard: r.shard(),
                num_shards: r.num_shards(),
                shard_sockets: r.shard_sockets().map(|v| v.iter().map(str::to_string).collect()).unwrap_or_default(),
            })
        }
        M::AnnounceWorkerPort => {
            let r = env.message_as_announce_worker_port().ok_or(missing("announce"))?;
            LocalMessage::AnnounceWorkerPort { port: r.port() }
        }
        M::AnnounceWorkerPortReply => {
            let r = env.message_as_announce_worker_port_reply().ok_or(missing("announce reply"))?;
            LocalMessage::AnnounceWorkerPortReply { success: r.success(), failure_reason: text(r.failure_reason()) }
        }
        M::DisconnectClientRequest => {
            let r = env.message_as_disconnect_client_request().ok_or(missing("disconnect"))?;
            LocalMessage::Disconnect {
                kind: match r.disconnect_type() {
                    fb::DisconnectType::SystemError => DisconnectKind::SystemError,
                    fb::DisconnectType::UserError => DisconnectKind::UserError,
                    _ => DisconnectKind::Intended,
                },
                detail: text(r.disconnect_detail()),
            }
        }
        M::DisconnectClientReply => LocalMessage::DisconnectReply,
        M::AttachRequest => {
            let r = env.message_as_attach_request().ok_or(missing("attach"))?;
            LocalMessage::Attach { worker_id: WorkerId(bytes(r.worker_id().ok_or(missing("worker_id"))?.b())) }
        }
        M::AttachReply => {
            let r = env.message_as_attach_reply().ok_or(missing("attach reply"))?;
            LocalMessage::AttachReply {
                success: r.success(),
                failure_reason: text(r.failure_reason()),
                shard: r.shard(),
            }
        }
        M::CreateRequest => {
            let r = env.message_as_create_request().ok_or(missing("create"))?;
            LocalMessage::Create {
                id: oid(r.object_id().ok_or(missing("object_id"))?),
                data_size: r.data_size(),
                metadata_size: r.metadata_size(),
                primary: r.primary(),
                inline: r.inline_data().map(|d| d.bytes().to_vec()),
            }
        }
        M::CreateReply => {
            let r = env.message_as_create_reply().ok_or(missing("create reply"))?;
            LocalMessage::CreateReply {
                error: store_error(r.error()),
                message: text(r.message()),
                spec: r.object().map(spec).unwrap_or_default(),
                mmap_size: r.mmap_size(),
            }
        }
        M::SealRequest => {
            let r = env.message_as_seal_request().ok_or(missing("seal"))?;
            LocalMessage::Seal { id: oid(r.object_id().ok_or(missing("object_id"))?) }
        }
        M::SealReply => {
            let r = env.message_as_seal_reply().ok_or(missing("seal reply"))?;
            LocalMessage::SealReply { error: store_error(r.error()), message: text(r.message()) }
        }
        M::AbortRequest => {
            let r = env.message_as_abort_request().ok_or(missing("abort"))?;
            LocalMessage::Abort { id: oid(r.object_id().ok_or(missing("object_id"))?) }
        }
        M::AbortReply => {
            let r = env.message_as_abort_reply().ok_or(missing("abort reply"))?;
            LocalMessage::AbortReply { error: store_error(r.error()), message: text(r.message()) }
        }
        M::ReleaseRequest => {
            let r = env.message_as_release_request().ok_or(missing("release"))?;
            LocalMessage::Release { ids: oids(r.object_ids()) }
        }
        M::DeleteRequest => {
            let r = env.message_as_delete_request().ok_or(missing("delete"))?;
            LocalMessage::Delete { ids: oids(r.object_ids()), local_only: r.local_only() }
        }
        M::DeleteReply => {
            let r = env.message_as_delete_reply().ok_or(missing("delete reply"))?;
            LocalMessage::DeleteReply {
                errors: r.errors().map(|v| v.iter().map(store_error).collect()).unwrap_or_default(),
                peer_failures: r.peer_failures().map(|v| v.iter().map(str::to_string).collect()).unwrap_or_default(),
            }
        }
        M::ContainsRequest => {
            let r = env.message_as_contains_request().ok_or(missing("contains"))?;
            LocalMessage::Contains { id: oid(r.object_id().ok_or(missing("object_id"))?) }
        }
        M::ContainsReply => {
            let r = env.message_as_contains_reply().ok_or(missing("contains reply"))?;
            LocalMessage::ContainsReply { has_object: r.has_object() }
        }
        M::GetRequest => {
            let r = env.message_as_get_request().ok_or(missing("get"))?;
            LocalMessage::Get { ids: oids(r.object_ids()), timeout_ms: r.timeout_ms() }
        }
        M::GetReply => {
            let r = env.message_as_get_reply().ok_or(missing("get reply"))?;
            LocalMessage::GetReply {
                objects: r.objects().map(|v| v.iter().map(spec).collect()).unwrap_or_default(),
                mmap_size: r.mmap_size(),
                errors: r.errors().map(|v| v.iter().map(str::to_string).collect()).unwrap_or_default(),
            }
        }
        M::WaitRequest => {
            let r = env.message_as_wait_request().ok_or(missing("wait"))?;
            LocalMessage::Wait { ids: oids(r.object_ids()), num_required: r.num_required(), timeout_ms: r.timeout_ms() }
        }
        M::WaitReply => {
            let r = env.message_as_wait_reply().ok_or(missing("wait reply"))?;
            LocalMessage::WaitReply { ready: oids(r.ready()), remaining: oids(r.remaining()) }
        }
        other => return Err(CodecError::UnknownType(other.0 as u64)),
    })
}
