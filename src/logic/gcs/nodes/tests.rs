//! The node table: deadlines, the gap rule, refusals and the dead-entry cap.

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn id(b: u8) -> NodeId {
    NodeId([b; 28])
}

/// A 5 s timeout with a 1 s heartbeat period (the largest gap that is not a pause).
fn table(max_dead: usize) -> NodeTable<()> {
    NodeTable::new(5 * SEC, SEC, max_dead)
}

/// Runs the detector every half period from `from` to `to` (inclusive), as the service
/// does; returns every node it declared dead.
fn watch(t: &mut NodeTable<()>, from: Instant, to: Instant) -> Vec<NodeId> {
    let mut dead = Vec::new();
    let mut now = from;
    while now <= to {
        match t.handle_timeout(now) {
            Check::Expired(ids) => dead.extend(ids),
            Check::Paused(gap) => panic!("a detector run every half period is never paused ({gap:?})"),
        }
        now += SEC / 2;
    }
    dead
}

#[test]
fn silent_node_dies_after_timeout_and_others_stay() {
    let t0 = Instant::now();
    let mut t = table(10);
    t.handle_register(t0, id(1), ()).unwrap();
    t.handle_register(t0, id(2), ()).unwrap();
    assert_eq!(t.poll_timeout(), Some(t0 + 5 * SEC), "before any check: the first deadline");
    assert_eq!(watch(&mut t, t0, t0 + 4 * SEC), vec![]);
    assert_eq!(t.handle_heartbeat(t0 + 4 * SEC, id(2)), Heartbeat::Alive);
    assert_eq!(watch(&mut t, t0 + 4 * SEC + SEC / 2, t0 + 5 * SEC), vec![id(1)]);
    assert_eq!(t.get(&id(1)).unwrap().state, NodeState::Dead);
    assert_eq!(t.get(&id(2)).unwrap().state, NodeState::Alive);
    assert_eq!(watch(&mut t, t0 + 5 * SEC + SEC / 2, t0 + 9 * SEC), vec![id(2)]);
}

#[test]
fn the_next_check_is_due_within_half_a_period_of_the_last() {
    let t0 = Instant::now();
    let mut t = table(10);
    assert_eq!(t.poll_timeout(), None, "no node and no check yet: nothing is due");
    assert_eq!(t.handle_timeout(t0), Check::Expired(vec![]));
    assert_eq!(t.poll_timeout(), Some(t0 + SEC / 2), "with no node the detector still ticks");
    t.handle_register(t0, id(1), ()).unwrap();
    assert_eq!(t.poll_timeout(), Some(t0 + SEC / 2), "a deadline 5 s away does not delay the tick");
    watch(&mut t, t0, t0 + 4 * SEC + SEC / 2);
    t.handle_timeout(t0 + 4 * SEC + SEC * 8 / 10);
    assert_eq!(t.poll_timeout(), Some(t0 + 5 * SEC), "a node deadline sooner than the tick comes first");
}

#[test]
fn a_gap_in_the_detector_restarts_every_deadline_and_kills_no_one() {
    let t0 = Instant::now();
    let mut t = table(10);
    t.handle_register(t0, id(1), ()).unwrap();
    t.handle_register(t0, id(2), ()).unwrap();
    watch(&mut t, t0, t0 + 2 * SEC);
    // The GCS stops for 12 s (SIGSTOP): both nodes kept heartbeating into its sockets.
    let resumed = t0 + 14 * SEC;
    let v = t.version();
    assert_eq!(t.handle_timeout(resumed), Check::Paused(12 * SEC));
    assert_eq!(t.version(), v, "a pause changes no membership");
    assert!(t.alive().count() == 2, "no one is declared dead for time the GCS did not watch");
    assert_eq!(t.get(&id(1)).unwrap().last_heartbeat, resumed, "the deadline restarts from now");
    // Node 2's queued heartbeats arrive; node 1 stays silent and dies a full timeout
    // after the resume, not before.
    assert_eq!(t.handle_heartbeat(resumed, id(2)), Heartbeat::Alive);
    assert_eq!(watch(&mut t, resumed + SEC / 2, resumed + 4 * SEC + SEC / 2), vec![]);
    t.handle_heartbeat(resumed + 4 * SEC, id(2));
    assert_eq!(watch(&mut t, resumed + 5 * SEC, resumed + 5 * SEC), vec![id(1)]);
}

#[test]
fn a_gap_of_exactly_one_period_is_not_a_pause() {
    let t0 = Instant::now();
    let mut t = table(10);
    t.handle_register(t0, id(1), ()).unwrap();
    t.handle_timeout(t0);
    assert_eq!(t.handle_timeout(t0 + SEC), Check::Expired(vec![]));
    assert_eq!(
        t.handle_timeout(t0 + 2 * SEC + Duration::from_millis(1)),
        Check::Paused(SEC + Duration::from_millis(1))
    );
    // Checks a period apart up to the deadline: the silent node dies on time.
    let resumed = t0 + 2 * SEC + Duration::from_millis(1);
    let mut now = resumed;
    while now < resumed + 5 * SEC {
        now += SEC;
        assert_eq!(t.alive().count(), 1);
        t.handle_timeout(now);
    }
    assert_eq!(t.alive().count(), 0);
}

#[test]
fn a_node_dead_before_a_pause_stays_dead_and_is_refused() {
    let t0 = Instant::now();
    let mut t = table(10);
    t.handle_register(t0, id(1), ()).unwrap();
    assert_eq!(watch(&mut t, t0, t0 + 5 * SEC), vec![id(1)]);
    assert!(matches!(t.handle_timeout(t0 + 20 * SEC), Check::Paused(_)));
    assert_eq!(t.get(&id(1)).unwrap().state, NodeState::Dead, "a pause revives no one");
    assert_eq!(t.handle_heartbeat(t0 + 20 * SEC, id(1)), Heartbeat::NotAlive);
    assert_eq!(t.handle_register(t0 + 20 * SEC, id(1), ()), Err(RegisterError::AlreadyDead(id(1))));
}

#[test]
fn dead_node_heartbeat_says_not_alive_and_cannot_reregister() {
    let t0 = Instant::now();
    let mut t = table(10);
    t.handle_register(t0, id(1), ()).unwrap();
    assert!(t.handle_unregister(id(1), "bye"));
    assert!(!t.handle_unregister(id(1), "again"));
    assert_eq!(t.handle_heartbeat(t0, id(1)), Heartbeat::NotAlive);
    assert_eq!(t.handle_heartbeat(t0, id(9)), Heartbeat::NotAlive);
    assert_eq!(t.handle_register(t0, id(1), ()), Err(RegisterError::AlreadyDead(id(1))));
}

#[test]
fn every_change_bumps_the_version() {
    let t0 = Instant::now();
    let mut t = table(10);
    let v0 = t.version();
    t.handle_register(t0, id(1), ()).unwrap();
    let v1 = t.version();
    assert!(v1 > v0);
    t.handle_heartbeat(t0, id(1));
    assert_eq!(t.version(), v1, "heartbeats are not membership changes");
    watch(&mut t, t0, t0 + 5 * SEC);
    assert!(t.version() > v1);
}

#[test]
fn dead_entries_are_capped_oldest_first() {
    let t0 = Instant::now();
    let mut t = table(2);
    for b in 1..=3 {
        t.handle_register(t0, id(b), ()).unwrap();
        t.handle_unregister(id(b), "x");
    }
    assert!(t.get(&id(1)).is_none());
    assert!(t.get(&id(2)).is_some() && t.get(&id(3)).is_some());
}
