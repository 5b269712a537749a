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
        check_decoded(&h);
    }
    // Random bytes almost never carry a valid header checksum, so also seal the input's
    // bytes as header fields: the decoder is then driven past its magic and checksum, and
    // any one corrupted byte of a sealed header must be refused.
    if let Some(f) = data.get(..50) {
        let u64_at = |i: usize| u64::from_le_bytes(f[i..i + 8].try_into().unwrap_or([0; 8]));
        let mut id = ObjectId::NIL;
        id.0.copy_from_slice(&f[16..44]);
        let h = RecordHeader {
            data_size: u64_at(0),
            metadata_size: u64_at(8),
            id,
            payload_crc: u32::from_le_bytes([f[44], f[45], f[46], f[47]]),
        };
        let mut sealed = h.encode();
        match decode_record(&sealed) {
            Ok(d) => {
                assert_eq!(d, h, "a sealed header decodes to other fields");
                check_decoded(&d);
            }
            Err(e) => assert_eq!(e, SpillError::SizeOverflow, "a sealed header was refused"),
        }
        let (at, flip) = (usize::from(f[48]) % sealed.len(), f[49] | 1);
        sealed[at] ^= flip;
        assert!(decode_record(&sealed).is_err(), "a header with byte {at} corrupted was accepted");
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

/// What must hold for any header the decoder accepted.
fn check_decoded(h: &RecordHeader) {
    let len = h.record_len().expect("an accepted header's record length fits");
    assert!(len >= RECORD_HEADER_LEN && len - RECORD_HEADER_LEN == h.data_size + h.metadata_size);
    let url = SpillUrl { file: 1, offset: 0, len };
    assert_eq!(h.check(&url, &h.id), Ok(()));
    let other = ObjectId(h.id.0.map(|b| b ^ 0xff));
    assert!(h.check(&url, &other).is_err(), "header accepted for another object");
    assert!(h.check(&SpillUrl { len: len ^ 1, ..url }, &h.id).is_err(), "wrong length accepted");
}
