use super::*;

const LIMITS: AdmissionLimits = AdmissionLimits { max_unauthenticated: 2, max_connections: 5 };

fn counts(open: usize, unauthenticated: usize, closing: usize) -> Counts {
    Counts { open, unauthenticated, closing }
}

#[test]
fn a_connection_under_both_caps_is_accepted() {
    assert_eq!(admit(&LIMITS, counts(5, 2, 0), false), Admit::Accept);
    assert_eq!(admit(&LIMITS, counts(1, 1, 0), true), Admit::Accept);
    assert_eq!(admit(&LIMITS, counts(5, 2, 3), true), Admit::Accept, "closing ones count only toward open");
}

#[test]
fn over_the_unauthenticated_cap_the_oldest_pending_peer_goes() {
    assert_eq!(admit(&LIMITS, counts(3, 3, 0), true), Admit::DropOldest);
    assert_eq!(admit(&LIMITS, counts(4, 3, 1), true), Admit::DropOldest, "room for its fd");
}

#[test]
fn over_the_total_cap_the_oldest_pending_peer_goes() {
    assert_eq!(admit(&LIMITS, counts(6, 1, 0), true), Admit::DropOldest);
}

#[test]
fn over_the_total_cap_with_drops_still_closing_the_newcomer_waits_for_their_fds() {
    assert_eq!(admit(&LIMITS, counts(6, 1, 1), true), Admit::Refuse);
    assert_eq!(admit(&LIMITS, counts(6, 3, 2), true), Admit::Refuse);
}

#[test]
fn over_the_total_cap_with_no_pending_peer_to_drop_the_newcomer_is_refused() {
    assert_eq!(admit(&LIMITS, counts(6, 1, 0), false), Admit::Refuse);
    assert_eq!(admit(&LIMITS, counts(6, 3, 0), false), Admit::Refuse);
}

#[test]
fn over_the_unauthenticated_cap_alone_a_shard_with_none_to_drop_still_accepts() {
    // The cap's peers are all queued on another shard (a flood of a shard-0-only port):
    // this shard's listeners must not be locked out. Its next newcomer can drop this one.
    assert_eq!(admit(&LIMITS, counts(3, 3, 0), false), Admit::Accept);
    assert_eq!(admit(&LIMITS, counts(4, 4, 0), true), Admit::DropOldest);
}

#[test]
fn the_queue_gives_up_its_oldest_first_and_forgets_removed_ones() {
    let mut q = PendingQueue::default();
    let a = q.push("a");
    let b = q.push("b");
    let c = q.push("c");
    assert_eq!(q.remove(a), Some("a"), "a authenticated");
    assert_eq!(q.pop_oldest(), Some((b, "b")));
    assert_eq!(q.remove(b), None, "b was dropped already");
    let d = q.push("d");
    assert_eq!(q.len(), 2);
    assert_eq!(q.pop_oldest(), Some((c, "c")));
    assert_eq!(q.pop_oldest(), Some((d, "d")));
    assert!(q.is_empty());
    assert_eq!(q.pop_oldest(), None);
}

#[test]
fn caps_fit_the_fd_limit_with_a_reserve() {
    let configured = AdmissionLimits { max_unauthenticated: 128, max_connections: 10_000 };
    assert_eq!(configured.fitted(1 << 20), (configured, false), "plenty of fds: as configured");
    let (l, lowered) = configured.fitted(1024);
    assert!(lowered);
    assert_eq!(l, AdmissionLimits { max_unauthenticated: 128, max_connections: 768 });
    let (l, _) = configured.fitted(256);
    assert_eq!(l, AdmissionLimits { max_unauthenticated: 128, max_connections: 192 }, "64 fds kept at least");
    let (l, _) = configured.fitted(100);
    assert_eq!(l, AdmissionLimits { max_unauthenticated: 36, max_connections: 36 }, "never more pending than total");
    let (l, _) = configured.fitted(10);
    assert_eq!(l.max_connections, MIN_CONNECTIONS);
}

#[test]
fn a_zero_cap_becomes_one() {
    let (l, _) = AdmissionLimits { max_unauthenticated: 0, max_connections: 0 }.fitted(1 << 20);
    assert_eq!(l, AdmissionLimits { max_unauthenticated: 1, max_connections: 1 });
}

#[test]
fn the_first_refusal_is_logged_at_once() {
    let mut log = RefusalLog::new(Duration::from_secs(10));
    assert_eq!(log.handle_refusal(Instant::now()), LogAction::Emit { count: 1 });
}

#[test]
fn refusals_within_the_interval_are_counted_into_one_flushed_line() {
    let t0 = Instant::now();
    let iv = Duration::from_secs(10);
    let mut log = RefusalLog::new(iv);
    assert_eq!(log.handle_refusal(t0), LogAction::Emit { count: 1 });
    assert_eq!(log.handle_refusal(t0 + Duration::from_secs(1)), LogAction::Suppress { flush_at: Some(t0 + iv) });
    for s in 2..9 {
        assert_eq!(log.handle_refusal(t0 + Duration::from_secs(s)), LogAction::Suppress { flush_at: None });
    }
    assert_eq!(log.held(), 8);
    assert_eq!(log.handle_flush(t0 + iv), Some(8));
    assert_eq!(log.held(), 0);
    // The flush starts a new interval: the next refusal waits for its end.
    assert_eq!(
        log.handle_refusal(t0 + iv + Duration::from_secs(1)),
        LogAction::Suppress { flush_at: Some(t0 + iv + iv) }
    );
}

#[test]
fn a_refusal_after_a_quiet_interval_is_logged_at_once_with_those_held() {
    let t0 = Instant::now();
    let iv = Duration::from_secs(10);
    let mut log = RefusalLog::new(iv);
    log.handle_refusal(t0);
    log.handle_refusal(t0 + Duration::from_secs(1));
    // The flush timer was lost (or the caller did not arm one): the next line carries both.
    assert_eq!(log.handle_refusal(t0 + Duration::from_secs(30)), LogAction::Emit { count: 2 });
}

#[test]
fn an_early_or_empty_flush_writes_nothing() {
    let t0 = Instant::now();
    let iv = Duration::from_secs(10);
    let mut log = RefusalLog::new(iv);
    assert_eq!(log.handle_flush(t0), None, "nothing held");
    log.handle_refusal(t0);
    log.handle_refusal(t0 + Duration::from_secs(1));
    assert_eq!(log.handle_flush(t0 + Duration::from_secs(2)), None, "early");
    assert_eq!(log.handle_refusal(t0 + Duration::from_secs(3)), LogAction::Suppress { flush_at: None }, "still armed");
    assert_eq!(log.handle_flush(t0 + iv), Some(2));
}

#[test]
fn accept_pauses_double_up_to_the_cap_and_reset_on_success() {
    let mut b = AcceptBackoff::default();
    let pauses: Vec<_> = (0..9).map(|_| b.handle_failure(AcceptFailure::Exhausted)).collect();
    let ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    b.handle_success();
    assert_eq!(b.handle_failure(AcceptFailure::Other), AcceptBackoff::FIRST);
}

#[test]
fn a_failure_of_one_connection_costs_no_pause() {
    let mut b = AcceptBackoff::default();
    b.handle_failure(AcceptFailure::Exhausted);
    assert_eq!(b.handle_failure(AcceptFailure::Transient), Duration::ZERO);
    assert_eq!(b.handle_failure(AcceptFailure::Exhausted), Duration::from_millis(20), "the back-off is kept");
}

#[test]
fn held_refusals_can_be_taken_when_the_events_stop() {
    let t0 = Instant::now();
    let mut log = RefusalLog::new(Duration::from_secs(10));
    log.handle_refusal(t0);
    log.handle_refusal(t0 + Duration::from_secs(1));
    log.handle_refusal(t0 + Duration::from_secs(2));
    assert_eq!(log.take_held(), 2);
    assert_eq!(log.handle_flush(t0 + Duration::from_secs(10)), None, "nothing left to flush");
}
