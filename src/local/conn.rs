//! One local connection, served on its owner shard: framed reads, verification, dispatch,
//! and replies through an ordered writer.
//!
//! Two kinds of connections: the main socket's (registration, port announcement,
//! disconnect, and store operations on any object, forwarded to the owner shard over the
//! mesh), and a per-shard socket's, which a registered client attaches to its shard so
//! store operations on that shard's objects run with no cross-shard hop.
//!
//! Any bad frame (wrong cookie, unknown type, oversized length, failed verification, EOF
//! mid-frame) closes this connection alone, with a logged reason; whatever the client held
//! through it (references, unsealed objects) is released on every shard it touched.

use super::codec::{self, ClientKind, CodecError, LocalMessage, HEADER_LEN};
use super::writer::{LocalOut, LocalWriter};
use crate::ids::{ShardId, WorkerId};
use crate::logic::objects::ClientId;
use crate::metrics::ErrorKind;
use crate::rpc::conn::split_local;
use crate::rpc::readahead::{EagerRecv, ReadAhead};
use crate::shard::msg::{Rep, Req};
use crate::shard::Shard;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::UnixStream;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::unix::io::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

/// The local connections a shard serves.
#[derive(Debug, Default)]
pub struct LocalConns {
    tasks: RefCell<HashMap<u64, glommio::task::JoinHandle<()>>>,
    next: Cell<u64>,
}

impl LocalConns {
    /// Closes every connection (shard stop).
    pub fn close_all(&self) {
        for (_, t) in self.tasks.borrow_mut().drain() {
            t.cancel();
        }
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.tasks.borrow().len()
    }

    /// Whether none are open.
    pub fn is_empty(&self) -> bool {
        self.tasks.borrow().is_empty()
    }
}

/// Which socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// `<session>/sockets/raylet`.
    Main,
    /// `<session>/sockets/raylet.<shard>`: must start with `Attach`.
    Shard,
}

/// Starts serving the accepted descriptor `fd` on this shard.
pub fn adopt(shard: &Rc<Shard>, fd: RawFd, kind: SocketKind) {
    let stream = super::fdpass::stream_from_fd(fd);
    let seq = shard.local.next.get();
    shard.local.next.set(seq + 1);
    let s = shard.clone();
    let task = glommio::spawn_local(async move {
        let m = s.metrics.shard(s.id.index());
        m.local_connections.fetch_add(1, Relaxed);
        let client = ClientId((u64::from(s.id.0) << 48) | seq);
        let mut conn = Conn {
            shard: s.clone(),
            sock: fd,
            kind,
            client,
            registered: None,
            touched: Vec::new(),
            fds_sent: [false; 2],
        };
        if let Err((kind, why)) = conn.serve(stream).await {
            m.error(kind);
            tracing::warn!(shard = %s.id, "closing local connection: {why}");
        }
        conn.cleanup("connection closed").await;
        m.local_connections.fetch_sub(1, Relaxed);
        s.local.tasks.borrow_mut().remove(&seq);
    })
    .detach();
    shard.local.tasks.borrow_mut().insert(seq, task);
}

/// Why a connection is closed: the error kind counted and the logged reason.
pub type Failure = (ErrorKind, String);

/// A connection's state.
pub(super) struct Conn {
    pub(super) shard: Rc<Shard>,
    pub(super) sock: RawFd,
    kind: SocketKind,
    pub(super) client: ClientId,
    registered: Option<(WorkerId, ClientKind)>,
    /// Shards whose stores this connection used (they must hear of its end).
    pub(super) touched: Vec<ShardId>,
    /// Whether the store's and the staging segment's descriptors went to this client.
    pub(super) fds_sent: [bool; 2],
}

impl Conn {
    async fn serve(&mut self, stream: UnixStream) -> Result<(), Failure> {
        // One eager recv per small message through a read-ahead buffer (not glommio's
        // buffered stream, which arms an io_uring poll after every short read).
        let (r, w) = split_local(stream);
        let mut r = ReadAhead::new(EagerRecv::new(self.sock, r));
        let metrics = self.shard.metrics.clone();
        let me = self.shard.id.index();
        let mut tx = LocalWriter::new(w, self.sock, move || {
            metrics.shard(me).local_frames_out.fetch_add(1, Relaxed);
        });
        let max = self.shard.cfg.max_local_frame;
        loop {
            let Some(msg) = read_message(&mut r, max).await? else { return Ok(()) };
            self.shard.metrics.shard(me).local_frames_in.fetch_add(1, Relaxed);
            // A get or wait may block for long (forever with timeout -1): watch the socket
            // meanwhile, so a client that goes away releases what it holds at once instead
            // of when the operation ends. Other messages run to completion.
            let blocking = matches!(
                &msg,
                LocalMessage::Get { timeout_ms, .. } | LocalMessage::Wait { timeout_ms, .. } if *timeout_ms != 0
            );
            let handled = if blocking {
                let handle = async { Some(self.handle(msg, &mut tx).await) };
                futures_lite::future::or(handle, async {
                    r.closed().await;
                    None
                })
                .await
            } else {
                Some(self.handle(msg, &mut tx).await)
            };
            // Ended gracefully, or the peer left in the middle of a get or wait.
            if !handled.transpose()?.unwrap_or(false) {
                return Ok(());
            }
        }
    }

    /// Handles one message; `Ok(false)` ends the connection gracefully.
    async fn handle<W: AsyncWrite + Unpin>(
        &mut self,
        msg: LocalMessage,
        tx: &mut LocalWriter<W>,
    ) -> Result<bool, Failure> {
        if self.kind == SocketKind::Shard && self.registered.is_none() && !matches!(msg, LocalMessage::Attach { .. }) {
            return Err((ErrorKind::LocalBadFrame, "a per-shard connection must start with Attach".into()));
        }
        match msg {
            LocalMessage::Register(req) => {
                if self.registered.is_some() || self.kind == SocketKind::Shard {
                    return Err((
                        ErrorKind::LocalBadFrame,
                        "registration on an already registered or per-shard connection".into(),
                    ));
                }
                let (id, kind) = (req.worker_id, req.kind);
                let mut reply = match self
                    .shard
                    .mesh
                    .call(ShardId::NODE, Req::RegisterClient { shard: self.shard.id, req })
                    .await
                {
                    Ok(Rep::Registered(r)) => r,
                    other => return Err((ErrorKind::LocalIo, format!("registration failed internally: {other:?}"))),
                };
                let ok = reply.success;
                if ok {
                    self.registered = Some((id, kind));
                    reply.num_shards = self.shard.n as u16;
                    reply.shard_sockets = (0..self.shard.n)
                        .map(|i| super::listener::shard_socket_path(&self.shard.cfg, i).display().to_string())
                        .collect();
                }
                tx.send(LocalOut::frame(codec::encode(&LocalMessage::RegisterReply(reply)))).await;
                Ok(ok)
            }
            LocalMessage::Attach { worker_id } => {
                if self.kind != SocketKind::Shard || self.registered.is_some() {
                    return Err((ErrorKind::LocalBadFrame, "Attach is only valid first on a per-shard socket".into()));
                }
                let known = matches!(
                    self.shard.mesh.call(ShardId::NODE, Req::IsClient(worker_id)).await,
                    Ok(Rep::IsClient(true))
                );
                let reply = LocalMessage::AttachReply {
                    success: known,
                    failure_reason: if known { String::new() } else { format!("worker {worker_id} is not registered") },
                    shard: self.shard.id.0,
                };
                tx.send(LocalOut::frame(codec::encode(&reply))).await;
                if known {
                    // Attached connections do not own the client's registration.
                    self.registered = Some((worker_id, ClientKind::Worker));
                }
                Ok(known)
            }
            LocalMessage::AnnounceWorkerPort { port } => {
                let (id, kind) = self.registered()?;
                let verdict = match self.shard.mesh.call(ShardId::NODE, Req::ClientPort { worker_id: id, port }).await {
                    Ok(Rep::PortAnnounced(v)) => v,
                    other => Err(format!("internal error: {other:?}")),
                };
                if kind == ClientKind::Driver {
                    let (success, failure_reason) = match &verdict {
                        Ok(()) => (true, String::new()),
                        Err(e) => (false, e.clone()),
                    };
                    let m = LocalMessage::AnnounceWorkerPortReply { success, failure_reason };
                    tx.send(LocalOut::frame(codec::encode(&m))).await;
                }
                verdict.map(|_| true).map_err(|e| (ErrorKind::LocalBadFrame, e))
            }
            LocalMessage::Disconnect { kind, detail } => {
                self.cleanup(&format!("disconnect ({kind:?}): {detail}")).await;
                tx.send(LocalOut::frame(codec::encode(&LocalMessage::DisconnectReply))).await;
                Ok(false)
            }
            m @ (LocalMessage::Create { .. }
            | LocalMessage::Seal { .. }
            | LocalMessage::Abort { .. }
            | LocalMessage::Release { .. }
            | LocalMessage::Delete { .. }
            | LocalMessage::Contains { .. }
            | LocalMessage::Get { .. }
            | LocalMessage::Wait { .. }) => {
                self.registered()?;
                self.store_op(m, tx).await?;
                Ok(true)
            }
            LocalMessage::RegisterReply(_)
            | LocalMessage::AnnounceWorkerPortReply { .. }
            | LocalMessage::DisconnectReply
            | LocalMessage::AttachReply { .. }
            | LocalMessage::CreateReply { .. }
            | LocalMessage::SealReply { .. }
            | LocalMessage::AbortReply { .. }
            | LocalMessage::DeleteReply { .. }
            | LocalMessage::ContainsReply { .. }
            | LocalMessage::GetReply { .. }
            | LocalMessage::WaitReply { .. } => {
                Err((ErrorKind::LocalBadFrame, "a client sent a reply-only message".into()))
            }
        }
    }

    fn registered(&self) -> Result<(WorkerId, ClientKind), Failure> {
        self.registered.ok_or_else(|| (ErrorKind::LocalBadFrame, "message before registration".into()))
    }

    /// Releases what the client held on every shard it touched; idempotent.
    async fn cleanup(&mut self, detail: &str) {
        for s in std::mem::take(&mut self.touched) {
            if s == self.shard.id {
                if let Some(store) = crate::services::objects::local_store(&self.shard) {
                    store.client_gone(&self.shard, self.client);
                }
            } else {
                let _ = self
                    .shard
                    .mesh
                    .tell(s, Req::Obj(crate::services::objects::msg::ObjReq::ClientGone(self.client)))
                    .await;
            }
        }
        if self.kind == SocketKind::Main {
            if let Some((id, _)) = self.registered.take() {
                let _ = self
                    .shard
                    .mesh
                    .tell(ShardId::NODE, Req::ClientGone { worker_id: id, detail: detail.to_string() })
                    .await;
            }
        }
        self.registered = None;
    }
}

/// Reads one frame; `Ok(None)` on a clean EOF between frames.
async fn read_message<R: AsyncRead + Unpin>(r: &mut ReadAhead<R>, max: u64) -> Result<Option<LocalMessage>, Failure> {
    let mut h = [0u8; HEADER_LEN];
    match r.read_exact_or_eof(&mut h).await {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err((ErrorKind::LocalIo, "EOF in the middle of a frame header".into()))
        }
        Err(e) => return Err((ErrorKind::LocalIo, format!("reading a frame header: {e}"))),
    }
    let header = codec::decode_header(&h, max).map_err(|e| (ErrorKind::LocalBadFrame, e.to_string()))?;
    let mut payload = vec![0u8; header.len as usize];
    r.read_exact(&mut payload)
        .await
        .map_err(|e| (ErrorKind::LocalIo, format!("EOF in the middle of a frame payload: {e}")))?;
    codec::decode_message(header.msg_type, &payload)
        .map(Some)
        .map_err(|e: CodecError| (ErrorKind::LocalBadFrame, e.to_string()))
}
