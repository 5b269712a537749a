//! Target `lease_queue`: a [`LeaseQueue`] driven by an arbitrary sequence of lease requests
//! (repeats included; strategies, placement-group bundles, object arguments, lessee
//! connections and owners drawn from small sets), cancels, worker assignments (for leases
//! that asked for one and for leases that did not), returns, worker deaths,
//! placement-group removals, owner, connection and node deaths, remote node updates and
//! time, with a driver that keeps a worker pool as the scheduler does.
//!
//! Invariants checked after every input:
//! - **grants**: a lease is granted at most once (a repeated request for a granted lease
//!   re-sends the same grant, with the same worker and allocation); no worker holds two
//!   leases; a worker offered to a lease that no longer waits for one is released;
//! - **resources**: the local node's availability plus what every lease holding resources
//!   holds (waiting for its worker, or granted) equals its totals, per resource; nothing
//!   is ever available beyond the totals or below zero;
//! - **arguments**: every `FetchArgs` is matched by exactly one `ReleaseArgs`, and each
//!   lease asks for its arguments at most once at a time;
//! - **answers**: spillbacks name a remote node; `handle_return` accepts exactly the
//!   workers holding leases; counts of granted leases agree with the grants;
//! - **the end**: once every lease is cancelled or returned, resources are back to their
//!   totals, no lease, argument fetch or worker request is left.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

use super::ids::{lease, node, object, worker};
use crate::ids::{JobId, LeaseId, PlacementGroupId, WorkerId};
use crate::logic::bundles::BundleKey;
use crate::logic::lease::policy::{NodeView, Strategy};
use crate::logic::lease::queue::{LeaseAction, LeaseDecision, LeaseQueue, LeaseRequest, LesseeConn, QueueConfig};
use crate::logic::resources::{FixedPoint, NodeResources, ResourceSet, CPU, GPU};

const LEASES: u8 = 16;
const NODES: u8 = 4;

#[derive(Debug, Arbitrary)]
enum Event {
    Request {
        lease: u8,
        quarter_cpus: u8,
        gpu: bool,
        strategy: u8,
        pg: Option<u8>,
        deps: u8,
        owner: u8,
        reject: bool,
    },
    Cancel {
        lease: u8,
    },
    /// The pool hands a fresh worker to the `n`th lease waiting for one.
    Assign {
        n: u8,
    },
    /// A fresh worker offered to any lease (late, after a cancel).
    AssignStray {
        lease: u8,
    },
    ArgsReady {
        lease: u8,
    },
    Return {
        n: u8,
    },
    WorkerDied {
        n: u8,
    },
    RemovePg {
        pg: u8,
    },
    KeepBundles {
        pgs: u8,
    },
    OwnerGone {
        owner: u8,
    },
    ConnClosed {
        conn: u8,
    },
    NodeDead {
        node: u8,
    },
    NodeUpdate {
        node: u8,
        cpus: u8,
        available: u8,
        alive: bool,
    },
    Advance {
        secs: u16,
    },
}

struct Driver {
    q: LeaseQueue,
    now: Instant,
    total: ResourceSet,
    /// What each lease asked for, by id (the latest request).
    asked: BTreeMap<LeaseId, ResourceSet>,
    /// Leases holding resources: waiting for a worker (`None`) or granted.
    holding: BTreeMap<LeaseId, (ResourceSet, Option<WorkerId>)>,
    /// Grants as sent: lease → (worker, allocation amounts).
    granted: BTreeMap<LeaseId, (WorkerId, ResourceSet)>,
    fetching: BTreeSet<LeaseId>,
    next_worker: u32,
}

fn pg(n: u8) -> PlacementGroupId {
    let mut b = [0u8; PlacementGroupId::LEN];
    b[0] = n % 3 + 1;
    PlacementGroupId(b)
}

/// The target body.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(events) = Vec::<Event>::arbitrary(&mut u) else { return };
    let mut total = ResourceSet::new();
    total.set(CPU, FixedPoint::whole(4));
    total.set(GPU, FixedPoint::whole(2));
    let config = QueueConfig { tombstone_ttl: Duration::from_secs(60), max_tombstones: 8, ..QueueConfig::default() };
    let q = LeaseQueue::new(node(0), NodeResources::new(&total, &[GPU]), config, 3);
    let mut d = Driver {
        q,
        now: Instant::now(),
        total,
        asked: BTreeMap::new(),
        holding: BTreeMap::new(),
        granted: BTreeMap::new(),
        fetching: BTreeSet::new(),
        next_worker: 0,
    };
    for e in events {
        let repeat = match &e {
            Event::Request { lease: l, .. } => Some(lease(l % LEASES)),
            _ => None,
        };
        d.step(e);
        d.drain(repeat);
        d.check();
    }
    for l in 0..LEASES {
        d.q.handle_cancel(d.now, lease(l));
        d.drain(None);
    }
    let workers: Vec<WorkerId> = d.granted.values().map(|g| g.0).collect();
    for w in workers {
        assert!(d.q.handle_return(w).is_ok(), "granted worker {w} unknown");
        d.end_grant_of(w);
        d.drain(None);
    }
    d.check();
    assert!(d.holding.is_empty() && d.granted.is_empty(), "leases still hold resources");
    assert!(d.fetching.is_empty(), "arguments never released: {:?}", d.fetching);
    assert_eq!(d.q.resources().available(), d.total, "resources not back to totals");
    assert_eq!((d.q.num_pending(), d.q.num_granted(), d.q.num_infeasible()), (0, 0, 0));
}

impl Driver {
    fn step(&mut self, e: Event) {
        let now = self.now;
        match e {
            Event::Request { lease: l, quarter_cpus, gpu, strategy, pg: g, deps, owner, reject } => {
                let id = lease(l % LEASES);
                let mut resources = ResourceSet::new();
                resources.set(CPU, FixedPoint::from_f64(f64::from(quarter_cpus % 24) / 4.0));
                if gpu {
                    resources.set(GPU, FixedPoint::from_f64(if quarter_cpus % 2 == 0 { 1.0 } else { 0.5 }));
                }
                let strategy = match strategy % 4 {
                    0 | 1 => Strategy::Default,
                    2 => Strategy::Spread,
                    _ => Strategy::NodeAffinity { node: node(strategy % NODES), soft: strategy & 8 != 0 },
                };
                let req = LeaseRequest {
                    id,
                    job: JobId([0, 0, 0, 1]),
                    owner: Some(worker(1000 + u32::from(owner % 3))),
                    owner_node: Some(node(owner % NODES)),
                    resources: resources.clone(),
                    strategy,
                    bundle: g.map(|g| BundleKey { pg: pg(g), index: i64::from(g % 2) }),
                    grant_or_reject: reject,
                    conn: Some(LesseeConn { shard: 0, conn: u64::from(owner % 2) }),
                    deps: (0..deps % 3).map(object).collect(),
                };
                self.asked.entry(id).or_insert(resources);
                self.q.handle_request(now, req);
            }
            Event::Cancel { lease: l } => {
                self.q.handle_cancel(now, lease(l % LEASES));
            }
            Event::Assign { n } => {
                let waiting: Vec<LeaseId> =
                    self.holding.iter().filter(|(_, h)| h.1.is_none()).map(|(l, _)| *l).collect();
                if let Some(l) = waiting.get(usize::from(n) % waiting.len().max(1)) {
                    let w = self.fresh_worker();
                    self.holding.get_mut(l).expect("listed").1 = Some(w);
                    self.q.handle_worker_assigned(*l, w);
                }
            }
            Event::AssignStray { lease: l } => {
                let l = lease(l % LEASES);
                if !self.holding.contains_key(&l) {
                    let w = self.fresh_worker();
                    self.q.handle_worker_assigned(l, w);
                }
            }
            Event::ArgsReady { lease: l } => self.q.handle_args_ready(lease(l % LEASES)),
            Event::Return { n } => {
                if let Some(w) = self.nth_granted(n) {
                    assert!(self.q.handle_return(w).is_ok(), "return of granted worker {w} refused");
                    self.end_grant_of(w);
                } else {
                    let w = self.fresh_worker();
                    assert!(self.q.handle_return(w).is_err(), "return of an unknown worker accepted");
                }
            }
            Event::WorkerDied { n } => {
                if let Some(w) = self.nth_granted(n) {
                    let l = self.q.lease_of_worker(w).expect("granted worker has a lease");
                    self.q.handle_lease_lost(l);
                    self.end_grant_of(w);
                }
            }
            Event::RemovePg { pg: g } => self.q.handle_cancel_placement_group(pg(g)),
            Event::KeepBundles { pgs } => {
                let keep = (0..3u8).filter(|i| pgs & (1 << i) != 0);
                let keep = keep.flat_map(|i| (0..2).map(move |index| BundleKey { pg: pg(i), index })).collect();
                self.q.handle_release_unused_bundles(&keep);
            }
            Event::OwnerGone { owner } => self.q.handle_owner_gone(worker(1000 + u32::from(owner % 3))),
            Event::ConnClosed { conn } => self.q.handle_conn_closed(LesseeConn { shard: 0, conn: u64::from(conn % 2) }),
            Event::NodeDead { node: n } => self.q.handle_node_dead(node(1 + n % (NODES - 1))),
            Event::NodeUpdate { node: n, cpus, available, alive } => {
                let mut total = ResourceSet::new();
                total.set(CPU, FixedPoint::whole(i64::from(cpus % 8)));
                let mut view = NodeView::new(total);
                view.available.set(CPU, FixedPoint::whole(i64::from(available % 8)));
                view.alive = alive;
                self.q.handle_node_update(node(1 + n % (NODES - 1)), view);
            }
            Event::Advance { secs } => self.now += Duration::from_secs(u64::from(secs % 120)),
        }
    }

    fn fresh_worker(&mut self) -> WorkerId {
        self.next_worker += 1;
        worker(self.next_worker)
    }

    fn nth_granted(&self, n: u8) -> Option<WorkerId> {
        let ws: Vec<WorkerId> = self.granted.values().map(|g| g.0).collect();
        ws.get(usize::from(n) % ws.len().max(1)).copied()
    }

    /// The lease of worker `w` ended (returned, lost or revoked): its resources are free.
    fn end_grant_of(&mut self, w: WorkerId) {
        let l = self.granted.iter().find(|(_, g)| g.0 == w).map(|(l, _)| *l).expect("worker was granted");
        self.granted.remove(&l);
        self.holding.remove(&l);
    }

    /// Performs the actions; `repeat` is the lease just requested (a grant may be re-sent).
    fn drain(&mut self, repeat: Option<LeaseId>) {
        while let Some(a) = self.q.poll_action() {
            match a {
                LeaseAction::Decided { lease: l, decision: LeaseDecision::Grant { worker: w, allocation } } => {
                    let amounts = allocation.to_resource_set();
                    if let Some(prev) = self.granted.get(&l) {
                        assert_eq!(repeat, Some(l), "lease {l} granted twice");
                        assert_eq!(prev, &(w, amounts), "a re-sent grant differs");
                        continue;
                    }
                    assert!(!self.granted.values().any(|g| g.0 == w), "worker {w} holds two leases");
                    let h = self.holding.get(&l).expect("grant of a lease that allocated nothing");
                    assert_eq!(h.1, Some(w), "granted with a worker it was not given");
                    assert_eq!(amounts, h.0, "allocation differs from the request");
                    self.granted.insert(l, (w, amounts));
                }
                LeaseAction::Decided { lease: l, decision } => {
                    assert!(!self.granted.contains_key(&l), "granted lease {l} decided again: {decision:?}");
                    if let LeaseDecision::Spillback { node: n } = decision {
                        assert_ne!(n, node(0), "spillback to this node");
                    }
                    assert!(!self.holding.contains_key(&l), "lease {l} decided while it holds resources");
                }
                LeaseAction::PopWorker { lease: l, .. } => {
                    let r = self.asked.get(&l).cloned().expect("PopWorker for a lease never requested");
                    assert!(self.holding.insert(l, (r, None)).is_none(), "lease {l} allocated twice");
                }
                LeaseAction::CancelPop { lease: l } => {
                    let h = self.holding.remove(&l).expect("CancelPop for a lease holding nothing");
                    assert!(h.1.is_none(), "CancelPop for granted lease {l}");
                }
                LeaseAction::ReleaseWorker { worker: w } => {
                    assert!(!self.granted.values().any(|g| g.0 == w), "released worker {w} holds a lease");
                    for h in self.holding.values_mut() {
                        if h.1 == Some(w) {
                            h.1 = None;
                        }
                    }
                }
                LeaseAction::DestroyWorker { lease: l, worker: w } => {
                    assert_eq!(self.granted.get(&l).map(|g| g.0), Some(w), "destroyed worker {w} was not granted {l}");
                    self.end_grant_of(w);
                }
                LeaseAction::FetchArgs { lease: l, .. } => {
                    assert!(self.fetching.insert(l), "arguments of {l} fetched twice");
                }
                LeaseAction::ReleaseArgs { lease: l } => {
                    assert!(self.fetching.remove(&l), "ReleaseArgs for {l} without a fetch");
                }
                LeaseAction::Infeasible { .. } => {}
            }
        }
        self.forget_finished();
    }

    /// Drops request shapes of leases the queue no longer knows (so a new request with
    /// the same id may ask for another shape).
    fn forget_finished(&mut self) {
        let q = &self.q;
        self.asked.retain(|l, _| q.lease(*l).is_some());
    }

    fn check(&self) {
        let mut sum = self.q.resources().available();
        for (r, _) in self.holding.values() {
            sum.add(r);
        }
        assert_eq!(sum, self.total, "available + held != totals");
        let available = self.q.resources().available();
        assert!(available.is_subset_of(&self.total), "more available than the totals");
        assert!(available.iter().all(|(_, v)| v >= FixedPoint::ZERO), "negative availability");
        assert_eq!(self.q.num_granted(), self.granted.len(), "granted count");
        for (l, (w, _)) in &self.granted {
            assert_eq!(self.q.lease_of_worker(*w), Some(*l));
        }
    }
}
