//! The raylet-side placement-group ledger: two-phase commit of bundle reservations and the
//! formatted bundle resources (Ray's `PlacementGroupResourceManager`).
//!
//! Owns: per-bundle state keyed by [`BundleKey`] (placement group, index) and the
//! [`Allocation`] each bundle reserved. The resources themselves live in the node's
//! [`NodeResources`], passed in by the caller on every call (node-wide shard only).
//!
//! Called by: the node-wide shard's handlers of `PrepareBundleResources`,
//! `CommitBundleResources`, `CancelResourceReserve` and `ReleaseUnusedBundles`. After any
//! call that changed resources, the caller re-runs scheduling. Cancelling queued leases and
//! destroying leased workers of a returned bundle is the caller's job (do it *before*
//! [`BundleLedger::return_bundle`]); [`in_use_set`] tells which bundle ids survive a
//! `ReleaseUnusedBundles`.
//!
//! Must not: do IO; panic on unknown or duplicate keys from the GCS (they are no-ops).
//!
//! Naming (Ray): for resource `R` of bundle `i` of group `P` (lower hex), the indexed
//! resource `R_group_<i>_<P>` and the wildcard `R_group_<P>` (summed over P's bundles on
//! this node) each get the bundle's amount, plus `bundle_group_<i>_<P>` and
//! `bundle_group_<P>` with 1000 per bundle. Formatted resources of a per-instance resource
//! (GPU) are per-instance with the *same instance indexes* that were reserved.
//!
//! State diagram (per key):
//! ```text
//!            prepare ok                 commit
//!   (none) ─────────────▶ PREPARED ─────────────▶ COMMITTED
//!     ▲  ▲                 │  ▲ prepare again        │ prepare: no-op (success)
//!     │  │ return /        │  │ (return, reserve     │ commit: no-op
//!     │  │ release_unused  │  │  anew)               │
//!     │  └─────────────────┘  └──┘                   │
//!     └──────────────── return / release_unused ─────┘
//!   commit of (none): ignored      return of (none): no-op (false)
//! ```
//! A `prepare` of several bundles is all-or-nothing: when one fails, the bundles this call
//! reserved are returned. Bundles that were already COMMITTED before the call are left
//! alone (Ray returns them too; tearing down a committed bundle that may have running
//! tasks on a failed duplicate prepare is avoided here on purpose).

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::PlacementGroupId;
use crate::logic::resources::{Allocation, Capacity, FixedPoint, NodeResources, ResourceSet};

#[cfg(test)]
mod tests;

/// The separator between the original resource name and the bundle suffix.
pub const GROUP_KEYWORD: &str = "_group_";
/// The original name of the per-bundle marker resource.
pub const BUNDLE_RESOURCE: &str = "bundle";
/// The amount of each `bundle_group_*` resource per bundle.
pub const BUNDLE_RESOURCE_VALUE: FixedPoint = FixedPoint(1000 * FixedPoint::SCALE);

/// `R_group_<index>_<pg hex>`.
pub fn format_indexed(resource: &str, index: i64, pg: PlacementGroupId) -> String {
    format!("{resource}{GROUP_KEYWORD}{index}_{}", pg.hex())
}

/// `R_group_<pg hex>`.
pub fn format_wildcard(resource: &str, pg: PlacementGroupId) -> String {
    format!("{resource}{GROUP_KEYWORD}{}", pg.hex())
}

/// A parsed placement-group resource name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormattedName {
    /// The resource before `_group_` (`CPU`, `GPU`, `bundle`, ...).
    pub original: String,
    /// The bundle index; `None` for a wildcard name.
    pub index: Option<i64>,
    /// The placement group.
    pub pg: PlacementGroupId,
}

/// Parses a formatted name; `None` if `name` is not one (splits at the last `_group_`).
pub fn parse_formatted(name: &str) -> Option<FormattedName> {
    let at = name.rfind(GROUP_KEYWORD)?;
    let (original, rest) = (&name[..at], &name[at + GROUP_KEYWORD.len()..]);
    if original.is_empty() {
        return None;
    }
    let (index, hex) = match rest.split_once('_') {
        Some((digits, hex)) => {
            let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            (Some(digits.parse::<i64>().ok().filter(|_| all_digits)?), hex)
        }
        None => (None, rest),
    };
    let pg = PlacementGroupId::from_hex(hex).ok()?;
    Some(FormattedName { original: original.to_string(), index, pg })
}

/// Identifies a bundle: placement group and index (−1 means "any bundle" in task ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundleKey {
    /// The placement group.
    pub pg: PlacementGroupId,
    /// The bundle index.
    pub index: i64,
}

/// A bundle to reserve: its key and its resources (original names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSpec {
    /// Which bundle.
    pub key: BundleKey,
    /// The resources the bundle reserves.
    pub unit_resources: ResourceSet,
}

/// Where a bundle is in the two-phase commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleState {
    /// Resources reserved from the node pool; no formatted resources yet.
    Prepared,
    /// Formatted resources created.
    Committed,
}

/// The formatted resources one bundle creates on commit (for reports and tests).
pub fn formatted_resources(spec: &BundleSpec) -> ResourceSet {
    let BundleKey { pg, index } = spec.key;
    let mut out = ResourceSet::new();
    for (name, amount) in spec.unit_resources.iter() {
        out.set(format_indexed(name, index, pg), amount);
        out.set(format_wildcard(name, pg), amount);
    }
    out.set(format_indexed(BUNDLE_RESOURCE, index, pg), BUNDLE_RESOURCE_VALUE);
    out.set(format_wildcard(BUNDLE_RESOURCE, pg), BUNDLE_RESOURCE_VALUE);
    out
}

/// The bundle ids that survive `ReleaseUnusedBundles(in_use)`: every listed key plus
/// `(pg, -1)` for each placement group mentioned.
pub fn in_use_set(in_use: &[BundleKey]) -> BTreeSet<BundleKey> {
    let mut set: BTreeSet<BundleKey> = in_use.iter().copied().collect();
    set.extend(in_use.iter().map(|k| BundleKey { pg: k.pg, index: -1 }));
    set
}

#[derive(Debug, Clone)]
struct Entry {
    state: BundleState,
    allocation: Allocation,
    /// What commit added, removed verbatim on return.
    formatted: Vec<(String, Capacity)>,
}

/// Bundle states and reservations on this node.
#[derive(Debug, Clone, Default)]
pub struct BundleLedger {
    bundles: BTreeMap<BundleKey, Entry>,
}

impl BundleLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves every bundle or none; see the module docs for duplicates.
    pub fn prepare(&mut self, node: &mut NodeResources, bundles: &[BundleSpec]) -> bool {
        let mut reserved = Vec::new();
        for spec in bundles {
            match self.state(spec.key) {
                Some(BundleState::Committed) => continue,
                Some(BundleState::Prepared) => {
                    self.return_bundle(node, spec.key);
                }
                None => {}
            }
            match node.try_allocate(&spec.unit_resources) {
                Ok(allocation) => {
                    let entry = Entry { state: BundleState::Prepared, allocation, formatted: Vec::new() };
                    self.bundles.insert(spec.key, entry);
                    reserved.push(spec.key);
                }
                Err(_) => {
                    for key in reserved {
                        self.return_bundle(node, key);
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Commits prepared bundles, creating their formatted resources on `node`. Unknown and
    /// already committed bundles are ignored. Only the keys of `bundles` are used; amounts
    /// come from the reservation.
    pub fn commit(&mut self, node: &mut NodeResources, bundles: &[BundleSpec]) {
        for spec in bundles {
            let Some(entry) = self.bundles.get_mut(&spec.key) else {
                continue;
            };
            if entry.state == BundleState::Committed {
                continue;
            }
            entry.state = BundleState::Committed;
            entry.formatted = formatted_capacities(node, spec.key, &entry.allocation);
            for (name, cap) in &entry.formatted {
                let added = node.add_capacity(name, cap.clone());
                debug_assert!(added.is_ok(), "formatted capacity is non-negative: {added:?}");
            }
        }
    }

    /// Releases a PREPARED or COMMITTED bundle: its reservation goes back to the pool and
    /// its formatted resources are removed (wildcards keep other bundles' shares). Returns
    /// false for an unknown key.
    pub fn return_bundle(&mut self, node: &mut NodeResources, key: BundleKey) -> bool {
        let Some(entry) = self.bundles.remove(&key) else {
            return false;
        };
        node.free(&entry.allocation);
        for (name, cap) in entry.formatted {
            let removed = node.remove_capacity(&name, cap);
            debug_assert!(removed.is_ok(), "formatted capacity was added: {removed:?}");
        }
        true
    }

    /// Returns every bundle not in [`in_use_set`]`(in_use)`; yields the keys returned.
    pub fn release_unused(&mut self, node: &mut NodeResources, in_use: &[BundleKey]) -> Vec<BundleKey> {
        let keep = in_use_set(in_use);
        let unused: Vec<BundleKey> = self.bundles.keys().filter(|k| !keep.contains(k)).copied().collect();
        for key in &unused {
            self.return_bundle(node, *key);
        }
        unused
    }

    /// The keys of `pg`'s bundles on this node, by index.
    pub fn bundles_of(&self, pg: PlacementGroupId) -> Vec<BundleKey> {
        let from = BundleKey { pg, index: i64::MIN };
        self.bundles.range(from..).take_while(|(k, _)| k.pg == pg).map(|(k, _)| *k).collect()
    }

    /// The state of `key`, if known.
    pub fn state(&self, key: BundleKey) -> Option<BundleState> {
        self.bundles.get(&key).map(|e| e.state)
    }

    /// What `key` reserved from the node pool, if known.
    pub fn allocation(&self, key: BundleKey) -> Option<&Allocation> {
        self.bundles.get(&key).map(|e| &e.allocation)
    }

    /// Number of known bundles.
    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    /// Whether no bundle is known.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }
}

/// The formatted resources of one bundle with capacities mirroring its reservation:
/// per-instance vectors (same indexes) for per-instance originals, amounts otherwise.
fn formatted_capacities(node: &NodeResources, key: BundleKey, alloc: &Allocation) -> Vec<(String, Capacity)> {
    let BundleKey { pg, index } = key;
    let mut out = Vec::new();
    for (name, entries) in alloc.iter() {
        let cap = if node.is_per_instance(name) {
            let len = entries.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
            let mut v = vec![FixedPoint::ZERO; len];
            for (i, a) in entries {
                v[*i] += *a;
            }
            Capacity::Instances(v)
        } else {
            Capacity::Amount(entries.iter().map(|(_, a)| *a).sum())
        };
        out.push((format_indexed(name, index, pg), cap.clone()));
        out.push((format_wildcard(name, pg), cap));
    }
    let marker = Capacity::Amount(BUNDLE_RESOURCE_VALUE);
    out.push((format_indexed(BUNDLE_RESOURCE, index, pg), marker.clone()));
    out.push((format_wildcard(BUNDLE_RESOURCE, pg), marker));
    out
}
