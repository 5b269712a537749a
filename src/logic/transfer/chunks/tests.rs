use super::*;

fn node(b: u8) -> NodeId {
    NodeId([b; NodeId::LEN])
}

fn header(index: u32, total_size: u64, len: u64) -> ChunkHeader {
    ChunkHeader { index, total_size, len }
}

#[test]
fn chunk_count_is_ceiling_of_size_over_chunk() {
    assert_eq!(ChunkLayout::new(10, 5).unwrap().num_chunks(), 2);
    assert_eq!(ChunkLayout::new(11, 5).unwrap().num_chunks(), 3);
    assert_eq!(ChunkLayout::new(1, 5).unwrap().num_chunks(), 1);
    assert_eq!(ChunkLayout::new(3 * DEFAULT_CHUNK_SIZE + 1, DEFAULT_CHUNK_SIZE).unwrap().num_chunks(), 4);
}

#[test]
fn zero_size_object_has_one_empty_chunk() {
    let l = ChunkLayout::new(0, 5).unwrap();
    assert_eq!(l.num_chunks(), 1);
    assert_eq!(l.range(0), Ok((0, 0)));
    assert_eq!(l.check(&header(0, 0, 0)), Ok((0, 0)));
    assert!(l.range(1).is_err());
}

#[test]
fn ranges_cover_the_object_and_last_chunk_is_short() {
    let l = ChunkLayout::new(11, 5).unwrap();
    assert_eq!(l.range(0), Ok((0, 5)));
    assert_eq!(l.range(1), Ok((5, 5)));
    assert_eq!(l.range(2), Ok((10, 1)));
    assert_eq!(l.range(3), Err(ChunkError::IndexOutOfRange { index: 3, num_chunks: 3 }));
}

#[test]
fn zero_chunk_size_is_rejected() {
    assert_eq!(ChunkLayout::new(10, 0), Err(ChunkError::ZeroChunkSize));
}

#[test]
fn layout_needing_more_than_u32_chunks_is_rejected() {
    let too_big = u64::from(u32::MAX) + 1;
    assert!(matches!(ChunkLayout::new(too_big, 1), Err(ChunkError::TooManyChunks { .. })));
    assert_eq!(ChunkLayout::new(u64::from(u32::MAX), 1).unwrap().num_chunks(), u32::MAX);
    let last = ChunkLayout::new(u64::MAX, 1 << 40).unwrap();
    let (off, len) = last.range(last.num_chunks() - 1).unwrap();
    assert_eq!(off + len, u64::MAX);
}

#[test]
fn header_with_wrong_total_size_is_a_size_mismatch() {
    let l = ChunkLayout::new(11, 5).unwrap();
    assert_eq!(l.check(&header(0, 12, 5)), Err(ChunkError::SizeMismatch { expected: 11, got: 12 }));
}

#[test]
fn header_with_index_past_the_end_is_out_of_range() {
    let l = ChunkLayout::new(11, 5).unwrap();
    assert_eq!(l.check(&header(7, 11, 1)), Err(ChunkError::IndexOutOfRange { index: 7, num_chunks: 3 }));
}

#[test]
fn header_with_wrong_length_for_its_index_is_rejected() {
    let l = ChunkLayout::new(11, 5).unwrap();
    assert_eq!(l.check(&header(2, 11, 5)), Err(ChunkError::WrongLength { index: 2, expected: 1, got: 5 }));
    assert_eq!(l.check(&header(0, 11, 1)), Err(ChunkError::WrongLength { index: 0, expected: 5, got: 1 }));
    assert_eq!(l.check(&header(2, 11, 1)), Ok((10, 1)));
}

#[test]
fn reassembly_accepts_each_chunk_once_and_reports_completion() {
    let mut r = Reassembly::new(ChunkLayout::new(11, 5).unwrap());
    assert_eq!(r.handle_chunk(2), Ok(Progress::Accepted));
    assert_eq!(r.handle_chunk(2), Ok(Progress::Duplicate));
    assert_eq!(r.handle_chunk(0), Ok(Progress::Accepted));
    assert_eq!(r.missing().collect::<Vec<_>>(), vec![1]);
    assert_eq!(r.handle_chunk(1), Ok(Progress::Complete));
    assert!(r.is_complete());
    assert_eq!(r.handle_chunk(1), Ok(Progress::Duplicate));
    assert_eq!(r.received_count(), 3);
}

#[test]
fn reassembly_of_zero_size_object_completes_on_its_single_chunk() {
    let mut r = Reassembly::new(ChunkLayout::new(0, 5).unwrap());
    assert!(!r.is_complete());
    assert_eq!(r.handle_chunk(0), Ok(Progress::Complete));
}

#[test]
fn reassembly_rejects_out_of_range_index() {
    let mut r = Reassembly::new(ChunkLayout::new(11, 5).unwrap());
    assert!(matches!(r.handle_chunk(3), Err(ChunkError::IndexOutOfRange { .. })));
    assert!(matches!(r.claim(3, node(1)), Err(ChunkError::IndexOutOfRange { .. })));
    assert!(matches!(r.release(9), Err(ChunkError::IndexOutOfRange { .. })));
    assert!(!r.is_received(3));
}

#[test]
fn bitmap_spans_several_words() {
    let n = 200u64;
    let mut r = Reassembly::new(ChunkLayout::new(n, 1).unwrap());
    for i in (0..n as u32).rev() {
        let p = r.handle_chunk(i).unwrap();
        assert_eq!(p == Progress::Complete, i == 0);
    }
    assert!((0..200).all(|i| r.is_received(i)));
}

#[test]
fn claimed_chunk_is_busy_for_other_writers() {
    let mut r = Reassembly::new(ChunkLayout::new(11, 5).unwrap());
    assert_eq!(r.claim(1, node(1)), Ok(Claim::Granted));
    assert_eq!(r.claim(1, node(2)), Ok(Claim::Busy(node(1))));
    assert_eq!(r.claim(1, node(1)), Ok(Claim::Busy(node(1))));
    assert_eq!(r.claimant(1), Some(node(1)));
}

#[test]
fn received_chunk_cannot_be_claimed() {
    let mut r = Reassembly::new(ChunkLayout::new(11, 5).unwrap());
    assert_eq!(r.claim(0, node(1)), Ok(Claim::Granted));
    assert_eq!(r.handle_chunk(0), Ok(Progress::Accepted));
    assert_eq!(r.claimant(0), None);
    assert_eq!(r.claim(0, node(2)), Ok(Claim::AlreadyReceived));
}

#[test]
fn released_claim_leaves_chunk_missing_and_claimable() {
    let mut r = Reassembly::new(ChunkLayout::new(11, 5).unwrap());
    r.claim(1, node(1)).unwrap();
    assert_eq!(r.release(1), Ok(true));
    assert_eq!(r.release(1), Ok(false));
    assert!(!r.is_received(1));
    assert_eq!(r.claim(1, node(2)), Ok(Claim::Granted));
}

#[test]
fn release_node_drops_only_that_nodes_claims() {
    let mut r = Reassembly::new(ChunkLayout::new(11, 5).unwrap());
    r.claim(0, node(1)).unwrap();
    r.claim(1, node(2)).unwrap();
    r.claim(2, node(1)).unwrap();
    assert_eq!(r.release_node(node(1)), 2);
    assert_eq!(r.claimant(0), None);
    assert_eq!(r.claimant(1), Some(node(2)));
    assert_eq!(r.claim(2, node(3)), Ok(Claim::Granted));
}
