//! One test per edge of the placement-group state diagram, plus the reservation ledger.

use super::*;
use crate::logic::resources::CPU;

fn nid(i: u8) -> NodeId {
    NodeId([i; NodeId::LEN])
}

fn pgid(i: u8) -> PlacementGroupId {
    PlacementGroupId([i; PlacementGroupId::LEN])
}

fn cpus(n: f64) -> ResourceSet {
    ResourceSet::from_f64_map([(CPU.to_string(), n)])
}

/// Nodes `(id, total CPUs, free CPUs)`.
fn view(spec: &[(u8, f64, f64)]) -> BTreeMap<NodeId, NodeView> {
    spec.iter()
        .map(|&(i, total, free)| {
            let mut n = NodeView::new(cpus(total));
            n.available = cpus(free);
            (nid(i), n)
        })
        .collect()
}

fn spec(i: u8, strategy: PgStrategy, bundles: &[f64]) -> PgSpec {
    PgSpec { id: pgid(i), name: format!("pg{i}"), strategy, bundles: bundles.iter().map(|&c| cpus(c)).collect() }
}

fn drain(t: &mut PgTable) -> Vec<PgAction> {
    std::iter::from_fn(|| t.poll_action()).collect()
}

fn prepares(actions: &[PgAction]) -> Vec<(u64, NodeId, Vec<i64>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            PgAction::Prepare { attempt, node, bundles, .. } => {
                Some((*attempt, *node, bundles.iter().map(|b| b.0).collect()))
            }
            _ => None,
        })
        .collect()
}

fn commits(actions: &[PgAction]) -> Vec<(u64, NodeId)> {
    actions
        .iter()
        .filter_map(|a| match a {
            PgAction::Commit { attempt, node, .. } => Some((*attempt, *node)),
            _ => None,
        })
        .collect()
}

fn cancels(actions: &[PgAction]) -> Vec<(u64, NodeId, i64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            PgAction::CancelReserve { op, node, bundle, .. } => Some((*op, *node, bundle.0)),
            _ => None,
        })
        .collect()
}

/// Creates group `i` and drives it to CREATED on `v`; returns the bundles' nodes.
fn create_ok(t: &mut PgTable, now: Instant, s: PgSpec, v: &BTreeMap<NodeId, NodeView>) -> Vec<NodeId> {
    let pg = s.id;
    t.handle_create(now, s).unwrap();
    t.handle_timeout(now, v);
    let p = prepares(&drain(t));
    assert!(!p.is_empty(), "no prepare");
    for (a, n, _) in &p {
        t.handle_prepare_reply(now, pg, *a, *n, true);
    }
    let c = commits(&drain(t));
    assert_eq!(c.len(), p.len());
    for (a, n) in &c {
        t.handle_commit_reply(now, pg, *a, *n, true);
    }
    assert_eq!(drain(t), vec![PgAction::Ready { pg }]);
    let info = t.get(pg).unwrap();
    assert_eq!(info.state, PgState::Created);
    info.nodes.into_iter().map(|n| n.unwrap()).collect()
}

#[test]
fn create_prepares_commits_and_becomes_ready() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig::default());
    let nodes =
        create_ok(&mut t, now, spec(1, PgStrategy::StrictSpread, &[1.0, 1.0]), &view(&[(1, 2., 2.), (2, 2., 2.)]));
    assert_ne!(nodes[0], nodes[1]);
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn bad_specs_are_refused_and_repeats_accepted() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig::default());
    assert_eq!(t.handle_create(now, spec(1, PgStrategy::Pack, &[])), Err(PgError::NoBundles));
    let mut s = spec(1, PgStrategy::Pack, &[1.0]);
    s.bundles.push(ResourceSet::new());
    assert_eq!(t.handle_create(now, s), Err(PgError::EmptyBundle(1)));
    t.handle_create(now, spec(1, PgStrategy::Pack, &[1.0])).unwrap();
    assert_eq!(t.handle_create(now, spec(1, PgStrategy::Pack, &[1.0])), Ok(()));
    assert_eq!(t.handle_create(now, spec(1, PgStrategy::Pack, &[2.0])), Err(PgError::Conflict(pgid(1))));
}

#[test]
fn a_failed_prepare_rolls_back_the_others_and_retries_with_backoff() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig::default());
    let v = view(&[(1, 2., 2.), (2, 2., 2.)]);
    t.handle_create(now, spec(1, PgStrategy::StrictSpread, &[1.0, 1.0])).unwrap();
    t.handle_timeout(now, &v);
    let p = prepares(&drain(&mut t));
    assert_eq!(p.len(), 2);
    t.handle_prepare_reply(now, pgid(1), p[0].0, p[0].1, true);
    assert!(drain(&mut t).is_empty(), "waits for every reply");
    t.handle_prepare_reply(now, pgid(1), p[1].0, p[1].1, false);
    let got = drain(&mut t);
    let c = cancels(&got);
    assert_eq!(c.len(), 1, "{got:?}");
    assert_eq!((c[0].1, c[0].2), (p[0].1, p[0].2[0]), "only the prepared node rolls back");
    assert!(commits(&got).is_empty());
    assert_eq!(t.get(pgid(1)).unwrap().state, PgState::Pending);
    assert_eq!(t.poll_timeout(), Some(now + Duration::from_millis(100)));
    let later = now + Duration::from_millis(100);
    t.handle_cancel_reply(later, c[0].0);
    t.handle_timeout(later, &v);
    assert_eq!(prepares(&drain(&mut t)).len(), 2, "retried");
}

#[test]
fn unavailable_groups_back_off_up_to_the_cap() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig::default());
    let v = view(&[(1, 4., 0.)]);
    t.handle_create(now, spec(1, PgStrategy::Pack, &[1.0])).unwrap();
    let mut at = now;
    let mut delays = Vec::new();
    for _ in 0..8 {
        t.handle_timeout(at, &v);
        assert!(drain(&mut t).is_empty());
        let next = t.poll_timeout().unwrap();
        delays.push((next - at).as_millis());
        at = next;
    }
    assert_eq!(&delays[..4], &[100, 150, 225, 337]);
    assert_eq!(*delays.last().unwrap(), 1000);
    assert!(t.get(pgid(1)).unwrap().message.contains("waiting"));
}

#[test]
fn infeasible_groups_say_so_and_retry_when_nodes_change() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig::default());
    t.handle_create(now, spec(1, PgStrategy::StrictPack, &[8.0])).unwrap();
    t.handle_timeout(now, &view(&[(1, 4., 4.)]));
    assert!(t.get(pgid(1)).unwrap().message.contains("infeasible"));
    t.handle_nodes_changed(now);
    assert_eq!(t.poll_timeout(), Some(now));
    t.handle_timeout(now, &view(&[(1, 4., 4.), (2, 8., 8.)]));
    assert_eq!(prepares(&drain(&mut t))[0].1, nid(2));
}

#[test]
fn removing_a_created_group_cancels_every_bundle() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig::default());
    create_ok(&mut t, now, spec(1, PgStrategy::Spread, &[1.0, 1.0]), &view(&[(1, 2., 2.), (2, 2., 2.)]));
    assert!(t.handle_remove(pgid(1)));
    let got = drain(&mut t);
    assert_eq!(cancels(&got).len(), 2);
    assert_eq!(got.last(), Some(&PgAction::Removed { pg: pgid(1) }));
    assert_eq!(t.get(pgid(1)).unwrap().state, PgState::Removed);
    assert!(!t.handle_remove(pgid(1)), "twice");
    assert!(!t.handle_remove(pgid(9)), "unknown");
}

#[test]
fn removing_during_prepare_cancels_in_flight_bundles_and_ignores_late_replies() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig::default());
    t.handle_create(now, spec(1, PgStrategy::Pack, &[1.0])).unwrap();
    t.handle_timeout(now, &view(&[(1, 2., 2.)]));
    let p = prepares(&drain(&mut t));
    t.handle_remove(pgid(1));
    assert_eq!(cancels(&drain(&mut t)).len(), 1);
    t.handle_prepare_reply(now, pgid(1), p[0].0, p[0].1, true);
    assert!(drain(&mut t).is_empty(), "no commit for a removed group");
}

#[test]
fn a_node_death_reschedules_its_bundles_elsewhere() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig::default());
    let v = view(&[(1, 2., 2.), (2, 2., 2.), (3, 2., 2.)]);
    let nodes = create_ok(&mut t, now, spec(1, PgStrategy::StrictSpread, &[1.0, 1.0]), &v);
    let dead = nodes[0];
    t.handle_node_dead(now, dead);
    let info = t.get(pgid(1)).unwrap();
    assert_eq!((info.state, info.nodes[0], info.nodes[1]), (PgState::Rescheduling, None, Some(nodes[1])));
    let mut alive = v.clone();
    alive.remove(&dead);
    t.handle_timeout(now, &alive);
    let p = prepares(&drain(&mut t));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].2, vec![0], "only the lost bundle");
    assert_ne!(p[0].1, nodes[1], "STRICT_SPREAD avoids the node holding bundle 1");
    t.handle_prepare_reply(now, pgid(1), p[0].0, p[0].1, true);
    let c = commits(&drain(&mut t));
    t.handle_commit_reply(now, pgid(1), c[0].0, c[0].1, true);
    assert_eq!(drain(&mut t), vec![PgAction::Ready { pg: pgid(1) }]);
}

#[test]
fn a_failed_commit_undoes_the_attempt_and_retries() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig::default());
    t.handle_create(now, spec(1, PgStrategy::Spread, &[1.0, 1.0])).unwrap();
    t.handle_timeout(now, &view(&[(1, 2., 2.), (2, 2., 2.)]));
    for (a, n, _) in prepares(&drain(&mut t)) {
        t.handle_prepare_reply(now, pgid(1), a, n, true);
    }
    let c = commits(&drain(&mut t));
    t.handle_commit_reply(now, pgid(1), c[0].0, c[0].1, true);
    t.handle_commit_reply(now, pgid(1), c[1].0, c[1].1, false);
    assert_eq!(cancels(&drain(&mut t)).len(), 2);
    assert_eq!(t.get(pgid(1)).unwrap().state, PgState::Pending);
    assert!(t.poll_timeout().is_some());
}

#[test]
fn own_reservations_count_until_a_report_shows_them() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig::default());
    let stale = view(&[(1, 1., 1.)]);
    create_ok(&mut t, now, spec(1, PgStrategy::Pack, &[1.0]), &stale);
    t.handle_create(now, spec(2, PgStrategy::Pack, &[1.0])).unwrap();
    t.handle_timeout(now, &stale);
    assert!(prepares(&drain(&mut t)).is_empty(), "the stale report still shows the CPU free");
    t.handle_remove(pgid(1));
    let c = cancels(&drain(&mut t));
    t.handle_timeout(now + Duration::from_millis(100), &stale);
    assert!(prepares(&drain(&mut t)).is_empty(), "an unconfirmed release does not count");
    let later = now + Duration::from_secs(2);
    t.handle_cancel_reply(later, c[0].0);
    t.handle_timeout(later, &stale);
    assert_eq!(prepares(&drain(&mut t)).len(), 1, "the confirmed release frees the CPU");
}

#[test]
fn a_report_requested_after_an_operation_replaces_it() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig::default());
    create_ok(&mut t, now, spec(1, PgStrategy::Pack, &[1.0]), &view(&[(1, 1., 1.)]));
    t.handle_report(nid(1), now + Duration::from_millis(1));
    t.handle_create(now, spec(2, PgStrategy::Pack, &[1.0])).unwrap();
    t.handle_timeout(now, &view(&[(1, 1., 1.)]));
    assert_eq!(prepares(&drain(&mut t)).len(), 1, "the report (claiming free) is trusted now");
}

#[test]
fn removed_groups_are_forgotten_past_the_history_cap() {
    let now = Instant::now();
    let mut t = PgTable::new(PgConfig { removed_history: 2, ..Default::default() });
    for i in 1..=3 {
        t.handle_create(now, spec(i, PgStrategy::Pack, &[1.0])).unwrap();
        t.handle_remove(pgid(i));
    }
    assert!(t.get(pgid(1)).is_none());
    assert_eq!(t.get(pgid(3)).unwrap().state, PgState::Removed);
    assert_eq!(t.all().count(), 2);
}

#[test]
fn the_ledger_counts_reservations_at_once_and_releases_once_confirmed() {
    let now = Instant::now();
    let mut l = Ledger::default();
    let at = |l: &Ledger| {
        let mut v = view(&[(1, 4., 4.)]);
        l.apply_to(&mut v);
        v[&nid(1)].available.get(CPU).to_f64()
    };
    let r = l.add(nid(1), negate(&cpus(2.0)), false);
    assert_eq!(at(&l), 2.0, "a reservation counts while in flight");
    let c = l.add(nid(1), cpus(1.0), true);
    assert_eq!(at(&l), 2.0, "an unconfirmed release does not");
    l.applied(c, now);
    assert_eq!(at(&l), 3.0);
    l.applied(r, now);
    l.report(nid(1), now);
    assert_eq!(at(&l), 3.0, "a report requested at the same instant shows neither");
    l.report(nid(1), now + Duration::from_millis(1));
    assert_eq!(at(&l), 4.0, "a later report shows both");
    let gone = l.add(nid(1), negate(&cpus(1.0)), false);
    l.remove(gone);
    assert_eq!(at(&l), 4.0, "a failed reservation is forgotten");
    l.add(nid(1), negate(&cpus(1.0)), false);
    l.node_dead(nid(1));
    assert_eq!(at(&l), 4.0);
}

#[test]
fn groups_and_bundles_per_group_are_capped_and_removal_makes_room() {
    let t0 = Instant::now();
    let cfg = PgConfig { max_groups: 2, max_bundles: 3, ..PgConfig::default() };
    let mut t = PgTable::new(cfg);
    let too_big = spec(1, PgStrategy::Pack, &[1.0; 4]);
    assert_eq!(t.handle_create(t0, too_big), Err(PgError::TooManyBundles { got: 4, max: 3 }));
    assert!(t.get(pgid(1)).is_none(), "a refused create leaves nothing");
    t.handle_create(t0, spec(1, PgStrategy::Pack, &[1.0; 3])).unwrap();
    t.handle_create(t0, spec(2, PgStrategy::Pack, &[1.0])).unwrap();
    assert_eq!(t.handle_create(t0, spec(3, PgStrategy::Pack, &[1.0])), Err(PgError::TooManyGroups(2)));
    assert_eq!(t.handle_create(t0, spec(2, PgStrategy::Pack, &[1.0])), Ok(()), "a repeated create is no new group");
    assert!(t.handle_remove(pgid(1)));
    t.handle_create(t0, spec(3, PgStrategy::Pack, &[1.0])).unwrap();
    assert_eq!(t.all().filter(|g| g.state != PgState::Removed).count(), 2);
}
