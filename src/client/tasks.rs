//! The built-in tasks' data contract, shared by the default worker and drivers: what
//! `produce(bytes, seed)` writes and how `consume` hashes, so a driver can check a result
//! without fetching the object.

/// Fills `buf` with the deterministic content of `produce(buf.len(), seed)`: a
/// splitmix64 stream, little-endian, truncated to the length.
pub fn fill(buf: &mut [u8], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&next().to_le_bytes());
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let v = next().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&v[..n]);
    }
}

/// The hash `consume` reports: CRC32C of the bytes.
pub fn checksum(data: &[u8]) -> u32 {
    crate::checksum::crc32c(data)
}

/// The checksum `consume` reports for an object made by `produce(bytes, seed)`.
pub fn expected_checksum(bytes: usize, seed: u64) -> u32 {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf, seed);
    checksum(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_depends_on_the_seed() {
        let (mut a, mut b, mut c) = ([0u8; 37], [0u8; 37], [0u8; 37]);
        fill(&mut a, 1);
        fill(&mut b, 1);
        fill(&mut c, 2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(expected_checksum(37, 1), checksum(&a));
    }

    #[test]
    fn a_prefix_of_a_longer_object_matches() {
        let (mut short, mut long) = ([0u8; 13], [0u8; 64]);
        fill(&mut short, 9);
        fill(&mut long, 9);
        assert_eq!(short[..], long[..13]);
    }
}
