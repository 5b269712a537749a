use std::time::{Duration, Instant};

use super::*;
use PushAction::*;

fn node(b: u8) -> NodeId {
    NodeId([b; NodeId::LEN])
}

fn obj(b: u8) -> ObjectId {
    ObjectId([b; ObjectId::LEN])
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Chunks of 10 bytes, at most 30 bytes in flight, 10 s push timeout.
fn queue() -> PushQueue {
    PushQueue::new(PushConfig { chunk_size: 10, max_bytes_in_flight: 30, push_timeout: Some(secs(10)) }).unwrap()
}

fn sends(q: &mut PushQueue) -> Vec<(NodeId, ObjectId, u32)> {
    std::iter::from_fn(|| q.poll_send()).map(|c| (c.to, c.id, c.index)).collect()
}

fn actions(q: &mut PushQueue) -> Vec<PushAction> {
    std::iter::from_fn(|| q.poll_action()).collect()
}

#[test]
fn zero_chunk_size_is_rejected() {
    let cfg = PushConfig { chunk_size: 0, ..PushConfig::default() };
    assert!(matches!(PushQueue::new(cfg), Err(PushError::InvalidConfig(_))));
}

#[test]
fn chunk_descriptor_carries_range_and_object_size() {
    let mut q = queue();
    q.handle_push_request(node(1), obj(1), 15).unwrap();
    let first = q.poll_send().unwrap();
    assert_eq!(
        first,
        SendChunk { to: node(1), id: obj(1), index: 0, offset: 0, len: 10, total_size: 15, chunk_size: 10 }
    );
    let last = q.poll_send().unwrap();
    assert_eq!((last.offset, last.len), (10, 5));
    assert_eq!(q.poll_send(), None);
    assert_eq!(q.bytes_in_flight(), 15);
}

#[test]
fn pushes_take_turns_one_chunk_each() {
    let mut q = PushQueue::new(PushConfig { chunk_size: 10, max_bytes_in_flight: 1000, push_timeout: None }).unwrap();
    q.handle_push_request(node(1), obj(1), 30).unwrap();
    q.handle_push_request(node(2), obj(2), 20).unwrap();
    assert_eq!(
        sends(&mut q),
        vec![
            (node(1), obj(1), 0),
            (node(2), obj(2), 0),
            (node(1), obj(1), 1),
            (node(2), obj(2), 1),
            (node(1), obj(1), 2),
        ]
    );
}

#[test]
fn duplicate_request_while_pushing_is_suppressed() {
    let mut q = queue();
    assert_eq!(q.handle_push_request(node(1), obj(1), 20), Ok(PushStart::Started));
    assert_eq!(q.handle_push_request(node(1), obj(1), 20), Ok(PushStart::Duplicate));
    assert_eq!(sends(&mut q).len(), 2);
    // Another destination is a separate push.
    assert_eq!(q.handle_push_request(node(2), obj(1), 20), Ok(PushStart::Started));
}

#[test]
fn push_is_done_when_every_chunk_is_acked_and_can_then_be_requested_again() {
    let mut q = queue();
    q.handle_push_request(node(1), obj(1), 20).unwrap();
    sends(&mut q);
    q.handle_chunk_sent(node(1), obj(1), 1, true).unwrap();
    assert!(actions(&mut q).is_empty());
    q.handle_chunk_sent(node(1), obj(1), 0, true).unwrap();
    assert_eq!(actions(&mut q), vec![PushDone { to: node(1), id: obj(1) }]);
    assert!(!q.is_pushing(node(1), obj(1)));
    assert_eq!(q.bytes_in_flight(), 0);
    assert_eq!(q.handle_push_request(node(1), obj(1), 20), Ok(PushStart::Started));
}

#[test]
fn bytes_in_flight_are_capped_and_answers_free_room() {
    let mut q = queue();
    q.handle_push_request(node(1), obj(1), 50).unwrap();
    assert_eq!(sends(&mut q).len(), 3);
    assert_eq!(q.bytes_in_flight(), 30);
    q.handle_chunk_sent(node(1), obj(1), 0, true).unwrap();
    assert_eq!(sends(&mut q), vec![(node(1), obj(1), 3)]);
    assert_eq!(q.poll_send(), None);
}

#[test]
fn chunk_larger_than_the_cap_goes_out_alone() {
    let mut q = PushQueue::new(PushConfig { chunk_size: 100, max_bytes_in_flight: 30, push_timeout: None }).unwrap();
    q.handle_push_request(node(1), obj(1), 200).unwrap();
    assert_eq!(sends(&mut q), vec![(node(1), obj(1), 0)]);
    q.handle_chunk_sent(node(1), obj(1), 0, true).unwrap();
    assert_eq!(sends(&mut q), vec![(node(1), obj(1), 1)]);
}

#[test]
fn zero_size_object_is_one_empty_chunk() {
    let mut q = queue();
    q.handle_push_request(node(1), obj(1), 0).unwrap();
    let c = q.poll_send().unwrap();
    assert_eq!((c.index, c.offset, c.len), (0, 0, 0));
    q.handle_chunk_sent(node(1), obj(1), 0, true).unwrap();
    assert_eq!(actions(&mut q), vec![PushDone { to: node(1), id: obj(1) }]);
}

#[test]
fn failed_chunk_drops_the_push_after_its_chunks_drain() {
    let mut q = queue();
    q.handle_push_request(node(1), obj(1), 50).unwrap();
    sends(&mut q);
    q.handle_chunk_sent(node(1), obj(1), 1, false).unwrap();
    assert_eq!(actions(&mut q), vec![PushDropped { to: node(1), id: obj(1), reason: DropReason::ChunkFailed }]);
    assert_eq!(q.poll_send(), None, "no further chunks of a dropped push");
    assert!(q.is_pushing(node(1), obj(1)));
    q.handle_chunk_sent(node(1), obj(1), 0, true).unwrap();
    q.handle_chunk_sent(node(1), obj(1), 2, false).unwrap();
    assert!(actions(&mut q).is_empty());
    assert!(!q.is_pushing(node(1), obj(1)));
    assert_eq!(q.bytes_in_flight(), 0);
}

#[test]
fn request_during_drain_restarts_the_push_afterwards() {
    let mut q = queue();
    q.handle_push_request(node(1), obj(1), 20).unwrap();
    sends(&mut q);
    q.handle_chunk_sent(node(1), obj(1), 0, false).unwrap();
    assert_eq!(q.handle_push_request(node(1), obj(1), 20), Ok(PushStart::AfterDrain));
    assert_eq!(q.poll_send(), None);
    q.handle_chunk_sent(node(1), obj(1), 1, true).unwrap();
    assert_eq!(sends(&mut q), vec![(node(1), obj(1), 0), (node(1), obj(1), 1)]);
}

#[test]
fn answer_for_a_chunk_not_in_flight_is_an_error() {
    let mut q = queue();
    assert!(matches!(q.handle_chunk_sent(node(1), obj(1), 0, true), Err(PushError::UnknownChunk { .. })));
    q.handle_push_request(node(1), obj(1), 20).unwrap();
    q.poll_send();
    assert!(matches!(q.handle_chunk_sent(node(1), obj(1), 1, true), Err(PushError::UnknownChunk { .. })));
}

#[test]
fn dead_node_loses_its_pushes_and_waiting_requests_at_once() {
    let t0 = Instant::now();
    let mut q = queue();
    q.handle_push_request(node(1), obj(1), 20).unwrap();
    q.handle_push_request(node(2), obj(2), 20).unwrap();
    q.handle_object_missing(t0, node(1), obj(3));
    sends(&mut q);
    q.handle_node_dead(node(1));
    assert_eq!(
        actions(&mut q),
        vec![
            PushDropped { to: node(1), id: obj(1), reason: DropReason::NodeDead },
            PushDropped { to: node(1), id: obj(3), reason: DropReason::NodeDead },
        ]
    );
    assert_eq!(q.bytes_in_flight(), 10, "node 2's first chunk only");
    assert_eq!(sends(&mut q), vec![(node(2), obj(2), 1)], "room freed for others");
    assert_eq!(q.num_waiting(), 0);
    assert_eq!(q.poll_timeout(), None);
    assert!(matches!(q.handle_chunk_sent(node(1), obj(1), 0, false), Err(PushError::UnknownChunk { .. })));
    assert_eq!(q.handle_push_request(node(1), obj(1), 20), Err(PushError::NodeDead(node(1))));
    q.handle_object_missing(t0, node(1), obj(4));
    assert_eq!(q.num_waiting(), 0);
}

#[test]
fn request_for_missing_object_starts_when_it_becomes_local() {
    let t0 = Instant::now();
    let mut q = queue();
    q.handle_object_missing(t0, node(1), obj(1));
    q.handle_object_missing(t0, node(2), obj(1));
    q.handle_object_missing(t0, node(2), obj(2));
    assert_eq!(q.poll_send(), None);
    assert_eq!(q.poll_timeout(), Some(t0 + secs(10)));
    q.handle_object_local(obj(1), 10).unwrap();
    assert_eq!(sends(&mut q), vec![(node(1), obj(1), 0), (node(2), obj(1), 0)]);
    assert_eq!(q.num_waiting(), 1);
}

#[test]
fn request_for_missing_object_is_dropped_after_push_timeout() {
    let t0 = Instant::now();
    let mut q = queue();
    q.handle_object_missing(t0, node(1), obj(1));
    q.handle_timeout(t0 + Duration::from_millis(9999));
    assert!(actions(&mut q).is_empty());
    q.handle_timeout(t0 + secs(10));
    assert_eq!(actions(&mut q), vec![PushDropped { to: node(1), id: obj(1), reason: DropReason::NotLocal }]);
    assert_eq!(q.poll_timeout(), None);
    q.handle_object_local(obj(1), 10).unwrap();
    assert_eq!(q.poll_send(), None);
}

#[test]
fn repeated_request_for_missing_object_refreshes_its_deadline() {
    let t0 = Instant::now();
    let mut q = queue();
    q.handle_object_missing(t0, node(1), obj(1));
    q.handle_object_missing(t0 + secs(5), node(1), obj(1));
    assert_eq!(q.poll_timeout(), Some(t0 + secs(15)));
    assert_eq!(q.num_waiting(), 1);
}

#[test]
fn zero_push_timeout_drops_at_once_and_none_waits_forever() {
    let t0 = Instant::now();
    let cfg = PushConfig { chunk_size: 10, max_bytes_in_flight: 30, push_timeout: Some(Duration::ZERO) };
    let mut q = PushQueue::new(cfg).unwrap();
    q.handle_object_missing(t0, node(1), obj(1));
    assert_eq!(actions(&mut q), vec![PushDropped { to: node(1), id: obj(1), reason: DropReason::NotLocal }]);
    let mut q = PushQueue::new(PushConfig { push_timeout: None, ..PushConfig::default() }).unwrap();
    q.handle_object_missing(t0, node(1), obj(1));
    assert_eq!(q.poll_timeout(), None);
    assert_eq!(q.num_waiting(), 1);
}

#[test]
fn object_local_with_unlayable_size_drops_waiting_requests() {
    let t0 = Instant::now();
    let cfg = PushConfig { chunk_size: 1, max_bytes_in_flight: 30, push_timeout: None };
    let mut q = PushQueue::new(cfg).unwrap();
    q.handle_object_missing(t0, node(1), obj(1));
    assert!(matches!(q.handle_object_local(obj(1), u64::MAX), Err(PushError::Chunk(_))));
    assert_eq!(actions(&mut q), vec![PushDropped { to: node(1), id: obj(1), reason: DropReason::InvalidSize }]);
    assert_eq!(q.num_waiting(), 0);
}

#[test]
fn request_while_object_is_local_replaces_a_waiting_one() {
    let t0 = Instant::now();
    let mut q = queue();
    q.handle_object_missing(t0, node(1), obj(1));
    q.handle_push_request(node(1), obj(1), 10).unwrap();
    assert_eq!(q.num_waiting(), 0);
    assert_eq!(q.poll_timeout(), None);
    assert_eq!(sends(&mut q).len(), 1);
}
