//! The tables, what a write holds ([`Op`], [`Batch`]), the in-memory copy of every table
//! ([`Tables`], which the writer keeps and [`super::open`] returns as a [`Snapshot`]),
//! and the few encodings the tables share. Pure: no IO.
//!
//! What each table holds (the GCS chooses; this is the plan it was built for):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | [`super::meta`] keys | format version, incarnation, cluster auth token |
//! | `nodes` | node id (28 bytes) | `GcsNodeInfo` (prost), ALIVE or DEAD |
//! | `kv` | [`kv_key`]`(ns, key)` | the raw value (the system config is one of them) |
//! | `placement_groups` | placement-group id | `PlacementGroupTableData` with bundle nodes |
//! | `objects` | object id | `ObjectLocations` (prost): nodes, size, spill URL |
//! | `counters` | counter name (`job_id`, ...) | [`encode_u64`] |

use std::collections::BTreeMap;

/// One GCS table. The names are stored (redb table names, Redis keys): never change one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Storage metadata: format version, incarnation, auth token.
    Meta,
    /// The node table.
    Nodes,
    /// The internal KV, system config included.
    Kv,
    /// Placement groups and where their bundles are.
    PlacementGroups,
    /// The object directory.
    Objects,
    /// Id counters (job ids...).
    Counters,
}

/// How many tables there are.
pub const TABLE_COUNT: usize = 6;

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Self; TABLE_COUNT] =
        [Self::Meta, Self::Nodes, Self::Kv, Self::PlacementGroups, Self::Objects, Self::Counters];

    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Meta => "meta",
            Self::Nodes => "nodes",
            Self::Kv => "kv",
            Self::PlacementGroups => "placement_groups",
            Self::Objects => "objects",
            Self::Counters => "counters",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One change to the stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` of `table` to `value`.
    Put {
        /// The table.
        table: Table,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key` from `table` (absent is fine).
    Delete {
        /// The table.
        table: Table,
        /// The key.
        key: Vec<u8>,
    },
    /// Empties every table, `meta` included (the cluster is ended on purpose).
    ClearAll,
}

/// Changes applied together, in order, in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
}

impl Batch {
    /// An empty batch; written durably it is a barrier: it completes once everything
    /// submitted before it is stored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Put { table, key: key.into(), value: value.into() });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Delete { table, key: key.into() });
        self
    }

    /// How many changes it holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Its changes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
}

impl From<Vec<Op>> for Batch {
    fn from(ops: Vec<Op>) -> Self {
        Self { ops }
    }
}

/// Every table's records, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    maps: [BTreeMap<Vec<u8>, Vec<u8>>; TABLE_COUNT],
}

impl Tables {
    /// The records of `table`.
    pub fn table(&self, table: Table) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.maps[table.index()]
    }

    /// The value under `key` in `table`.
    pub fn get(&self, table: Table, key: &[u8]) -> Option<&[u8]> {
        self.maps[table.index()].get(key).map(Vec::as_slice)
    }

    /// Applies one change.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Put { table, key, value } => {
                self.maps[table.index()].insert(key.clone(), value.clone());
            }
            Op::Delete { table, key } => {
                self.maps[table.index()].remove(key);
            }
            Op::ClearAll => self.maps.iter_mut().for_each(BTreeMap::clear),
        }
    }

    /// Applies one change, taking its bytes.
    pub fn apply_owned(&mut self, op: Op) {
        match op {
            Op::Put { table, key, value } => {
                self.maps[table.index()].insert(key, value);
            }
            Op::Delete { table, key } => {
                self.maps[table.index()].remove(&key);
            }
            Op::ClearAll => self.maps.iter_mut().for_each(BTreeMap::clear),
        }
    }

    /// Inserts a loaded record.
    pub(crate) fn insert(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.maps[table.index()].insert(key, value);
    }

    /// Records in every table.
    pub fn len(&self) -> usize {
        self.maps.iter().map(BTreeMap::len).sum()
    }

    /// Whether every table is empty.
    pub fn is_empty(&self) -> bool {
        self.maps.iter().all(BTreeMap::is_empty)
    }

    /// Every record as (table, key, value), table by table.
    pub fn iter(&self) -> impl Iterator<Item = (Table, &[u8], &[u8])> {
        Table::ALL
            .into_iter()
            .flat_map(move |t| self.table(t).iter().map(move |(k, v)| (t, k.as_slice(), v.as_slice())))
    }
}

/// What [`super::open`] found: every table as stored, and this start's incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every table (the `meta` table holds the new incarnation already).
    pub tables: Tables,
    /// 1 for a store opened for the first time, one more at every open after it.
    pub incarnation: u64,
}

impl Snapshot {
    /// The records of `table`.
    pub fn table(&self, table: Table) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        self.tables.table(table)
    }

    /// Whether the store held nothing before this open (a fresh cluster).
    pub fn is_fresh(&self) -> bool {
        self.incarnation == 1
    }
}

/// A stored value or key that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A KV key shorter than its namespace length says.
    #[error("kv key of {0} bytes is truncated")]
    TruncatedKvKey(usize),
    /// Namespace or key not UTF-8.
    #[error("kv key is not UTF-8")]
    NotUtf8,
    /// A u64 value not 8 bytes long.
    #[error("u64 value of {0} bytes (want 8)")]
    BadU64(usize),
}

/// The `kv` table key of (namespace, key): the namespace's length (u32 LE), the namespace,
/// then the key, so keys of one namespace sort together and by key.
pub fn kv_key(ns: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + ns.len() + key.len());
    out.extend_from_slice(&(ns.len() as u32).to_le_bytes());
    out.extend_from_slice(ns.as_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// The (namespace, key) of a `kv` table key.
pub fn decode_kv_key(bytes: &[u8]) -> Result<(String, String), RecordError> {
    let truncated = || RecordError::TruncatedKvKey(bytes.len());
    let len: [u8; 4] = bytes.get(..4).ok_or_else(truncated)?.try_into().map_err(|_| truncated())?;
    let ns_end = 4usize.checked_add(u32::from_le_bytes(len) as usize).ok_or_else(truncated)?;
    let ns = bytes.get(4..ns_end).ok_or_else(truncated)?;
    let ns = std::str::from_utf8(ns).map_err(|_| RecordError::NotUtf8)?;
    let key = std::str::from_utf8(&bytes[ns_end..]).map_err(|_| RecordError::NotUtf8)?;
    Ok((ns.to_string(), key.to_string()))
}

/// A counter or incarnation value: 8 bytes, little-endian.
pub fn encode_u64(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// See [`encode_u64`].
pub fn decode_u64(bytes: &[u8]) -> Result<u64, RecordError> {
    let b: [u8; 8] = bytes.try_into().map_err(|_| RecordError::BadU64(bytes.len()))?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_keys_round_trip_and_sort_by_namespace_then_key() {
        let keys = [("", ""), ("a", "zz"), ("ab", ""), ("a", "b"), ("cluster", "system_config")];
        for (ns, k) in keys {
            assert_eq!(decode_kv_key(&kv_key(ns, k)).unwrap(), (ns.to_string(), k.to_string()));
        }
        assert!(kv_key("a", "b") < kv_key("a", "zz"));
        assert!(decode_kv_key(&[5, 0, 0, 0, b'a']).is_err());
        assert!(decode_kv_key(&[1, 0]).is_err());
        assert!(decode_kv_key(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn u64_values_round_trip_and_bad_lengths_are_refused() {
        assert_eq!(decode_u64(&encode_u64(u64::MAX - 3)).unwrap(), u64::MAX - 3);
        assert_eq!(decode_u64(&[1, 2, 3]), Err(RecordError::BadU64(3)));
    }

    #[test]
    fn tables_apply_puts_deletes_and_clear_in_order() {
        let mut t = Tables::default();
        let mut b = Batch::new();
        b.put(Table::Nodes, b"n1".to_vec(), b"v1".to_vec())
            .put(Table::Nodes, b"n1".to_vec(), b"v2".to_vec())
            .put(Table::Kv, b"k".to_vec(), b"x".to_vec())
            .delete(Table::Kv, b"k".to_vec());
        b.ops().iter().for_each(|op| t.apply(op));
        assert_eq!(t.get(Table::Nodes, b"n1"), Some(&b"v2"[..]));
        assert_eq!(t.get(Table::Kv, b"k"), None);
        assert_eq!(t.len(), 1);
        t.apply(&Op::ClearAll);
        assert!(t.is_empty());
    }
}
