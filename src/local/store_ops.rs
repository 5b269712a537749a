//! Store operations of a local connection: each object's operation runs on its owner shard
//! (directly when that is this shard, over the mesh otherwise); multi-object requests are
//! split by owner, run concurrently and merged in request order.

use super::codec::{self, LocalMessage, ObjectSpec, StoreError};
use super::conn::{Conn, Failure};
use super::writer::{LocalOut, LocalWriter, PassFd};
use crate::ids::{ObjectId, ShardId};
use crate::logic::transfer::pull::PullPriority;
use crate::metrics::ErrorKind;
use crate::services::objects::msg::{ObjRep, ObjReq, OpResult, StoreOp};
use crate::shard::msg::{Rep, Req};
use crate::shard::route::owner_of_object;
use crate::store::segments::{ARENA_SEGMENT, STAGING_SEGMENT};
use futures_lite::AsyncWrite;
use std::collections::BTreeMap;

impl Conn {
    fn owner(&self, id: &ObjectId) -> ShardId {
        owner_of_object(id, self.shard.n)
    }

    fn touch(&mut self, s: ShardId) {
        if !self.touched.contains(&s) {
            self.touched.push(s);
        }
    }

    /// Runs `op` on shard `owner` for this connection's client.
    async fn run(&mut self, owner: ShardId, op: StoreOp) -> Result<OpResult, Failure> {
        self.touch(owner);
        run_on(&self.shard, self.client, owner, op).await
    }

    fn mmap_size(&self) -> u64 {
        crate::services::objects::local_store(&self.shard).map(|s| s.arena.len()).unwrap_or(0)
    }

    /// Of the segments a reply names, those whose descriptor must go with it (usually none:
    /// then nothing is allocated).
    fn needing_fds(&self, named: impl Iterator<Item = u32>) -> Vec<u32> {
        named.filter(|&s| s > STAGING_SEGMENT || !self.fds_sent[s as usize]).collect()
    }

    /// Sends `m`, with the descriptors of the segments it names that the client needs, in
    /// ascending segment order: the store's and the staging segment's once per connection,
    /// a fallback segment's every time (the client unmaps one when its last view goes).
    /// The client works out the same list from the reply (`client::channel`).
    async fn reply<W: AsyncWrite + Unpin>(&mut self, tx: &mut LocalWriter<W>, m: LocalMessage, segments: &[u32]) {
        let mut out = LocalOut::frame(codec::encode(&m));
        if !segments.is_empty() {
            if let Some(store) = crate::services::objects::local_store(&self.shard) {
                let mut segs = segments.to_vec();
                segs.sort_unstable();
                segs.dedup();
                for seg in segs {
                    let fd = match seg {
                        ARENA_SEGMENT if self.fds_sent[0] => continue,
                        STAGING_SEGMENT if self.fds_sent[1] => continue,
                        ARENA_SEGMENT => Some(PassFd::Kept(store.arena.fd())),
                        STAGING_SEGMENT => store.arena.staging_fd().map(PassFd::Kept),
                        k => store.arena.fallback.client_fd(k).map(PassFd::Owned),
                    };
                    let Some(fd) = fd else {
                        // The object holds its segment while the client references it, so
                        // this is a bug; the client will find the segment missing.
                        tracing::error!(seg, "reply names a segment that does not exist");
                        continue;
                    };
                    if seg <= STAGING_SEGMENT {
                        self.fds_sent[seg as usize] = true;
                    }
                    out.pass_fds.push(fd);
                }
            }
        }
        tx.send(out).await;
    }

    /// Handles one store request.
    pub(super) async fn store_op<W: AsyncWrite + Unpin>(
        &mut self,
        m: LocalMessage,
        tx: &mut LocalWriter<W>,
    ) -> Result<(), Failure> {
        let unexpected = |r: OpResult| (ErrorKind::LocalIo, format!("unexpected store reply {r:?}"));
        match m {
            LocalMessage::Create { id, data_size, metadata_size, primary, inline } => {
                let op = StoreOp::Create { id, data_size, metadata_size, primary, inline };
                let r = self.run(self.owner(&id), op).await?;
                let OpResult::Created(r) = r else { return Err(unexpected(r)) };
                let segments = self.needing_fds(r.iter().map(|s| s.segment));
                let (error, message, spec) = match r {
                    Ok(spec) => (StoreError::Ok, String::new(), spec),
                    Err((e, msg)) => (e, msg, ObjectSpec { id, ..Default::default() }),
                };
                let mmap_size = self.mmap_size();
                self.reply(tx, LocalMessage::CreateReply { error, message, spec, mmap_size }, &segments).await;
            }
            LocalMessage::Seal { id } | LocalMessage::Abort { id } => {
                let seal = matches!(m, LocalMessage::Seal { .. });
                let op = if seal { StoreOp::Seal(id) } else { StoreOp::Abort(id) };
                let r = self.run(self.owner(&id), op).await?;
                let OpResult::Done(r) = r else { return Err(unexpected(r)) };
                let (error, message) = r.err().unwrap_or((StoreError::Ok, String::new()));
                let reply = if seal {
                    LocalMessage::SealReply { error, message }
                } else {
                    LocalMessage::AbortReply { error, message }
                };
                self.reply(tx, reply, &[]).await;
            }
            LocalMessage::Release { ids } => {
                for (owner, ids) in self.by_owner(&ids) {
                    self.run(owner, StoreOp::Release(ids.into_iter().map(|(_, id)| id).collect())).await?;
                }
            }
            LocalMessage::Delete { ids, local_only } => {
                let mut errors = vec![StoreError::Ok; ids.len()];
                for (owner, part) in self.by_owner(&ids) {
                    let r = self.run(owner, StoreOp::Delete(part.iter().map(|(_, id)| *id).collect())).await?;
                    let OpResult::Deleted(errs) = r else { return Err(unexpected(r)) };
                    for ((i, _), e) in part.iter().zip(errs) {
                        errors[*i] = e;
                    }
                }
                let peer_failures = if local_only {
                    Vec::new()
                } else {
                    crate::services::objects::free::free_on_peers(&self.shard, &ids).await
                };
                self.reply(tx, LocalMessage::DeleteReply { errors, peer_failures }, &[]).await;
            }
            LocalMessage::Contains { id } => {
                let r = self.run(self.owner(&id), StoreOp::Contains(id)).await?;
                let OpResult::Contains(has_object) = r else { return Err(unexpected(r)) };
                self.reply(tx, LocalMessage::ContainsReply { has_object }, &[]).await;
            }
            LocalMessage::Get { ids, timeout_ms } => {
                let (objects, errors) = self.get(&ids, timeout_ms).await?;
                let segments = self.needing_fds(objects.iter().filter(|o| o.found).map(|o| o.segment));
                let mmap_size = self.mmap_size();
                self.reply(tx, LocalMessage::GetReply { objects, mmap_size, errors }, &segments).await;
            }
            LocalMessage::Wait { ids, num_required, timeout_ms } => {
                let (ready, remaining) = self.wait(&ids, num_required, timeout_ms).await?;
                self.reply(tx, LocalMessage::WaitReply { ready, remaining }, &[]).await;
            }
            _ => return Err((ErrorKind::LocalBadFrame, "not a store request".into())),
        }
        Ok(())
    }

    fn by_owner(&self, ids: &[ObjectId]) -> BTreeMap<ShardId, Vec<(usize, ObjectId)>> {
        let mut m: BTreeMap<ShardId, Vec<(usize, ObjectId)>> = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            m.entry(self.owner(id)).or_default().push((i, *id));
        }
        m
    }

    async fn get(&mut self, ids: &[ObjectId], timeout_ms: i64) -> Result<(Vec<ObjectSpec>, Vec<String>), Failure> {
        let groups = self.by_owner(ids);
        for owner in groups.keys() {
            self.touch(*owner);
        }
        let (shard, client) = (self.shard.clone(), self.client);
        let op = |part: &Vec<(usize, ObjectId)>| StoreOp::Get(part.iter().map(|(_, id)| *id).collect(), timeout_ms);
        let results = match groups.iter().next() {
            // One owner (the usual get): no task to spawn and join.
            Some((owner, part)) if groups.len() == 1 => vec![run_on(&shard, client, *owner, op(part)).await],
            _ => {
                // Several owners wait concurrently.
                let calls: Vec<_> = groups
                    .iter()
                    .map(|(owner, part)| {
                        let (shard, owner, op) = (shard.clone(), *owner, op(part));
                        glommio::spawn_local(async move { run_on(&shard, client, owner, op).await })
                    })
                    .collect();
                let mut results = Vec::with_capacity(calls.len());
                for call in calls {
                    results.push(call.await);
                }
                results
            }
        };
        let mut out = vec![ObjectSpec::default(); ids.len()];
        let mut errors = Vec::new();
        for ((_, part), r) in groups.iter().zip(results) {
            let r = r?;
            let OpResult::Got(specs, why) = r else { return Err((ErrorKind::LocalIo, format!("unexpected {r:?}"))) };
            for ((i, _), s) in part.iter().zip(specs) {
                out[*i] = s;
            }
            if !why.is_empty() {
                errors.resize(ids.len(), String::new());
                for ((i, _), e) in part.iter().zip(why) {
                    errors[*i] = e;
                }
            }
        }
        Ok((out, errors))
    }

    async fn wait(
        &mut self,
        ids: &[ObjectId],
        n: i32,
        timeout_ms: i64,
    ) -> Result<(Vec<ObjectId>, Vec<ObjectId>), Failure> {
        let mut distinct: Vec<ObjectId> = Vec::new();
        for id in ids {
            if !distinct.contains(id) {
                distinct.push(*id);
            }
        }
        let n = usize::try_from(n).map_err(|_| (ErrorKind::LocalBadFrame, format!("num_required {n} is negative")))?;
        let n = n.min(distinct.len());
        if n == 0 {
            return Ok((Vec::new(), distinct));
        }
        let groups = self.by_owner(&distinct);
        for owner in groups.keys() {
            self.touch(*owner);
        }
        let (tx, rx) = glommio::channels::local_channel::new_bounded(groups.len().max(1));
        let tx = std::rc::Rc::new(tx);
        let call = self.client.0 ^ fastrand::u64(..);
        for (owner, part) in &groups {
            let op = StoreOp::Wait {
                ids: part.iter().map(|(_, id)| *id).collect(),
                n: n.min(part.len()),
                timeout_ms,
                call,
                priority: PullPriority::Wait,
            };
            let (shard, client, owner, tx) = (self.shard.clone(), self.client, *owner, tx.clone());
            glommio::spawn_local(async move {
                let _ = tx.send((owner, run_on(&shard, client, owner, op).await)).await;
            })
            .detach();
        }
        let mut ready = Vec::new();
        let mut pending: Vec<ShardId> = groups.keys().copied().collect();
        let mut cancelled = false;
        while !pending.is_empty() {
            let Some((owner, r)) = rx.recv().await else { break };
            pending.retain(|s| *s != owner);
            let OpResult::Waited(r, _) = r? else { return Err((ErrorKind::LocalIo, "unexpected wait reply".into())) };
            ready.extend(r);
            if ready.len() >= n && !cancelled {
                cancelled = true;
                for s in &pending {
                    run_on(&self.shard, self.client, *s, StoreOp::CancelWait(call)).await?;
                }
            }
        }
        let remaining = distinct.iter().filter(|id| !ready.contains(id)).copied().collect();
        let ready = distinct.iter().filter(|id| ready.contains(id)).copied().collect();
        Ok((ready, remaining))
    }
}

/// Runs `op` for `client` on `owner`.
pub async fn run_on(
    shard: &std::rc::Rc<crate::shard::Shard>,
    client: crate::logic::objects::ClientId,
    owner: ShardId,
    op: StoreOp,
) -> Result<OpResult, Failure> {
    if owner == shard.id {
        let store =
            crate::services::objects::local_store(shard).ok_or((ErrorKind::LocalIo, "store not started".into()))?;
        return Ok(store.execute(shard, client, op).await);
    }
    match shard.mesh.call(owner, Req::Obj(ObjReq::Op { client, op })).await {
        Ok(Rep::Obj(ObjRep::Op(r))) => Ok(r),
        other => Err((ErrorKind::LocalIo, format!("shard {owner} did not answer a store request: {other:?}"))),
    }
}
