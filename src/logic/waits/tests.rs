use super::*;
use std::collections::BTreeSet;

fn t0() -> Instant {
    // Tests need one base instant; the logic itself never reads the clock.
    Instant::now()
}

fn oid(n: u8) -> ObjectId {
    ObjectId([n; 28])
}

fn ids(ns: &[u8]) -> Vec<ObjectId> {
    ns.iter().map(|&n| oid(n)).collect()
}

fn none(_: &ObjectId) -> bool {
    false
}

fn drain(w: &mut WaitTable) -> Vec<WaitAction> {
    std::iter::from_fn(|| w.poll_action()).collect()
}

fn get_ready(req: u64, found: &[u8], missing: &[u8]) -> WaitAction {
    WaitAction::GetReady { req: RequestId(req), found: ids(found), missing: ids(missing) }
}

fn wait_ready(req: u64, ready: &[u8], remaining: &[u8]) -> WaitAction {
    WaitAction::WaitReady { req: RequestId(req), ready: ids(ready), remaining: ids(remaining) }
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn get_of_present_objects_completes_on_the_call() {
    let mut w = WaitTable::new();
    w.handle_get(t0(), RequestId(1), &ids(&[1, 2]), None, |_| true).unwrap();
    assert_eq!(drain(&mut w), vec![get_ready(1, &[1, 2], &[])]);
    assert_eq!(w.pending(), 0);
}

#[test]
fn get_of_no_ids_completes_on_the_call() {
    let mut w = WaitTable::new();
    w.handle_get(t0(), RequestId(1), &[], None, none).unwrap();
    assert_eq!(drain(&mut w), vec![get_ready(1, &[], &[])]);
}

#[test]
fn get_completes_when_the_last_object_is_sealed() {
    let mut w = WaitTable::new();
    let present: BTreeSet<ObjectId> = ids(&[2]).into_iter().collect();
    w.handle_get(t0(), RequestId(1), &ids(&[1, 2, 3]), None, |id| present.contains(id)).unwrap();
    assert!(drain(&mut w).is_empty());
    w.handle_sealed(&oid(1));
    assert!(drain(&mut w).is_empty());
    assert!(w.is_watched(&oid(3)));
    w.handle_sealed(&oid(3));
    assert_eq!(drain(&mut w), vec![get_ready(1, &[1, 2, 3], &[])]);
    assert!(!w.is_watched(&oid(3)));
    assert_eq!(w.poll_timeout(), None);
}

#[test]
fn repeated_ids_are_deduplicated() {
    let mut w = WaitTable::new();
    w.handle_get(t0(), RequestId(1), &ids(&[1, 2, 1, 1]), None, none).unwrap();
    w.handle_sealed(&oid(1));
    w.handle_sealed(&oid(1));
    assert!(drain(&mut w).is_empty(), "one id sealed twice must not complete a 2-id get");
    w.handle_sealed(&oid(2));
    assert_eq!(drain(&mut w), vec![get_ready(1, &[1, 2], &[])]);
}

#[test]
fn get_timeout_reports_found_and_missing() {
    let mut w = WaitTable::new();
    let now = t0();
    w.handle_get(now, RequestId(1), &ids(&[1, 2, 3]), Some(SEC), none).unwrap();
    w.handle_sealed(&oid(2));
    assert_eq!(w.poll_timeout(), Some(now + SEC));
    w.handle_timeout(now + SEC - Duration::from_nanos(1));
    assert!(drain(&mut w).is_empty());
    w.handle_timeout(now + SEC);
    assert_eq!(drain(&mut w), vec![get_ready(1, &[2], &[1, 3])]);
    assert_eq!(w.poll_timeout(), None);
    // Late events for a finished request are ignored.
    w.handle_sealed(&oid(1));
    assert!(drain(&mut w).is_empty());
}

#[test]
fn zero_timeout_answers_at_once_with_what_is_present() {
    let mut w = WaitTable::new();
    w.handle_get(t0(), RequestId(1), &ids(&[1, 2]), Some(Duration::ZERO), |id| *id == oid(2)).unwrap();
    assert_eq!(drain(&mut w), vec![get_ready(1, &[2], &[1])]);
    assert_eq!(w.pending(), 0);
}

#[test]
fn no_timeout_waits_forever_and_huge_timeouts_do_not_overflow() {
    let mut w = WaitTable::new();
    let now = t0();
    w.handle_get(now, RequestId(1), &ids(&[1]), None, none).unwrap();
    w.handle_get(now, RequestId(2), &ids(&[1]), Some(Duration::MAX), none).unwrap();
    assert_eq!(w.poll_timeout(), None);
    w.handle_timeout(now + 1000 * SEC);
    assert!(drain(&mut w).is_empty());
    assert_eq!(w.pending(), 2);
}

#[test]
fn deadlines_fire_in_order_and_poll_timeout_tracks_the_earliest() {
    let mut w = WaitTable::new();
    let now = t0();
    w.handle_get(now, RequestId(1), &ids(&[1]), Some(3 * SEC), none).unwrap();
    w.handle_wait(now, RequestId(2), &ids(&[1]), 1, Some(SEC), none).unwrap();
    w.handle_get(now, RequestId(3), &ids(&[2]), Some(2 * SEC), none).unwrap();
    assert_eq!(w.poll_timeout(), Some(now + SEC));
    w.handle_timeout(now + 2 * SEC);
    assert_eq!(drain(&mut w), vec![wait_ready(2, &[], &[1]), get_ready(3, &[], &[2])]);
    assert_eq!(w.poll_timeout(), Some(now + 3 * SEC));
}

#[test]
fn wait_completes_at_num_required_and_reports_all_ready() {
    let mut w = WaitTable::new();
    w.handle_wait(t0(), RequestId(1), &ids(&[1, 2, 3, 4]), 2, None, |id| *id == oid(4)).unwrap();
    assert!(drain(&mut w).is_empty());
    w.handle_sealed(&oid(2));
    assert_eq!(drain(&mut w), vec![wait_ready(1, &[2, 4], &[1, 3])]);
}

#[test]
fn wait_already_satisfied_completes_on_the_call() {
    let mut w = WaitTable::new();
    w.handle_wait(t0(), RequestId(1), &ids(&[1, 2, 3]), 2, None, |id| *id != oid(2)).unwrap();
    assert_eq!(drain(&mut w), vec![wait_ready(1, &[1, 3], &[2])]);
}

#[test]
fn wait_for_zero_objects_completes_on_the_call() {
    let mut w = WaitTable::new();
    w.handle_wait(t0(), RequestId(1), &ids(&[1, 2]), 0, Some(SEC), |id| *id == oid(1)).unwrap();
    assert_eq!(drain(&mut w), vec![wait_ready(1, &[1], &[2])]);
}

#[test]
fn wait_num_required_is_capped_at_the_distinct_id_count() {
    let mut w = WaitTable::new();
    w.handle_wait(t0(), RequestId(1), &ids(&[1, 1]), 2, None, none).unwrap();
    w.handle_sealed(&oid(1));
    assert_eq!(drain(&mut w), vec![wait_ready(1, &[1], &[])]);
}

#[test]
fn wait_timeout_reports_ready_and_remaining() {
    let mut w = WaitTable::new();
    let now = t0();
    w.handle_wait(now, RequestId(1), &ids(&[1, 2, 3]), 3, Some(SEC), none).unwrap();
    w.handle_sealed(&oid(3));
    w.handle_timeout(now + SEC);
    assert_eq!(drain(&mut w), vec![wait_ready(1, &[3], &[1, 2])]);
}

#[test]
fn one_seal_completes_every_request_waiting_for_it() {
    let mut w = WaitTable::new();
    w.handle_get(t0(), RequestId(1), &ids(&[1]), None, none).unwrap();
    w.handle_wait(t0(), RequestId(2), &ids(&[1, 2]), 1, None, none).unwrap();
    w.handle_get(t0(), RequestId(3), &ids(&[1, 2]), None, none).unwrap();
    w.handle_sealed(&oid(1));
    assert_eq!(drain(&mut w), vec![get_ready(1, &[1], &[]), wait_ready(2, &[1], &[2])]);
    assert_eq!(w.pending(), 1);
}

#[test]
fn cancel_drops_a_request_without_an_answer() {
    let mut w = WaitTable::new();
    let now = t0();
    w.handle_get(now, RequestId(1), &ids(&[1]), Some(SEC), none).unwrap();
    assert!(w.cancel(RequestId(1)));
    assert!(!w.cancel(RequestId(1)));
    assert_eq!(w.poll_timeout(), None);
    assert!(!w.is_watched(&oid(1)));
    w.handle_sealed(&oid(1));
    w.handle_timeout(now + SEC);
    assert!(drain(&mut w).is_empty());
}

#[test]
fn a_pending_request_id_cannot_be_reused_until_it_completes() {
    let mut w = WaitTable::new();
    w.handle_get(t0(), RequestId(1), &ids(&[1]), None, none).unwrap();
    assert_eq!(
        w.handle_wait(t0(), RequestId(1), &ids(&[2]), 1, None, none),
        Err(WaitError::DuplicateRequest(RequestId(1)))
    );
    assert!(w.is_pending(RequestId(1)));
    w.handle_sealed(&oid(1));
    drain(&mut w);
    assert!(w.handle_get(t0(), RequestId(1), &ids(&[2]), None, none).is_ok());
}

#[test]
fn a_deleted_object_counts_as_missing_again() {
    let mut w = WaitTable::new();
    let now = t0();
    w.handle_get(now, RequestId(1), &ids(&[1, 2]), Some(SEC), |id| *id == oid(1)).unwrap();
    w.handle_deleted(&oid(1));
    w.handle_sealed(&oid(2));
    assert!(drain(&mut w).is_empty());
    w.handle_timeout(now + SEC);
    assert_eq!(drain(&mut w), vec![get_ready(1, &[2], &[1])]);
}

#[test]
fn events_for_unwatched_objects_are_ignored() {
    let mut w = WaitTable::new();
    w.handle_sealed(&oid(1));
    w.handle_deleted(&oid(1));
    w.handle_timeout(t0());
    assert!(drain(&mut w).is_empty());
}

#[test]
fn a_failed_fetch_ends_a_get_at_once_reporting_the_object_missing() {
    let (a, b) = (ObjectId([1; 28]), ObjectId([2; 28]));
    let mut w = WaitTable::new();
    let now = Instant::now();
    w.handle_get(now, RequestId(1), &[a, b], None, |id| *id == a).unwrap();
    assert!(w.poll_action().is_none());
    w.handle_failed(&b);
    assert_eq!(w.poll_action(), Some(WaitAction::GetReady { req: RequestId(1), found: vec![a], missing: vec![b] }));
    assert_eq!(w.pending(), 0);
}

#[test]
fn a_wait_ends_once_its_count_is_out_of_reach() {
    let (a, b, c) = (ObjectId([1; 28]), ObjectId([2; 28]), ObjectId([3; 28]));
    let mut w = WaitTable::new();
    let now = Instant::now();
    w.handle_wait(now, RequestId(1), &[a, b, c], 2, None, |id| *id == a).unwrap();
    w.handle_failed(&b);
    assert!(w.poll_action().is_none(), "two of three are still reachable");
    w.handle_failed(&c);
    assert_eq!(
        w.poll_action(),
        Some(WaitAction::WaitReady { req: RequestId(1), ready: vec![a], remaining: vec![b, c] })
    );
}
