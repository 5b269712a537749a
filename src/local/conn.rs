//! One local connection, served on its owner shard: framed reads, verification, dispatch,
//! and replies through an ordered writer task.
//!
//! Any bad frame (wrong cookie, unknown type, oversized length, failed verification, EOF
//! mid-frame) closes this connection alone, with a logged reason; whatever the client
//! held is released by the owner services it registered with.

use super::codec::{self, ClientKind, CodecError, LocalMessage, HEADER_LEN};
use crate::ids::{ShardId, WorkerId};
use crate::metrics::ErrorKind;
use crate::rpc::conn::{spawn_writer, split_local, FrameSender, OutFrame};
use crate::shard::msg::{Rep, Req};
use crate::shard::Shard;
use futures_lite::{AsyncRead, AsyncReadExt};
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

/// Starts serving the accepted descriptor `fd` on this shard.
pub fn adopt(shard: &Rc<Shard>, fd: RawFd) {
    let stream = super::fdpass::stream_from_fd(fd);
    let id = shard.local.next.get();
    shard.local.next.set(id + 1);
    let s = shard.clone();
    let task = glommio::spawn_local(async move {
        let m = s.metrics.shard(s.id.index());
        m.local_connections.fetch_add(1, Relaxed);
        let mut conn = Conn { shard: s.clone(), client: None };
        let outcome = conn.serve(stream).await;
        if let Err((kind, why)) = outcome {
            m.error(kind);
            tracing::warn!(shard = %s.id, "closing local connection: {why}");
        }
        conn.cleanup("connection closed").await;
        m.local_connections.fetch_sub(1, Relaxed);
        s.local.tasks.borrow_mut().remove(&id);
    })
    .detach();
    shard.local.tasks.borrow_mut().insert(id, task);
}

type Failure = (ErrorKind, String);

struct Conn {
    shard: Rc<Shard>,
    client: Option<(WorkerId, ClientKind)>,
}

impl Conn {
    async fn serve(&mut self, stream: UnixStream) -> Result<(), Failure> {
        let (mut r, w) = split_local(stream);
        let metrics = self.shard.metrics.clone();
        let me = self.shard.id.index();
        let (tx, _writer) = spawn_writer(w, 256, move |_| {
            metrics.shard(me).local_frames_out.fetch_add(1, Relaxed);
        });
        let max = self.shard.cfg.max_local_frame;
        loop {
            let Some(msg) = read_message(&mut r, max).await? else { return Ok(()) };
            self.shard.metrics.shard(me).local_frames_in.fetch_add(1, Relaxed);
            if !self.handle(msg, &tx).await? {
                return Ok(());
            }
        }
    }

    /// Handles one message; `Ok(false)` ends the connection gracefully.
    async fn handle(&mut self, msg: LocalMessage, tx: &FrameSender) -> Result<bool, Failure> {
        let send = |m: &LocalMessage| OutFrame { head: codec::encode(m), trailer: None, done: None };
        match msg {
            LocalMessage::Register(req) => {
                if self.client.is_some() {
                    return Err((ErrorKind::LocalBadFrame, "second registration on one connection".into()));
                }
                let (id, kind) = (req.worker_id, req.kind);
                let reply = match self
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
                    self.client = Some((id, kind));
                }
                let _ = tx.send(send(&LocalMessage::RegisterReply(reply))).await;
                Ok(ok)
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
                    let _ = tx.send(send(&LocalMessage::AnnounceWorkerPortReply { success, failure_reason })).await;
                }
                verdict.map(|_| true).map_err(|e| (ErrorKind::LocalBadFrame, e))
            }
            LocalMessage::Disconnect { kind, detail } => {
                self.cleanup(&format!("disconnect ({kind:?}): {detail}")).await;
                let (done_tx, done_rx) = futures_channel::oneshot::channel();
                let mut f = send(&LocalMessage::DisconnectReply);
                f.done = Some(done_tx);
                if tx.send(f).await.is_ok() {
                    let _ = done_rx.await;
                }
                Ok(false)
            }
            LocalMessage::RegisterReply(_)
            | LocalMessage::AnnounceWorkerPortReply { .. }
            | LocalMessage::DisconnectReply => {
                Err((ErrorKind::LocalBadFrame, "a client sent a reply-only message".into()))
            }
        }
    }

    fn registered(&self) -> Result<(WorkerId, ClientKind), Failure> {
        self.client.ok_or_else(|| (ErrorKind::LocalBadFrame, "message before registration".into()))
    }

    /// Releases what the client held; idempotent.
    async fn cleanup(&mut self, detail: &str) {
        if let Some((id, _)) = self.client.take() {
            let _ = self
                .shard
                .mesh
                .tell(ShardId::NODE, Req::ClientGone { worker_id: id, detail: detail.to_string() })
                .await;
        }
    }
}

/// Reads one frame; `Ok(None)` on a clean EOF between frames.
async fn read_message<R: AsyncRead + Unpin>(r: &mut R, max: u64) -> Result<Option<LocalMessage>, Failure> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut h[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err((ErrorKind::LocalIo, "EOF in the middle of a frame header".into())),
            Ok(n) => got += n,
            Err(e) => return Err((ErrorKind::LocalIo, e.to_string())),
        }
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
