//! The GCS internal KV: namespaced keys to bytes. Pure, in memory, bounded: at most
//! `max_entries` keys, values of at most `max_value_bytes`, keys (namespace included) of
//! at most [`MAX_KEY_BYTES`], and `max_total_bytes` of keys and values together. A put
//! past a bound is refused whole and changes nothing.

use std::collections::BTreeMap;

/// Longest namespace plus key, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// The bounds of a [`Kv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Keys.
    pub max_entries: usize,
    /// Bytes of one value.
    pub max_value_bytes: usize,
    /// Bytes of every key and value.
    pub max_total_bytes: usize,
}

/// A put was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The namespace and key are too long.
    #[error("KV key of {len} bytes (namespace included) is over the limit of {MAX_KEY_BYTES}")]
    KeyTooLong {
        /// Its length.
        len: usize,
    },
    /// The value is too large.
    #[error("KV value of {len} bytes is over the limit of {max} (gcs_kv_max_value_bytes)")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The table has as many keys as it may.
    #[error("the KV holds {max} keys, its limit (gcs_kv_max_entries)")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },
    /// Keys and values would take more than the limit.
    #[error("the KV would hold more than {max} bytes, its limit (gcs_kv_max_total_bytes)")]
    TooManyBytes {
        /// The limit.
        max: usize,
    },
}

/// Namespaced key-value table.
#[derive(Debug)]
pub struct Kv {
    map: BTreeMap<(String, String), Vec<u8>>,
    limits: KvLimits,
    bytes: usize,
}

impl Kv {
    /// An empty table with these bounds.
    pub fn new(limits: KvLimits) -> Self {
        Self { map: BTreeMap::new(), limits, bytes: 0 }
    }

    /// The value under (ns, key).
    pub fn get(&self, ns: &str, key: &str) -> Option<&[u8]> {
        self.map.get(&(ns.to_string(), key.to_string())).map(Vec::as_slice)
    }

    /// Stores a value; with `overwrite == false` an existing key is kept. Returns whether a
    /// new key was added, or why the put was refused.
    pub fn put(&mut self, ns: &str, key: &str, value: Vec<u8>, overwrite: bool) -> Result<bool, KvError> {
        let key_len = ns.len() + key.len();
        if key_len > MAX_KEY_BYTES {
            return Err(KvError::KeyTooLong { len: key_len });
        }
        let max = self.limits.max_value_bytes;
        if value.len() > max {
            return Err(KvError::ValueTooLarge { len: value.len(), max });
        }
        let k = (ns.to_string(), key.to_string());
        let old = self.map.get(&k).map(Vec::len);
        match old {
            Some(_) if !overwrite => return Ok(false),
            None if self.map.len() >= self.limits.max_entries => {
                return Err(KvError::TooManyEntries { max: self.limits.max_entries })
            }
            _ => {}
        }
        let bytes = self.bytes - old.map_or(0, |v| v + key_len) + key_len + value.len();
        if bytes > self.limits.max_total_bytes {
            return Err(KvError::TooManyBytes { max: self.limits.max_total_bytes });
        }
        self.bytes = bytes;
        self.map.insert(k, value);
        Ok(old.is_none())
    }

    /// Deletes a key, or every key with that prefix; returns how many went.
    pub fn del(&mut self, ns: &str, key: &str, by_prefix: bool) -> usize {
        let doomed = if by_prefix { self.keys(ns, key) } else { vec![key.to_string()] };
        let mut n = 0;
        for k in doomed {
            if let Some(v) = self.map.remove(&(ns.to_string(), k.clone())) {
                self.bytes -= ns.len() + k.len() + v.len();
                n += 1;
            }
        }
        n
    }

    /// Keys of `ns` starting with `prefix`, in order.
    pub fn keys(&self, ns: &str, prefix: &str) -> Vec<String> {
        self.map
            .range((ns.to_string(), prefix.to_string())..)
            .take_while(|((n, k), _)| n == ns && k.starts_with(prefix))
            .map(|((_, k), _)| k.clone())
            .collect()
    }

    /// Keys stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of every key (namespace included) and value.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: KvLimits = KvLimits { max_entries: 100, max_value_bytes: 100, max_total_bytes: 10_000 };

    #[test]
    fn put_get_overwrite_and_prefix_delete() {
        let mut kv = Kv::new(ROOMY);
        assert_eq!(kv.put("a", "k1", b"1".to_vec(), false), Ok(true));
        assert_eq!(kv.put("a", "k1", b"2".to_vec(), false), Ok(false));
        assert_eq!(kv.get("a", "k1"), Some(&b"1"[..]));
        assert_eq!(kv.put("a", "k1", b"3".to_vec(), true), Ok(false));
        assert_eq!(kv.get("a", "k1"), Some(&b"3"[..]));
        kv.put("a", "k2", vec![], false).unwrap();
        kv.put("b", "k3", vec![], false).unwrap();
        assert_eq!(kv.keys("a", "k"), vec!["k1", "k2"]);
        assert_eq!(kv.del("a", "k", true), 2);
        assert_eq!(kv.keys("b", "k"), vec!["k3"]);
        assert_eq!(kv.bytes(), 3, "only b/k3 is left");
    }

    #[test]
    fn the_entry_count_is_capped_but_overwrites_and_freed_room_are_fine() {
        let mut kv = Kv::new(KvLimits { max_entries: 2, ..ROOMY });
        kv.put("n", "a", vec![1], false).unwrap();
        kv.put("n", "b", vec![1], false).unwrap();
        assert_eq!(kv.put("n", "c", vec![1], false), Err(KvError::TooManyEntries { max: 2 }));
        assert_eq!(kv.get("n", "c"), None);
        assert_eq!(kv.put("n", "b", vec![2], true), Ok(false), "an overwrite adds no key");
        assert_eq!(kv.del("n", "a", false), 1);
        assert_eq!(kv.put("n", "c", vec![1], false), Ok(true));
    }

    #[test]
    fn values_keys_and_total_bytes_are_capped() {
        let mut kv = Kv::new(KvLimits { max_total_bytes: 30, ..ROOMY });
        assert_eq!(kv.put("n", "k", vec![0; 101], false), Err(KvError::ValueTooLarge { len: 101, max: 100 }));
        let long = "k".repeat(MAX_KEY_BYTES);
        assert_eq!(kv.put("n", &long, vec![], false), Err(KvError::KeyTooLong { len: MAX_KEY_BYTES + 1 }));
        kv.put("n", "a", vec![0; 18], false).unwrap();
        assert_eq!(kv.bytes(), 20);
        assert_eq!(kv.put("n", "b", vec![0; 9], false), Err(KvError::TooManyBytes { max: 30 }));
        assert_eq!(kv.put("n", "a", vec![0; 28], true), Ok(false), "replacing counts the new size only");
        assert_eq!(kv.bytes(), 30);
        assert_eq!(kv.put("n", "a", vec![0; 29], true), Err(KvError::TooManyBytes { max: 30 }));
        assert_eq!(kv.get("n", "a").map(<[u8]>::len), Some(28), "a refused put changes nothing");
        assert!(!kv.is_empty() && kv.len() == 1);
    }
}
