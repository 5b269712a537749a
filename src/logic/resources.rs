//! Fixed-point resource quantities and named resource sets.
//!
//! Owns: [`FixedPoint`] (Ray's int64 with scale 10 000, granularity 1e-4), [`ResourceSet`]
//! (name → quantity, zero entries dropped) and, in the `node` submodule, one node's
//! ledger [`NodeResources`] with per-instance accounting and [`Allocation`]s.
//!
//! Called by: the lease queue and policy (feasibility, availability, allocation), the
//! placement-group ledger (`logic::bundles`) and the GCS-side placement (`logic::pg_placement`).
//! Conversion to and from wire maps happens at the edge via [`ResourceSet::from_f64_map`]
//! and [`ResourceSet::to_f64_map`].
//!
//! Must not: do IO, read clocks, or panic on quantities that come from peers. Arithmetic on
//! [`FixedPoint`] saturates instead of overflowing, and `from_f64` maps NaN to zero and
//! clamps infinities, so hostile numbers cannot crash the daemon.
//!
//! Pure data: no call protocol, no state machine.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

mod node;
#[cfg(test)]
mod tests;

pub use node::{AllocError, Allocation, Capacity, CapacityError, NodeResources, MAX_INSTANCES};

/// Predefined resource: CPU cores.
pub const CPU: &str = "CPU";
/// Predefined resource: GPUs (per-instance by default).
pub const GPU: &str = "GPU";
/// Predefined resource: heap memory in bytes.
pub const MEMORY: &str = "memory";
/// Predefined resource: object store memory in bytes.
pub const OBJECT_STORE_MEMORY: &str = "object_store_memory";

/// A resource quantity in units of 1e-4, as Ray's `FixedPoint`.
///
/// Arithmetic saturates at the `i64` bounds rather than panicking.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct FixedPoint(pub i64);

impl FixedPoint {
    /// Units per 1.0.
    pub const SCALE: i64 = 10_000;
    /// Zero.
    pub const ZERO: Self = Self(0);
    /// Exactly 1.0.
    pub const ONE: Self = Self(Self::SCALE);

    /// Converts from a double, rounding to the nearest unit (so 0.1 is exactly 1000 units).
    /// NaN becomes zero; values beyond the range saturate.
    pub fn from_f64(x: f64) -> Self {
        // `as` saturates on overflow and maps NaN to 0.
        Self((x * Self::SCALE as f64).round() as i64)
    }

    /// Converts back to a double.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }

    /// `n` whole units (n × 1.0).
    pub fn whole(n: i64) -> Self {
        Self(n.saturating_mul(Self::SCALE))
    }

    /// Whether this is an integer quantity (no fractional part).
    pub fn is_whole(self) -> bool {
        self.0 % Self::SCALE == 0
    }

    /// The integer part, truncated toward zero.
    pub fn trunc_units(self) -> i64 {
        self.0 / Self::SCALE
    }

    /// Whether this is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl Add for FixedPoint {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self(self.0.saturating_add(rhs.0))
    }
}

impl Sub for FixedPoint {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self(self.0.saturating_sub(rhs.0))
    }
}

impl AddAssign for FixedPoint {
    fn add_assign(&mut self, rhs: Self) {
        *self = *self + rhs;
    }
}

impl SubAssign for FixedPoint {
    fn sub_assign(&mut self, rhs: Self) {
        *self = *self - rhs;
    }
}

impl Neg for FixedPoint {
    type Output = Self;
    fn neg(self) -> Self {
        Self(self.0.saturating_neg())
    }
}

impl std::iter::Sum for FixedPoint {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, |a, b| a + b)
    }
}

impl fmt::Display for FixedPoint {
    /// Exact decimal: `1`, `0.5`, `-0.0001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let scale = Self::SCALE as u64;
        let (int, frac) = (abs / scale, abs % scale);
        if frac == 0 {
            return write!(f, "{sign}{int}");
        }
        let digits = format!("{frac:04}");
        write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
    }
}

/// Name → quantity, ordered by name. Zero entries are never stored; negative entries can
/// appear after [`ResourceSet::sub`].
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct ResourceSet {
    map: BTreeMap<String, FixedPoint>,
}

impl ResourceSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds from doubles (rounded to 1e-4). Repeated names are summed.
    pub fn from_f64_map(iter: impl IntoIterator<Item = (String, f64)>) -> Self {
        let mut set = Self::new();
        for (name, v) in iter {
            let cur = set.get(&name);
            set.set(name, cur + FixedPoint::from_f64(v));
        }
        set
    }

    /// Converts to doubles (for wire replies and reports).
    pub fn to_f64_map(&self) -> BTreeMap<String, f64> {
        self.map.iter().map(|(k, v)| (k.clone(), v.to_f64())).collect()
    }

    /// The quantity of `name`; zero when absent.
    pub fn get(&self, name: &str) -> FixedPoint {
        self.map.get(name).copied().unwrap_or(FixedPoint::ZERO)
    }

    /// Sets `name` to `value`; zero removes the entry.
    pub fn set(&mut self, name: impl Into<String>, value: FixedPoint) {
        let name = name.into();
        if value.is_zero() {
            self.map.remove(&name);
        } else {
            self.map.insert(name, value);
        }
    }

    /// Adds `other` entry-wise, in place.
    pub fn add(&mut self, other: &Self) {
        for (k, v) in &other.map {
            let cur = self.get(k);
            self.set(k.clone(), cur + *v);
        }
    }

    /// Subtracts `other` entry-wise, in place; entries may become negative.
    pub fn sub(&mut self, other: &Self) {
        for (k, v) in &other.map {
            let cur = self.get(k);
            self.set(k.clone(), cur - *v);
        }
    }

    /// Whether every quantity here is ≤ the same quantity in `other` (missing = 0).
    pub fn is_subset_of(&self, other: &Self) -> bool {
        self.map.iter().all(|(k, v)| *v <= other.get(k))
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of non-zero entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether `name` has a non-zero entry.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, FixedPoint)> + Clone + '_ {
        self.map.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Becomes `entries` (in name order, names unique; zeros are dropped). When the
    /// non-zero names are the ones stored already, only the quantities are written: the
    /// scheduler refreshes its local view after every allocation, with no allocation.
    pub fn assign<'a>(&mut self, entries: impl Iterator<Item = (&'a str, FixedPoint)> + Clone) {
        let nonzero = entries.filter(|(_, v)| !v.is_zero());
        let mut stored = self.map.keys();
        let same_names = nonzero.clone().all(|(k, _)| stored.next().is_some_and(|s| s == k)) && stored.next().is_none();
        if same_names {
            for (slot, (_, v)) in self.map.values_mut().zip(nonzero) {
                *slot = v;
            }
        } else {
            *self = nonzero.map(|(k, v)| (k.to_string(), v)).collect();
        }
    }
}

impl FromIterator<(String, FixedPoint)> for ResourceSet {
    /// Repeated names are summed.
    fn from_iter<I: IntoIterator<Item = (String, FixedPoint)>>(iter: I) -> Self {
        let mut set = Self::new();
        for (k, v) in iter {
            let cur = set.get(&k);
            set.set(k, cur + v);
        }
        set
    }
}

/// Ray's critical-resource utilisation: the maximum over CPU, memory and
/// object_store_memory with a positive total of `1 - available / total`; 0 when none of
/// them has a positive total.
pub fn critical_utilization(total: &ResourceSet, available: &ResourceSet) -> f64 {
    [CPU, MEMORY, OBJECT_STORE_MEMORY]
        .iter()
        .filter(|name| total.get(name) > FixedPoint::ZERO)
        .map(|name| 1.0 - available.get(name).to_f64() / total.get(name).to_f64())
        .fold(0.0, f64::max)
}
