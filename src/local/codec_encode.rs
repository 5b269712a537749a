//! Conversion of [`LocalMessage`] into complete frames.

use super::*;
use crate::ids::ObjectId;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};

fn fb_err(e: StoreError) -> fb::StoreError {
    match e {
        StoreError::Ok => fb::StoreError::Ok,
        StoreError::ObjectExists => fb::StoreError::ObjectExists,
        StoreError::ObjectNonexistent => fb::StoreError::ObjectNonexistent,
        StoreError::ObjectStoreFull => fb::StoreError::ObjectStoreFull,
        StoreError::ObjectNotSealed => fb::StoreError::ObjectNotSealed,
        StoreError::ObjectInUse => fb::StoreError::ObjectInUse,
        StoreError::Unexpected => fb::StoreError::Unexpected,
        StoreError::ObjectSealed => fb::StoreError::ObjectSealed,
        StoreError::WrongShard => fb::StoreError::WrongShard,
        StoreError::InvalidRequest => fb::StoreError::InvalidRequest,
    }
}

fn fb_spec(s: &ObjectSpec) -> fb::ObjectSpec {
    fb::ObjectSpec::new(&fb::ObjectId::new(&s.id.0), s.found, s.segment, s.offset, s.data_size, s.metadata_size)
}

fn fb_oids<'a>(b: &mut FlatBufferBuilder<'a>, ids: &[ObjectId]) -> WIPOffset<flatbuffers::Vector<'a, fb::ObjectId>> {
    let v: Vec<fb::ObjectId> = ids.iter().map(|i| fb::ObjectId::new(&i.0)).collect();
    b.create_vector(&v)
}

type Body = (fb::Message, WIPOffset<UnionWIPOffset>);

fn encode_session(b: &mut FlatBufferBuilder<'_>, msg: &LocalMessage) -> Option<Body> {
    Some(match msg {
        LocalMessage::Register(r) => {
            let ip = b.create_string(&r.ip_address);
            let wid = fb::WorkerId::new(&r.worker_id.0);
            let jid = fb::JobId::new(&r.job_id.0);
            let worker_type = match r.kind {
                ClientKind::Driver => fb::WorkerType::Driver,
                ClientKind::Worker => fb::WorkerType::Worker,
            };
            let args = fb::RegisterClientRequestArgs {
                worker_type,
                worker_id: Some(&wid),
                worker_pid: r.pid,
                startup_token: r.startup_token,
                language: fb::Language::Rust,
                job_id: Some(&jid),
                ip_address: Some(ip),
            };
            (fb::Message::RegisterClientRequest, fb::RegisterClientRequest::create(b, &args).as_union_value())
        }
        LocalMessage::RegisterReply(r) => {
            let reason = b.create_string(&r.failure_reason);
            let socks: Vec<_> = r.shard_sockets.iter().map(|s| b.create_string(s)).collect();
            let socks = b.create_vector(&socks);
            let nid = fb::NodeId::new(&r.node_id.0);
            let args = fb::RegisterClientReplyArgs {
                success: r.success,
                failure_reason: Some(reason),
                node_id: Some(&nid),
                port: r.port,
                shard: r.shard,
                num_shards: r.num_shards,
                shard_sockets: Some(socks),
            };
            (fb::Message::RegisterClientReply, fb::RegisterClientReply::create(b, &args).as_union_value())
        }
        LocalMessage::AnnounceWorkerPort { port } => {
            let t = fb::AnnounceWorkerPort::create(b, &fb::AnnounceWorkerPortArgs { port: *port });
            (fb::Message::AnnounceWorkerPort, t.as_union_value())
        }
        LocalMessage::AnnounceWorkerPortReply { success, failure_reason } => {
            let reason = b.create_string(failure_reason);
            let args = fb::AnnounceWorkerPortReplyArgs { success: *success, failure_reason: Some(reason) };
            (fb::Message::AnnounceWorkerPortReply, fb::AnnounceWorkerPortReply::create(b, &args).as_union_value())
        }
        LocalMessage::Disconnect { kind, detail } => {
            let d = b.create_string(detail);
            let disconnect_type = match kind {
                DisconnectKind::Intended => fb::DisconnectType::Intended,
                DisconnectKind::SystemError => fb::DisconnectType::SystemError,
                DisconnectKind::UserError => fb::DisconnectType::UserError,
            };
            let args = fb::DisconnectClientRequestArgs { disconnect_type, disconnect_detail: Some(d) };
            (fb::Message::DisconnectClientRequest, fb::DisconnectClientRequest::create(b, &args).as_union_value())
        }
        LocalMessage::DisconnectReply => {
            let t = fb::DisconnectClientReply::create(b, &fb::DisconnectClientReplyArgs {});
            (fb::Message::DisconnectClientReply, t.as_union_value())
        }
        LocalMessage::Attach { worker_id } => {
            let wid = fb::WorkerId::new(&worker_id.0);
            let t = fb::AttachRequest::create(b, &fb::AttachRequestArgs { worker_id: Some(&wid) });
            (fb::Message::AttachRequest, t.as_union_value())
        }
        LocalMessage::AttachReply { success, failure_reason, shard } => {
            let reason = b.create_string(failure_reason);
            let args = fb::AttachReplyArgs { success: *success, failure_reason: Some(reason), shard: *shard };
            (fb::Message::AttachReply, fb::AttachReply::create(b, &args).as_union_value())
        }
        _ => return None,
    })
}

fn encode_store(b: &mut FlatBufferBuilder<'_>, msg: &LocalMessage) -> Body {
    match msg {
        LocalMessage::Create { id, data_size, metadata_size, primary, inline } => {
            let data = inline.as_ref().map(|d| b.create_vector(d));
            let oid = fb::ObjectId::new(&id.0);
            let args = fb::CreateRequestArgs {
                object_id: Some(&oid),
                data_size: *data_size,
                metadata_size: *metadata_size,
                primary: *primary,
                inline_data: data,
            };
            (fb::Message::CreateRequest, fb::CreateRequest::create(b, &args).as_union_value())
        }
        LocalMessage::CreateReply { error, message, spec, mmap_size } => {
            let m = b.create_string(message);
            let s = fb_spec(spec);
            let args = fb::CreateReplyArgs {
                error: fb_err(*error),
                message: Some(m),
                object: Some(&s),
                mmap_size: *mmap_size,
            };
            (fb::Message::CreateReply, fb::CreateReply::create(b, &args).as_union_value())
        }
        LocalMessage::Seal { id } => {
            let oid = fb::ObjectId::new(&id.0);
            let t = fb::SealRequest::create(b, &fb::SealRequestArgs { object_id: Some(&oid) });
            (fb::Message::SealRequest, t.as_union_value())
        }
        LocalMessage::SealReply { error, message } => {
            let m = b.create_string(message);
            let t = fb::SealReply::create(b, &fb::SealReplyArgs { error: fb_err(*error), message: Some(m) });
            (fb::Message::SealReply, t.as_union_value())
        }
        LocalMessage::Abort { id } => {
            let oid = fb::ObjectId::new(&id.0);
            let t = fb::AbortRequest::create(b, &fb::AbortRequestArgs { object_id: Some(&oid) });
            (fb::Message::AbortRequest, t.as_union_value())
        }
        LocalMessage::AbortReply { error, message } => {
            let m = b.create_string(message);
            let t = fb::AbortReply::create(b, &fb::AbortReplyArgs { error: fb_err(*error), message: Some(m) });
            (fb::Message::AbortReply, t.as_union_value())
        }
        LocalMessage::Release { ids } => {
            let v = fb_oids(b, ids);
            let t = fb::ReleaseRequest::create(b, &fb::ReleaseRequestArgs { object_ids: Some(v) });
            (fb::Message::ReleaseRequest, t.as_union_value())
        }
        LocalMessage::Delete { ids, local_only } => {
            let v = fb_oids(b, ids);
            let args = fb::DeleteRequestArgs { object_ids: Some(v), local_only: *local_only };
            let t = fb::DeleteRequest::create(b, &args);
            (fb::Message::DeleteRequest, t.as_union_value())
        }
        LocalMessage::DeleteReply { errors, peer_failures } => {
            let e: Vec<fb::StoreError> = errors.iter().map(|e| fb_err(*e)).collect();
            let v = b.create_vector(&e);
            let f: Vec<_> = peer_failures.iter().map(|s| b.create_string(s)).collect();
            let f = b.create_vector(&f);
            let t = fb::DeleteReply::create(b, &fb::DeleteReplyArgs { errors: Some(v), peer_failures: Some(f) });
            (fb::Message::DeleteReply, t.as_union_value())
        }
        LocalMessage::Contains { id } => {
            let oid = fb::ObjectId::new(&id.0);
            let t = fb::ContainsRequest::create(b, &fb::ContainsRequestArgs { object_id: Some(&oid) });
            (fb::Message::ContainsRequest, t.as_union_value())
        }
        LocalMessage::ContainsReply { has_object } => {
            let t = fb::ContainsReply::create(b, &fb::ContainsReplyArgs { has_object: *has_object });
            (fb::Message::ContainsReply, t.as_union_value())
        }
        LocalMessage::Get { ids, timeout_ms } => {
            let v = fb_oids(b, ids);
            let t = fb::GetRequest::create(b, &fb::GetRequestArgs { object_ids: Some(v), timeout_ms: *timeout_ms });
            (fb::Message::GetRequest, t.as_union_value())
        }
        LocalMessage::GetReply { objects, mmap_size, errors } => {
            let specs: Vec<fb::ObjectSpec> = objects.iter().map(fb_spec).collect();
            let v = b.create_vector(&specs);
            // Usually all empty: then the vector is left out.
            let errors = errors.iter().any(|e| !e.is_empty()).then(|| {
                let strs: Vec<_> = errors.iter().map(|e| b.create_string(e)).collect();
                b.create_vector(&strs)
            });
            let t = fb::GetReply::create(b, &fb::GetReplyArgs { objects: Some(v), mmap_size: *mmap_size, errors });
            (fb::Message::GetReply, t.as_union_value())
        }
        LocalMessage::Wait { ids, num_required, timeout_ms } => {
            let v = fb_oids(b, ids);
            let args =
                fb::WaitRequestArgs { object_ids: Some(v), num_required: *num_required, timeout_ms: *timeout_ms };
            (fb::Message::WaitRequest, fb::WaitRequest::create(b, &args).as_union_value())
        }
        LocalMessage::WaitReply { ready, remaining } => {
            let r = fb_oids(b, ready);
            let m = fb_oids(b, remaining);
            let t = fb::WaitReply::create(b, &fb::WaitReplyArgs { ready: Some(r), remaining: Some(m) });
            (fb::Message::WaitReply, t.as_union_value())
        }
        _ => unreachable!("session messages are encoded by encode_session"),
    }
}

/// Encodes `msg` as a complete frame (header included).
pub fn encode(msg: &LocalMessage) -> Vec<u8> {
    let mut b = FlatBufferBuilder::with_capacity(128);
    let (kind, body) = match encode_session(&mut b, msg) {
        Some(x) => x,
        None => encode_store(&mut b, msg),
    };
    let env = fb::Envelope::create(&mut b, &fb::EnvelopeArgs { message_type: kind, message: Some(body) });
    b.finish(env, None);
    frame(kind.0 as u64, b.finished_data())
}
