//! The local-socket client: register, announce, disconnect, and the object store API
//! (`put`, `create`/`seal`, `get`, `release`, `delete`, `free`, `contains`, `wait`).
//!
//! Store operations on object X go to the connection attached to X's owner shard
//! (`<session>/sockets/raylet.<shard>`), so they never hop between the raylet's shards;
//! gets read the bytes in place from the store segment mapped once. Objects in fallback
//! segments (files of one object each) come with their segment's descriptor in every
//! reply; the client maps it while views of it live and unmaps it with the last one.

use super::channel::{Channel, SegmentFds};
use super::objects::{ObjectView, ObjectWriter, Releases};
use crate::ids::{JobId, NodeId, ObjectId, WorkerId};
use crate::local::codec::{self, ClientKind, DisconnectKind, LocalMessage, ObjectSpec, Register, StoreError};
use crate::store::buffer::Segment;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Largest put sent inline in its create request.
pub const INLINE_PUT_MAX: usize = 64 << 10;

/// What a local call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("local socket: {0}")]
    Io(#[from] std::io::Error),
    /// The raylet sent something we cannot decode.
    #[error("bad frame from the raylet: {0}")]
    Codec(#[from] codec::CodecError),
    /// The raylet refused the request.
    #[error("refused: {0}")]
    Refused(String),
    /// A store operation failed.
    #[error("store: {code:?}: {message}")]
    Store {
        /// The code.
        code: StoreError,
        /// Details.
        message: String,
    },
    /// The raylet answered with an unexpected message.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
    /// The store segment could not be mapped or a range was bad.
    #[error(transparent)]
    Segment(#[from] crate::store::buffer::SegmentError),
}

/// What [`LocalClient::free`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freed {
    /// Per-object outcome on this node (`ObjectInUse` = deferred until released).
    pub errors: Vec<StoreError>,
    /// One line per other node the free could not reach (the others were still freed).
    pub peer_failures: Vec<String>,
}

/// A connection to the local raylet.
#[derive(Debug)]
pub struct LocalClient {
    main: Channel,
    shards: Vec<Option<Channel>>,
    shard_sockets: Vec<PathBuf>,
    worker_id: WorkerId,
    node_id: Option<NodeId>,
    /// The store (0) and, with a plasma-directory store, the staging segment (1).
    segments: HashMap<u32, Arc<Segment>>,
    /// Fallback segments, mapped while a view or writer holds them.
    fallback: HashMap<u32, Weak<Segment>>,
    /// Fallback segments of the reply being handled, held until its views or writer hold
    /// them, then cleared.
    fresh: Vec<Arc<Segment>>,
    releases: Releases,
}

fn unexpected(m: LocalMessage) -> ClientError {
    ClientError::Unexpected(format!("{m:?}"))
}

fn check(error: StoreError, message: String) -> Result<(), ClientError> {
    if error == StoreError::Ok {
        Ok(())
    } else {
        Err(ClientError::Store { code: error, message })
    }
}

impl LocalClient {
    /// Connects to the raylet socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        Ok(Self {
            main: Channel::connect(path)?,
            shards: Vec::new(),
            shard_sockets: Vec::new(),
            worker_id: WorkerId::random(),
            node_id: None,
            segments: HashMap::new(),
            fallback: HashMap::new(),
            fresh: Vec::new(),
            releases: Releases::default(),
        })
    }

    /// Connects and registers as a driver of a fresh job.
    pub fn connect_driver(path: &Path) -> Result<Self, ClientError> {
        let mut c = Self::connect(path)?;
        c.register_driver(JobId::random())?;
        Ok(c)
    }

    /// This client's id.
    pub fn worker_id(&self) -> WorkerId {
        self.worker_id
    }

    /// The node it registered with.
    pub fn node_id(&self) -> Option<NodeId> {
        self.node_id
    }

    /// Sends one message on the main connection.
    pub fn send(&mut self, m: &LocalMessage) -> Result<(), ClientError> {
        self.main.send(m)
    }

    /// Reads one message from the main connection.
    pub fn recv(&mut self) -> Result<LocalMessage, ClientError> {
        let (m, fds) = self.main.recv()?;
        self.adopt_fds(fds)?;
        Ok(m)
    }

    /// The main connection's socket, for sending hand-made bytes (tests).
    pub fn raw_stream(&mut self) -> &mut std::os::unix::net::UnixStream {
        self.main.stream()
    }

    /// Maps the segments whose descriptors came with a reply (see `client::channel`).
    fn adopt_fds(&mut self, fds: SegmentFds) -> Result<(), ClientError> {
        self.fresh.clear();
        for (seg, fd) in fds {
            if seg <= crate::store::segments::STAGING_SEGMENT {
                if let std::collections::hash_map::Entry::Vacant(e) = self.segments.entry(seg) {
                    e.insert(Arc::new(Segment::map(fd)?));
                }
                continue;
            }
            if let Some(s) = self.fallback.get(&seg).and_then(Weak::upgrade) {
                if s.same_file(&fd) {
                    self.fresh.push(s);
                    continue;
                }
            }
            let s = Arc::new(Segment::map(fd)?);
            self.fallback.retain(|_, w| w.strong_count() > 0);
            self.fallback.insert(seg, Arc::downgrade(&s));
            self.fresh.push(s);
        }
        Ok(())
    }

    fn register(&mut self, kind: ClientKind, job: JobId, token: i64) -> Result<NodeId, ClientError> {
        let req = Register {
            kind,
            worker_id: self.worker_id,
            pid: i64::from(std::process::id()),
            startup_token: token,
            job_id: job,
            ip_address: "127.0.0.1".into(),
        };
        match self.main.call(&LocalMessage::Register(req))?.0 {
            LocalMessage::RegisterReply(r) if r.success => {
                self.node_id = Some(r.node_id);
                self.shard_sockets = r.shard_sockets.iter().map(PathBuf::from).collect();
                self.shards = (0..r.num_shards.max(1)).map(|_| None).collect();
                Ok(r.node_id)
            }
            LocalMessage::RegisterReply(r) => Err(ClientError::Refused(r.failure_reason)),
            other => Err(unexpected(other)),
        }
    }

    /// Registers as a driver of `job`.
    pub fn register_driver(&mut self, job: JobId) -> Result<NodeId, ClientError> {
        self.register(ClientKind::Driver, job, -1)
    }

    /// Registers as a worker started by the pool with `startup_token`.
    pub fn register_worker(&mut self, startup_token: i64) -> Result<NodeId, ClientError> {
        self.register(ClientKind::Worker, JobId::NIL, startup_token)
    }

    /// Announces the port of this client's server. Drivers get a verdict; workers do not.
    pub fn announce_port(&mut self, port: u16, is_driver: bool) -> Result<(), ClientError> {
        self.main.send(&LocalMessage::AnnounceWorkerPort { port: i32::from(port) })?;
        if !is_driver {
            return Ok(());
        }
        match self.recv()? {
            LocalMessage::AnnounceWorkerPortReply { success: true, .. } => Ok(()),
            LocalMessage::AnnounceWorkerPortReply { failure_reason, .. } => Err(ClientError::Refused(failure_reason)),
            other => Err(unexpected(other)),
        }
    }

    /// Says goodbye and waits for the acknowledgement.
    pub fn disconnect(mut self) -> Result<(), ClientError> {
        self.flush_releases(&[])?;
        self.shards.clear();
        let m = LocalMessage::Disconnect { kind: DisconnectKind::Intended, detail: "client disconnect".into() };
        match self.main.call(&m)?.0 {
            LocalMessage::DisconnectReply => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The channel for store operations on objects owned by `shard` (attached lazily);
    /// the main connection when the raylet has no per-shard sockets.
    fn channel(&mut self, shard: usize) -> Result<&mut Channel, ClientError> {
        if shard >= self.shards.len() || self.shard_sockets.get(shard).is_none() {
            return Ok(&mut self.main);
        }
        if self.shards[shard].is_none() {
            let mut ch = Channel::connect(&self.shard_sockets[shard])?;
            match ch.call(&LocalMessage::Attach { worker_id: self.worker_id })?.0 {
                LocalMessage::AttachReply { success: true, .. } => {}
                LocalMessage::AttachReply { failure_reason, .. } => return Err(ClientError::Refused(failure_reason)),
                other => return Err(unexpected(other)),
            }
            self.shards[shard] = Some(ch);
        }
        Ok(self.shards[shard].as_mut().expect("attached just above"))
    }

    fn owner(&self, id: &ObjectId) -> usize {
        crate::shard::route::owner_of_object(id, self.shards.len().max(1)).index()
    }

    /// Sends queued releases (from dropped views) on their connections.
    /// Sends the releases of dropped views. Those for a shard in `riding` go out in the
    /// same write as the request about to be sent there (a get after a get costs one
    /// write and one raylet wake-up, not two); the others now.
    fn flush_releases(&mut self, riding: &[usize]) -> Result<(), ClientError> {
        for (shard, ids) in self.releases.take() {
            let m = LocalMessage::Release { ids };
            let ch = self.channel(shard)?;
            if riding.contains(&shard) {
                ch.queue(&m);
            } else {
                ch.send(&m)?;
            }
        }
        Ok(())
    }

    /// Calls the owner shard of `id`.
    fn call_owner(&mut self, id: &ObjectId, m: &LocalMessage) -> Result<LocalMessage, ClientError> {
        let shard = self.owner(id);
        self.flush_releases(&[shard])?;
        let (reply, fds) = self.channel(shard)?.call(m)?;
        self.adopt_fds(fds)?;
        Ok(reply)
    }

    /// The descriptors of the segments mapped now, by segment index: the store's, the
    /// staging segment's, and the fallback segments that views and writers hold.
    pub fn segment_fds(&self) -> Vec<(u32, std::os::fd::RawFd)> {
        use std::os::fd::AsRawFd;
        let fallback = self.fallback.iter().filter_map(|(i, w)| w.upgrade().map(|s| (*i, s)));
        self.segments
            .iter()
            .map(|(i, s)| (*i, s.clone()))
            .chain(fallback)
            .map(|(i, s)| (i, s.fd().as_raw_fd()))
            .collect()
    }

    fn segment(&self, seg: u32) -> Result<Arc<Segment>, ClientError> {
        self.segments
            .get(&seg)
            .cloned()
            .or_else(|| self.fallback.get(&seg).and_then(Weak::upgrade))
            .ok_or_else(|| ClientError::Unexpected(format!("segment {seg} was never passed")))
    }

    /// Creates an object of `data_size` + `metadata_size` bytes to be written in place.
    pub fn create(
        &mut self,
        id: ObjectId,
        data_size: u64,
        metadata_size: u64,
        primary: bool,
    ) -> Result<ObjectWriter, ClientError> {
        let m = LocalMessage::Create { id, data_size, metadata_size, primary, inline: None };
        match self.call_owner(&id, &m)? {
            LocalMessage::CreateReply { error, message, spec, .. } => {
                check(error, message)?;
                let seg = self.segment(spec.segment);
                self.fresh.clear();
                ObjectWriter::new(seg?, spec, self.owner(&id))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Seals a written object (consumes the writer; this client keeps its reference until
    /// `release`).
    pub fn seal(&mut self, w: ObjectWriter) -> Result<ObjectId, ClientError> {
        let id = w.id();
        match self.call_owner(&id, &LocalMessage::Seal { id })? {
            LocalMessage::SealReply { error, message } => check(error, message).map(|_| id),
            other => Err(unexpected(other)),
        }
    }

    /// Aborts an unsealed object.
    pub fn abort(&mut self, w: ObjectWriter) -> Result<(), ClientError> {
        let id = w.id();
        match self.call_owner(&id, &LocalMessage::Abort { id })? {
            LocalMessage::AbortReply { error, message } => check(error, message),
            other => Err(unexpected(other)),
        }
    }

    /// Stores `data` as a new primary copy on this node and returns its id.
    pub fn put(&mut self, data: &[u8]) -> Result<ObjectId, ClientError> {
        let id = ObjectId::random();
        self.put_with_id(id, data)?;
        Ok(id)
    }

    /// Stores `data` under `id` as a primary copy on this node. Small objects travel inline
    /// in the create request (one round trip); larger ones are written in place.
    pub fn put_with_id(&mut self, id: ObjectId, data: &[u8]) -> Result<(), ClientError> {
        if data.len() <= INLINE_PUT_MAX {
            let m = LocalMessage::Create {
                id,
                data_size: data.len() as u64,
                metadata_size: 0,
                primary: true,
                inline: Some(data.to_vec()),
            };
            let reply = self.call_owner(&id, &m);
            self.fresh.clear();
            return match reply? {
                LocalMessage::CreateReply { error, message, .. } => check(error, message),
                other => Err(unexpected(other)),
            };
        }
        let mut w = self.create(id, data.len() as u64, 0, true)?;
        w.data_mut().copy_from_slice(data);
        self.seal_and_release(w)
    }

    /// Seals `w` and drops this client's reference to it, both in one write (the
    /// raylet answers the seal, then applies the release).
    fn seal_and_release(&mut self, w: ObjectWriter) -> Result<(), ClientError> {
        let id = w.id();
        let shard = self.owner(&id);
        self.flush_releases(&[shard])?;
        let ch = self.channel(shard)?;
        ch.queue(&LocalMessage::Seal { id });
        ch.send(&LocalMessage::Release { ids: vec![id] })?;
        let (reply, fds) = ch.recv()?;
        self.adopt_fds(fds)?;
        match reply {
            LocalMessage::SealReply { error, message } => check(error, message),
            other => Err(unexpected(other)),
        }
    }

    /// Drops this client's references to `ids` (views already dropped release themselves).
    pub fn release(&mut self, ids: &[ObjectId]) -> Result<(), ClientError> {
        for id in ids {
            self.releases.push(self.owner(id), *id);
        }
        self.flush_releases(&[])
    }

    /// Gets objects, waiting up to `timeout` for each to be sealed here (pulling it from
    /// another node when needed). Missing ones are `None`. Views read the bytes in place
    /// and release their reference when dropped.
    pub fn get(&mut self, ids: &[ObjectId], timeout: Option<Duration>) -> Result<Vec<Option<ObjectView>>, ClientError> {
        Ok(self.get_or_why(ids, timeout)?.into_iter().map(Result::ok).collect())
    }

    /// [`Self::get`], saying why each missing object is missing: `Err("")` when it did not
    /// arrive in time, `Err(reason)` when the node gave up fetching it (e.g. it can never
    /// fit here).
    pub fn get_or_why(
        &mut self,
        ids: &[ObjectId],
        timeout: Option<Duration>,
    ) -> Result<Vec<Result<ObjectView, String>>, ClientError> {
        let timeout_ms = timeout.map(|t| t.as_millis().min(i64::MAX as u128) as i64).unwrap_or(-1);
        let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            groups.entry(self.owner(id)).or_default().push(i);
        }
        let riding: Vec<usize> = groups.keys().copied().collect();
        self.flush_releases(&riding)?;
        for (shard, idx) in &groups {
            let part: Vec<ObjectId> = idx.iter().map(|i| ids[*i]).collect();
            self.channel(*shard)?.send(&LocalMessage::Get { ids: part, timeout_ms })?;
        }
        let mut out: Vec<Result<ObjectView, String>> = (0..ids.len()).map(|_| Err(String::new())).collect();
        for (shard, idx) in &groups {
            let (reply, fds) = self.channel(*shard)?.recv()?;
            self.adopt_fds(fds)?;
            let LocalMessage::GetReply { objects, errors, .. } = reply else { return Err(unexpected(reply)) };
            if objects.len() != idx.len() {
                return Err(ClientError::Unexpected(format!(
                    "get reply has {} objects for {} ids",
                    objects.len(),
                    idx.len()
                )));
            }
            let mut errors = errors.into_iter();
            for (i, spec) in idx.iter().zip(objects) {
                let why = errors.next().unwrap_or_default();
                let view = self.view(*shard, spec);
                out[*i] = match view {
                    Ok(Some(v)) => Ok(v),
                    Ok(None) => Err(why),
                    Err(e) => {
                        self.fresh.clear();
                        return Err(e);
                    }
                };
            }
        }
        // The views hold the fallback segments they need; the last one dropped unmaps it.
        self.fresh.clear();
        Ok(out)
    }

    fn view(&self, shard: usize, spec: ObjectSpec) -> Result<Option<ObjectView>, ClientError> {
        if !spec.found {
            return Ok(None);
        }
        ObjectView::new(self.segment(spec.segment)?, spec, shard, self.releases.clone()).map(Some)
    }

    /// Deletes this node's copies; per-object outcome (`ObjectInUse` = deferred until
    /// released).
    pub fn delete(&mut self, ids: &[ObjectId]) -> Result<Vec<StoreError>, ClientError> {
        self.delete_copies(ids, true).map(|f| f.errors)
    }

    /// Frees objects on every alive node (Ray's `free(refs, local_only=False)`): deletes
    /// this node's copies as [`Self::delete`] does, then has the raylet send FreeObjects
    /// to every other alive node; returns once they have answered.
    pub fn free(&mut self, ids: &[ObjectId]) -> Result<Freed, ClientError> {
        self.delete_copies(ids, false)
    }

    fn delete_copies(&mut self, ids: &[ObjectId], local_only: bool) -> Result<Freed, ClientError> {
        self.flush_releases(&[])?;
        match self.main.call(&LocalMessage::Delete { ids: ids.to_vec(), local_only })?.0 {
            LocalMessage::DeleteReply { errors, peer_failures } => Ok(Freed { errors, peer_failures }),
            other => Err(unexpected(other)),
        }
    }

    /// Whether a sealed copy is on this node.
    pub fn contains(&mut self, id: &ObjectId) -> Result<bool, ClientError> {
        match self.call_owner(id, &LocalMessage::Contains { id: *id })? {
            LocalMessage::ContainsReply { has_object } => Ok(has_object),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until `num_required` of `ids` are ready here or `timeout` passes; returns
    /// (ready, remaining).
    pub fn wait(
        &mut self,
        ids: &[ObjectId],
        num_required: usize,
        timeout: Option<Duration>,
    ) -> Result<(Vec<ObjectId>, Vec<ObjectId>), ClientError> {
        self.flush_releases(&[])?;
        let timeout_ms = timeout.map(|t| t.as_millis().min(i64::MAX as u128) as i64).unwrap_or(-1);
        let m = LocalMessage::Wait {
            ids: ids.to_vec(),
            num_required: num_required.min(i32::MAX as usize) as i32,
            timeout_ms,
        };
        match self.main.call(&m)?.0 {
            LocalMessage::WaitReply { ready, remaining } => Ok((ready, remaining)),
            other => Err(unexpected(other)),
        }
    }
}
