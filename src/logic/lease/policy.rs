//! Node choice for one lease request: Ray's `GetBestSchedulableNode` as a pure function.
//!
//! Owns nothing persistent: it reads a [`ClusterView`] snapshot (the node-wide shard's
//! picture of every node's totals and availability) and returns a [`Decision`]. The only
//! state carried between calls is the caller's SPREAD round-robin cursor and RNG.
//!
//! Called by: the lease queue on the node-wide shard, once per work item per scheduling
//! pass, and again with `force_spillback` when a queued item should leave this node.
//! After a remote [`Decision::Node`] the caller spills the lease back and calls
//! [`subtract_on_spillback`] so later decisions in the same pass do not pile onto that node.
//!
//! Must not: do IO, read clocks, or use a global RNG (randomness comes from the caller's
//! seeded `fastrand::Rng`).
//!
//! # Decisions
//! - `Node(local)`: run here. Either local resources are available now, or nothing is
//!   available anywhere and the local node is the best feasible node, so the request queues
//!   locally and waits for resources.
//! - `Node(x)`, `x != local`: spill back to `x` (available now, except for NodeAffinity
//!   targets, which are returned when feasible even if busy, as Ray).
//! - `Unavailable`: some schedulable node could run it (its totals fit), but no node was
//!   chosen now. Keep the request in the cluster queue and retry on the next pass.
//! - `Infeasible`: no alive, non-draining node's totals fit (the `force_spillback`
//!   exclusion and the GPU filter do not count). Move it to the infeasible queue. For a
//!   *hard* NodeAffinity it means the target is unknown, dead, draining or too small:
//!   cancel the lease as unschedulable instead.
//!
//! # Default (hybrid) policy
//! Per pass: every alive, non-draining, feasible node (minus the local node under
//! `force_spillback`, minus GPU nodes in the non-GPU pass) is *available* if the request fits
//! its availability and, when the request needs object-store memory, the node has no
//! queued object pulls (ignored for the local node). Score = critical utilisation, truncated
//! to 0 below `spread_threshold`. Available candidates win over feasible-only ones (the
//! latter only when `force_spillback` is off). Candidates are ordered by node id, then
//! stably by score; the preferred node (`opts.preferred` if known, else local) wins when it
//! is a candidate with score ≤ the best and `force_spillback` is off; otherwise a uniform
//! pick among the first `k = max(1, top_k_absolute, floor(#nodes × top_k_fraction))`
//! (`#nodes` counts every node in the view). With `avoid_gpu_nodes` and a request without
//! GPU, a pass restricted to non-GPU nodes that requires availability runs first.
//! A feasible-only pick becomes `Node(local)` if it is the local node, else `Unavailable`.
//!
//! # SPREAD
//! Round-robin over all node ids in order from `spread_cursor`: the first schedulable node
//! that is available (pull back-pressure as above) is chosen and the cursor moves past it.
//! If none is available and `force_spillback` is off, a second round-robin over feasible
//! nodes runs: landing on the local node queues locally (cursor advances); landing on a
//! remote node yields `Unavailable`.
//!
//! # NodeAffinity
//! The target is returned when it is known, alive, not draining and feasible (busy or not).
//! Otherwise hard → `Infeasible`; soft → the Default policy.

use std::collections::BTreeMap;

use crate::ids::NodeId;
use crate::logic::resources::{critical_utilization, FixedPoint, ResourceSet, GPU};

#[cfg(test)]
mod tests;

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Total resources.
    pub total: ResourceSet,
    /// Available resources (the local node's are exact; remote ones come from reports).
    pub available: ResourceSet,
    /// Present and alive in the GCS node table.
    pub alive: bool,
    /// Draining: never chosen.
    pub draining: bool,
    /// The node's pull manager has queued pulls (object-store back-pressure).
    pub object_pulls_queued: bool,
}

impl NodeView {
    /// An alive, idle node with everything available.
    pub fn new(total: ResourceSet) -> Self {
        Self { available: total.clone(), total, alive: true, draining: false, object_pulls_queued: false }
    }

    /// Alive and not draining.
    pub fn is_schedulable(&self) -> bool {
        self.alive && !self.draining
    }

    /// The request fits the node's totals.
    pub fn is_feasible(&self, req: &ResourceSet) -> bool {
        req.is_subset_of(&self.total)
    }

    /// The request fits the node's availability; with `check_pulls`, a node with queued
    /// pulls is not available.
    pub fn is_available(&self, req: &ResourceSet, check_pulls: bool) -> bool {
        !(check_pulls && self.object_pulls_queued) && req.is_subset_of(&self.available)
    }

    /// Whether the node has any GPU.
    pub fn has_gpu(&self) -> bool {
        self.total.get(GPU) > FixedPoint::ZERO
    }

    /// Hybrid score: critical utilisation, or 0 below `threshold`.
    pub fn score(&self, threshold: f64) -> f64 {
        let u = critical_utilization(&self.total, &self.available);
        if u < threshold {
            0.0
        } else {
            u
        }
    }
}

/// The scheduler's snapshot of the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// This raylet's node.
    pub local: NodeId,
    /// Every known node, the local one included.
    pub nodes: BTreeMap<NodeId, NodeView>,
}

impl ClusterView {
    /// A view with no nodes yet.
    pub fn new(local: NodeId) -> Self {
        Self { local, nodes: BTreeMap::new() }
    }

    /// Whether any alive, non-draining node's totals fit `req`.
    pub fn any_feasible(&self, req: &ResourceSet) -> bool {
        self.nodes.values().any(|n| n.is_schedulable() && n.is_feasible(req))
    }
}

/// The request's scheduling strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Ray's hybrid policy.
    Default,
    /// Round-robin over nodes.
    Spread,
    /// Pin to one node; `soft` falls back to the Default policy.
    NodeAffinity {
        /// The target node.
        node: NodeId,
        /// Whether other nodes are acceptable.
        soft: bool,
    },
}

/// Knobs of the policy (Ray defaults in [`PolicyOptions::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyOptions {
    /// `scheduler_spread_threshold` (0.5).
    pub spread_threshold: f64,
    /// `scheduler_top_k_fraction` (0.2).
    pub top_k_fraction: f64,
    /// `scheduler_top_k_absolute` (1).
    pub top_k_absolute: usize,
    /// `scheduler_avoid_gpu_nodes` (true).
    pub avoid_gpu_nodes: bool,
    /// Exclude the local node and require availability (spilling a queued item).
    pub force_spillback: bool,
    /// Preferred node (locality); `None` or an unknown node means the local node.
    pub preferred: Option<NodeId>,
    /// The request has plasma arguments, so pull back-pressure applies.
    pub requires_object_store_memory: bool,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        Self {
            spread_threshold: 0.5,
            top_k_fraction: 0.2,
            top_k_absolute: 1,
            avoid_gpu_nodes: true,
            force_spillback: false,
            preferred: None,
            requires_object_store_memory: false,
        }
    }
}

/// The outcome of [`pick_node`]; see the module docs for what the caller does with each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run or queue here (local node) or spill back to this node (remote).
    Node(NodeId),
    /// Feasible somewhere, but nothing chosen now: keep queued and retry.
    Unavailable,
    /// No schedulable node can ever run it (hard affinity: the target cannot).
    Infeasible,
}

/// Chooses a node for `req`. `spread_cursor` is the caller's persistent SPREAD cursor.
pub fn pick_node(
    view: &ClusterView,
    req: &ResourceSet,
    strategy: Strategy,
    opts: &PolicyOptions,
    rng: &mut fastrand::Rng,
    spread_cursor: &mut usize,
) -> Decision {
    if let Strategy::NodeAffinity { node, soft } = strategy {
        let target_ok = view.nodes.get(&node).is_some_and(|n| n.is_schedulable() && n.is_feasible(req));
        if target_ok {
            return Decision::Node(node);
        }
        if !soft {
            return Decision::Infeasible;
        }
    }
    if !view.any_feasible(req) {
        return Decision::Infeasible;
    }
    match strategy {
        Strategy::Spread => spread(view, req, opts, spread_cursor),
        Strategy::Default | Strategy::NodeAffinity { .. } => match hybrid(view, req, opts, rng) {
            Some(Pick { node, available: true }) => Decision::Node(node),
            Some(Pick { node, .. }) if node == view.local => Decision::Node(node),
            _ => Decision::Unavailable,
        },
    }
}

/// After spilling `req` to `node`, subtracts it from that node's availability (clamped at
/// zero) until the next resource report corrects the view. Returns false, changing
/// nothing, for the local node, an unknown node, or one that no longer has `req` available.
pub fn subtract_on_spillback(view: &mut ClusterView, node: NodeId, req: &ResourceSet) -> bool {
    if node == view.local {
        return false;
    }
    let Some(n) = view.nodes.get_mut(&node) else {
        return false;
    };
    if !n.is_available(req, false) {
        return false;
    }
    for (name, amount) in req.iter() {
        let left = (n.available.get(name) - amount).max(FixedPoint::ZERO);
        n.available.set(name, left);
    }
    true
}

/// A hybrid-pass result: the node and whether it is available now.
#[derive(Debug, Clone, Copy)]
struct Pick {
    node: NodeId,
    available: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Any,
    NonGpu,
}

fn hybrid(view: &ClusterView, req: &ResourceSet, opts: &PolicyOptions, rng: &mut fastrand::Rng) -> Option<Pick> {
    let require = opts.force_spillback;
    if !opts.avoid_gpu_nodes || req.get(GPU) > FixedPoint::ZERO {
        return hybrid_pass(view, req, opts, Filter::Any, require, rng);
    }
    hybrid_pass(view, req, opts, Filter::NonGpu, true, rng)
        .or_else(|| hybrid_pass(view, req, opts, Filter::Any, require, rng))
}

fn hybrid_pass(
    view: &ClusterView,
    req: &ResourceSet,
    opts: &PolicyOptions,
    filter: Filter,
    require_available: bool,
    rng: &mut fastrand::Rng,
) -> Option<Pick> {
    let preferred = opts.preferred.filter(|p| view.nodes.contains_key(p)).unwrap_or(view.local);
    let (mut avail, mut busy) = (Vec::new(), Vec::new());
    let (mut pref_avail, mut pref_feasible) = (false, false);
    for (id, node) in &view.nodes {
        let excluded = opts.force_spillback && *id == view.local;
        let filtered = filter == Filter::NonGpu && node.has_gpu();
        if excluded || filtered || !node.is_schedulable() || !node.is_feasible(req) {
            continue;
        }
        let check_pulls = opts.requires_object_store_memory && *id != view.local;
        let ok = node.is_available(req, check_pulls);
        if *id == preferred {
            pref_feasible = true;
            pref_avail = ok;
        }
        let entry = (*id, node.score(opts.spread_threshold));
        if ok {
            avail.push(entry);
        } else {
            busy.push(entry);
        }
    }
    let k = top_k(view.nodes.len(), opts);
    let prefer = |flag: bool| (flag && !opts.force_spillback).then_some(preferred);
    if !avail.is_empty() {
        let node = best_node(avail, k, prefer(pref_avail), rng);
        return Some(Pick { node, available: true });
    }
    if !busy.is_empty() && !require_available {
        let node = best_node(busy, k, prefer(pref_feasible), rng);
        return Some(Pick { node, available: false });
    }
    None
}

fn top_k(num_nodes: usize, opts: &PolicyOptions) -> usize {
    // Truncation toward zero is Ray's `static_cast<int32_t>`; NaN or negatives give 0.
    let by_fraction = (num_nodes as f64 * opts.top_k_fraction).floor().max(0.0) as usize;
    by_fraction.max(opts.top_k_absolute).max(1)
}

/// `cands` arrive in node-id order; a stable sort by score keeps ids as the tie-break.
fn best_node(mut cands: Vec<(NodeId, f64)>, k: usize, preferred: Option<NodeId>, rng: &mut fastrand::Rng) -> NodeId {
    debug_assert!(!cands.is_empty(), "best_node needs candidates");
    cands.sort_by(|a, b| a.1.total_cmp(&b.1));
    let best = cands[0].1;
    if let Some(p) = preferred {
        if cands.iter().any(|(id, s)| *id == p && *s <= best) {
            return p;
        }
    }
    cands[rng.usize(0..k.min(cands.len()))].0
}

fn spread(view: &ClusterView, req: &ResourceSet, opts: &PolicyOptions, cursor: &mut usize) -> Decision {
    let ids: Vec<NodeId> = view.nodes.keys().copied().collect();
    let n = ids.len();
    if n == 0 {
        return Decision::Unavailable;
    }
    let start = *cursor % n;
    let passes: &[bool] = if opts.force_spillback { &[true] } else { &[true, false] };
    for &available_only in passes {
        for i in 0..n {
            let idx = (start + i) % n;
            let id = ids[idx];
            let node = &view.nodes[&id];
            let excluded = opts.force_spillback && id == view.local;
            if excluded || !node.is_schedulable() || !node.is_feasible(req) {
                continue;
            }
            let check_pulls = opts.requires_object_store_memory && id != view.local;
            if available_only && !node.is_available(req, check_pulls) {
                continue;
            }
            if !available_only && id != view.local {
                return Decision::Unavailable;
            }
            *cursor = (idx + 1) % n;
            return Decision::Node(id);
        }
    }
    Decision::Unavailable
}
