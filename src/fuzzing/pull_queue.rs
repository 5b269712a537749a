//! Target `pull_queue`: a [`PullQueue`] driven by an arbitrary sequence of inputs (bundles
//! and cancels, budgets, directory updates, node deaths, local seals, transfer and
//! allocation failures, time, and chunk headers and reports on behalf of claimed and
//! unclaimed writers), with a driver that performs its actions as the transfer service
//! does and checks after every input:
//!
//! - **buffers**: `AllocateBuffer{id}` never names an object that already has a buffer;
//!   `AbortBuffer` and `Seal` name one that has; `bytes_in_progress` is the sum of the
//!   live buffers' sizes; `Seal{id}` comes only after every chunk of that buffer was
//!   accepted, and `Write` claims lie inside the buffer as the chunk layout says;
//! - **budget**: with no Get bundle live and two or more bundles active, the bytes of
//!   allocated buffers never exceed the budget (admission may only overshoot it for Get
//!   bundles, or for the one bundle activated so the queue cannot deadlock);
//! - **claims**: at most one writer holds a chunk; a chunk reported busy is held by a
//!   writer the driver knows of (claims are released by `handle_chunk`, a transfer
//!   failure or the sender's death; none leak);
//! - **bundles**: `Completed` names a live bundle, once; `handle_pull` refuses exactly the
//!   live ids; `handle_cancel` reports exactly whether the bundle was live;
//! - **timers**: after `handle_timeout(now)`, no timer is due at `now`;
//! - **the end**: once every bundle is cancelled, no buffer, claim, timer or queued pull is
//!   left.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

use super::ids::{node, object};
use crate::ids::{NodeId, ObjectId};
use crate::logic::transfer::chunks::ChunkHeader;
use crate::logic::transfer::pull::{
    BundleId, ChunkClaim, DiscardReason, PullAction, PullConfig, PullPriority, PullQueue,
};

const NODES: u8 = 5;
const OBJECTS: u8 = 8;
const CHUNK: u64 = 10;

#[derive(Debug, Arbitrary)]
enum Event {
    Pull {
        bundle: u8,
        priority: u8,
        ids: Vec<u8>,
    },
    Cancel {
        bundle: u8,
    },
    Budget {
        bytes: u8,
    },
    Locations {
        id: u8,
        nodes: u8,
        size: Option<Size>,
    },
    NodeDead {
        node: u8,
    },
    ObjectLocal {
        id: u8,
    },
    TransferFailed {
        id: u8,
        from: u8,
    },
    /// Allocations fail from now on (store full), or succeed again.
    StoreFull {
        full: bool,
    },
    Advance {
        ms: u16,
    },
    Header {
        id: u8,
        from: u8,
        index: u8,
        wrong_total: bool,
        wrong_len: bool,
    },
    Finish {
        claim: u8,
        crc_ok: bool,
    },
    Unclaimed {
        id: u8,
        from: u8,
        index: u8,
        crc_ok: bool,
    },
}

/// An object size as the directory reports it: small, or near the top of `u64`.
#[derive(Debug, Arbitrary)]
enum Size {
    Small(u8),
    Huge(u8),
}

impl Size {
    fn bytes(&self) -> u64 {
        match self {
            Self::Small(n) => u64::from(*n % 80),
            Self::Huge(n) => u64::MAX - u64::from(*n),
        }
    }
}

/// What the driver knows: live bundles, buffers, and the claims its writers hold.
struct Driver {
    q: PullQueue,
    now: Instant,
    budget: u64,
    bundles: BTreeMap<BundleId, PullPriority>,
    /// Buffer size and the chunks accepted into it.
    buffers: BTreeMap<ObjectId, (u64, BTreeSet<u32>)>,
    /// (object, chunk) → the node whose writer holds the claim.
    claims: BTreeMap<(ObjectId, u32), NodeId>,
    /// Every `AllocateBuffer` fails (reported with `handle_allocation_failed`).
    store_full: bool,
}

/// The target body.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(events) = Vec::<Event>::arbitrary(&mut u) else { return };
    let config = PullConfig {
        chunk_size: CHUNK,
        pull_retry: Duration::from_millis(100),
        max_backoff_exponent: 3,
        fetch_timeout: Duration::from_millis(2000),
    };
    let q = PullQueue::new(node(0), config, fastrand::Rng::with_seed(7)).expect("valid config");
    let mut d = Driver {
        q,
        now: Instant::now(),
        budget: 0,
        bundles: BTreeMap::new(),
        buffers: BTreeMap::new(),
        claims: BTreeMap::new(),
        store_full: false,
    };
    for e in events {
        d.step(e);
        d.drain();
        d.check();
    }
    // One at a time: a cancel may let another bundle complete (admission starts an object
    // whose size cannot be laid out, and it fails at once).
    while let Some(&b) = d.bundles.keys().next() {
        assert!(d.q.handle_cancel(d.now, b), "live bundle {b:?} unknown to the queue");
        d.bundles.remove(&b);
        d.drain();
        d.check();
    }
    assert!(d.buffers.is_empty(), "buffers left after every bundle ended: {:?}", d.buffers.keys());
    assert!(d.claims.is_empty(), "claims left after every bundle ended");
    assert_eq!(d.q.bytes_in_progress(), 0);
    assert_eq!(d.q.poll_timeout(), None, "a timer outlived every bundle");
    assert!(!d.q.object_pulls_queued());
}

impl Driver {
    fn step(&mut self, e: Event) {
        let now = self.now;
        match e {
            Event::Pull { bundle, priority, ids } => {
                let b = BundleId(u64::from(bundle % 16));
                let p = [PullPriority::Get, PullPriority::Wait, PullPriority::TaskArgs][usize::from(priority % 3)];
                let ids = ids.iter().take(6).map(|i| object(i % OBJECTS)).collect();
                let res = self.q.handle_pull(now, b, p, ids);
                assert_eq!(res.is_err(), self.bundles.contains_key(&b), "duplicate bundle check");
                if res.is_ok() {
                    self.bundles.insert(b, p);
                }
            }
            Event::Cancel { bundle } => {
                let b = BundleId(u64::from(bundle % 16));
                assert_eq!(self.q.handle_cancel(now, b), self.bundles.remove(&b).is_some());
            }
            Event::Budget { bytes } => {
                self.budget = u64::from(bytes);
                self.q.handle_budget(now, self.budget);
            }
            Event::Locations { id, nodes, size } => {
                let holders = (0..NODES).filter(|n| nodes & (1 << n) != 0).map(node).collect();
                self.q.handle_locations(now, object(id % OBJECTS), holders, size.map(|s| s.bytes()));
            }
            Event::NodeDead { node: n } => {
                let n = node(1 + n % (NODES - 1));
                self.claims.retain(|_, holder| *holder != n);
                self.q.handle_node_dead(now, n);
            }
            Event::ObjectLocal { id } => self.q.handle_object_local(now, object(id % OBJECTS)),
            Event::TransferFailed { id, from } => {
                let (id, from) = (object(id % OBJECTS), node(from % NODES));
                self.claims.retain(|(o, _), holder| !(*o == id && *holder == from));
                self.q.handle_transfer_failed(now, id, from);
            }
            Event::StoreFull { full } => self.store_full = full,
            Event::Advance { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                if self.q.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.q.handle_timeout(self.now);
                    assert!(self.q.poll_timeout().is_none_or(|t| t > self.now), "a due timer did not fire");
                }
            }
            Event::Header { id, from, index, wrong_total, wrong_len } => {
                self.header(id, from, index, wrong_total, wrong_len)
            }
            Event::Finish { claim, crc_ok } => {
                let Some((&(id, index), &from)) = self.claims.iter().nth(usize::from(claim) % self.claims.len().max(1))
                else {
                    return;
                };
                self.claims.remove(&(id, index));
                self.report(id, from, index, crc_ok);
            }
            Event::Unclaimed { id, from, index, crc_ok } => {
                let (id, index) = (object(id % OBJECTS), u32::from(index % 10));
                if !self.claims.contains_key(&(id, index)) {
                    self.report(id, node(from % NODES), index, crc_ok);
                }
            }
        }
    }

    fn header(&mut self, id: u8, from: u8, index: u8, wrong_total: bool, wrong_len: bool) {
        let (id, from, index) = (object(id % OBJECTS), node(from % NODES), u32::from(index % 10));
        let size = self.buffers.get(&id).map_or(0, |b| b.0);
        let offset = u64::from(index) * CHUNK;
        let len = CHUNK.min(size.saturating_sub(offset)) + u64::from(wrong_len);
        let total_size = size + u64::from(wrong_total);
        let header = ChunkHeader { index, total_size, len };
        match self.q.handle_chunk_header(id, from, &header) {
            Ok(ChunkClaim::Write { offset: o, len: l }) => {
                let (bsize, received) = self.buffers.get(&id).expect("a claim on an object without a buffer");
                assert!(!wrong_total && !wrong_len, "a header that does not fit the layout was claimed");
                assert_eq!((o, l), (offset, len), "claim outside the chunk layout");
                assert!(o + l <= *bsize, "claim outside the buffer");
                assert!(!received.contains(&index), "claim on a chunk already accepted");
                assert!(self.claims.insert((id, index), from).is_none(), "two writers hold one chunk");
            }
            Ok(ChunkClaim::Discard(DiscardReason::InProgress)) => {
                assert!(
                    self.claims.get(&(id, index)).is_some_and(|h| *h != from),
                    "chunk reported busy with no other writer holding it (a leaked claim)"
                );
            }
            Ok(ChunkClaim::Discard(DiscardReason::AlreadyReceived)) => {
                assert!(self.buffers.get(&id).is_some_and(|b| b.1.contains(&index)));
            }
            Ok(ChunkClaim::Discard(DiscardReason::NotPulled)) => {
                assert!(!self.buffers.contains_key(&id), "an object with a buffer refused a chunk as not pulled");
            }
            Err(_) => {}
        }
    }

    fn report(&mut self, id: ObjectId, from: NodeId, index: u32, crc_ok: bool) {
        use crate::logic::transfer::pull::ChunkOutcome as O;
        let before = self.buffers.get(&id).is_some_and(|b| b.1.contains(&index));
        let out = self.q.handle_chunk(self.now, id, from, index, crc_ok);
        if matches!(out, Ok(O::Accepted | O::Completed)) {
            assert!(crc_ok && !before, "{out:?} for a corrupt or already accepted chunk");
            let b = self.buffers.get_mut(&id).expect("a chunk accepted without a buffer");
            b.1.insert(index);
        }
    }

    fn drain(&mut self) {
        let mut failed = Vec::new();
        while let Some(a) = self.q.poll_action() {
            match a {
                PullAction::AllocateBuffer { id, size } => {
                    assert!(!self.buffers.contains_key(&id), "AllocateBuffer for {id} while its buffer exists");
                    if self.store_full {
                        failed.push(id);
                    } else {
                        self.buffers.insert(id, (size, BTreeSet::new()));
                    }
                }
                PullAction::AbortBuffer { id } => {
                    if let Some(i) = failed.iter().position(|f| *f == id) {
                        // Aborted before the driver reported its failed allocation.
                        failed.swap_remove(i);
                        continue;
                    }
                    assert!(self.buffers.remove(&id).is_some(), "AbortBuffer for {id} without a buffer");
                    self.claims.retain(|(o, _), _| *o != id);
                }
                PullAction::Seal { id } => {
                    let (size, received) = self.buffers.remove(&id).expect("Seal without a buffer");
                    let chunks = if size == 0 { 1 } else { size.div_ceil(CHUNK) };
                    assert_eq!(received.len() as u64, chunks, "Seal of {id} before every chunk was accepted");
                    self.claims.retain(|(o, _), _| *o != id);
                }
                PullAction::Completed { bundle_id } => {
                    assert!(self.bundles.remove(&bundle_id).is_some(), "Completed for a bundle that is not live");
                }
                PullAction::SendPull { node: n, .. } => assert_ne!(n, node(0), "pull sent to this node"),
                PullAction::Failed { .. } => {}
            }
        }
        for id in failed {
            self.q.handle_allocation_failed(self.now, id);
            self.drain();
        }
    }

    fn check(&self) {
        let buffered: u64 = self.buffers.values().map(|b| b.0).fold(0, u64::saturating_add);
        assert_eq!(self.q.bytes_in_progress(), buffered, "bytes_in_progress differs from the live buffers");
        let gets = self.bundles.values().any(|p| *p == PullPriority::Get);
        let active = self.bundles.keys().filter(|b| self.q.is_bundle_active(**b)).count();
        if !gets && active >= 2 {
            assert!(buffered <= self.budget, "{buffered} bytes admitted over a budget of {}", self.budget);
        }
    }
}
