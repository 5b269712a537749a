use super::*;
use crate::logic::resources::{CPU, GPU, MEMORY};

fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
    ResourceSet::from_f64_map(pairs.iter().map(|(k, v)| (k.to_string(), *v)))
}

fn fp(x: f64) -> FixedPoint {
    FixedPoint::from_f64(x)
}

fn pg(i: u8) -> PlacementGroupId {
    PlacementGroupId([i; PlacementGroupId::LEN])
}

fn key(p: u8, index: i64) -> BundleKey {
    BundleKey { pg: pg(p), index }
}

fn spec(p: u8, index: i64, res: &[(&str, f64)]) -> BundleSpec {
    BundleSpec { key: key(p, index), unit_resources: rs(res) }
}

fn node() -> NodeResources {
    NodeResources::new(&rs(&[(CPU, 4.0), (GPU, 2.0), (MEMORY, 1000.0)]), &[GPU])
}

#[test]
fn names_format_and_parse_round_trip() {
    let p = pg(0xab);
    let hex = p.hex();
    assert_eq!(format_indexed(CPU, 3, p), format!("CPU_group_3_{hex}"));
    assert_eq!(format_wildcard(GPU, p), format!("GPU_group_{hex}"));
    let parsed = parse_formatted(&format_indexed("my_group_res", 12, p)).unwrap();
    assert_eq!(parsed, FormattedName { original: "my_group_res".into(), index: Some(12), pg: p });
    let wild = parse_formatted(&format_wildcard(BUNDLE_RESOURCE, p)).unwrap();
    assert_eq!(wild, FormattedName { original: "bundle".into(), index: None, pg: p });
}

#[test]
fn parse_rejects_non_formatted_names() {
    let hex = pg(1).hex();
    for bad in [
        "CPU".to_string(),
        format!("_group_{hex}"),
        format!("CPU_group_x1_{hex}"),
        format!("CPU_group_-1_{hex}"),
        format!("CPU_group_1_{}", &hex[2..]),
        "CPU_group_".to_string(),
        format!("CPU_group_99999999999999999999_{hex}"),
    ] {
        assert_eq!(parse_formatted(&bad), None, "{bad}");
    }
}

#[test]
fn in_use_set_adds_wildcard_index_per_group() {
    let set = in_use_set(&[key(1, 0), key(1, 2), key(2, 5)]);
    let want: BTreeSet<_> = [key(1, -1), key(1, 0), key(1, 2), key(2, -1), key(2, 5)].into();
    assert_eq!(set, want);
}

#[test]
fn prepare_reserves_and_commit_creates_formatted_resources() {
    let mut n = node();
    let mut ledger = BundleLedger::new();
    let b = [spec(1, 0, &[(CPU, 1.0)]), spec(1, 1, &[(CPU, 2.0), (GPU, 1.0)])];
    assert!(ledger.prepare(&mut n, &b));
    assert_eq!(ledger.state(key(1, 0)), Some(BundleState::Prepared));
    assert_eq!(n.available().get(CPU), fp(1.0));
    assert!(!n.total().contains(&format_wildcard(CPU, pg(1))));
    ledger.commit(&mut n, &b);
    assert_eq!(ledger.state(key(1, 1)), Some(BundleState::Committed));
    let total = n.total();
    assert_eq!(total.get(&format_indexed(CPU, 0, pg(1))), fp(1.0));
    assert_eq!(total.get(&format_indexed(CPU, 1, pg(1))), fp(2.0));
    assert_eq!(total.get(&format_wildcard(CPU, pg(1))), fp(3.0));
    assert_eq!(total.get(&format_indexed(GPU, 1, pg(1))), fp(1.0));
    assert_eq!(total.get(&format_wildcard(BUNDLE_RESOURCE, pg(1))), fp(2000.0));
    assert_eq!(total.get(&format_indexed(BUNDLE_RESOURCE, 0, pg(1))), fp(1000.0));
    let formatted = formatted_resources(&b[1]);
    assert!(formatted.is_subset_of(&n.available()));
}

#[test]
fn failed_prepare_leaves_no_reservation() {
    let mut n = node();
    let before = n.clone();
    let mut ledger = BundleLedger::new();
    let b = [spec(1, 0, &[(CPU, 3.0)]), spec(1, 1, &[(CPU, 2.0)])];
    assert!(!ledger.prepare(&mut n, &b));
    assert!(ledger.is_empty());
    assert_eq!(n, before);
}

#[test]
fn prepare_of_committed_bundle_is_success_without_new_reservation() {
    let mut n = node();
    let mut ledger = BundleLedger::new();
    let b = [spec(1, 0, &[(CPU, 3.0)])];
    assert!(ledger.prepare(&mut n, &b));
    ledger.commit(&mut n, &b);
    let after_commit = n.clone();
    assert!(ledger.prepare(&mut n, &b));
    assert_eq!(n, after_commit);
    assert_eq!(ledger.state(key(1, 0)), Some(BundleState::Committed));
}

#[test]
fn failed_prepare_keeps_bundles_committed_before_the_call() {
    let mut n = node();
    let mut ledger = BundleLedger::new();
    let first = [spec(1, 0, &[(CPU, 3.0)])];
    assert!(ledger.prepare(&mut n, &first));
    ledger.commit(&mut n, &first);
    let both = [spec(1, 0, &[(CPU, 3.0)]), spec(1, 1, &[(CPU, 3.0)])];
    assert!(!ledger.prepare(&mut n, &both));
    assert_eq!(ledger.state(key(1, 0)), Some(BundleState::Committed));
    assert_eq!(ledger.state(key(1, 1)), None);
}

#[test]
fn prepare_of_prepared_bundle_reserves_again() {
    let mut n = node();
    let mut ledger = BundleLedger::new();
    assert!(ledger.prepare(&mut n, &[spec(1, 0, &[(CPU, 3.0)])]));
    // Same key, new shape: the old reservation is returned first, so 4 CPUs fit.
    assert!(ledger.prepare(&mut n, &[spec(1, 0, &[(CPU, 4.0)])]));
    assert_eq!(n.available().get(CPU), FixedPoint::ZERO);
    assert_eq!(ledger.allocation(key(1, 0)).unwrap().to_resource_set(), rs(&[(CPU, 4.0)]));
}

#[test]
fn commit_of_unknown_bundle_is_ignored_and_commit_is_idempotent() {
    let mut n = node();
    let before = n.clone();
    let mut ledger = BundleLedger::new();
    ledger.commit(&mut n, &[spec(1, 0, &[(CPU, 1.0)])]);
    assert_eq!(n, before);
    let b = [spec(1, 0, &[(CPU, 1.0)])];
    assert!(ledger.prepare(&mut n, &b));
    ledger.commit(&mut n, &b);
    let once = n.clone();
    ledger.commit(&mut n, &b);
    assert_eq!(n, once);
}

#[test]
fn return_of_prepared_or_committed_restores_node_and_unknown_is_noop() {
    let mut n = node();
    let before = n.clone();
    let mut ledger = BundleLedger::new();
    assert!(ledger.prepare(&mut n, &[spec(1, 0, &[(CPU, 1.0)]), spec(1, 1, &[(GPU, 1.0)])]));
    ledger.commit(&mut n, &[spec(1, 1, &[])]);
    assert!(ledger.return_bundle(&mut n, key(1, 0)));
    assert!(ledger.return_bundle(&mut n, key(1, 1)));
    assert!(!ledger.return_bundle(&mut n, key(1, 1)));
    assert_eq!(n, before);
}

#[test]
fn wildcard_survives_while_other_bundles_of_the_group_remain() {
    let mut n = node();
    let mut ledger = BundleLedger::new();
    let b = [spec(1, 0, &[(CPU, 1.0)]), spec(1, 1, &[(CPU, 1.0)]), spec(2, 0, &[(CPU, 1.0)])];
    assert!(ledger.prepare(&mut n, &b));
    ledger.commit(&mut n, &b);
    ledger.return_bundle(&mut n, key(1, 0));
    let total = n.total();
    assert!(!total.contains(&format_indexed(CPU, 0, pg(1))));
    assert_eq!(total.get(&format_wildcard(CPU, pg(1))), fp(1.0));
    assert_eq!(total.get(&format_wildcard(BUNDLE_RESOURCE, pg(1))), fp(1000.0));
    ledger.return_bundle(&mut n, key(1, 1));
    assert!(!n.total().contains(&format_wildcard(CPU, pg(1))));
    assert!(!n.total().contains(&format_wildcard(BUNDLE_RESOURCE, pg(1))));
    assert_eq!(ledger.bundles_of(pg(2)), vec![key(2, 0)]);
    assert!(ledger.bundles_of(pg(1)).is_empty());
}

#[test]
fn gpu_bundle_resources_reuse_the_reserved_instances() {
    let mut n = node();
    let mut ledger = BundleLedger::new();
    let _other = n.try_allocate(&rs(&[(GPU, 1.0)])).unwrap(); // takes instance 0
    let b = [spec(1, 0, &[(GPU, 0.5)])];
    assert!(ledger.prepare(&mut n, &b));
    ledger.commit(&mut n, &b);
    let name = format_indexed(GPU, 0, pg(1));
    assert_eq!(n.instance_totals(&name), Some(&[FixedPoint::ZERO, fp(0.5)][..]));
    let task = n.try_allocate(&rs(&[(&name, 0.5)])).unwrap();
    assert_eq!(task.instance_mapping(), vec![(name.clone(), vec![(1, 0.5)])]);
    n.free(&task);
    ledger.return_bundle(&mut n, key(1, 0));
    assert!(!n.total().contains(&name));
}

#[test]
fn release_unused_returns_bundles_not_in_use() {
    let mut n = node();
    let mut ledger = BundleLedger::new();
    let b = [spec(1, 0, &[(CPU, 1.0)]), spec(1, 1, &[(CPU, 1.0)]), spec(2, 0, &[(CPU, 1.0)])];
    assert!(ledger.prepare(&mut n, &b));
    ledger.commit(&mut n, &b[..2]);
    let returned = ledger.release_unused(&mut n, &[key(1, 1)]);
    assert_eq!(returned, vec![key(1, 0), key(2, 0)]);
    assert_eq!(ledger.bundles_of(pg(1)), vec![key(1, 1)]);
    assert_eq!(n.available().get(CPU), fp(3.0));
}

#[test]
fn any_sequence_that_returns_everything_restores_the_node_exactly() {
    let total = rs(&[(CPU, 8.0), (GPU, 4.0), (MEMORY, 1000.0), ("custom", 2.5)]);
    let shapes: [&[(&str, f64)]; 5] = [
        &[(CPU, 0.1)],
        &[(CPU, 1.3), (GPU, 0.3)],
        &[(GPU, 2.0), (MEMORY, 333.3)],
        &[("custom", 0.7), (CPU, 0.25)],
        &[],
    ];
    for seed in 0..50 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut n = NodeResources::new(&total, &[GPU]);
        let orig = n.clone();
        let mut ledger = BundleLedger::new();
        for _ in 0..60 {
            let p = rng.u8(0..3);
            let idx = rng.i64(0..3);
            let s = spec(p, idx, shapes[rng.usize(0..shapes.len())]);
            match rng.u8(0..4) {
                0 => {
                    ledger.prepare(&mut n, std::slice::from_ref(&s));
                }
                1 => ledger.commit(&mut n, std::slice::from_ref(&s)),
                2 => {
                    ledger.return_bundle(&mut n, s.key);
                }
                _ => {
                    let keep: Vec<_> = ledger.bundles_of(pg(p)).into_iter().take(1).collect();
                    ledger.release_unused(&mut n, &keep);
                }
            }
        }
        ledger.release_unused(&mut n, &[]);
        assert!(ledger.is_empty());
        assert_eq!(n.total(), orig.total(), "seed {seed}");
        assert_eq!(n.available(), orig.available(), "seed {seed}");
        assert_eq!(n, orig, "seed {seed}");
    }
}
