use super::*;
use crate::logic::resources::{CPU, OBJECT_STORE_MEMORY};

fn id(i: u8) -> NodeId {
    NodeId([i; NodeId::LEN])
}

fn rs(pairs: &[(&str, f64)]) -> ResourceSet {
    ResourceSet::from_f64_map(pairs.iter().map(|(k, v)| (k.to_string(), *v)))
}

/// A node with `cpus` CPUs of which `free` are available.
fn cpu(cpus: f64, free: f64) -> NodeView {
    let mut n = NodeView::new(rs(&[(CPU, cpus)]));
    n.available = rs(&[(CPU, free)]);
    n
}

fn gpu(cpus: f64, free: f64) -> NodeView {
    let mut n = cpu(cpus, free);
    n.total.set(GPU, FixedPoint::ONE);
    n.available.set(GPU, FixedPoint::ONE);
    n
}

/// 4 free CPUs but all memory used: score 1.0 while CPU-available.
fn mem_full() -> NodeView {
    let mut n = NodeView::new(rs(&[(CPU, 4.0), ("memory", 10.0)]));
    n.available = rs(&[(CPU, 4.0)]);
    n
}

fn with(mut n: NodeView, f: impl FnOnce(&mut NodeView)) -> NodeView {
    f(&mut n);
    n
}

fn view(local: u8, nodes: Vec<(u8, NodeView)>) -> ClusterView {
    ClusterView { local: id(local), nodes: nodes.into_iter().map(|(i, n)| (id(i), n)).collect() }
}

struct Case {
    name: &'static str,
    view: ClusterView,
    req: ResourceSet,
    strategy: Strategy,
    opts: PolicyOptions,
    want: Decision,
}

impl Case {
    fn opts(mut self, f: impl FnOnce(&mut PolicyOptions)) -> Self {
        f(&mut self.opts);
        self
    }

    fn strategy(mut self, s: Strategy) -> Self {
        self.strategy = s;
        self
    }
}

fn case(name: &'static str, view: ClusterView, req: ResourceSet, want: Decision) -> Case {
    let (strategy, opts) = (Strategy::Default, PolicyOptions::default());
    Case { name, view, req, strategy, opts, want }
}

fn check(cases: &[Case]) {
    for c in cases {
        let mut rng = fastrand::Rng::with_seed(1);
        let got = pick_node(&c.view, &c.req, c.strategy, &c.opts, &mut rng, &mut 0);
        assert_eq!(got, c.want, "case: {}", c.name);
    }
}

fn one_cpu() -> ResourceSet {
    rs(&[(CPU, 1.0)])
}

fn cpus(n: f64) -> ResourceSet {
    rs(&[(CPU, n)])
}

fn force(o: &mut PolicyOptions) {
    o.force_spillback = true;
}

fn plasma(o: &mut PolicyOptions) {
    o.requires_object_store_memory = true;
}

fn dead(n: NodeView) -> NodeView {
    with(n, |n| n.alive = false)
}

fn pulls(n: NodeView) -> NodeView {
    with(n, |n| n.object_pulls_queued = true)
}

use Decision::{Infeasible, Unavailable};

fn at(i: u8) -> Decision {
    Decision::Node(id(i))
}

#[test]
fn hybrid_scoring_table() {
    check(&[
        case("idle local wins", view(1, vec![(1, cpu(4., 4.)), (2, cpu(4., 4.))]), one_cpu(), at(1)),
        case("below threshold ties, local wins", view(2, vec![(1, cpu(4., 4.)), (2, cpu(10., 6.))]), one_cpu(), at(2)),
        case("loaded local loses to idle remote", view(2, vec![(1, cpu(4., 4.)), (2, cpu(4., 1.))]), one_cpu(), at(1)),
        case(
            "lowest score above threshold wins",
            view(1, vec![(1, cpu(10., 3.)), (2, cpu(10., 4.)), (3, cpu(10., 2.))]),
            one_cpu(),
            at(2),
        ),
        case("preferred unknown: local", view(2, vec![(1, cpu(4., 4.)), (2, cpu(4., 4.))]), one_cpu(), at(2))
            .opts(|o| o.preferred = Some(id(9))),
        case(
            "preferred remote wins ties",
            view(1, vec![(1, cpu(4., 4.)), (2, cpu(4., 4.)), (3, cpu(4., 4.))]),
            one_cpu(),
            at(3),
        )
        .opts(|o| o.preferred = Some(id(3))),
        case("empty request fits anywhere", view(1, vec![(1, cpu(4., 0.))]), ResourceSet::new(), at(1)),
    ]);
}

#[test]
fn availability_and_feasibility_table() {
    check(&[
        case(
            "locally infeasible spills to available",
            view(1, vec![(1, cpu(1., 1.)), (2, cpu(8., 8.))]),
            cpus(4.),
            at(2),
        ),
        case(
            "all busy, local feasible: queue locally",
            view(1, vec![(1, cpu(4., 0.)), (2, cpu(4., 0.))]),
            one_cpu(),
            at(1),
        ),
        case(
            "all busy, only remote feasible",
            view(1, vec![(1, cpu(1., 0.)), (2, cpu(4., 0.))]),
            cpus(2.),
            Unavailable,
        ),
        case("nothing fits totals", view(1, vec![(1, cpu(4., 4.)), (2, cpu(4., 4.))]), cpus(5.), Infeasible),
        case("unknown resource", view(1, vec![(1, cpu(4., 4.))]), rs(&[("custom", 1.0)]), Infeasible),
        case("empty view", view(1, vec![]), one_cpu(), Infeasible),
        case("dead node never chosen", view(1, vec![(1, cpu(1., 1.)), (2, dead(cpu(8., 8.)))]), cpus(4.), Infeasible),
        case(
            "draining node never chosen",
            view(1, vec![(1, cpu(4., 0.)), (2, with(cpu(8., 8.), |n| n.draining = true))]),
            one_cpu(),
            at(1),
        ),
        case("dead local not queued on", view(1, vec![(1, dead(cpu(4., 4.))), (2, cpu(4., 4.))]), one_cpu(), at(2)),
    ]);
}

#[test]
fn force_spillback_table() {
    check(&[
        case("excludes available local", view(1, vec![(1, cpu(4., 4.)), (2, cpu(4., 4.))]), one_cpu(), at(2))
            .opts(force),
        case(
            "only local feasible: unavailable",
            view(1, vec![(1, cpu(4., 4.)), (2, cpu(1., 1.))]),
            cpus(2.),
            Unavailable,
        )
        .opts(force),
        case("requires availability", view(1, vec![(1, cpu(4., 4.)), (2, cpu(4., 0.))]), one_cpu(), Unavailable)
            .opts(force),
    ]);
}

#[test]
fn gpu_avoidance_table() {
    check(&[
        case("cpu task avoids gpu local", view(1, vec![(1, gpu(4., 4.)), (2, cpu(4., 4.))]), one_cpu(), at(2)),
        case("avoidance off keeps local", view(1, vec![(1, gpu(4., 4.)), (2, cpu(4., 4.))]), one_cpu(), at(1))
            .opts(|o| o.avoid_gpu_nodes = false),
        case("gpu node used when others busy", view(1, vec![(1, gpu(4., 4.)), (2, cpu(4., 0.))]), one_cpu(), at(1)),
        case(
            "gpu request goes to gpu node",
            view(1, vec![(1, cpu(4., 4.)), (2, gpu(4., 4.))]),
            rs(&[(GPU, 1.0)]),
            at(2),
        ),
    ]);
}

#[test]
fn pull_backpressure_table() {
    check(&[
        case(
            "busy remote with pulls beats loaded local",
            view(1, vec![(1, cpu(4., 0.)), (2, pulls(cpu(4., 4.)))]),
            one_cpu(),
            Unavailable,
        )
        .opts(plasma),
        case(
            "remote with pulls loses busy tie to local",
            view(1, vec![(1, cpu(4., 0.)), (2, pulls(mem_full()))]),
            one_cpu(),
            at(1),
        )
        .opts(plasma),
        case(
            "remote with pulls, local infeasible",
            view(1, vec![(1, cpu(1., 1.)), (2, pulls(cpu(4., 4.)))]),
            cpus(2.),
            Unavailable,
        )
        .opts(plasma),
        case(
            "pulls ignored without plasma args",
            view(1, vec![(1, cpu(4., 0.)), (2, pulls(cpu(4., 4.)))]),
            one_cpu(),
            at(2),
        ),
        case("local pulls ignored", view(1, vec![(1, pulls(cpu(4., 4.))), (2, cpu(4., 4.))]), one_cpu(), at(1))
            .opts(plasma),
    ]);
}

#[test]
fn node_affinity_table() {
    let hard = |n| Strategy::NodeAffinity { node: id(n), soft: false };
    let soft = |n| Strategy::NodeAffinity { node: id(n), soft: true };
    let v = |local| view(local, vec![(1, cpu(4., 4.)), (2, cpu(4., 0.)), (3, dead(cpu(4., 4.))), (4, cpu(1., 1.))]);
    check(&[
        case("hard busy target still chosen", v(1), one_cpu(), at(2)).strategy(hard(2)),
        case("hard dead target", v(1), one_cpu(), Infeasible).strategy(hard(3)),
        case("hard unknown target", v(1), one_cpu(), Infeasible).strategy(hard(9)),
        case("hard too-small target", v(1), cpus(2.), Infeasible).strategy(hard(4)),
        case("soft dead target falls back", v(1), one_cpu(), at(1)).strategy(soft(3)),
        case("soft too-small target falls back", v(4), cpus(2.), at(1)).strategy(soft(4)),
        case("soft busy target kept", v(1), one_cpu(), at(2)).strategy(soft(2)),
    ]);
}

#[test]
fn spread_round_robins_from_cursor_and_skips_unavailable() {
    let v = view(1, vec![(1, cpu(4., 4.)), (2, cpu(4., 0.)), (3, cpu(4., 4.)), (4, cpu(4., 4.))]);
    let (mut rng, mut cursor) = (fastrand::Rng::with_seed(3), 0);
    let opts = PolicyOptions::default();
    let picks: Vec<Decision> =
        (0..4).map(|_| pick_node(&v, &one_cpu(), Strategy::Spread, &opts, &mut rng, &mut cursor)).collect();
    let want = [1, 3, 4, 1].map(|i| Decision::Node(id(i)));
    assert_eq!(picks, want);
    assert_eq!(cursor, 1);
}

#[test]
fn spread_with_force_spillback_skips_local() {
    let v = view(1, vec![(1, cpu(4., 4.)), (2, cpu(4., 4.))]);
    let opts = PolicyOptions { force_spillback: true, ..PolicyOptions::default() };
    let (mut rng, mut cursor) = (fastrand::Rng::with_seed(3), 0);
    for _ in 0..3 {
        let d = pick_node(&v, &one_cpu(), Strategy::Spread, &opts, &mut rng, &mut cursor);
        assert_eq!(d, Decision::Node(id(2)));
    }
    let busy = view(1, vec![(1, cpu(4., 4.)), (2, cpu(4., 0.))]);
    let d = pick_node(&busy, &one_cpu(), Strategy::Spread, &opts, &mut rng, &mut cursor);
    assert_eq!(d, Decision::Unavailable);
}

#[test]
fn spread_without_available_nodes_queues_locally_only_when_round_robin_lands_on_local() {
    let v = view(2, vec![(1, cpu(4., 0.)), (2, cpu(4., 0.))]);
    let opts = PolicyOptions::default();
    let mut rng = fastrand::Rng::with_seed(3);
    let mut cursor = 0;
    let d = pick_node(&v, &one_cpu(), Strategy::Spread, &opts, &mut rng, &mut cursor);
    assert_eq!((d, cursor), (Decision::Unavailable, 0));
    cursor = 1;
    let d = pick_node(&v, &one_cpu(), Strategy::Spread, &opts, &mut rng, &mut cursor);
    assert_eq!((d, cursor), (Decision::Node(id(2)), 0));
}

#[test]
fn top_k_picks_uniformly_among_the_best_k() {
    // 11 nodes: k = max(1, 1, floor(11 * 0.2)) = 2. Local excluded; remotes 2..=11 tie at 0.
    let mut nodes: Vec<(u8, NodeView)> = (2..=11).map(|i| (i, cpu(4., 4.))).collect();
    nodes.push((1, cpu(4., 4.)));
    let v = view(1, nodes);
    let opts = PolicyOptions { force_spillback: true, ..PolicyOptions::default() };
    let mut rng = fastrand::Rng::with_seed(42);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let mut cursor = 0;
        match pick_node(&v, &one_cpu(), Strategy::Default, &opts, &mut rng, &mut cursor) {
            Decision::Node(n) => seen.insert(n),
            other => panic!("unexpected {other:?}"),
        };
    }
    assert_eq!(seen, [id(2), id(3)].into_iter().collect());
}

#[test]
fn top_k_orders_by_score_then_id() {
    // Scores: node 2 = 0.75, node 3 = 0.6, node 4 = 0 (below threshold), node 5 = 0.
    let v = view(1, vec![(1, cpu(4., 0.)), (2, cpu(4., 1.)), (3, cpu(10., 4.)), (4, cpu(10., 6.)), (5, cpu(4., 4.))]);
    let opts = PolicyOptions { top_k_absolute: 2, ..PolicyOptions::default() };
    let mut rng = fastrand::Rng::with_seed(7);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        if let Decision::Node(n) = pick_node(&v, &one_cpu(), Strategy::Default, &opts, &mut rng, &mut 0) {
            seen.insert(n);
        }
    }
    assert_eq!(seen, [id(4), id(5)].into_iter().collect());
}

#[test]
fn object_store_memory_counts_in_the_score() {
    let mut local = NodeView::new(rs(&[(CPU, 4.0), (OBJECT_STORE_MEMORY, 100.0)]));
    local.available = rs(&[(CPU, 4.0), (OBJECT_STORE_MEMORY, 10.0)]);
    assert!((local.score(0.5) - 0.9).abs() < 1e-9);
    let v = view(1, vec![(1, local), (2, cpu(4., 4.))]);
    check(&[case("object store load counts", v, one_cpu(), at(2))]);
}

#[test]
fn subtract_on_spillback_clamps_and_refuses_local_unknown_and_unavailable() {
    let mut v = view(1, vec![(1, cpu(4., 4.)), (2, with(cpu(4., 1.5), |n| n.available.set("x", FixedPoint::ONE)))]);
    assert!(!subtract_on_spillback(&mut v, id(1), &one_cpu()));
    assert!(!subtract_on_spillback(&mut v, id(9), &one_cpu()));
    assert!(!subtract_on_spillback(&mut v, id(2), &rs(&[(CPU, 2.0)])));
    assert!(subtract_on_spillback(&mut v, id(2), &rs(&[(CPU, 1.5), ("x", 1.0)])));
    assert_eq!(v.nodes[&id(2)].available, ResourceSet::new());
    assert_eq!(v.nodes[&id(1)].available, rs(&[(CPU, 4.0)]));
}
