//! The GCS internal KV: namespaced keys to bytes. Pure, in memory.

use std::collections::BTreeMap;

/// Namespaced key-value table.
#[derive(Debug, Default)]
pub struct Kv {
    map: BTreeMap<(String, String), Vec<u8>>,
}

impl Kv {
    /// The value under (ns, key).
    pub fn get(&self, ns: &str, key: &str) -> Option<&[u8]> {
        self.map.get(&(ns.to_string(), key.to_string())).map(Vec::as_slice)
    }

    /// Stores a value; with `overwrite == false` an existing key is kept. Returns whether a
    /// new key was added.
    pub fn put(&mut self, ns: &str, key: &str, value: Vec<u8>, overwrite: bool) -> bool {
        let k = (ns.to_string(), key.to_string());
        let existed = self.map.contains_key(&k);
        if !existed || overwrite {
            self.map.insert(k, value);
        }
        !existed
    }

    /// Deletes a key, or every key with that prefix; returns how many went.
    pub fn del(&mut self, ns: &str, key: &str, by_prefix: bool) -> usize {
        if !by_prefix {
            return self.map.remove(&(ns.to_string(), key.to_string())).is_some() as usize;
        }
        let doomed = self.keys(ns, key);
        for k in &doomed {
            self.map.remove(&(ns.to_string(), k.clone()));
        }
        doomed.len()
    }

    /// Keys of `ns` starting with `prefix`, in order.
    pub fn keys(&self, ns: &str, prefix: &str) -> Vec<String> {
        self.map
            .range((ns.to_string(), prefix.to_string())..)
            .take_while(|((n, k), _)| n == ns && k.starts_with(prefix))
            .map(|((_, k), _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_overwrite_and_prefix_delete() {
        let mut kv = Kv::default();
        assert!(kv.put("a", "k1", b"1".to_vec(), false));
        assert!(!kv.put("a", "k1", b"2".to_vec(), false));
        assert_eq!(kv.get("a", "k1"), Some(&b"1"[..]));
        assert!(!kv.put("a", "k1", b"3".to_vec(), true));
        assert_eq!(kv.get("a", "k1"), Some(&b"3"[..]));
        kv.put("a", "k2", vec![], false);
        kv.put("b", "k3", vec![], false);
        assert_eq!(kv.keys("a", "k"), vec!["k1", "k2"]);
        assert_eq!(kv.del("a", "k", true), 2);
        assert_eq!(kv.keys("b", ""), vec!["k3"]);
    }
}
