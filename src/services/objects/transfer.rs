//! Object transfer between nodes for the objects this shard owns: pulls (a Get or Wait
//! wants an object that is not here) and pushes (another node asked for an object held
//! here). The decisions are `logic::transfer`'s `PullQueue` and `PushQueue`; this module
//! performs their actions.
//!
//! Data path: the holder's owner shard spreads an object's chunks over every shard of its
//! node (chunk i goes out from shard `(owner + i) % n`, each on its own connection to the
//! puller), each written straight from the mapped store as a frame trailer. The puller's
//! shard that receives a chunk asks the object's owner where it goes (`ChunkClaim`), reads
//! it straight into the destination buffer, checks its CRC32C, and reports it
//! (`ChunkDone`). Only ids, offsets and lengths cross the mesh.

use super::store::ShardStore;
use crate::ids::{NodeId, ObjectId, ShardId};
use crate::logic::objects::{ClientId, NewObject, ObjectSource, ObjectState};
use crate::logic::transfer::chunks::{ChunkHeader, DEFAULT_CHUNK_SIZE};
use crate::logic::transfer::pull::{BundleId, ChunkClaim, PullAction, PullConfig, PullPriority, PullQueue};
use crate::logic::transfer::push::{PushAction, PushConfig, PushQueue, SendChunk};
use crate::rpc::CallOpts;
use crate::shard::route::owner_of_object;
use crate::shard::Shard;
use crate::wire::rpc::*;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The store client that owns buffers of objects being received.
pub const TRANSFER_CLIENT: ClientId = ClientId(u64::MAX - 1);
/// The store client that holds objects being pushed.
pub const PUSH_CLIENT: ClientId = ClientId(u64::MAX - 2);

/// One shard's transfer state.
#[derive(Debug)]
pub struct Transfer {
    pull: RefCell<PullQueue>,
    push: RefCell<PushQueue>,
    peers: RefCell<HashMap<NodeId, SocketAddr>>,
    next_bundle: Cell<u64>,
    live_bundles: RefCell<HashSet<u64>>,
    actions: RefCell<VecDeque<PullAction>>,
    driving: Cell<bool>,
    push_refs: RefCell<HashMap<ObjectId, usize>>,
    metadata: RefCell<HashMap<ObjectId, u64>>,
    /// Chunks being written into each receive buffer right now (by any shard).
    writing: RefCell<HashMap<ObjectId, u32>>,
    /// Receive buffers to abort once their in-flight writes finish.
    abort_after_writes: RefCell<HashSet<ObjectId>>,
    /// Objects whose pull failed, with why (a get returns them missing).
    pub failed: RefCell<HashMap<ObjectId, String>>,
}

impl Transfer {
    /// Transfer state of `shard`, with its configured timeouts.
    pub fn new(shard: &Shard) -> Self {
        let cfg = PullConfig {
            chunk_size: DEFAULT_CHUNK_SIZE,
            pull_retry: Duration::from_secs(1),
            max_backoff_exponent: 4,
            fetch_timeout: shard.cfg.fetch_timeout,
        };
        let seed = u64::from_le_bytes(shard.node_id.0[..8].try_into().unwrap_or([0; 8])) ^ u64::from(shard.id.0);
        let mut pull = PullQueue::new(shard.node_id, cfg, fastrand::Rng::with_seed(seed))
            .expect("the transfer configuration is valid");
        pull.handle_budget(Instant::now(), shard.cfg.object_store_memory);
        let push_cfg = PushConfig {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_bytes_in_flight: 256 << 20,
            push_timeout: Some(Duration::from_secs(10)),
        };
        Self {
            pull: RefCell::new(pull),
            push: RefCell::new(PushQueue::new(push_cfg).expect("the push configuration is valid")),
            peers: RefCell::new(HashMap::new()),
            next_bundle: Cell::new(1),
            live_bundles: RefCell::new(HashSet::new()),
            actions: RefCell::new(VecDeque::new()),
            driving: Cell::new(false),
            push_refs: RefCell::new(HashMap::new()),
            metadata: RefCell::new(HashMap::new()),
            writing: RefCell::new(HashMap::new()),
            abort_after_writes: RefCell::new(HashSet::new()),
            failed: RefCell::new(HashMap::new()),
        }
    }

    /// Takes the cluster's chunk size for the transfers that start from now on.
    pub fn set_chunk_size(&self, chunk_size: u64) -> Result<(), String> {
        self.pull.borrow_mut().set_chunk_size(chunk_size).map_err(|e| e.to_string())?;
        self.push.borrow_mut().set_chunk_size(chunk_size).map_err(|e| e.to_string())
    }

    /// The cluster's chunk size, which chunks pushed here must have.
    pub fn chunk_size(&self) -> u64 {
        self.pull.borrow().chunk_size()
    }

    /// Replaces the peer directory (object manager addresses of alive nodes).
    pub fn set_peers(&self, peers: Vec<(NodeId, SocketAddr)>) {
        *self.peers.borrow_mut() = peers.into_iter().collect();
    }

    /// Whether any pull is waiting for admission.
    pub fn pulls_queued(&self) -> bool {
        self.pull.borrow().object_pulls_queued()
    }
}

fn store(shard: &Rc<Shard>) -> Option<Rc<ShardStore>> {
    super::local_store(shard)
}

/// Starts pulling `ids` (a Get or Wait is waiting for them, `priority` says which: gets are
/// always admitted, waits only as memory allows); returns the bundle to cancel when the
/// caller stops waiting.
pub fn request_pulls(shard: &Rc<Shard>, ids: &[ObjectId], priority: PullPriority) -> Option<BundleId> {
    let st = store(shard)?;
    let t = &st.transfer;
    let wanted: Vec<ObjectId> = {
        let table = st.table.borrow();
        ids.iter().filter(|id| table.entry(id).is_none()).copied().collect()
    };
    if wanted.is_empty() {
        return None;
    }
    for id in &wanted {
        t.failed.borrow_mut().remove(id);
    }
    let bundle = BundleId(t.next_bundle.get());
    t.next_bundle.set(bundle.0 + 1);
    if t.pull.borrow_mut().handle_pull(Instant::now(), bundle, priority, wanted.clone()).is_err() {
        return None;
    }
    t.live_bundles.borrow_mut().insert(bundle.0);
    drive_pull(shard, &st);
    glommio::spawn_local(locate(shard.clone(), bundle, wanted)).detach();
    Some(bundle)
}

/// The caller stopped waiting for `bundle`.
pub fn cancel_pull(shard: &Rc<Shard>, bundle: BundleId) {
    if let Some(st) = store(shard) {
        st.transfer.live_bundles.borrow_mut().remove(&bundle.0);
        st.transfer.pull.borrow_mut().handle_cancel(Instant::now(), bundle);
        drive_pull(shard, &st);
    }
}

/// Follows the object directory for a bundle's objects until it completes or is cancelled.
async fn locate(shard: Rc<Shard>, bundle: BundleId, ids: Vec<ObjectId>) {
    let mut version = 0;
    loop {
        let Some(st) = store(&shard) else { return };
        if !st.transfer.live_bundles.borrow().contains(&bundle.0) {
            return;
        }
        let Some(gcs) = shard.gcs_address.get() else { return };
        let req = GetObjectLocationsRequest {
            object_ids: ids.iter().map(ObjectId::to_vec).collect(),
            known_version: version,
            wait_ms: 1000,
        };
        let client = shard.clients.get(gcs);
        match object_directory_gcs_service::client::get_object_locations(
            &*client,
            &req,
            CallOpts::idempotent(Duration::from_secs(5)),
        )
        .await
        {
            Ok(reply) => {
                version = reply.version;
                let now = Instant::now();
                for l in reply.locations {
                    let Ok(id) = ObjectId::from_bytes(&l.object_id) else { continue };
                    let mut nodes: Vec<NodeId> = l.node_ids.iter().filter_map(|n| NodeId::from_bytes(n).ok()).collect();
                    // A node that spilled its copy restores it when pulled from, so it is a
                    // source too (the only one once its in-memory copy was evicted).
                    if let Ok(spilled) = NodeId::from_bytes(&l.spilled_node_id) {
                        if spilled != shard.node_id && !nodes.contains(&spilled) {
                            nodes.push(spilled);
                        }
                    }
                    if l.size > 0 {
                        st.transfer.metadata.borrow_mut().insert(id, l.metadata_size);
                    }
                    st.transfer.pull.borrow_mut().handle_locations(now, id, nodes, (l.size > 0).then_some(l.size));
                }
                drive_pull(&shard, &st);
            }
            Err(e) => {
                tracing::debug!("object locations: {e}");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Moves the pull queue's actions to the driver, starting it if idle.
fn drive_pull(shard: &Rc<Shard>, st: &Rc<ShardStore>) {
    {
        let mut q = st.transfer.actions.borrow_mut();
        let mut pull = st.transfer.pull.borrow_mut();
        while let Some(a) = pull.poll_action() {
            q.push_back(a);
        }
    }
    if st.transfer.actions.borrow().is_empty() || st.transfer.driving.replace(true) {
        return;
    }
    let (shard, st) = (shard.clone(), st.clone());
    glommio::spawn_local(async move {
        loop {
            let next = st.transfer.actions.borrow_mut().pop_front();
            let Some(a) = next else { break };
            perform(&shard, &st, a).await;
            let mut q = st.transfer.actions.borrow_mut();
            let mut pull = st.transfer.pull.borrow_mut();
            while let Some(a) = pull.poll_action() {
                q.push_back(a);
            }
        }
        st.transfer.driving.set(false);
    })
    .detach();
}

/// Performs one pull action, in order (an allocation completes before its SendPull).
async fn perform(shard: &Rc<Shard>, st: &Rc<ShardStore>, a: PullAction) {
    let now = Instant::now();
    match a {
        PullAction::AllocateBuffer { id, size } => {
            let meta = st.transfer.metadata.borrow().get(&id).copied().unwrap_or(0).min(size);
            let placed = match st.memory.allocate(shard, st, size).await {
                Ok(p) => {
                    let new = NewObject {
                        id,
                        data_size: size - meta,
                        metadata_size: meta,
                        source: ObjectSource::ReceivedFromRemote,
                    };
                    let r = st.table.borrow_mut().create(now, new, TRANSFER_CLIENT, p);
                    if r.is_err() {
                        st.memory.free(shard, p.offset, p.alloc_len);
                    }
                    r.is_ok()
                }
                Err((_, why)) if size > st.memory.capacity() => {
                    // Larger than the store and the fallback could not take it: waiting
                    // cannot help, so the pull fails now and says why.
                    tracing::warn!(%id, "cannot receive: {why}");
                    st.transfer.pull.borrow_mut().handle_allocation_impossible(now, id, why);
                    true
                }
                Err((_, why)) => {
                    tracing::debug!(%id, "no room to receive: {why}");
                    false
                }
            };
            if !placed {
                st.transfer.pull.borrow_mut().handle_allocation_failed(now, id);
            }
        }
        PullAction::SendPull { node, id } => {
            let addr = st.transfer.peers.borrow().get(&node).copied();
            let Some(addr) = addr else {
                st.transfer.pull.borrow_mut().handle_transfer_failed(now, id, node);
                return;
            };
            let s = shard.clone();
            let st2 = st.clone();
            glommio::spawn_local(async move {
                let req = PullRequest { node_id: s.node_id.to_vec(), object_id: id.to_vec() };
                let client = s.clients.get(addr);
                if let Err(e) =
                    object_manager_service::client::pull(&*client, &req, CallOpts::idempotent(Duration::from_secs(2)))
                        .await
                {
                    tracing::debug!(%id, %node, "pull request failed: {e}");
                    st2.transfer.pull.borrow_mut().handle_transfer_failed(Instant::now(), id, node);
                    drive_pull(&s, &st2);
                }
            })
            .detach();
        }
        PullAction::AbortBuffer { id } => {
            // Another shard may be reading a chunk into this buffer right now: the memory
            // must not be reused until it is done.
            if st.transfer.writing.borrow().get(&id).is_some_and(|n| *n > 0) {
                st.transfer.abort_after_writes.borrow_mut().insert(id);
            } else {
                abort_buffer(shard, st, id);
            }
        }
        PullAction::Seal { id } => {
            let r = st.table.borrow_mut().seal(&id, TRANSFER_CLIENT);
            if let Err(e) = r {
                tracing::warn!(%id, "sealing a received object: {e}");
            }
            st.drain(shard);
            let _ = st.table.borrow_mut().release(&id, TRANSFER_CLIENT);
            st.drain(shard);
        }
        PullAction::Failed { id, reason } => {
            tracing::warn!(%id, "pull failed: {reason:?}");
            use crate::logic::transfer::pull::PullFailure;
            let reason = match reason {
                PullFailure::NoRoom(why) => why,
                PullFailure::NoLocation(d) => format!("no node had a copy to pull for {} ms", d.as_millis()),
                other => format!("{other:?}"),
            };
            st.transfer.failed.borrow_mut().insert(id, reason);
            st.fetch_failed(shard, id);
        }
        PullAction::Completed { bundle_id } => {
            st.transfer.live_bundles.borrow_mut().remove(&bundle_id.0);
        }
    }
}

fn abort_buffer(shard: &Rc<Shard>, st: &ShardStore, id: ObjectId) {
    let r = st.table.borrow_mut().abort(&id, TRANSFER_CLIENT);
    if let Err(e) = r {
        tracing::debug!(%id, "abort of a receive buffer: {e}");
    }
    st.drain(shard);
}

/// A chunk write into `id`'s buffer ended (arrived, or broke off).
fn write_ended(shard: &Rc<Shard>, st: &ShardStore, id: ObjectId) {
    let left = {
        let mut w = st.transfer.writing.borrow_mut();
        let n = w.entry(id).or_insert(1);
        *n -= 1;
        let left = *n;
        if left == 0 {
            w.remove(&id);
        }
        left
    };
    if left == 0 && st.transfer.abort_after_writes.borrow_mut().remove(&id) {
        abort_buffer(shard, st, id);
    }
}

/// A sealed copy of `id` is now here (any path): feed both queues.
pub fn object_local(shard: &Rc<Shard>, st: &ShardStore, id: ObjectId, size: u64) {
    let _ = st.transfer.push.borrow_mut().handle_object_local(id, size);
    st.transfer.pull.borrow_mut().handle_object_local(Instant::now(), id);
    let (shard, id) = (shard.clone(), id);
    glommio::spawn_local(async move {
        if let Some(st) = store(&shard) {
            drive_pull(&shard, &st);
            drive_push(&shard, &st);
        }
        let _ = id;
    })
    .detach();
}

/// Receiver side: where chunk `header` of `id` from `from` goes, as an absolute arena
/// offset, or `None` to discard it.
pub fn claim_chunk(shard: &Rc<Shard>, id: ObjectId, from: NodeId, header: ChunkHeader) -> Result<Option<u64>, String> {
    let st = store(shard).ok_or("store not started")?;
    let claim = st.transfer.pull.borrow_mut().handle_chunk_header(id, from, &header).map_err(|e| e.to_string())?;
    match claim {
        ChunkClaim::Write { offset, .. } => {
            let at = {
                let t = st.table.borrow();
                let e = t.entry(&id).filter(|e| e.state == ObjectState::Created).ok_or("no receive buffer")?;
                e.placement.map(|p| p.offset + offset)
            };
            if at.is_some() {
                *st.transfer.writing.borrow_mut().entry(id).or_insert(0) += 1;
            }
            Ok(at)
        }
        ChunkClaim::Discard(why) => {
            tracing::trace!(%id, "discarding chunk {}: {why:?}", header.index);
            Ok(None)
        }
    }
}

/// Receiver side: a claimed chunk arrived (`crc_ok` = its checksum matched).
pub fn chunk_done(shard: &Rc<Shard>, id: ObjectId, from: NodeId, index: u32, crc_ok: bool) -> Result<(), String> {
    let st = store(shard).ok_or("store not started")?;
    let r = st.transfer.pull.borrow_mut().handle_chunk(Instant::now(), id, from, index, crc_ok);
    drive_pull(shard, &st);
    write_ended(shard, &st, id);
    r.map(|_| ()).map_err(|e| e.to_string())
}

/// Receiver side: a chunk of `id` from `from` broke off mid-transfer.
pub fn transfer_failed(shard: &Rc<Shard>, id: ObjectId, from: NodeId) {
    if let Some(st) = store(shard) {
        st.transfer.pull.borrow_mut().handle_transfer_failed(Instant::now(), id, from);
        drive_pull(shard, &st);
        write_ended(shard, &st, id);
    }
}

/// Holder side: `to` wants `id` (owner shard).
pub async fn push_requested(shard: &Rc<Shard>, to: NodeId, id: ObjectId) {
    let Some(st) = store(shard) else { return };
    let state = st.table.borrow().entry(&id).map(|e| (e.state, e.size()));
    match state {
        Some((ObjectState::Sealed, size)) => {
            let _ = st.transfer.push.borrow_mut().handle_push_request(to, id, size);
        }
        Some((ObjectState::SpilledOut, _)) => {
            st.transfer.push.borrow_mut().handle_object_missing(Instant::now(), to, id);
            if let Err(e) = super::spilling::restore(shard, &st, id).await {
                tracing::warn!(%id, "restore for a push failed: {e}");
            }
        }
        _ => st.transfer.push.borrow_mut().handle_object_missing(Instant::now(), to, id),
    }
    drive_push(shard, &st);
}

fn pin_for_push(st: &ShardStore, id: ObjectId) -> Option<(u64, u64)> {
    let mut refs = st.transfer.push_refs.borrow_mut();
    let n = refs.entry(id).or_insert(0);
    let mut t = st.table.borrow_mut();
    if *n == 0 && t.get(&id, PUSH_CLIENT).is_err() {
        refs.remove(&id);
        return None;
    }
    *n += 1;
    let e = t.entry(&id)?;
    Some((e.placement?.offset, e.metadata_size))
}

fn unpin_for_push(shard: &Rc<Shard>, st: &ShardStore, id: ObjectId) {
    let mut refs = st.transfer.push_refs.borrow_mut();
    let Some(n) = refs.get_mut(&id) else { return };
    *n -= 1;
    if *n == 0 {
        refs.remove(&id);
        drop(refs);
        let _ = st.table.borrow_mut().release(&id, PUSH_CLIENT);
        st.drain(shard);
    }
}

/// Sends what the push queue allows and settles finished pushes.
fn drive_push(shard: &Rc<Shard>, st: &Rc<ShardStore>) {
    loop {
        let next = st.transfer.push.borrow_mut().poll_send();
        let Some(c) = next else { break };
        let addr = st.transfer.peers.borrow().get(&c.to).copied();
        let pinned = pin_for_push(st, c.id);
        let (Some(addr), Some((base, meta))) = (addr, pinned) else {
            if pinned.is_some() {
                unpin_for_push(shard, st, c.id);
            }
            let _ = st.transfer.push.borrow_mut().handle_chunk_sent(c.to, c.id, c.index, false);
            continue;
        };
        let (s, st2) = (shard.clone(), st.clone());
        shard.spawn_bulk(async move {
            let ok = send_chunk(&s, &c, addr, base, meta).await;
            unpin_for_push(&s, &st2, c.id);
            let _ = st2.transfer.push.borrow_mut().handle_chunk_sent(c.to, c.id, c.index, ok);
            drive_push(&s, &st2);
        });
    }
    loop {
        let a = st.transfer.push.borrow_mut().poll_action();
        match a {
            Some(PushAction::PushDone { .. }) => {}
            Some(PushAction::PushDropped { to, id, reason }) => tracing::debug!(%id, %to, "push dropped: {reason:?}"),
            None => break,
        }
    }
}

/// Sends one chunk from the shard that owns it or, spread round robin, from another shard
/// of this node (each shard has its own connection to the peer).
async fn send_chunk(shard: &Rc<Shard>, c: &SendChunk, addr: SocketAddr, base: u64, meta: u64) -> bool {
    let owner = owner_of_object(&c.id, shard.n);
    let sender = ShardId(((owner.index() + c.index as usize) % shard.n) as u16);
    let req = PushRequest {
        push_id: Vec::new(),
        object_id: c.id.to_vec(),
        node_id: shard.node_id.to_vec(),
        chunk_index: c.index,
        data_size: c.total_size,
        metadata_size: meta,
        chunk_size: c.chunk_size,
    };
    let job = super::msg::ChunkJob { addr, req, offset: base + c.offset, len: c.len };
    if sender == shard.id {
        return super::chunk_io::send(shard, job).await;
    }
    use crate::shard::msg::{Rep, Req};
    matches!(
        shard.mesh.call(sender, Req::Obj(super::msg::ObjReq::SendChunk(Box::new(job)))).await,
        Ok(Rep::Obj(super::msg::ObjRep::Sent(true)))
    )
}

/// A node died: stop pulling from and pushing to it.
pub fn node_dead(shard: &Rc<Shard>, node: NodeId) {
    let Some(st) = store(shard) else { return };
    st.transfer.peers.borrow_mut().remove(&node);
    st.transfer.pull.borrow_mut().handle_node_dead(Instant::now(), node);
    st.transfer.push.borrow_mut().handle_node_dead(node);
    drive_pull(shard, &st);
    drive_push(shard, &st);
}

/// Retry and expiry timers of both queues; runs until the shard stops.
pub async fn tick(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let Some(st) = store(&shard) else { continue };
        let now = Instant::now();
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(st.transfer.pull.borrow().poll_timeout()) {
            st.transfer.pull.borrow_mut().handle_timeout(now);
            drive_pull(&shard, &st);
        }
        if due(st.transfer.push.borrow().poll_timeout()) {
            st.transfer.push.borrow_mut().handle_timeout(now);
            drive_push(&shard, &st);
        }
    }
}
