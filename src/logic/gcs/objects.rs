//! The GCS object directory, pure: object id → nodes holding a copy in memory, its size,
//! and where it was spilled. Every change bumps `version()` so long-polling readers wake.

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

/// The directory.
#[derive(Debug, Default)]
pub struct Directory {
    objects: HashMap<ObjectId, Locations>,
    version: u64,
}

impl Directory {
    /// Change counter.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies `change` reported by `node`.
    pub fn handle_change(&mut self, node: NodeId, id: ObjectId, change: Change) {
        let e = self.objects.entry(id).or_default();
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
        if e.nodes.is_empty() && e.spilled.is_none() {
            self.objects.remove(&id);
        }
        self.version += 1;
    }

    /// Forgets every copy on a dead node; returns how many objects it touched.
    pub fn handle_node_dead(&mut self, node: NodeId) -> usize {
        let mut touched = 0;
        self.objects.retain(|_, e| {
            let had = e.nodes.remove(&node);
            let spilled_there = e.spilled.as_ref().is_some_and(|(n, _)| *n == node);
            if spilled_there {
                e.spilled = None;
            }
            touched += usize::from(had || spilled_there);
            !(e.nodes.is_empty() && e.spilled.is_none())
        });
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
        let mut d = Directory::default();
        d.handle_change(a, id, Change::Added { size: 10, metadata_size: 0 });
        d.handle_change(b, id, Change::Added { size: 10, metadata_size: 0 });
        assert_eq!(d.get(&id).nodes.len(), 2);
        let v = d.version();
        assert_eq!(d.handle_node_dead(a), 1);
        assert!(d.version() > v);
        assert_eq!(d.get(&id).nodes.iter().collect::<Vec<_>>(), vec![&b]);
        d.handle_change(b, id, Change::Spilled { size: 10, url: "spill-1?offset=0&size=54".into() });
        d.handle_change(b, id, Change::Removed);
        assert!(d.get(&id).nodes.is_empty());
        assert_eq!(d.get(&id).spilled.as_ref().map(|s| s.0), Some(b));
        assert_eq!(d.handle_node_dead(b), 1);
        assert!(d.is_empty());
        assert_eq!(d.handle_node_dead(b), 0);
    }

    #[test]
    fn a_removed_spilled_copy_leaves_the_directory_only_from_its_node() {
        let (a, b) = (NodeId([1; 28]), NodeId([2; 28]));
        let id = ObjectId([7; 28]);
        let mut d = Directory::default();
        d.handle_change(a, id, Change::Spilled { size: 10, url: "spill-1?offset=0&size=74".into() });
        d.handle_change(b, id, Change::SpillRemoved);
        assert_eq!(d.get(&id).spilled.as_ref().map(|s| s.0), Some(a), "another node's report changes nothing");
        let v = d.version();
        d.handle_change(a, id, Change::SpillRemoved);
        assert!(d.version() > v);
        assert!(d.is_empty(), "no copy left anywhere: the entry goes");
    }
}
