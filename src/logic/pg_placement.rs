//! GCS-side placement of placement-group bundles onto nodes (Ray's bundle scheduling
//! policies: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD).
//!
//! Owns nothing persistent: [`place_bundles`] is a pure, deterministic function of the
//! strategy, the bundle shapes and a snapshot of the nodes. Bundles placed on the same node
//! consume its availability cumulatively. Only alive, non-draining nodes are used.
//!
//! Called by: the GCS placement-group scheduler before it runs two-phase commit
//! (`logic::bundles` on each raylet). On `Err(Unavailable)` it retries with backoff; on
//! `Err(Infeasible)` the group stays pending until the cluster grows.
//!
//! Must not: do IO or use randomness. Ties break by lower utilisation, then lower node id.
//! Utilisation here is the largest used fraction over every resource of the node
//! (`1 - available/total`, GPUs and custom resources included), computed on what is left
//! after earlier bundles of the same call.
//!
//! Strategies:
//! - STRICT_PACK: all bundles on one node whose availability fits their sum, else error.
//! - PACK: the STRICT_PACK node if there is one; otherwise, as Ray, bundles are taken
//!   largest first and, while some remain, a new node is opened for the largest remaining
//!   bundle (the node that fits the most remaining bundles, then the usual tie-break) and
//!   every remaining bundle that still fits is packed onto it.
//! - SPREAD: bundles largest first; each goes to the best node not used yet, else to the
//!   best used node that still fits.
//! - STRICT_SPREAD: distinct nodes for all bundles, else error; solved exactly as a
//!   bipartite matching, so a solution is found whenever one exists.
//!
//! `Infeasible` vs `Unavailable`: after a failure the same algorithm runs with every node
//! idle (availability = totals); if that succeeds the answer is `Unavailable`, else
//! `Infeasible`. PACK and SPREAD are greedy (bin packing), so in rare shapes `Infeasible`
//! may be reported where a cleverer packing exists.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::NodeId;
use crate::logic::lease::policy::NodeView;
use crate::logic::resources::{FixedPoint, ResourceSet, CPU, GPU, MEMORY};

#[cfg(test)]
mod tests;

/// How bundles of one group are spread over nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgStrategy {
    /// As few nodes as possible; falls back to several.
    Pack,
    /// Distinct nodes when possible; falls back to sharing.
    Spread,
    /// All on one node, or fail.
    StrictPack,
    /// All on distinct nodes, or fail.
    StrictSpread,
}

/// Bundles could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// Could not be placed even if every schedulable node were idle.
    #[error("placement group is infeasible on the current nodes")]
    Infeasible,
    /// Could be placed on idle nodes, but not with current availability.
    #[error("placement group does not fit current availability")]
    Unavailable,
}

/// One node per bundle (same order as `bundles`), or why not.
pub fn place_bundles(
    strategy: PgStrategy,
    bundles: &[ResourceSet],
    nodes: &BTreeMap<NodeId, NodeView>,
) -> Result<Vec<NodeId>, PlacementError> {
    if bundles.is_empty() {
        return Ok(Vec::new());
    }
    let schedulable = || nodes.iter().filter(|(_, n)| n.alive && !n.draining);
    let now: Vec<Bin> = schedulable().map(|(id, n)| Bin::new(*id, &n.total, &n.available)).collect();
    if let Some(placed) = place(strategy, bundles, now) {
        return Ok(placed);
    }
    let idle: Vec<Bin> = schedulable().map(|(id, n)| Bin::new(*id, &n.total, &n.total)).collect();
    match place(strategy, bundles, idle) {
        Some(_) => Err(PlacementError::Unavailable),
        None => Err(PlacementError::Infeasible),
    }
}

/// A node's capacity during one placement attempt.
#[derive(Debug, Clone)]
struct Bin {
    id: NodeId,
    total: ResourceSet,
    left: ResourceSet,
}

impl Bin {
    fn new(id: NodeId, total: &ResourceSet, left: &ResourceSet) -> Self {
        Self { id, total: total.clone(), left: left.clone() }
    }

    fn fits(&self, req: &ResourceSet) -> bool {
        req.is_subset_of(&self.left)
    }

    fn utilisation(&self) -> f64 {
        self.total
            .iter()
            .filter(|(_, t)| *t > FixedPoint::ZERO)
            .map(|(name, t)| 1.0 - self.left.get(name).to_f64() / t.to_f64())
            .fold(0.0, f64::max)
    }
}

/// Index of the best bin among `cands` by (lower utilisation, lower id).
fn best_of(bins: &[Bin], cands: impl Iterator<Item = usize>) -> Option<usize> {
    cands.min_by(|&a, &b| {
        let (x, y) = (&bins[a], &bins[b]);
        x.utilisation().total_cmp(&y.utilisation()).then(x.id.cmp(&y.id))
    })
}

/// Bundle indexes, largest first (GPU, then CPU, then memory, then original order).
fn largest_first(bundles: &[ResourceSet]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..bundles.len()).collect();
    let key = |i: usize| {
        let b = &bundles[i];
        (b.get(GPU), b.get(CPU), b.get(MEMORY))
    };
    order.sort_by_key(|&i| std::cmp::Reverse(key(i)));
    order
}

fn place(strategy: PgStrategy, bundles: &[ResourceSet], bins: Vec<Bin>) -> Option<Vec<NodeId>> {
    let slots = match strategy {
        PgStrategy::StrictPack => strict_pack(bundles, &bins),
        PgStrategy::Pack => strict_pack(bundles, &bins).or_else(|| pack(bundles, bins.clone())),
        PgStrategy::Spread => spread(bundles, bins.clone()),
        PgStrategy::StrictSpread => strict_spread(bundles, &bins),
    }?;
    Some(slots.into_iter().map(|b| bins[b].id).collect())
}

/// Returns one bin index per bundle.
fn strict_pack(bundles: &[ResourceSet], bins: &[Bin]) -> Option<Vec<usize>> {
    let mut sum = ResourceSet::new();
    for b in bundles {
        sum.add(b);
    }
    let best = best_of(bins, (0..bins.len()).filter(|&i| bins[i].fits(&sum)))?;
    Some(vec![best; bundles.len()])
}

fn pack(bundles: &[ResourceSet], mut bins: Vec<Bin>) -> Option<Vec<usize>> {
    let mut out = vec![usize::MAX; bundles.len()];
    let mut remaining = largest_first(bundles);
    let mut unused: BTreeSet<usize> = (0..bins.len()).collect();
    while let Some(&head) = remaining.first() {
        // (bin, how many remaining bundles it would take) for bins that fit the head.
        let scored: Vec<(usize, usize)> = unused
            .iter()
            .copied()
            .filter(|&i| bins[i].fits(&bundles[head]))
            .map(|i| (i, greedy_fill(&bins[i], bundles, &remaining).len()))
            .collect();
        let most = scored.iter().map(|s| s.1).max()?;
        let best = best_of(&bins, scored.iter().filter(|s| s.1 == most).map(|s| s.0))?;
        let taken = greedy_fill(&bins[best], bundles, &remaining);
        for &b in &taken {
            bins[best].left.sub(&bundles[b]);
            out[b] = best;
        }
        remaining.retain(|b| !taken.contains(b));
        unused.remove(&best);
    }
    Some(out)
}

/// The bundles of `remaining` (in order) that fit `bin` one after another.
fn greedy_fill(bin: &Bin, bundles: &[ResourceSet], remaining: &[usize]) -> Vec<usize> {
    let mut left = bin.left.clone();
    let mut taken = Vec::new();
    for &b in remaining {
        if bundles[b].is_subset_of(&left) {
            left.sub(&bundles[b]);
            taken.push(b);
        }
    }
    taken
}

fn spread(bundles: &[ResourceSet], mut bins: Vec<Bin>) -> Option<Vec<usize>> {
    let mut out = vec![usize::MAX; bundles.len()];
    let mut used = vec![false; bins.len()];
    for b in largest_first(bundles) {
        let fitting = |fresh: bool| {
            let bins = &bins;
            let used = &used;
            (0..bins.len()).filter(move |&i| used[i] != fresh && bins[i].fits(&bundles[b]))
        };
        let best = best_of(&bins, fitting(true)).or_else(|| best_of(&bins, fitting(false)))?;
        bins[best].left.sub(&bundles[b]);
        used[best] = true;
        out[b] = best;
    }
    Some(out)
}

fn strict_spread(bundles: &[ResourceSet], bins: &[Bin]) -> Option<Vec<usize>> {
    if bundles.len() > bins.len() {
        return None;
    }
    // Preference order of bins: lower utilisation, then id.
    let mut pref: Vec<usize> = (0..bins.len()).collect();
    pref.sort_by(|&a, &b| bins[a].utilisation().total_cmp(&bins[b].utilisation()).then(bins[a].id.cmp(&bins[b].id)));
    let adj: Vec<Vec<usize>> =
        bundles.iter().map(|req| pref.iter().copied().filter(|&i| bins[i].fits(req)).collect()).collect();
    let mut owner: Vec<Option<usize>> = vec![None; bins.len()];
    for b in largest_first(bundles) {
        let mut seen = vec![false; bins.len()];
        if !augment(b, &adj, &mut owner, &mut seen) {
            return None;
        }
    }
    let mut out = vec![usize::MAX; bundles.len()];
    for (bin, b) in owner.iter().enumerate() {
        if let Some(b) = b {
            out[*b] = bin;
        }
    }
    Some(out)
}

/// Kuhn's augmenting path: gives bundle `b` a bin, taking a free bin when one fits (so
/// earlier choices stay put when possible) and otherwise moving earlier bundles.
fn augment(b: usize, adj: &[Vec<usize>], owner: &mut [Option<usize>], seen: &mut [bool]) -> bool {
    if let Some(&bin) = adj[b].iter().find(|&&bin| !seen[bin] && owner[bin].is_none()) {
        seen[bin] = true;
        owner[bin] = Some(b);
        return true;
    }
    for &bin in &adj[b] {
        if seen[bin] {
            continue;
        }
        seen[bin] = true;
        let Some(other) = owner[bin] else {
            continue;
        };
        if augment(other, adj, owner, seen) {
            owner[bin] = Some(b);
            return true;
        }
    }
    false
}
