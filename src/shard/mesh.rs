//! Typed request/reply between shards over glommio's full mesh of bounded SPSC channels.
//!
//! Every cross-shard interaction goes through [`Mesh`]: `call` (request, await the reply),
//! `tell` (one-way) and `call_all` (broadcast and gather). A request carries its origin
//! shard and a call id; the owner answers with a `Rep` over the mesh, matched here. A call
//! to this shard itself short-circuits into the handler without touching a channel.
//!
//! Receivers spawn one task per incoming request, so a receive loop never blocks on a
//! send, and the DAG rule of `lib.rs` (an owner never awaits a call back to the shard that
//! is waiting on it) keeps nested calls deadlock-free.

use super::msg::{Rep, Req};
use crate::ids::ShardId;
use futures_channel::oneshot;
use futures_lite::future::BoxedLocal;
use glommio::channels::channel_mesh::{Receivers, Senders};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// What travels on a mesh channel.
#[derive(Debug)]
pub enum ShardMsg {
    /// A request; `call == 0` means no reply is wanted.
    Req {
        /// Origin shard.
        from: ShardId,
        /// Call id at the origin (0 for one-way).
        call: u64,
        /// The request.
        body: Req,
    },
    /// The reply to call `call` of the receiving shard.
    Rep {
        /// Call id.
        call: u64,
        /// The reply.
        body: Rep,
    },
}

/// A cross-shard call failed: the peer's channel is closed (it stopped).
#[derive(Debug, Clone, thiserror::Error)]
#[error("shard {0} is not reachable")]
pub struct MeshError(pub ShardId);

/// Serves requests arriving at this shard. Returns `None` for one-way messages.
pub type Handler = Rc<dyn Fn(ShardId, Req) -> BoxedLocal<Option<Rep>>>;

/// This shard's end of the mesh.
pub struct Mesh {
    me: ShardId,
    n: usize,
    senders: Senders<ShardMsg>,
    pending: RefCell<HashMap<u64, (ShardId, oneshot::Sender<Rep>)>>,
    next_call: Cell<u64>,
    handler: RefCell<Option<Handler>>,
    stopped: RefCell<Option<oneshot::Sender<()>>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").field("me", &self.me).field("n", &self.n).finish()
    }
}

impl Mesh {
    /// Wraps a joined mesh. `senders.peer_id()` is this shard's index.
    pub fn new(senders: Senders<ShardMsg>) -> Rc<Self> {
        let me = ShardId(senders.peer_id() as u16);
        let n = senders.nr_consumers();
        Rc::new(Self {
            me,
            n,
            senders,
            pending: RefCell::new(HashMap::new()),
            next_call: Cell::new(1),
            handler: RefCell::new(None),
            stopped: RefCell::new(None),
        })
    }

    /// This shard.
    pub fn me(&self) -> ShardId {
        self.me
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the mesh has a single shard.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Installs the request handler; must happen before `run_receivers`' first message.
    pub fn set_handler(&self, h: Handler) {
        *self.handler.borrow_mut() = Some(h);
    }

    fn handler(&self) -> Handler {
        self.handler.borrow().clone().expect("mesh handler installed before use")
    }

    /// Sends `body` to `to` and waits for its reply.
    pub async fn call(&self, to: ShardId, body: Req) -> Result<Rep, MeshError> {
        if to == self.me {
            let h = self.handler();
            return h(self.me, body).await.ok_or(MeshError(to));
        }
        let call = self.next_call.get();
        self.next_call.set(call + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(call, (to, tx));
        if self.senders.send_to(to.index(), ShardMsg::Req { from: self.me, call, body }).await.is_err() {
            self.pending.borrow_mut().remove(&call);
            return Err(MeshError(to));
        }
        rx.await.map_err(|_| MeshError(to))
    }

    /// Sends a one-way message.
    pub async fn tell(&self, to: ShardId, body: Req) -> Result<(), MeshError> {
        if to == self.me {
            let h = self.handler();
            h(self.me, body).await;
            return Ok(());
        }
        self.senders
            .send_to(to.index(), ShardMsg::Req { from: self.me, call: 0, body })
            .await
            .map_err(|_| MeshError(to))
    }

    /// Calls every shard (this one included) with `make(shard)` concurrently and gathers
    /// the replies in shard order (seastar's `map_reduce` without the reduce).
    pub async fn call_all(&self, make: impl Fn(ShardId) -> Req) -> Vec<Result<Rep, MeshError>> {
        let futs = (0..self.n).map(|i| {
            let body = make(ShardId(i as u16));
            Box::pin(self.call(ShardId(i as u16), body)) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + '_>>
        });
        join_all(futs.collect()).await
    }

    fn complete(&self, call: u64, body: Rep) {
        if let Some((_, tx)) = self.pending.borrow_mut().remove(&call) {
            let _ = tx.send(body);
        }
    }

    /// Fails every call waiting on `peer` (its channel closed: it stopped).
    fn fail_peer(&self, peer: ShardId) {
        self.pending.borrow_mut().retain(|_, (to, _)| *to != peer);
    }

    /// Resolves once this shard has acknowledged a `Stop` over the mesh.
    pub fn on_stopped(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        *self.stopped.borrow_mut() = Some(tx);
        rx
    }

    /// Closes this shard's senders (peers' receivers end).
    pub fn close(&self) {
        self.senders.close();
    }
}

/// Starts one receive task per peer. Each request runs in its own task; replies are sent
/// from that task.
pub fn run_receivers(mesh: &Rc<Mesh>, mut receivers: Receivers<ShardMsg>) -> Vec<glommio::task::JoinHandle<()>> {
    receivers
        .streams()
        .into_iter()
        .map(|(peer, rx)| {
            let mesh = mesh.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    match msg {
                        ShardMsg::Rep { call, body } => mesh.complete(call, body),
                        ShardMsg::Req { from, call, body } => {
                            let mesh = mesh.clone();
                            glommio::spawn_local(async move {
                                let rep = mesh.handler()(from, body).await;
                                if let (Some(rep), true) = (rep, call != 0) {
                                    let stopped = matches!(rep, Rep::Stopped);
                                    let _ = mesh.senders.send_to(from.index(), ShardMsg::Rep { call, body: rep }).await;
                                    if stopped {
                                        if let Some(tx) = mesh.stopped.borrow_mut().take() {
                                            let _ = tx.send(());
                                        }
                                    }
                                }
                            })
                            .detach();
                        }
                    }
                }
                mesh.fail_peer(ShardId(peer as u16));
                tracing::trace!(peer, "mesh receiver ended");
            })
            .detach()
        })
        .collect()
}

/// Polls every future to completion concurrently; results in input order.
pub async fn join_all<'a, T>(mut futs: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
