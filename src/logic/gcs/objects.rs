//! The GCS object directory, pure: object id → nodes holding a copy in memory, its size,
//! and where it was spilled. Every change bumps `version()` so long-polling readers wake.
//!
//! Bounded: at most `max_locations` locations (a copy on a node, or a spilled copy) in
//! all, and spill URLs of at most [`MAX_URL_BYTES`]. A change past a bound is refused and
//! changes nothing; removals always apply.

use crate::ids::{NodeId, ObjectId};
use std::collections::{BTreeSet, HashMap};

/// What the directory knows of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locations {
    /// Nodes with a sealed copy in memory.
    pub nodes: BTreeSet<NodeId>,
    /// Data plus metadata bytes (0 = unknown).
    pub size: u64,
    /// Metadata bytes (the tail of `size`).
    pub metadata_size: u64,
    /// Where a copy was spilled: (node, url).
    pub spilled: Option<(NodeId, String)>,
}

/// One reported change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A sealed copy appeared on the node.
    Added {
        /// Its size.
        size: u64,
        /// Its metadata size.
        metadata_size: u64,
    },
    /// The node's in-memory copy went away.
    Removed,
    /// The node spilled the object to `url`.
    Spilled {
        /// Its size.
        size: u64,
        /// Where.
        url: String,
    },
    /// The node's spilled copy went away.
    SpillRemoved,
}

/// Longest spill URL accepted.
pub const MAX_URL_BYTES: usize = 4096;

/// A change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// The directory holds as many locations as it may.
    #[error("the object directory holds {max} locations, its limit (gcs_object_directory_max_locations)")]
    Full {
        /// The limit.
        max: usize,
    },
    /// A spill URL is too long.
    #[error("spill URL of {len} bytes is over the limit of {MAX_URL_BYTES}")]
    UrlTooLong {
        /// Its length.
        len: usize,
    },
}

/// The directory.
#[derive(Debug)]
pub struct Directory {
    objects: HashMap<ObjectId, Locations>,
    version: u64,
    locations: usize,
    max_locations: usize,
}

impl Directory {
    /// An empty directory of at most `max_locations` locations.
    pub fn new(max_locations: usize) -> Self {
        Self { objects: HashMap::new(), version: 0, locations: 0, max_locations }
    }

    /// Locations held (copies on nodes plus spilled copies).
    pub fn locations(&self) -> usize {
        self.locations
    }

    /// Change counter.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies `change` reported by `node`, unless it would pass a bound.
    pub fn handle_change(&mut self, node: NodeId, id: ObjectId, change: Change) -> Result<(), DirectoryError> {
        let known = self.objects.get(&id);
        let adds = match &change {
            Change::Added { .. } => known.is_none_or(|e| !e.nodes.contains(&node)),
            Change::Removed | Change::SpillRemoved => false,
            Change::Spilled { url, .. } => {
                if url.len() > MAX_URL_BYTES {
                    return Err(DirectoryError::UrlTooLong { len: url.len() });
                }
                known.is_none_or(|e| e.spilled.is_none())
            }
        };
        if adds && self.locations >= self.max_locations {
            return Err(DirectoryError::Full { max: self.max_locations });
        }
        let e = self.objects.entry(id).or_default();
        let before = e.nodes.len() + usize::from(e.spilled.is_some());
        match change {
            Change::Added { size, metadata_size } => {
                e.nodes.insert(node);
                if size > 0 {
                    e.size = size;
                    e.metadata_size = metadata_size;
                }
            }
            Change::Removed => {
                e.nodes.remove(&node);
            }
            Change::Spilled { size, url } => {
                if size > 0 {
                    e.size = size;
                }
                e.spilled = Some((node, url));
            }
            Change::SpillRemoved => {
                if e.spilled.as_ref().is_some_and(|(n, _)| *n == node) {
                    e.spilled = None;
                }
            }
        }
        let after = e.nodes.len() + usize::from(e.spilled.is_some());
        self.locations = self.locations + after - before;
        if after == 0 {
            self.objects.remove(&id);
        }
        self.version += 1;
        Ok(())
    }

    /// Forgets every copy on a dead node; returns how many objects it touched.
    pub fn handle_node_dead(&mut self, node: NodeId) -> usize {
        let mut touched = 0;
        let mut gone = 0;
        self.objects.retain(|_, e| {
            let had = e.nodes.remove(&node);
            let spilled_there = e.spilled.as_ref().is_some_and(|(n, _)| *n == node);
            if spilled_there {
                e.spilled = None;
            }
            gone += usize::from(had) + usize::from(spilled_there);
            touched += usize::from(had || spilled_there);
            !(e.nodes.is_empty() && e.spilled.is_none())
        });
        self.locations -= gone;
        if touched > 0 {
            self.version += 1;
        }
        touched
    }

    /// What is known of `id`.
    pub fn get(&self, id: &ObjectId) -> Locations {
        self.objects.get(id).cloned().unwrap_or_default()
    }

    /// Number of objects with at least one copy.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether no object is known.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_come_and_go_and_dead_nodes_vanish() {
        let (a, b) = (NodeId([1; 28]), NodeId([2; 28]));
        let id = ObjectId([7; 28]);
        let mut d = Directory::new(100);
        d.handle_change(a, id, Change::Added { size: 10, metadata_size: 0 }).unwrap();
        d.handle_change(b, id, Change::Added { size: 10, metadata_size: 0 }).unwrap();
        assert_eq!(d.locations(), 2);
        assert_eq!(d.get(&id).nodes.len(), 2);
        let v = d.version();
        assert_eq!(d.handle_node_dead(a), 1);
        assert!(d.version() > v);
        assert_eq!(d.get(&id).nodes.iter().collect::<Vec<_>>(), vec![&b]);
        d.handle_change(b, id, Change::Spilled { size: 10, url: "spill-1?offset=0&size=54".into() }).unwrap();
        d.handle_change(b, id, Change::Removed).unwrap();
        assert_eq!(d.locations(), 1, "only the spilled copy is left");
        assert!(d.get(&id).nodes.is_empty());
        assert_eq!(d.get(&id).spilled.as_ref().map(|s| s.0), Some(b));
        assert_eq!(d.handle_node_dead(b), 1);
        assert!(d.is_empty());
        assert_eq!(d.locations(), 0);
        assert_eq!(d.handle_node_dead(b), 0);
    }

    #[test]
    fn locations_are_capped_and_removals_make_room() {
        let (a, b) = (NodeId([1; 28]), NodeId([2; 28]));
        let (x, y) = (ObjectId([7; 28]), ObjectId([8; 28]));
        let added = Change::Added { size: 10, metadata_size: 0 };
        let mut d = Directory::new(2);
        d.handle_change(a, x, added.clone()).unwrap();
        d.handle_change(b, x, added.clone()).unwrap();
        let v = d.version();
        assert_eq!(d.handle_change(a, y, added.clone()), Err(DirectoryError::Full { max: 2 }));
        let spilled = Change::Spilled { size: 10, url: "u".into() };
        assert_eq!(d.handle_change(a, x, spilled.clone()), Err(DirectoryError::Full { max: 2 }));
        assert_eq!((d.version(), d.len(), d.get(&y)), (v, 1, Locations::default()), "a refusal changes nothing");
        d.handle_change(b, x, added.clone()).unwrap();
        assert_eq!(d.locations(), 2, "a repeated report adds no location");
        d.handle_change(b, x, Change::Removed).unwrap();
        d.handle_change(a, y, added).unwrap();
        assert_eq!(d.locations(), 2);
        let long = Change::Spilled { size: 1, url: "u".repeat(MAX_URL_BYTES + 1) };
        assert_eq!(d.handle_change(a, y, long), Err(DirectoryError::UrlTooLong { len: MAX_URL_BYTES + 1 }));
    }

    #[test]
    fn a_removed_spilled_copy_leaves_the_directory_only_from_its_node() {
        let (a, b) = (NodeId([1; 28]), NodeId([2; 28]));
        let id = ObjectId([7; 28]);
        let mut d = Directory::new(usize::MAX);
        d.handle_change(a, id, Change::Spilled { size: 10, url: "spill-1?offset=0&size=74".into() }).unwrap();
        d.handle_change(b, id, Change::SpillRemoved).unwrap();
        assert_eq!(d.get(&id).spilled.as_ref().map(|s| s.0), Some(a), "another node's report changes nothing");
        let v = d.version();
        d.handle_change(a, id, Change::SpillRemoved).unwrap();
        assert!(d.version() > v);
        assert!(d.is_empty(), "no copy left anywhere: the entry goes");
    }
}
