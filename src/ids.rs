//! Identifier newtypes: fixed-size byte arrays, `Copy`, hex `Display`.
//!
//! Sizes follow Ray (28-byte node, worker and object ids, 4-byte job ids, 18-byte
//! placement-group ids, 24-byte lease ids). No hashing policy lives here: routing an id to
//! its owner shard is `shard::route`'s business.

use std::fmt;

/// An id had the wrong length or was not hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The byte string had the wrong length.
    #[error("{kind}: expected {expected} bytes, got {got}")]
    Length {
        /// Which id type.
        kind: &'static str,
        /// Its size.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// The text was not hex.
    #[error("{kind}: not a hex string")]
    Hex {
        /// Which id type.
        kind: &'static str,
    },
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Size in bytes.
            pub const LEN: usize = $len;
            /// The all-zero ("nil") id.
            pub const NIL: Self = Self([0; $len]);

            /// Builds an id from exactly `LEN` bytes.
            pub fn from_bytes(b: &[u8]) -> Result<Self, IdError> {
                let arr: [u8; $len] = b.try_into().map_err(|_| IdError::Length {
                    kind: stringify!($name),
                    expected: $len,
                    got: b.len(),
                })?;
                Ok(Self(arr))
            }

            /// Parses lower- or upper-case hex.
            pub fn from_hex(s: &str) -> Result<Self, IdError> {
                let bytes = hex_decode(s).ok_or(IdError::Hex { kind: stringify!($name) })?;
                Self::from_bytes(&bytes)
            }

            /// A fresh id from the given random source.
            pub fn random_with(rng: &mut fastrand::Rng) -> Self {
                let mut b = [0u8; $len];
                rng.fill(&mut b);
                Self(b)
            }

            /// A fresh id from OS randomness.
            pub fn random() -> Self {
                let mut b = [0u8; $len];
                crate::ids::os_random(&mut b);
                Self(b)
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// The raw bytes as an owned vector (for prost `bytes` fields).
            pub fn to_vec(&self) -> Vec<u8> {
                self.0.to_vec()
            }

            /// Whether this is the nil id.
            pub fn is_nil(&self) -> bool {
                self.0 == [0; $len]
            }

            /// Lower-case hex.
            pub fn hex(&self) -> String {
                hex_encode(&self.0)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::NIL
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let h = self.hex();
                write!(f, "{}({})", stringify!($name), &h[..h.len().min(12)])
            }
        }
    };
}

id_type!(
    /// A node (raylet) in the cluster.
    NodeId,
    28
);
id_type!(
    /// A worker or driver process.
    WorkerId,
    28
);
id_type!(
    /// An object in the store.
    ObjectId,
    28
);
id_type!(
    /// A job (driver).
    JobId,
    4
);
id_type!(
    /// A placement group.
    PlacementGroupId,
    18
);
id_type!(
    /// A worker lease request; leases are idempotent by this id.
    LeaseId,
    24
);

/// A shard index within one node. Distinct from plain `usize` indexes on purpose.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The shard that owns node-wide state (resources, leases, GCS session).
    pub const NODE: Self = Self(0);

    /// As an index into per-shard vectors.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Lower-case hex of `b`.
pub fn hex_encode(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

/// Decodes hex; `None` on odd length or a non-hex digit.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let val = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    s.chunks(2).map(|p| Some(val(p[0])? << 4 | val(p[1])?)).collect()
}

/// Bytes of OS randomness a thread fetches at a time.
const RANDOM_POOL: usize = 4096;

thread_local! {
    /// OS random bytes fetched ahead, how many are used, and the process they were
    /// fetched in. A driver makes an id per lease and per put; one `getrandom` call per id
    /// cost a syscall on every lease.
    static POOL: std::cell::RefCell<(Box<[u8; RANDOM_POOL]>, usize, u32)> =
        std::cell::RefCell::new((Box::new([0; RANDOM_POOL]), RANDOM_POOL, 0));
}

/// Fills `buf` from the OS random source, through a per-thread pool of bytes fetched
/// ahead (each byte is handed out once). The pool is refilled after a `fork` (a child
/// that did not exec must not repeat its parent's ids): it remembers its process.
pub fn os_random(buf: &mut [u8]) {
    // getrandom only fails when the OS has no entropy source at all; the process cannot
    // run meaningfully then.
    let fill = |b: &mut [u8]| getrandom::getrandom(b).expect("OS random source unavailable");
    if buf.len() > RANDOM_POOL / 4 {
        return fill(buf);
    }
    let pid = std::process::id();
    POOL.with_borrow_mut(|(pool, used, owner)| {
        if *used + buf.len() > RANDOM_POOL || *owner != pid {
            fill(&mut pool[..]);
            (*used, *owner) = (0, pid);
        }
        buf.copy_from_slice(&pool[*used..*used + buf.len()]);
        pool[*used..*used + buf.len()].fill(0);
        *used += buf.len();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let id = ObjectId::random_with(&mut fastrand::Rng::with_seed(7));
        assert_eq!(ObjectId::from_hex(&id.hex()).unwrap(), id);
        assert_eq!(id.hex().len(), 56);
    }

    #[test]
    fn wrong_length_and_bad_hex_are_errors() {
        assert!(matches!(NodeId::from_bytes(&[1, 2]), Err(IdError::Length { got: 2, .. })));
        assert!(matches!(JobId::from_hex("zz00aa11"), Err(IdError::Hex { .. })));
        assert!(JobId::from_hex("abc").is_err());
        assert!(JobId::from_hex("0000000A").is_ok());
    }

    #[test]
    fn pooled_random_ids_do_not_repeat_across_refills() {
        let ids: std::collections::HashSet<LeaseId> = (0..3 * RANDOM_POOL).map(|_| LeaseId::random()).collect();
        assert_eq!(ids.len(), 3 * RANDOM_POOL);
        let mut big = [0u8; RANDOM_POOL];
        os_random(&mut big);
        assert!(big.iter().any(|b| *b != 0));
    }

    #[test]
    fn nil_is_nil() {
        assert!(WorkerId::NIL.is_nil());
        assert!(!WorkerId::random().is_nil());
    }
}
