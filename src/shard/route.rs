//! Who owns what: pure functions from ids to shards (DESIGN.md §2).

use crate::ids::{ObjectId, ShardId};

/// The shard owning an object's metadata and allocation: `hash(id) % n`.
pub fn owner_of_object(id: &ObjectId, n: usize) -> ShardId {
    // FNV-1a over the id: object ids may be chosen by users, so do not trust them to be
    // uniformly random in any particular bytes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ShardId((h % n.max(1) as u64) as u16)
}

/// The shard a new local connection is handed to: round robin over all shards.
pub fn owner_of_connection(seq: u64, n: usize) -> ShardId {
    ShardId((seq % n.max(1) as u64) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_spread_over_shards_and_stay_put() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            let id = ObjectId::random_with(&mut rng);
            let s = owner_of_object(&id, 4);
            assert_eq!(s, owner_of_object(&id, 4));
            counts[s.index()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn sequential_ids_still_spread() {
        let mut counts = [0usize; 2];
        for i in 0u32..1000 {
            let mut b = [0u8; 28];
            b[24..].copy_from_slice(&i.to_be_bytes());
            counts[owner_of_object(&ObjectId(b), 2).index()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 400), "{counts:?}");
    }
}
