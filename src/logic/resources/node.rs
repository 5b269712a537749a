//! One node's resource ledger: totals and availability, with per-instance accounting for
//! unit-instance resources (GPUs by default), as Ray's `LocalResourceManager`.
//!
//! Owns: [`NodeResources`] and the [`Allocation`]s it hands out. Called by the node-wide
//! shard's lease dispatch (allocate on grant, free on return, release/reacquire CPU around
//! blocking `Get`s) and by `logic::bundles` (reserve bundles, create and delete formatted
//! placement-group resources through [`NodeResources::add_capacity`] /
//! [`NodeResources::remove_capacity`]).
//!
//! Must not: do IO or panic on peer quantities. Allocation is atomic: a failed
//! [`NodeResources::try_allocate`] changes nothing.
//!
//! Instance rules (a slot is per-instance if its name was listed at construction, or if it was
//! created through [`Capacity::Instances`]):
//! - a request < 1 must fit inside one instance; the first instance that fits is used;
//! - a whole request `n` takes `n` instances whose available amount is exactly 1.0;
//! - a fractional request > 1 is invalid ([`AllocError::FractionalMultiInstance`]).
//!
//! Accounting rules: freeing adds back but never above the slot's total (capacity may have
//! been removed while the allocation was held, as Ray); frees for slots that no longer exist
//! are ignored; [`NodeResources::reacquire_after_unblock`] may drive CPU negative (blocking
//! cannot mint CPU).

use std::collections::{BTreeMap, BTreeSet};

use super::{critical_utilization, FixedPoint, ResourceSet, CPU};

/// Upper bound on instances of one resource; larger whole amounts are rejected (capacity
/// changes) or clamped (construction) so a hostile number cannot exhaust memory.
pub const MAX_INSTANCES: usize = 65_536;

/// Allocation failed; nothing was allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The node does not have enough of a resource (or it does not exist).
    #[error("insufficient {resource}: requested {requested}")]
    Insufficient {
        /// The resource name.
        resource: String,
        /// The requested amount.
        requested: FixedPoint,
    },
    /// A fractional amount above 1 of a per-instance resource can never be allocated.
    #[error("{resource}: fractional request {requested} above 1 of a per-instance resource")]
    FractionalMultiInstance {
        /// The resource name.
        resource: String,
        /// The requested amount.
        requested: FixedPoint,
    },
    /// Negative requests are invalid.
    #[error("{resource}: negative request {requested}")]
    Negative {
        /// The resource name.
        resource: String,
        /// The requested amount.
        requested: FixedPoint,
    },
}

/// A capacity change was rejected; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    /// Capacity deltas must not be negative.
    #[error("{resource}: negative capacity")]
    Negative {
        /// The resource name.
        resource: String,
    },
    /// Per-instance resources change by whole instances when given an amount.
    #[error("{resource}: {amount} is not a whole number of instances")]
    FractionalInstances {
        /// The resource name.
        resource: String,
        /// The amount given.
        amount: FixedPoint,
    },
    /// More than [`MAX_INSTANCES`] instances.
    #[error("{resource}: too many instances")]
    TooManyInstances {
        /// The resource name.
        resource: String,
    },
    /// Removing capacity from a resource the node does not have.
    #[error("{resource}: unknown resource")]
    Unknown {
        /// The resource name.
        resource: String,
    },
    /// Removing more than the resource's total.
    #[error("{resource}: removal exceeds total")]
    Exceeds {
        /// The resource name.
        resource: String,
    },
}

/// A capacity delta for [`NodeResources::add_capacity`] / [`NodeResources::remove_capacity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    /// A plain amount. On a per-instance resource it must be whole and means that many
    /// instances of 1.0 (appended on add, removed from the end on remove).
    Amount(FixedPoint),
    /// Per-instance amounts by instance index. Creating a resource this way makes it
    /// per-instance (placement-group resources reuse the reserved GPU indexes). On a scalar
    /// resource the sum is used.
    Instances(Vec<FixedPoint>),
}

impl Capacity {
    fn sum(&self) -> FixedPoint {
        match self {
            Self::Amount(a) => *a,
            Self::Instances(v) => v.iter().copied().sum(),
        }
    }

    fn is_negative(&self) -> bool {
        match self {
            Self::Amount(a) => *a < FixedPoint::ZERO,
            Self::Instances(v) => v.iter().any(|a| *a < FixedPoint::ZERO),
        }
    }
}

/// What one allocation took: per resource name, `(instance index, amount)` pairs with
/// non-zero amounts. Scalar resources use index 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    entries: BTreeMap<String, Vec<(usize, FixedPoint)>>,
}

impl Allocation {
    /// The total amount per resource.
    pub fn to_resource_set(&self) -> ResourceSet {
        self.entries.iter().map(|(k, v)| (k.clone(), v.iter().map(|(_, a)| *a).sum())).collect()
    }

    /// `(name, [(instance index, amount)])` per resource, for a lease reply.
    pub fn instance_mapping(&self) -> Vec<(String, Vec<(usize, f64)>)> {
        self.entries.iter().map(|(k, v)| (k.clone(), v.iter().map(|(i, a)| (*i, a.to_f64())).collect())).collect()
    }

    /// The instances taken of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[(usize, FixedPoint)]> {
        self.entries.get(name).map(Vec::as_slice)
    }

    /// Entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[(usize, FixedPoint)])> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Whether nothing was allocated.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Scalar { total: FixedPoint, available: FixedPoint },
    Instances { total: Vec<FixedPoint>, available: Vec<FixedPoint> },
}

impl Slot {
    fn total_sum(&self) -> FixedPoint {
        match self {
            Self::Scalar { total, .. } => *total,
            Self::Instances { total, .. } => total.iter().copied().sum(),
        }
    }

    fn available_sum(&self) -> FixedPoint {
        match self {
            Self::Scalar { available, .. } => *available,
            Self::Instances { available, .. } => available.iter().copied().sum(),
        }
    }

    fn is_gone(&self) -> bool {
        match self {
            Self::Scalar { total, .. } => *total <= FixedPoint::ZERO,
            Self::Instances { total, .. } => total.iter().all(|t| *t <= FixedPoint::ZERO),
        }
    }
}

/// Whether a plan is checked against totals (feasibility) or availability.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Against {
    Total,
    Available,
}

/// Direction of an accounting change.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Back to the pool, capped at the total.
    Give,
    /// Out of the pool, unchecked (may go negative).
    Take,
}

/// Totals and availability of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeResources {
    slots: BTreeMap<String, Slot>,
    unit_names: BTreeSet<String>,
}

impl NodeResources {
    /// A node with `total` all available. Resources named in `unit_instance_names` get one
    /// instance of 1.0 per whole unit (a fractional remainder is dropped, as Ray; at most
    /// [`MAX_INSTANCES`]). Non-positive entries are ignored.
    pub fn new(total: &ResourceSet, unit_instance_names: &[&str]) -> Self {
        let unit_names: BTreeSet<String> = unit_instance_names.iter().map(|s| s.to_string()).collect();
        let mut slots = BTreeMap::new();
        for (name, amount) in total.iter() {
            if amount <= FixedPoint::ZERO {
                continue;
            }
            let slot = if unit_names.contains(name) {
                let n = usize::try_from(amount.trunc_units()).unwrap_or(MAX_INSTANCES);
                let n = n.min(MAX_INSTANCES);
                if n == 0 {
                    continue;
                }
                Slot::Instances { total: vec![FixedPoint::ONE; n], available: vec![FixedPoint::ONE; n] }
            } else {
                Slot::Scalar { total: amount, available: amount }
            };
            slots.insert(name.to_string(), slot);
        }
        Self { slots, unit_names }
    }

    /// Total capacity per resource.
    pub fn total(&self) -> ResourceSet {
        self.slots.iter().map(|(k, s)| (k.clone(), s.total_sum())).collect()
    }

    /// Available capacity per resource (entries can be negative after an unblock).
    pub fn available(&self) -> ResourceSet {
        self.slots.iter().map(|(k, s)| (k.clone(), s.available_sum())).collect()
    }

    /// Total capacity per resource, in name order, without building a set.
    pub fn totals(&self) -> impl Iterator<Item = (&str, FixedPoint)> + Clone + '_ {
        self.slots.iter().map(|(k, s)| (k.as_str(), s.total_sum()))
    }

    /// Available capacity per resource, in name order, without building a set.
    pub fn availables(&self) -> impl Iterator<Item = (&str, FixedPoint)> + Clone + '_ {
        self.slots.iter().map(|(k, s)| (k.as_str(), s.available_sum()))
    }

    /// Whether `name` is accounted per instance.
    pub fn is_per_instance(&self, name: &str) -> bool {
        matches!(self.slots.get(name), Some(Slot::Instances { .. }))
    }

    /// Per-instance totals of `name`, if it is a per-instance resource.
    pub fn instance_totals(&self, name: &str) -> Option<&[FixedPoint]> {
        match self.slots.get(name) {
            Some(Slot::Instances { total, .. }) => Some(total),
            _ => None,
        }
    }

    /// Per-instance availability of `name`, if it is a per-instance resource.
    pub fn instance_available(&self, name: &str) -> Option<&[FixedPoint]> {
        match self.slots.get(name) {
            Some(Slot::Instances { available, .. }) => Some(available),
            _ => None,
        }
    }

    /// Whether `req` could be allocated on an idle node (instance rules included).
    pub fn is_feasible(&self, req: &ResourceSet) -> bool {
        self.plan(req, Against::Total).is_ok()
    }

    /// Whether `req` could be allocated now.
    pub fn is_available(&self, req: &ResourceSet) -> bool {
        self.plan(req, Against::Available).is_ok()
    }

    /// Allocates all of `req` or nothing.
    pub fn try_allocate(&mut self, req: &ResourceSet) -> Result<Allocation, AllocError> {
        let alloc = self.plan(req, Against::Available)?;
        for (name, entries) in alloc.iter() {
            self.adjust(name, entries, Dir::Take);
        }
        Ok(alloc)
    }

    /// Returns an allocation to the pool (capped at totals; vanished resources ignored).
    pub fn free(&mut self, alloc: &Allocation) {
        for (name, entries) in alloc.iter() {
            self.adjust(name, entries, Dir::Give);
        }
    }

    /// A worker holding `alloc` blocked in `Get`/`Wait`: its CPU goes back to the pool
    /// (only CPU, as Ray).
    pub fn release_for_blocked(&mut self, alloc: &Allocation) {
        if let Some(entries) = alloc.get(CPU) {
            self.adjust(CPU, entries, Dir::Give);
        }
    }

    /// The worker unblocked: its CPU is taken back unconditionally, so availability may go
    /// negative until other work finishes.
    pub fn reacquire_after_unblock(&mut self, alloc: &Allocation) {
        if let Some(entries) = alloc.get(CPU) {
            self.adjust(CPU, entries, Dir::Take);
        }
    }

    /// Critical-resource utilisation (see [`critical_utilization`]).
    pub fn critical_utilization(&self) -> f64 {
        critical_utilization(&self.total(), &self.available())
    }

    /// Adds capacity to total and available, creating the resource if needed. Zero deltas
    /// are no-ops.
    pub fn add_capacity(&mut self, name: &str, cap: Capacity) -> Result<(), CapacityError> {
        if cap.is_negative() {
            return Err(CapacityError::Negative { resource: name.to_string() });
        }
        if cap.sum().is_zero() {
            return Ok(());
        }
        match self.slots.get_mut(name) {
            None => {
                let slot = self.new_slot(name, cap)?;
                self.slots.insert(name.to_string(), slot);
            }
            Some(Slot::Scalar { total, available }) => {
                *total += cap.sum();
                *available += cap.sum();
            }
            Some(Slot::Instances { total, available }) => {
                let delta = match cap {
                    Capacity::Amount(a) => {
                        let n = whole_instances(name, a)?;
                        let mut d = vec![FixedPoint::ZERO; total.len()];
                        d.extend(std::iter::repeat_n(FixedPoint::ONE, n));
                        d
                    }
                    Capacity::Instances(v) => v,
                };
                check_len(name, delta.len())?;
                if delta.len() > total.len() {
                    total.resize(delta.len(), FixedPoint::ZERO);
                    available.resize(delta.len(), FixedPoint::ZERO);
                }
                for (i, d) in delta.iter().enumerate() {
                    total[i] += *d;
                    available[i] += *d;
                }
            }
        }
        Ok(())
    }

    /// Removes capacity from total and available (available may go negative while holders
    /// still have it); deletes the resource when its total reaches zero. Atomic.
    pub fn remove_capacity(&mut self, name: &str, cap: Capacity) -> Result<(), CapacityError> {
        let err = |make: fn(String) -> CapacityError| Err(make(name.to_string()));
        if cap.is_negative() {
            return err(|resource| CapacityError::Negative { resource });
        }
        let Some(slot) = self.slots.get_mut(name) else {
            return err(|resource| CapacityError::Unknown { resource });
        };
        match slot {
            Slot::Scalar { total, available } => {
                let s = cap.sum();
                if s > *total {
                    return err(|resource| CapacityError::Exceeds { resource });
                }
                *total -= s;
                *available -= s;
            }
            Slot::Instances { total, available } => match cap {
                Capacity::Amount(a) => {
                    let n = whole_instances(name, a)?;
                    if n > total.len() {
                        return err(|resource| CapacityError::Exceeds { resource });
                    }
                    let keep = total.len() - n;
                    total.truncate(keep);
                    available.truncate(keep);
                }
                Capacity::Instances(v) => {
                    let fits = v.iter().enumerate().all(|(i, d)| d.is_zero() || total.get(i).is_some_and(|t| d <= t));
                    if !fits {
                        return err(|resource| CapacityError::Exceeds { resource });
                    }
                    for (i, d) in v.iter().enumerate().take(total.len()) {
                        total[i] -= *d;
                        available[i] -= *d;
                    }
                }
            },
        }
        if slot.is_gone() {
            self.slots.remove(name);
        }
        Ok(())
    }

    /// A fresh slot for `name` holding `cap`, fully available.
    fn new_slot(&self, name: &str, cap: Capacity) -> Result<Slot, CapacityError> {
        Ok(match cap {
            Capacity::Amount(a) if self.unit_names.contains(name) => {
                let n = whole_instances(name, a)?;
                Slot::Instances { total: vec![FixedPoint::ONE; n], available: vec![FixedPoint::ONE; n] }
            }
            Capacity::Amount(a) => Slot::Scalar { total: a, available: a },
            Capacity::Instances(v) => {
                check_len(name, v.len())?;
                Slot::Instances { total: v.clone(), available: v }
            }
        })
    }

    /// Computes what `req` would take, without changing anything.
    fn plan(&self, req: &ResourceSet, against: Against) -> Result<Allocation, AllocError> {
        let mut out = Allocation::default();
        for (name, amount) in req.iter() {
            let insufficient = || AllocError::Insufficient { resource: name.to_string(), requested: amount };
            if amount < FixedPoint::ZERO {
                return Err(AllocError::Negative { resource: name.to_string(), requested: amount });
            }
            let entries = match self.slots.get(name).ok_or_else(insufficient)? {
                Slot::Scalar { total, available } => {
                    let cap = if against == Against::Total { total } else { available };
                    if amount > *cap {
                        return Err(insufficient());
                    }
                    vec![(0, amount)]
                }
                Slot::Instances { total, available } => {
                    let caps = if against == Against::Total { total } else { available };
                    plan_instances(name, amount, caps)?
                }
            };
            out.entries.insert(name.to_string(), entries);
        }
        Ok(out)
    }

    fn adjust(&mut self, name: &str, entries: &[(usize, FixedPoint)], dir: Dir) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let step = |avail: &mut FixedPoint, total: FixedPoint, amount: FixedPoint| match dir {
            Dir::Give => *avail = (*avail + amount).min(total),
            Dir::Take => *avail -= amount,
        };
        match slot {
            Slot::Scalar { total, available } => {
                let sum: FixedPoint = entries.iter().map(|(_, a)| *a).sum();
                step(available, *total, sum);
            }
            Slot::Instances { total, available } => {
                for (i, a) in entries {
                    if let (Some(av), Some(t)) = (available.get_mut(*i), total.get(*i)) {
                        step(av, *t, *a);
                    }
                }
            }
        }
    }
}

/// Instance choice for one per-instance resource; `caps` are totals or availabilities.
fn plan_instances(name: &str, amount: FixedPoint, caps: &[FixedPoint]) -> Result<Vec<(usize, FixedPoint)>, AllocError> {
    let insufficient = || AllocError::Insufficient { resource: name.to_string(), requested: amount };
    if amount < FixedPoint::ONE {
        let i = caps.iter().position(|c| *c >= amount).ok_or_else(insufficient)?;
        return Ok(vec![(i, amount)]);
    }
    if !amount.is_whole() {
        return Err(AllocError::FractionalMultiInstance { resource: name.to_string(), requested: amount });
    }
    let n = usize::try_from(amount.trunc_units()).unwrap_or(usize::MAX);
    let free: Vec<(usize, FixedPoint)> = caps
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == FixedPoint::ONE)
        .map(|(i, _)| (i, FixedPoint::ONE))
        .take(n)
        .collect();
    if free.len() < n {
        return Err(insufficient());
    }
    Ok(free)
}

fn whole_instances(name: &str, amount: FixedPoint) -> Result<usize, CapacityError> {
    if !amount.is_whole() {
        return Err(CapacityError::FractionalInstances { resource: name.to_string(), amount });
    }
    let n = usize::try_from(amount.trunc_units()).unwrap_or(usize::MAX);
    check_len(name, n)?;
    Ok(n)
}

fn check_len(name: &str, n: usize) -> Result<(), CapacityError> {
    if n > MAX_INSTANCES {
        return Err(CapacityError::TooManyInstances { resource: name.to_string() });
    }
    Ok(())
}
