use std::time::{Duration, Instant};

use super::*;
use crate::logic::transfer::chunks::ChunkLayout;
use PullAction::*;

const SIZE: u64 = 25; // 3 chunks of 10, 10, 5 bytes
const ME: NodeId = NodeId([0; NodeId::LEN]);

fn node(b: u8) -> NodeId {
    NodeId([b; NodeId::LEN])
}

fn obj(b: u8) -> ObjectId {
    ObjectId([b; ObjectId::LEN])
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn cfg() -> PullConfig {
    PullConfig { chunk_size: 10, pull_retry: secs(1), max_backoff_exponent: 3, fetch_timeout: secs(60) }
}

/// A queue with an unlimited budget; `t0` is the origin of virtual time.
fn setup() -> (PullQueue, Instant) {
    let t0 = Instant::now();
    let mut q = PullQueue::new(ME, cfg(), fastrand::Rng::with_seed(7)).unwrap();
    q.handle_budget(t0, u64::MAX);
    (q, t0)
}

fn drain(q: &mut PullQueue) -> Vec<PullAction> {
    std::iter::from_fn(|| q.poll_action()).collect()
}

fn header(index: u32, total_size: u64) -> ChunkHeader {
    let (_, len) = ChunkLayout::new(total_size, 10).unwrap().range(index).unwrap();
    ChunkHeader { index, total_size, len }
}

/// Claims and reports one chunk the way the IO layer does.
fn deliver(q: &mut PullQueue, now: Instant, id: ObjectId, from: NodeId, index: u32, crc_ok: bool) -> ChunkOutcome {
    match q.handle_chunk_header(id, from, &header(index, SIZE)).unwrap() {
        ChunkClaim::Write { .. } => q.handle_chunk(now, id, from, index, crc_ok).unwrap(),
        ChunkClaim::Discard(_) => ChunkOutcome::Dropped,
    }
}

/// Bundle 1 (Get) pulls `obj(1)`, held by `holders`; returns the first source.
fn start(q: &mut PullQueue, t0: Instant, holders: &[NodeId]) -> NodeId {
    q.handle_pull(t0, BundleId(1), PullPriority::Get, vec![obj(1)]).unwrap();
    q.handle_locations(t0, obj(1), holders.to_vec(), Some(SIZE));
    let actions = drain(q);
    assert_eq!(actions[0], AllocateBuffer { id: obj(1), size: SIZE });
    match actions[1..] {
        [SendPull { node, id }] if id == obj(1) => node,
        ref other => panic!("expected one SendPull, got {other:?}"),
    }
}

#[test]
fn invalid_config_is_rejected() {
    let rng = fastrand::Rng::with_seed(1);
    let zero_chunk = PullConfig { chunk_size: 0, ..cfg() };
    assert!(matches!(PullQueue::new(ME, zero_chunk, rng.clone()), Err(PullError::InvalidConfig(_))));
    let zero_retry = PullConfig { pull_retry: Duration::ZERO, ..cfg() };
    assert!(matches!(PullQueue::new(ME, zero_retry, rng), Err(PullError::InvalidConfig(_))));
}

#[test]
fn nothing_is_allocated_before_the_size_is_known() {
    let (mut q, t0) = setup();
    q.handle_pull(t0, BundleId(1), PullPriority::Get, vec![obj(1)]).unwrap();
    q.handle_locations(t0, obj(1), vec![node(1)], None);
    assert!(drain(&mut q).is_empty());
    assert!(q.is_active(&obj(1)));
    assert!(!q.wants_chunk(&obj(1)));
}

#[test]
fn known_size_and_copy_allocate_then_send_pull() {
    let (mut q, t0) = setup();
    assert_eq!(start(&mut q, t0, &[node(1)]), node(1));
    assert!(q.wants_chunk(&obj(1)));
    assert_eq!(q.bytes_in_progress(), SIZE);
    assert_eq!(q.source(&obj(1)), Some(node(1)));
    assert_eq!(q.poll_timeout(), Some(t0 + secs(1)));
}

#[test]
fn size_without_copy_allocates_and_pulls_when_a_copy_appears() {
    let (mut q, t0) = setup();
    q.handle_pull(t0, BundleId(1), PullPriority::Get, vec![obj(1)]).unwrap();
    q.handle_locations(t0, obj(1), vec![], Some(SIZE));
    assert_eq!(drain(&mut q), vec![AllocateBuffer { id: obj(1), size: SIZE }]);
    q.handle_locations(t0 + secs(2), obj(1), vec![node(3)], None);
    assert_eq!(drain(&mut q), vec![SendPull { node: node(3), id: obj(1) }]);
}

#[test]
fn this_node_and_dead_nodes_are_never_sources() {
    let (mut q, t0) = setup();
    q.handle_node_dead(t0, node(2));
    q.handle_pull(t0, BundleId(1), PullPriority::Get, vec![obj(1)]).unwrap();
    q.handle_locations(t0, obj(1), vec![ME, node(2)], Some(SIZE));
    assert_eq!(drain(&mut q), vec![AllocateBuffer { id: obj(1), size: SIZE }]);
    assert_eq!(q.source(&obj(1)), None);
}

#[test]
fn duplicate_bundle_id_is_rejected() {
    let (mut q, t0) = setup();
    q.handle_pull(t0, BundleId(1), PullPriority::Get, vec![obj(1)]).unwrap();
    let again = q.handle_pull(t0, BundleId(1), PullPriority::Wait, vec![obj(2)]);
    assert_eq!(again, Err(PullError::DuplicateBundle(BundleId(1))));
}

#[test]
fn bundles_sharing_an_object_send_one_pull() {
    let (mut q, t0) = setup();
    start(&mut q, t0, &[node(1)]);
    q.handle_pull(t0, BundleId(2), PullPriority::TaskArgs, vec![obj(1), obj(1)]).unwrap();
    assert!(drain(&mut q).is_empty());
    for i in 0..3 {
        deliver(&mut q, t0, obj(1), node(1), i, true);
    }
    let done = drain(&mut q);
    assert_eq!(done[0], Seal { id: obj(1) });
    assert!(done.contains(&Completed { bundle_id: BundleId(1) }));
    assert!(done.contains(&Completed { bundle_id: BundleId(2) }));
}

#[test]
fn last_chunk_seals_before_bundle_completes() {
    let (mut q, t0) = setup();
    let src = start(&mut q, t0, &[node(1)]);
    assert_eq!(deliver(&mut q, t0, obj(1), src, 2, true), ChunkOutcome::Accepted);
    assert_eq!(deliver(&mut q, t0, obj(1), src, 0, true), ChunkOutcome::Accepted);
    assert!(drain(&mut q).is_empty());
    assert_eq!(deliver(&mut q, t0, obj(1), src, 1, true), ChunkOutcome::Completed);
    assert_eq!(drain(&mut q), vec![Seal { id: obj(1) }, Completed { bundle_id: BundleId(1) }]);
    assert!(!q.wants_chunk(&obj(1)));
    assert_eq!(q.poll_timeout(), None);
    assert_eq!(q.handle_chunk(t0, obj(1), src, 1, true), Ok(ChunkOutcome::Dropped));
}

#[test]
fn chunk_headers_are_validated_and_claimed() {
    let (mut q, t0) = setup();
    let src = start(&mut q, t0, &[node(1)]);
    let bad_size = ChunkHeader { index: 0, total_size: 26, len: 10 };
    assert!(matches!(
        q.handle_chunk_header(obj(1), src, &bad_size),
        Err(PullError::Chunk(ChunkError::SizeMismatch { .. }))
    ));
    let bad_len = ChunkHeader { index: 2, total_size: SIZE, len: 10 };
    assert!(matches!(
        q.handle_chunk_header(obj(1), src, &bad_len),
        Err(PullError::Chunk(ChunkError::WrongLength { .. }))
    ));
    assert_eq!(q.handle_chunk_header(obj(1), src, &header(2, SIZE)), Ok(ChunkClaim::Write { offset: 20, len: 5 }));
    let busy = q.handle_chunk_header(obj(1), node(9), &header(2, SIZE));
    assert_eq!(busy, Ok(ChunkClaim::Discard(DiscardReason::InProgress)));
    q.handle_chunk(t0, obj(1), src, 2, true).unwrap();
    let have = q.handle_chunk_header(obj(1), node(9), &header(2, SIZE));
    assert_eq!(have, Ok(ChunkClaim::Discard(DiscardReason::AlreadyReceived)));
    let other = q.handle_chunk_header(obj(5), src, &header(0, SIZE));
    assert_eq!(other, Ok(ChunkClaim::Discard(DiscardReason::NotPulled)));
}

#[test]
fn chunk_report_from_a_non_claimant_is_dropped() {
    let (mut q, t0) = setup();
    let src = start(&mut q, t0, &[node(1)]);
    q.handle_chunk_header(obj(1), src, &header(0, SIZE)).unwrap();
    assert_eq!(q.handle_chunk(t0, obj(1), node(9), 0, true), Ok(ChunkOutcome::Dropped));
    assert_eq!(q.handle_chunk(t0, obj(1), src, 0, true), Ok(ChunkOutcome::Accepted));
    assert_eq!(q.handle_chunk(t0, obj(1), src, 0, true), Ok(ChunkOutcome::Duplicate));
    assert!(matches!(
        q.handle_chunk(t0, obj(1), src, 3, true),
        Err(PullError::Chunk(ChunkError::IndexOutOfRange { .. }))
    ));
}

#[test]
fn bad_crc_leaves_chunk_missing_and_switches_to_another_copy() {
    let (mut q, t0) = setup();
    let src = start(&mut q, t0, &[node(1), node(2)]);
    let other = if src == node(1) { node(2) } else { node(1) };
    assert_eq!(deliver(&mut q, t0, obj(1), src, 0, false), ChunkOutcome::Corrupt);
    assert_eq!(drain(&mut q), vec![SendPull { node: other, id: obj(1) }]);
    // The chunk is claimable again, by anyone.
    assert_eq!(deliver(&mut q, t0, obj(1), other, 0, true), ChunkOutcome::Accepted);
}

#[test]
fn bad_crc_from_only_copy_is_refetched_once_the_stream_goes_quiet() {
    let (mut q, t0) = setup();
    let src = start(&mut q, t0, &[node(1)]);
    assert_eq!(deliver(&mut q, t0, obj(1), src, 0, false), ChunkOutcome::Corrupt);
    assert!(drain(&mut q).is_empty(), "the same holder would suppress a request now");
    let t1 = t0 + Duration::from_millis(100);
    deliver(&mut q, t1, obj(1), src, 1, true);
    deliver(&mut q, t1, obj(1), src, 2, true);
    assert_eq!(q.poll_timeout(), Some(t1 + secs(1)));
    q.handle_timeout(t1 + secs(1));
    assert_eq!(drain(&mut q), vec![SendPull { node: src, id: obj(1) }]);
    assert_eq!(deliver(&mut q, t1 + secs(2), obj(1), src, 1, true), ChunkOutcome::Dropped);
    assert_eq!(deliver(&mut q, t1 + secs(2), obj(1), src, 0, true), ChunkOutcome::Completed);
}

#[test]
fn stalled_pull_is_resent_to_another_copy() {
    let (mut q, t0) = setup();
    let src = start(&mut q, t0, &[node(1), node(2)]);
    let other = if src == node(1) { node(2) } else { node(1) };
    q.handle_timeout(t0 + Duration::from_millis(999));
    assert!(drain(&mut q).is_empty());
    q.handle_timeout(t0 + secs(1));
    assert_eq!(drain(&mut q), vec![SendPull { node: other, id: obj(1) }]);
}

#[test]
fn retries_without_progress_back_off_up_to_the_cap() {
    let (mut q, t0) = setup();
    start(&mut q, t0, &[node(1)]);
    let mut now = t0;
    // Delays: 1 s, then 2, 4, 8, 8 (max_backoff_exponent = 3).
    for expected in [1, 2, 4, 8, 8] {
        let next = q.poll_timeout().unwrap();
        assert_eq!(next - now, secs(expected));
        now = next;
        q.handle_timeout(now);
        assert_eq!(drain(&mut q), vec![SendPull { node: node(1), id: obj(1) }]);
    }
}

#[test]
fn accepted_chunk_resets_the_retry_timer_and_backoff() {
    let (mut q, t0) = setup();
    start(&mut q, t0, &[node(1)]);
    q.handle_timeout(t0 + secs(1));
    drain(&mut q);
    assert_eq!(q.poll_timeout(), Some(t0 + secs(3)));
    let t = t0 + Duration::from_millis(2500);
    deliver(&mut q, t, obj(1), node(1), 0, true);
    assert_eq!(q.poll_timeout(), Some(t + secs(1)));
}

#[test]
fn transfer_failure_switches_to_another_copy_at_once() {
    let (mut q, t0) = setup();
    let src = start(&mut q, t0, &[node(1), node(2)]);
    let other = if src == node(1) { node(2) } else { node(1) };
    q.handle_chunk_header(obj(1), src, &header(1, SIZE)).unwrap();
    q.handle_transfer_failed(t0, obj(1), src);
    assert_eq!(drain(&mut q), vec![SendPull { node: other, id: obj(1) }]);
    // The failed connection's claim is gone.
    assert_eq!(deliver(&mut q, t0, obj(1), other, 1, true), ChunkOutcome::Accepted);
}

#[test]
fn transfer_failure_with_one_copy_backs_off_then_retries_it() {
    let (mut q, t0) = setup();
    start(&mut q, t0, &[node(1)]);
    q.handle_transfer_failed(t0, obj(1), node(1));
    assert!(drain(&mut q).is_empty());
    assert_eq!(q.poll_timeout(), Some(t0 + secs(2)));
    q.handle_timeout(t0 + secs(2));
    assert_eq!(drain(&mut q), vec![SendPull { node: node(1), id: obj(1) }]);
}

#[test]
fn failure_of_a_node_that_is_not_the_source_only_releases_its_claims() {
    let (mut q, t0) = setup();
    let src = start(&mut q, t0, &[node(1)]);
    q.handle_chunk_header(obj(1), node(5), &header(0, SIZE)).unwrap();
    q.handle_transfer_failed(t0, obj(1), node(5));
    assert!(drain(&mut q).is_empty());
    assert_eq!(q.source(&obj(1)), Some(src));
    assert_eq!(deliver(&mut q, t0, obj(1), src, 0, true), ChunkOutcome::Accepted);
}

#[test]
fn dead_source_is_replaced_and_forgotten() {
    let (mut q, t0) = setup();
    let src = start(&mut q, t0, &[node(1), node(2)]);
    let other = if src == node(1) { node(2) } else { node(1) };
    q.handle_node_dead(t0, src);
    assert_eq!(drain(&mut q), vec![SendPull { node: other, id: obj(1) }]);
    q.handle_node_dead(t0, other);
    assert!(drain(&mut q).is_empty());
    assert_eq!(q.source(&obj(1)), None);
    // Late location lists naming the dead are filtered.
    q.handle_locations(t0, obj(1), vec![src, other], None);
    assert!(drain(&mut q).is_empty());
    q.handle_locations(t0, obj(1), vec![node(3)], None);
    assert_eq!(drain(&mut q), vec![SendPull { node: node(3), id: obj(1) }]);
}

#[test]
fn no_copy_for_fetch_timeout_fails_the_object_and_completes_the_bundle() {
    let (mut q, t0) = setup();
    q.handle_pull(t0, BundleId(1), PullPriority::Get, vec![obj(1)]).unwrap();
    q.handle_locations(t0 + secs(1), obj(1), vec![], Some(SIZE));
    assert_eq!(drain(&mut q), vec![AllocateBuffer { id: obj(1), size: SIZE }]);
    assert_eq!(q.poll_timeout(), Some(t0 + secs(60)));
    q.handle_timeout(t0 + secs(59));
    assert!(drain(&mut q).is_empty());
    q.handle_timeout(t0 + secs(60));
    assert_eq!(
        drain(&mut q),
        vec![
            AbortBuffer { id: obj(1) },
            Failed { id: obj(1), reason: PullFailure::NoLocation(secs(60)) },
            Completed { bundle_id: BundleId(1) },
        ]
    );
    assert_eq!(q.poll_timeout(), None);
}

#[test]
fn a_known_copy_stops_the_fetch_timeout_and_losing_all_copies_restarts_it() {
    let (mut q, t0) = setup();
    start(&mut q, t0, &[node(1)]);
    assert_eq!(q.poll_timeout(), Some(t0 + secs(1)), "only the retry timer runs");
    q.handle_locations(t0 + secs(10), obj(1), vec![], None);
    q.handle_timeout(t0 + secs(69));
    assert!(!drain(&mut q).iter().any(|a| matches!(a, Failed { .. })));
    q.handle_timeout(t0 + secs(70));
    assert!(drain(&mut q).contains(&Failed { id: obj(1), reason: PullFailure::NoLocation(secs(60)) }));
}

#[test]
fn chunks_from_a_stream_count_as_a_copy_for_the_fetch_timeout() {
    let (mut q, t0) = setup();
    start(&mut q, t0, &[node(1)]);
    q.handle_locations(t0, obj(1), vec![], None);
    deliver(&mut q, t0 + secs(50), obj(1), node(1), 0, true);
    q.handle_timeout(t0 + secs(60));
    assert!(!drain(&mut q).iter().any(|a| matches!(a, Failed { .. })));
}

#[test]
fn object_sealed_by_another_path_aborts_partial_buffer_and_completes() {
    let (mut q, t0) = setup();
    start(&mut q, t0, &[node(1)]);
    q.handle_object_local(t0, obj(1));
    assert_eq!(drain(&mut q), vec![AbortBuffer { id: obj(1) }, Completed { bundle_id: BundleId(1) }]);
    q.handle_object_local(t0, obj(1));
    assert!(drain(&mut q).is_empty());
}

#[test]
fn cancel_aborts_partial_buffer_unless_another_bundle_wants_it() {
    let (mut q, t0) = setup();
    start(&mut q, t0, &[node(1)]);
    q.handle_pull(t0, BundleId(2), PullPriority::Wait, vec![obj(1)]).unwrap();
    assert!(q.handle_cancel(t0, BundleId(1)));
    assert!(drain(&mut q).is_empty());
    assert!(q.wants_chunk(&obj(1)));
    assert!(q.handle_cancel(t0, BundleId(2)));
    assert_eq!(drain(&mut q), vec![AbortBuffer { id: obj(1) }]);
    assert!(!q.wants_chunk(&obj(1)));
    assert_eq!(q.poll_timeout(), None);
    assert!(!q.handle_cancel(t0, BundleId(2)));
}

#[test]
fn empty_bundle_completes_at_once() {
    let (mut q, t0) = setup();
    q.handle_pull(t0, BundleId(4), PullPriority::TaskArgs, vec![]).unwrap();
    assert_eq!(drain(&mut q), vec![Completed { bundle_id: BundleId(4) }]);
}

#[test]
fn size_change_aborts_and_reallocates_the_buffer() {
    let (mut q, t0) = setup();
    start(&mut q, t0, &[node(1)]);
    q.handle_locations(t0, obj(1), vec![node(1)], Some(30));
    assert_eq!(
        drain(&mut q),
        vec![
            AbortBuffer { id: obj(1) },
            AllocateBuffer { id: obj(1), size: 30 },
            SendPull { node: node(1), id: obj(1) },
        ]
    );
}

#[test]
fn unlayable_size_fails_the_object() {
    let (mut q, t0) = setup();
    q.handle_pull(t0, BundleId(1), PullPriority::Get, vec![obj(1)]).unwrap();
    q.handle_locations(t0, obj(1), vec![node(1)], Some(u64::MAX));
    let actions = drain(&mut q);
    assert!(matches!(
        actions[0],
        Failed { reason: PullFailure::InvalidSize { error: ChunkError::TooManyChunks { .. }, .. }, .. }
    ));
    assert_eq!(actions[1], Completed { bundle_id: BundleId(1) });
}

#[test]
fn failed_allocation_is_retried_after_backoff() {
    let (mut q, t0) = setup();
    start(&mut q, t0, &[node(1)]);
    q.handle_allocation_failed(t0, obj(1));
    assert!(!q.wants_chunk(&obj(1)));
    assert_eq!(q.poll_timeout(), Some(t0 + secs(2)));
    q.handle_timeout(t0 + secs(2));
    assert_eq!(drain(&mut q), vec![AllocateBuffer { id: obj(1), size: SIZE }, SendPull { node: node(1), id: obj(1) }]);
}

#[test]
fn impossible_allocation_fails_the_pull_at_once_with_its_reason() {
    let (mut q, t0) = setup();
    q.handle_pull(t0, BundleId(1), PullPriority::Get, vec![obj(1)]).unwrap();
    q.handle_locations(t0, obj(1), vec![node(1)], Some(SIZE));
    drain(&mut q);
    q.handle_allocation_impossible(t0, obj(1), "too big".into());
    assert_eq!(
        drain(&mut q),
        vec![
            Failed { id: obj(1), reason: PullFailure::NoRoom("too big".into()) },
            Completed { bundle_id: BundleId(1) }
        ]
    );
    assert_eq!(q.poll_timeout(), None, "no retry is left behind");
    q.handle_allocation_impossible(t0, obj(1), "again".into());
    assert!(drain(&mut q).is_empty(), "a failed pull is not failed twice");
}

#[test]
fn failed_object_restarts_when_a_new_bundle_names_it() {
    let (mut q, t0) = setup();
    q.handle_pull(t0, BundleId(1), PullPriority::Get, vec![obj(1), obj(2)]).unwrap();
    q.handle_locations(t0, obj(2), vec![node(1)], None);
    q.handle_timeout(t0 + secs(60));
    assert_eq!(drain(&mut q), vec![Failed { id: obj(1), reason: PullFailure::NoLocation(secs(60)) }]);
    let t1 = t0 + secs(61);
    q.handle_pull(t1, BundleId(2), PullPriority::Get, vec![obj(1)]).unwrap();
    q.handle_locations(t1, obj(1), vec![node(1)], Some(SIZE));
    assert_eq!(drain(&mut q), vec![AllocateBuffer { id: obj(1), size: SIZE }, SendPull { node: node(1), id: obj(1) }]);
}

// ---- admission ----

/// Pulls `id` as bundle `b` with `priority` and gives it a copy on node 1 and `size`.
fn pull_sized(q: &mut PullQueue, t0: Instant, b: u64, priority: PullPriority, id: ObjectId, size: u64) {
    q.handle_pull(t0, BundleId(b), priority, vec![id]).unwrap();
    q.handle_locations(t0, id, vec![node(1)], Some(size));
}

#[test]
fn bundles_are_admitted_while_they_fit_and_get_always_is() {
    let (mut q, t0) = setup();
    q.handle_budget(t0, 100);
    pull_sized(&mut q, t0, 1, PullPriority::TaskArgs, obj(1), 60);
    pull_sized(&mut q, t0, 2, PullPriority::TaskArgs, obj(2), 60);
    assert!(q.is_bundle_active(BundleId(1)));
    assert!(!q.is_bundle_active(BundleId(2)));
    assert!(q.object_pulls_queued());
    pull_sized(&mut q, t0, 3, PullPriority::Get, obj(3), 500);
    assert!(q.is_bundle_active(BundleId(3)));
    assert!(!q.is_bundle_active(BundleId(1)), "Get took the budget; TaskArgs yields");
    assert!(drain(&mut q).contains(&AbortBuffer { id: obj(1) }));
}

#[test]
fn first_bundle_stays_active_even_if_it_does_not_fit() {
    let (mut q, t0) = setup();
    q.handle_budget(t0, 10);
    pull_sized(&mut q, t0, 1, PullPriority::Wait, obj(1), 60);
    pull_sized(&mut q, t0, 2, PullPriority::Wait, obj(2), 5);
    assert!(q.is_bundle_active(BundleId(1)));
    assert!(!q.is_bundle_active(BundleId(2)), "later bundles do not overtake");
    q.handle_cancel(t0, BundleId(1));
    assert!(q.is_bundle_active(BundleId(2)));
    assert!(!q.object_pulls_queued());
}

#[test]
fn shrinking_budget_deactivates_from_the_back_and_aborts_buffers() {
    let (mut q, t0) = setup();
    q.handle_budget(t0, 100);
    pull_sized(&mut q, t0, 1, PullPriority::Wait, obj(1), 40);
    pull_sized(&mut q, t0, 2, PullPriority::TaskArgs, obj(2), 40);
    drain(&mut q);
    q.handle_budget(t0, 50);
    assert_eq!(drain(&mut q), vec![AbortBuffer { id: obj(2) }]);
    assert!(q.is_active(&obj(1)));
    assert!(!q.is_active(&obj(2)));
    assert!(!q.wants_chunk(&obj(2)));
    q.handle_budget(t0, 80);
    assert_eq!(drain(&mut q), vec![AllocateBuffer { id: obj(2), size: 40 }, SendPull { node: node(1), id: obj(2) }]);
}

#[test]
fn wait_bundle_takes_priority_over_earlier_task_args() {
    let (mut q, t0) = setup();
    q.handle_budget(t0, 100);
    pull_sized(&mut q, t0, 1, PullPriority::TaskArgs, obj(1), 60);
    pull_sized(&mut q, t0, 2, PullPriority::Wait, obj(2), 60);
    assert!(q.is_bundle_active(BundleId(2)));
    assert!(!q.is_bundle_active(BundleId(1)));
}

#[test]
fn unknown_size_holds_back_later_bundles() {
    let (mut q, t0) = setup();
    q.handle_budget(t0, 100);
    pull_sized(&mut q, t0, 1, PullPriority::Wait, obj(1), 10);
    q.handle_pull(t0, BundleId(2), PullPriority::Wait, vec![obj(2)]).unwrap();
    pull_sized(&mut q, t0, 3, PullPriority::Wait, obj(3), 10);
    assert!(!q.is_bundle_active(BundleId(2)));
    assert!(!q.is_bundle_active(BundleId(3)));
    q.handle_locations(t0, obj(2), vec![node(1)], Some(10));
    assert!(q.is_bundle_active(BundleId(2)));
    assert!(q.is_bundle_active(BundleId(3)));
}

#[test]
fn shared_and_local_objects_cost_nothing_extra() {
    let (mut q, t0) = setup();
    q.handle_budget(t0, 100);
    pull_sized(&mut q, t0, 1, PullPriority::Wait, obj(1), 60);
    q.handle_pull(t0, BundleId(2), PullPriority::Wait, vec![obj(1), obj(2)]).unwrap();
    q.handle_locations(t0, obj(2), vec![node(1)], Some(40));
    assert!(q.is_bundle_active(BundleId(2)), "obj(1) is counted once: 60 + 40 fits");
    q.handle_pull(t0, BundleId(3), PullPriority::Wait, vec![obj(3)]).unwrap();
    q.handle_locations(t0, obj(3), vec![node(1)], Some(60));
    assert!(!q.is_bundle_active(BundleId(3)));
    q.handle_object_local(t0, obj(1));
    assert!(q.is_bundle_active(BundleId(3)), "local obj(1) costs nothing: 40 + 60 fits");
}
