//! Target `spill_record`: the spill-file record header a restore reads back from disk,
//! and the spill URL an object table keeps (both may come from a corrupted or foreign
//! file, so neither may panic).
//!
//! Input: the bytes at a record's start; the same bytes as text are parsed as a URL.
//!
//! Invariants:
//! - decoding never panics; a decoded header re-encodes to the bytes it came from;
//! - `record_len` either overflows cleanly or covers the header and both sizes, and
//!   `check` accepts the header against a URL of that length and its own id only;
//! - a parsed URL prints to text that parses back to it, and its payload range lies
//!   inside the record.

use crate::ids::ObjectId;
use crate::logic::spill::{RecordHeader, SpillError, SpillUrl, RECORD_HEADER_LEN};

/// The one decoder this target drives: a restore's read of a record header. (Kept to one
/// call so a change of the record format changes this line only.)
fn decode_record(b: &[u8]) -> Result<RecordHeader, SpillError> {
    RecordHeader::decode(b)
}

/// The target body.
pub fn run(data: &[u8]) {
    if let Ok(h) = decode_record(data) {
        assert_eq!(&h.encode()[..], &data[..RECORD_HEADER_LEN as usize], "header does not round-trip");
        match h.record_len() {
            Ok(len) => {
                assert!(len >= RECORD_HEADER_LEN && len - RECORD_HEADER_LEN == h.data_size + h.metadata_size);
                let url = SpillUrl { file: 1, offset: 0, len };
                assert_eq!(h.check(&url, &h.id), Ok(()));
                let other = ObjectId(h.id.0.map(|b| b ^ 0xff));
                assert!(h.check(&url, &other).is_err(), "header accepted for another object");
                assert!(h.check(&SpillUrl { len: len ^ 1, ..url }, &h.id).is_err(), "wrong length accepted");
            }
            Err(e) => assert_eq!(e, SpillError::SizeOverflow),
        }
    } else {
        assert!(data.len() < RECORD_HEADER_LEN as usize, "a full-length header was refused");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(url) = SpillUrl::parse(text) {
            assert_eq!(SpillUrl::parse(&url.to_string()), Ok(url), "url does not round-trip");
            let (start, len) = url.payload();
            assert!(len <= url.len, "payload longer than its record");
            assert!(start >= url.offset, "payload start wrapped around");
        }
    }
}
