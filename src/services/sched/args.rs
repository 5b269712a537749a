//! Lease arguments on shard 0 (Ray's lease dependency manager): a lease that will run here
//! first has its object arguments pulled to this node (at `TaskArgs` priority, below gets
//! and waits) and pinned, and only then gets resources and a worker. The pins are held by
//! a store client of its own per lease, on each shard that owns an argument, and are
//! dropped when the lease ends or is cancelled.
//!
//! Fetching is a loop per lease: a prefetch on each owner shard (restores spilled
//! arguments, and keeps one pull open until the lease's store client is gone), a wait
//! (bounded, so a lost cancel cannot leave a wait behind for long) until every argument
//! is sealed here, then references taken with a zero-timeout get. An argument evicted
//! between the two is fetched again.

use super::SchedService;
use crate::ids::{LeaseId, ObjectId, ShardId};
use crate::logic::objects::ClientId;
use crate::logic::transfer::pull::PullPriority;
use crate::services::objects::msg::{ObjRep, ObjReq, OpResult, StoreOp};
use crate::shard::msg::{Rep, Req};
use crate::shard::route::owner_of_object;
use crate::shard::Shard;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Instant;

/// Store clients holding lease arguments have this bit set (local connections never do:
/// theirs are `shard << 48 | seq`).
const ARGS_CLIENT: u64 = 1 << 63;

/// How long one wait for missing arguments lasts before it is re-issued.
const WAIT_MS: i64 = 1000;

/// The wait id of a fetch on each owner shard (one wait per client at a time).
const WAIT_CALL: u64 = 1;

/// One lease's arguments.
#[derive(Debug)]
struct Fetch {
    client: ClientId,
    shards: Vec<ShardId>,
    cancelled: Rc<Cell<bool>>,
}

/// Lease arguments being fetched or pinned, by lease.
#[derive(Debug, Default)]
pub struct Args {
    fetches: RefCell<HashMap<LeaseId, Fetch>>,
    next: Cell<u64>,
}

impl Args {
    /// Leases whose arguments are being fetched or held.
    pub fn len(&self) -> usize {
        self.fetches.borrow().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.fetches.borrow().is_empty()
    }
}

impl SchedService {
    /// Starts fetching and pinning the arguments of `lease`.
    pub(super) fn fetch_args(self: &Rc<Self>, lease: LeaseId, deps: Vec<ObjectId>) {
        let Some(shard) = self.shard.upgrade() else { return };
        let seq = self.args.next.get() + 1;
        self.args.next.set(seq);
        let client = ClientId(ARGS_CLIENT | seq);
        let mut groups: BTreeMap<ShardId, Vec<ObjectId>> = BTreeMap::new();
        for id in deps {
            groups.entry(owner_of_object(&id, shard.n)).or_default().push(id);
        }
        let cancelled = Rc::new(Cell::new(false));
        let fetch = Fetch { client, shards: groups.keys().copied().collect(), cancelled: cancelled.clone() };
        if let Some(old) = self.args.fetches.borrow_mut().insert(lease, fetch) {
            // The queue fetches once per lease; should it ask again, the old pins go.
            release(&shard, old);
        }
        let me = self.clone();
        glommio::spawn_local(async move {
            if fetch_all(&shard, client, &groups, &cancelled).await {
                me.core.borrow_mut().handle_args_ready(Instant::now(), lease);
                me.drive();
            }
        })
        .detach();
    }

    /// Stops fetching the arguments of `lease` and drops its pins.
    pub(super) fn release_args(self: &Rc<Self>, lease: LeaseId) {
        let Some(shard) = self.shard.upgrade() else { return };
        if let Some(f) = self.args.fetches.borrow_mut().remove(&lease) {
            release(&shard, f);
        }
    }
}

/// Waits until every argument is here and pinned for `client`; false once cancelled.
async fn fetch_all(
    shard: &Rc<Shard>,
    client: ClientId,
    groups: &BTreeMap<ShardId, Vec<ObjectId>>,
    cancelled: &Cell<bool>,
) -> bool {
    loop {
        if cancelled.get() {
            return false;
        }
        // Restore spilled arguments and keep one pull per owner shard open for the whole
        // fetch (a pull that lived only as long as one bounded wait would throw away a
        // partly received object each time the wait ended).
        let prefetch = groups.iter().map(|(owner, ids)| op_on(shard, *owner, client, StoreOp::Prefetch(ids.clone())));
        let prefetched = join(prefetch.collect()).await;
        if cancelled.get() {
            drop_pins(shard, client, groups.keys().copied()).await;
            return false;
        }
        let started = Instant::now();
        let waits = groups.iter().map(|(owner, ids)| {
            let op = StoreOp::Wait {
                ids: ids.clone(),
                n: ids.len(),
                timeout_ms: WAIT_MS,
                call: WAIT_CALL,
                priority: PullPriority::TaskArgs,
            };
            op_on(shard, *owner, client, op)
        });
        let waited = join(waits.collect()).await;
        if cancelled.get() {
            drop_pins(shard, client, groups.keys().copied()).await;
            return false;
        }
        let all_here = waited.iter().all(|r| matches!(r, Some(OpResult::Waited(_, remaining)) if remaining.is_empty()));
        if !all_here {
            // A shard that did not answer (stopping) or a pull that failed at once ends
            // the wait early: do not spin; the lease waits on.
            if prefetched.iter().any(Option::is_none) || started.elapsed() < EARLY {
                glommio::timer::sleep(EARLY).await;
            }
            continue;
        }
        let gets = groups.iter().map(|(owner, ids)| op_on(shard, *owner, client, StoreOp::Get(ids.clone(), 0)));
        let got = join(gets.collect()).await;
        if cancelled.get() {
            // Drop whatever this get pinned (the release may have overtaken it).
            drop_pins(shard, client, groups.keys().copied()).await;
            return false;
        }
        let pinned = got.iter().all(|r| matches!(r, Some(OpResult::Got(specs, _)) if specs.iter().all(|s| s.found)));
        if !pinned {
            // Something was evicted meanwhile: release what this get pinned (all of a group
            // whose shard did not answer) and fetch again, as the same client (a
            // ClientGone would end the client for good).
            let releases = groups.iter().zip(&got).map(|((owner, ids), r)| {
                let ids = match r {
                    Some(OpResult::Got(specs, _)) => specs.iter().filter(|s| s.found).map(|s| s.id).collect(),
                    _ => ids.clone(),
                };
                op_on(shard, *owner, client, StoreOp::Release(ids))
            });
            join(releases.collect()).await;
            continue;
        }
        return true;
    }
}

/// A wait that ends sooner than this with arguments missing is followed by a pause.
const EARLY: std::time::Duration = std::time::Duration::from_millis(100);

/// Drops every pin and pull of `client` on the owner shards.
async fn drop_pins(shard: &Rc<Shard>, client: ClientId, owners: impl IntoIterator<Item = ShardId>) {
    for owner in owners {
        let _ = shard.mesh.tell(owner, Req::Obj(ObjReq::ClientGone(client))).await;
    }
}

/// Runs a store operation for `client` on the shard that owns the objects.
async fn op_on(shard: &Rc<Shard>, owner: ShardId, client: ClientId, op: StoreOp) -> Option<OpResult> {
    match shard.mesh.call(owner, Req::Obj(ObjReq::Op { client, op })).await {
        Ok(Rep::Obj(ObjRep::Op(r))) => Some(r),
        other => {
            tracing::warn!(%owner, "a shard did not answer a lease-argument request: {other:?}");
            None
        }
    }
}

type Pending<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Option<OpResult>> + 'a>>;

/// Runs the calls concurrently; results in order.
async fn join<'a>(calls: Vec<impl std::future::Future<Output = Option<OpResult>> + 'a>) -> Vec<Option<OpResult>> {
    let boxed: Vec<Pending<'a>> = calls.into_iter().map(|c| Box::pin(c) as Pending<'a>).collect();
    crate::shard::mesh::join_all(boxed).await
}

/// Cancels a fetch: its wait ends now and its pins are dropped on every owner shard.
fn release(shard: &Rc<Shard>, f: Fetch) {
    f.cancelled.set(true);
    let shard = shard.clone();
    glommio::spawn_local(async move {
        for owner in &f.shards {
            let cancel = Req::Obj(ObjReq::Op { client: f.client, op: StoreOp::CancelWait(WAIT_CALL) });
            let _ = shard.mesh.tell(*owner, cancel).await;
        }
        drop_pins(&shard, f.client, f.shards).await;
    })
    .detach();
}
