use super::*;

fn id(i: u8) -> NodeId {
    NodeId([i; NodeId::LEN])
}

fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
    ResourceSet::from_f64_map(pairs.iter().map(|(k, v)| (k.to_string(), *v)))
}

fn cpus(n: f64) -> ResourceSet {
    rs(&[(CPU, n)])
}

/// Nodes `(id, total CPUs, free CPUs)`.
fn nodes(spec: &[(u8, f64, f64)]) -> BTreeMap<NodeId, NodeView> {
    spec.iter()
        .map(|&(i, total, free)| {
            let mut n = NodeView::new(cpus(total));
            n.available = cpus(free);
            (id(i), n)
        })
        .collect()
}

fn ids(v: &[u8]) -> Vec<NodeId> {
    v.iter().map(|&i| id(i)).collect()
}

#[test]
fn empty_group_is_placed_trivially() {
    assert_eq!(place_bundles(PgStrategy::StrictSpread, &[], &BTreeMap::new()), Ok(vec![]));
}

#[test]
fn no_schedulable_nodes_is_infeasible() {
    let mut n = nodes(&[(1, 4., 4.), (2, 4., 4.)]);
    n.get_mut(&id(1)).unwrap().alive = false;
    n.get_mut(&id(2)).unwrap().draining = true;
    for s in [PgStrategy::Pack, PgStrategy::Spread, PgStrategy::StrictPack, PgStrategy::StrictSpread] {
        assert_eq!(place_bundles(s, &[cpus(1.)], &n), Err(PlacementError::Infeasible), "{s:?}");
    }
}

#[test]
fn strict_pack_uses_one_node_fitting_the_sum() {
    let n = nodes(&[(1, 2., 2.), (2, 8., 8.), (3, 8., 8.)]);
    let b = [cpus(2.), cpus(3.)];
    assert_eq!(place_bundles(PgStrategy::StrictPack, &b, &n), Ok(ids(&[2, 2])));
}

#[test]
fn strict_pack_prefers_lower_utilisation_then_id() {
    let n = nodes(&[(1, 8., 4.), (2, 8., 6.), (3, 8., 6.)]);
    assert_eq!(place_bundles(PgStrategy::StrictPack, &[cpus(1.)], &n), Ok(ids(&[2])));
}

#[test]
fn strict_pack_errors_distinguish_busy_from_too_small() {
    let n = nodes(&[(1, 4., 1.), (2, 4., 1.)]);
    let b = [cpus(2.), cpus(2.)];
    assert_eq!(place_bundles(PgStrategy::StrictPack, &b, &n), Err(PlacementError::Unavailable));
    let b = [cpus(3.), cpus(2.)];
    assert_eq!(place_bundles(PgStrategy::StrictPack, &b, &n), Err(PlacementError::Infeasible));
}

#[test]
fn pack_uses_one_node_when_possible() {
    let n = nodes(&[(1, 4., 4.), (2, 4., 4.)]);
    let b = [cpus(1.), cpus(1.), cpus(2.)];
    assert_eq!(place_bundles(PgStrategy::Pack, &b, &n), Ok(ids(&[1, 1, 1])));
}

#[test]
fn pack_falls_back_to_few_nodes() {
    // 3+2+2+1 = 8 does not fit one node of 5; two nodes suffice (3+2, 2+1).
    let n = nodes(&[(1, 5., 5.), (2, 5., 5.), (3, 5., 5.)]);
    let b = [cpus(2.), cpus(3.), cpus(1.), cpus(2.)];
    let placed = place_bundles(PgStrategy::Pack, &b, &n).unwrap();
    let distinct: BTreeSet<_> = placed.iter().collect();
    assert_eq!(distinct.len(), 2);
    assert_eq!(placed, ids(&[1, 1, 2, 2]));
}

#[test]
fn pack_opens_the_node_that_takes_most_bundles() {
    // Node 1 is emptier (util tie-break) but node 2 can take all three small bundles.
    let n = nodes(&[(1, 10., 2.), (2, 3., 3.)]);
    let b = [cpus(1.), cpus(1.), cpus(1.)];
    assert_eq!(place_bundles(PgStrategy::Pack, &b, &n), Ok(ids(&[2, 2, 2])));
}

#[test]
fn spread_uses_distinct_nodes_then_shares() {
    let n = nodes(&[(1, 4., 4.), (2, 4., 4.)]);
    let b = [cpus(1.), cpus(1.), cpus(1.)];
    let placed = place_bundles(PgStrategy::Spread, &b, &n).unwrap();
    assert_eq!(placed[..2], ids(&[1, 2]));
    assert_eq!(placed[2], id(1));
}

#[test]
fn spread_consumes_availability_cumulatively() {
    let n = nodes(&[(1, 2., 2.)]);
    let b = [cpus(1.), cpus(1.), cpus(1.)];
    assert_eq!(place_bundles(PgStrategy::Spread, &b, &n), Err(PlacementError::Infeasible));
    let n = nodes(&[(1, 4., 2.)]);
    assert_eq!(place_bundles(PgStrategy::Spread, &b, &n), Err(PlacementError::Unavailable));
}

#[test]
fn strict_spread_needs_distinct_nodes() {
    let n = nodes(&[(1, 8., 8.), (2, 8., 8.)]);
    let b = [cpus(1.), cpus(1.), cpus(1.)];
    assert_eq!(place_bundles(PgStrategy::StrictSpread, &b, &n), Err(PlacementError::Infeasible));
    let n = nodes(&[(1, 8., 8.), (2, 8., 8.), (3, 8., 0.)]);
    assert_eq!(place_bundles(PgStrategy::StrictSpread, &b, &n), Err(PlacementError::Unavailable));
}

#[test]
fn strict_spread_finds_a_matching_when_greedy_would_fail() {
    // The big bundle only fits node 3, which a greedy small-first choice might take.
    let n = nodes(&[(1, 1., 1.), (2, 1., 1.), (3, 4., 4.)]);
    let b = [cpus(1.), cpus(1.), cpus(4.)];
    assert_eq!(place_bundles(PgStrategy::StrictSpread, &b, &n), Ok(ids(&[1, 2, 3])));
    let b = [cpus(1.), cpus(1.), cpus(1.)];
    let placed = place_bundles(PgStrategy::StrictSpread, &b, &n).unwrap();
    assert_eq!(placed.iter().collect::<BTreeSet<_>>().len(), 3);
}

#[test]
fn gpu_bundles_are_placed_first_and_custom_resources_count() {
    let mut n = nodes(&[(1, 4., 4.), (2, 4., 4.)]);
    for (i, extra) in [(1, "GPU"), (2, "custom")] {
        let node = n.get_mut(&id(i)).unwrap();
        node.total.set(extra, FixedPoint::ONE);
        node.available.set(extra, FixedPoint::ONE);
    }
    let b = [rs(&[(CPU, 1.0)]), rs(&[(GPU, 1.0)]), rs(&[("custom", 1.0)])];
    assert_eq!(place_bundles(PgStrategy::Spread, &b, &n), Ok(ids(&[2, 1, 2])));
    assert_eq!(place_bundles(PgStrategy::StrictPack, &b, &n), Err(PlacementError::Infeasible));
}

#[test]
fn placement_is_deterministic() {
    let n = nodes(&[(3, 4., 4.), (1, 4., 4.), (2, 4., 4.)]);
    let b = [cpus(1.), cpus(2.), cpus(1.)];
    for s in [PgStrategy::Pack, PgStrategy::Spread, PgStrategy::StrictPack, PgStrategy::StrictSpread] {
        let first = place_bundles(s, &b, &n);
        for _ in 0..5 {
            assert_eq!(place_bundles(s, &b, &n), first);
        }
    }
    assert_eq!(place_bundles(PgStrategy::StrictSpread, &b, &n), Ok(ids(&[2, 1, 3])));
}

#[test]
fn strict_spread_moves_an_earlier_bundle_to_make_room() {
    let mut n = BTreeMap::new();
    n.insert(id(1), NodeView::new(rs(&[("x", 1.0), ("y", 1.0)])));
    n.insert(id(2), NodeView::new(rs(&[("x", 1.0)])));
    let b = [rs(&[("x", 1.0)]), rs(&[("y", 1.0)])];
    assert_eq!(place_bundles(PgStrategy::StrictSpread, &b, &n), Ok(ids(&[2, 1])));
}
