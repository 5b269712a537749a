//! The `meta` table's own records and the check [`super::open`] makes before it changes
//! anything: a store from a newer format, or with records it cannot read, is refused and
//! left as it is (never reset). Pure: no IO.
//!
//! Keys: [`FORMAT_VERSION_KEY`] (u32 LE, written at every open), [`INCARNATION_KEY`]
//! (u64 LE, one more at every open, so `raylet status` can show that the GCS restarted),
//! and [`AUTH_TOKEN_KEY`] (written by the GCS: the cluster token, so a restarted head
//! accepts the nodes it had).

use super::records::{decode_u64, encode_u64, Op, Table, Tables};
use super::OpenError;

/// The format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// `meta` key of the format version.
pub const FORMAT_VERSION_KEY: &[u8] = b"format_version";
/// `meta` key of the incarnation counter.
pub const INCARNATION_KEY: &[u8] = b"incarnation";
/// `meta` key of the cluster auth token (the GCS writes it).
pub const AUTH_TOKEN_KEY: &[u8] = b"auth_token";

/// Why a loaded store is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// Written by a newer build.
    #[error("format version {0} is newer than {FORMAT_VERSION}")]
    Newer(u32),
    /// Unreadable meta records, or records without a format version.
    #[error("{0}")]
    Corrupt(String),
}

/// The [`OpenError`] of a refused store at `location`.
pub fn open_error(location: String, e: MetaError) -> OpenError {
    match e {
        MetaError::Newer(found) => OpenError::NewerFormat { location, found, supported: FORMAT_VERSION },
        MetaError::Corrupt(reason) => OpenError::Corrupt { location, reason },
    }
}

/// What an open records, once the loaded tables passed the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// This start's incarnation.
    pub incarnation: u64,
    /// The writes that record it (format version and incarnation).
    pub ops: Vec<Op>,
}

/// Checks the tables as loaded and says what this open writes.
pub fn check_and_bump(tables: &Tables) -> Result<Opened, MetaError> {
    let previous = match tables.get(Table::Meta, FORMAT_VERSION_KEY) {
        Some(v) => {
            let bytes: [u8; 4] =
                v.try_into().map_err(|_| MetaError::Corrupt(format!("format version of {} bytes", v.len())))?;
            let version = u32::from_le_bytes(bytes);
            if version > FORMAT_VERSION {
                return Err(MetaError::Newer(version));
            }
            if version == 0 {
                return Err(MetaError::Corrupt("format version 0".into()));
            }
            match tables.get(Table::Meta, INCARNATION_KEY) {
                Some(i) => decode_u64(i).map_err(|e| MetaError::Corrupt(format!("incarnation: {e}")))?,
                None => return Err(MetaError::Corrupt("format version without an incarnation".into())),
            }
        }
        None if tables.is_empty() => 0,
        None => return Err(MetaError::Corrupt(format!("{} records but no format version", tables.len()))),
    };
    let incarnation = previous.checked_add(1).ok_or_else(|| MetaError::Corrupt("incarnation overflow".into()))?;
    let ops = vec![
        Op::Put { table: Table::Meta, key: FORMAT_VERSION_KEY.to_vec(), value: FORMAT_VERSION.to_le_bytes().to_vec() },
        Op::Put { table: Table::Meta, key: INCARNATION_KEY.to_vec(), value: encode_u64(incarnation) },
    ];
    Ok(Opened { incarnation, ops })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(tables: &mut Tables) -> u64 {
        let o = check_and_bump(tables).unwrap();
        o.ops.iter().for_each(|op| tables.apply(op));
        o.incarnation
    }

    #[test]
    fn incarnation_starts_at_one_and_grows_at_every_open() {
        let mut t = Tables::default();
        assert_eq!(opened(&mut t), 1);
        t.insert(Table::Nodes, b"n".to_vec(), b"x".to_vec());
        assert_eq!(opened(&mut t), 2);
        assert_eq!(opened(&mut t), 3);
    }

    #[test]
    fn newer_format_and_unreadable_meta_are_refused() {
        let mut t = Tables::default();
        t.insert(Table::Meta, FORMAT_VERSION_KEY.to_vec(), (FORMAT_VERSION + 1).to_le_bytes().to_vec());
        t.insert(Table::Meta, INCARNATION_KEY.to_vec(), encode_u64(4));
        assert_eq!(check_and_bump(&t), Err(MetaError::Newer(FORMAT_VERSION + 1)));

        t.insert(Table::Meta, FORMAT_VERSION_KEY.to_vec(), vec![1, 0]);
        assert!(matches!(check_and_bump(&t), Err(MetaError::Corrupt(_))));

        t.insert(Table::Meta, FORMAT_VERSION_KEY.to_vec(), FORMAT_VERSION.to_le_bytes().to_vec());
        t.insert(Table::Meta, INCARNATION_KEY.to_vec(), vec![9]);
        assert!(matches!(check_and_bump(&t), Err(MetaError::Corrupt(_))));

        let mut no_version = Tables::default();
        no_version.insert(Table::Kv, b"k".to_vec(), b"v".to_vec());
        assert!(matches!(check_and_bump(&no_version), Err(MetaError::Corrupt(_))));
    }
}
