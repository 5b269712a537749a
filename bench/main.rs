//! raylet-bench: benchmark suites with same-run baselines (DESIGN.md §7).

fn main() {
    let suite = std::env::args().nth(1).unwrap_or_default();
    eprintln!("raylet-bench: unknown suite {suite:?}");
    std::process::exit(2);
}
