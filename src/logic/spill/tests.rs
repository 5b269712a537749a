use super::*;

fn obj(n: u8, data: u64, meta: u64) -> SpillObject {
    SpillObject { id: ObjectId([n; 28]), data_size: data, metadata_size: meta }
}

#[test]
fn url_round_trips_through_text() {
    let u = SpillUrl { file: 7 | (3 << 48), offset: 44, len: 1 << 40 };
    let s = u.to_string();
    assert_eq!(s, format!("spill-{}?offset=44&size={}", 7u64 | (3 << 48), 1u64 << 40));
    assert_eq!(SpillUrl::parse(&s), Ok(u));
}

#[test]
fn malformed_urls_are_errors() {
    for s in [
        "",
        "spill-",
        "spill-1",
        "spill-1?offset=2",
        "spill-1?size=3&offset=2",
        "spill-x?offset=2&size=3",
        "spill-1?offset=+2&size=3",
        "spill-1?offset=2&size=",
        "spill-1?offset=2&size=99999999999999999999",
        "file-1?offset=2&size=3",
    ] {
        assert!(matches!(SpillUrl::parse(s), Err(SpillError::BadUrl(_))), "{s:?}");
    }
}

fn header() -> RecordHeader {
    RecordHeader { data_size: 10, metadata_size: 3, id: ObjectId([9; 28]), payload_crc: 0xdead_beef }
}

#[test]
fn header_round_trips_and_checks_against_url() {
    let h = header();
    let b = h.encode();
    assert_eq!(b.len() as u64, RECORD_HEADER_LEN);
    assert_eq!(&b[..4], b"RSPL");
    assert_eq!(RecordHeader::decode(&b), Ok(h));
    // Bytes after the header (the payload) are not the decoder's business.
    let mut longer = b.to_vec();
    longer.extend_from_slice(&[7; 100]);
    assert_eq!(RecordHeader::decode(&longer), Ok(h));
    let url = SpillUrl { file: 0, offset: 0, len: RECORD_HEADER_LEN + 13 };
    assert_eq!(h.check(&url, &ObjectId([9; 28])), Ok(()));
    assert!(h.check(&url, &ObjectId([8; 28])).is_err());
    assert!(h.check(&SpillUrl { len: 12, ..url }, &ObjectId([9; 28])).is_err());
    assert_eq!(url.payload(), (RECORD_HEADER_LEN, 13));
    assert_eq!(RecordHeader::decode(&b[..20]), Err(SpillError::ShortHeader(20)));
    assert_eq!(RecordHeader::decode(&[]), Err(SpillError::ShortHeader(0)));
}

#[test]
fn payload_checksum_must_match_the_one_written() {
    let data = b"some object bytes";
    let h = RecordHeader { payload_crc: crate::checksum::crc32c(data), ..header() };
    assert_eq!(h.check_payload(crate::checksum::crc32c(data)), Ok(()));
    let mut flipped = data.to_vec();
    flipped[5] ^= 1;
    assert!(matches!(h.check_payload(crate::checksum::crc32c(&flipped)), Err(SpillError::PayloadChecksum { .. })));
}

#[test]
fn every_single_bit_flip_in_a_header_is_refused() {
    let b = header().encode();
    for i in 0..b.len() * 8 {
        let mut c = b;
        c[i / 8] ^= 1 << (i % 8);
        assert!(RecordHeader::decode(&c).is_err(), "flip of bit {i} went unnoticed");
    }
}

/// A header with `edit` applied and its header checksum recomputed, so the field check
/// itself is what refuses it.
fn resealed(edit: impl FnOnce(&mut [u8; RECORD_HEADER_LEN as usize])) -> [u8; RECORD_HEADER_LEN as usize] {
    let mut b = header().encode();
    edit(&mut b);
    let crc = crate::checksum::crc32c(&b[..60]);
    b[60..].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn headers_with_wrong_magic_version_reserved_bits_or_sizes_are_refused() {
    assert_eq!(RecordHeader::decode(&resealed(|b| b[0] = b'X')), Err(SpillError::BadMagic));
    assert_eq!(RecordHeader::decode(&resealed(|b| b[4] = 0)), Err(SpillError::UnsupportedVersion(0)));
    assert_eq!(RecordHeader::decode(&resealed(|b| b[4] = 2)), Err(SpillError::UnsupportedVersion(2)));
    assert_eq!(RecordHeader::decode(&resealed(|b| b[6] = 1)), Err(SpillError::Reserved));
    assert_eq!(RecordHeader::decode(&resealed(|b| b[57] = 1)), Err(SpillError::Reserved));
    let huge = resealed(|b| {
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        b[16..24].copy_from_slice(&1u64.to_le_bytes());
    });
    assert_eq!(RecordHeader::decode(&huge), Err(SpillError::SizeOverflow));
    // A record of the layout before version 1 (no magic: sizes first) is not read.
    let mut old = [0u8; RECORD_HEADER_LEN as usize];
    old[0..8].copy_from_slice(&10u64.to_le_bytes());
    assert_eq!(RecordHeader::decode(&old), Err(SpillError::BadMagic));
}

proptest::proptest! {
    #[test]
    fn decode_never_panics_and_accepts_only_what_encode_writes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..160)) {
        if let Ok(h) = RecordHeader::decode(&bytes) {
            proptest::prop_assert_eq!(&h.encode()[..], &bytes[..RECORD_HEADER_LEN as usize]);
        }
    }
}

#[test]
fn spill_dir_entries_are_told_apart_by_name() {
    let node = NodeId([0xab; 28]);
    let dir = node_dir_name(&node);
    let lock = lock_file_name(&node);
    assert_eq!(dir, format!("raylet-spill-{node}"));
    assert_eq!(lock, format!("raylet-spill-{node}.lock"));
    assert_eq!(SpillDirEntry::parse(&dir), Some(SpillDirEntry::NodeDir(node)));
    assert_eq!(SpillDirEntry::parse(&lock), Some(SpillDirEntry::Lock(node)));
    for other in ["spill-3", "raylet-spill-", "raylet-spill-xyz", "raylet-spill-ab.lock", "raylet-spill-.lock", ""] {
        assert_eq!(SpillDirEntry::parse(other), None, "{other:?}");
    }
}

#[test]
fn records_are_packed_back_to_back() {
    let mut p = SpillFilePlanner::new(ShardId(0));
    let files = p.plan(&[obj(1, 100, 4), obj(2, 0, 0), obj(3, 7, 0)]).unwrap();
    assert_eq!(files.len(), 1);
    let r = &files[0].records;
    assert_eq!(r[0].url, SpillUrl { file: 0, offset: 0, len: 168 });
    assert_eq!(r[1].url, SpillUrl { file: 0, offset: 168, len: 64 });
    assert_eq!(r[2].url.offset, 232);
    assert_eq!(files[0].len, 232 + 71);
    assert_eq!(r[2].header.id, ObjectId([3; 28]));
}

#[test]
fn files_split_on_byte_bound_and_oversized_objects_get_their_own_file() {
    let mut p = SpillFilePlanner::with_limits(ShardId(0), 200, 100);
    let files = p.plan(&[obj(1, 30, 0), obj(2, 30, 0), obj(3, 500, 0), obj(4, 10, 0)]).unwrap();
    let shape: Vec<usize> = files.iter().map(|f| f.records.len()).collect();
    assert_eq!(shape, vec![2, 1, 1]);
    assert_eq!(files[1].len, 564);
    assert!(files.iter().all(|f| f.records[0].url.offset == 0));
}

#[test]
fn files_split_on_object_count() {
    let mut p = SpillFilePlanner::with_limits(ShardId(0), u64::MAX, 2);
    let objs: Vec<_> = (0..5).map(|i| obj(i, 1, 0)).collect();
    let files = p.plan(&objs).unwrap();
    let shape: Vec<usize> = files.iter().map(|f| f.records.len()).collect();
    assert_eq!(shape, vec![2, 2, 1]);
    assert_eq!(files.iter().map(|f| f.file).collect::<Vec<_>>(), vec![0, 1, 2]);
    // A later plan starts new files.
    assert_eq!(p.plan(&objs[..1]).unwrap()[0].file, 3);
}

#[test]
fn file_numbers_carry_the_shard() {
    let mut p = SpillFilePlanner::new(ShardId(5));
    let f = p.plan(&[obj(1, 1, 1)]).unwrap();
    assert_eq!(f[0].file, 5 << 48);
    assert_eq!(file_name(f[0].file), format!("spill-{}", 5u64 << 48));
}

#[test]
fn release_reports_the_file_when_its_last_record_goes() {
    let mut p = SpillFilePlanner::new(ShardId(0));
    let f = p.plan(&[obj(1, 1, 0), obj(2, 1, 0)]).unwrap().remove(0);
    let (a, b) = (f.records[0].url, f.records[1].url);
    assert_eq!(p.file_refs(f.file), 2);
    assert_eq!(p.release(&a), Ok(None));
    assert_eq!(p.release(&a), Err(SpillError::NotLive(a)));
    assert_eq!(p.release(&b), Ok(Some(f.file)));
    assert_eq!(p.release(&b), Err(SpillError::NotLive(b)));
    assert_eq!(p.live_files().count(), 0);
}

#[test]
fn plan_with_overflowing_sizes_fails_and_plans_nothing() {
    let mut p = SpillFilePlanner::new(ShardId(0));
    assert_eq!(p.plan(&[obj(1, 1, 0), obj(2, u64::MAX, 0)]), Err(SpillError::SizeOverflow));
    assert_eq!(p.live_files().count(), 0);
    assert_eq!(p.plan(&[obj(1, 1, 0)]).unwrap()[0].file, 0);
}

#[test]
fn empty_plan_creates_no_files() {
    let mut p = SpillFilePlanner::new(ShardId(0));
    assert!(p.plan(&[]).unwrap().is_empty());
}
