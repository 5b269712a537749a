//! Results and their two renderings: the JSON object of DESIGN.md §7 (exactly its shape)
//! and a human table that also shows each baseline's own tails, min/max and the host.
//!
//! Latency cases carry p50 as the value with p99 and p999; throughput cases carry the
//! rate and `null` tails (their per-operation latency under load is in the table's note).
//! `ratio` is value / baseline value: above 1 a latency is slower than raw, below 1 a
//! throughput is lower than raw.

use crate::measure::Rate;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// Unit of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Microseconds (latencies).
    Us,
    /// Operations per second (throughputs).
    OpsPerS,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Us => "us",
            Self::OpsPerS => "ops/s",
        }
    }
}

/// One measured thing: a real case or a baseline.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    /// Case name (DESIGN.md §7).
    pub(crate) case: String,
    unit: Unit,
    /// Headline: p50 for latencies, the rate for throughputs.
    pub(crate) value: f64,
    p99: Option<f64>,
    p999: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    /// Samples (latency) or operations (throughput).
    n: u64,
    /// Extra human detail.
    note: String,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Measured {
    /// A latency case from a histogram of nanoseconds.
    pub(crate) fn latency(case: impl Into<String>, h: &Histogram<u64>) -> Self {
        Self {
            case: case.into(),
            unit: Unit::Us,
            value: us(h.value_at_quantile(0.5)),
            p99: Some(us(h.value_at_quantile(0.99))),
            p999: Some(us(h.value_at_quantile(0.999))),
            min: Some(us(h.min())),
            max: Some(us(h.max())),
            n: h.len(),
            note: format!("mean {:.2} us, stdev {:.2}", h.mean() / 1000.0, h.stdev() / 1000.0),
        }
    }

    /// A throughput case.
    pub(crate) fn rate(case: impl Into<String>, r: &Rate) -> Self {
        let l = &r.latency;
        Self {
            case: case.into(),
            unit: Unit::OpsPerS,
            value: r.ops_per_s,
            p99: None,
            p999: None,
            min: None,
            max: None,
            n: r.ops,
            note: format!(
                "per-op p50 {:.1} us p99 {:.1} us; per client {}..{} ops",
                us(l.value_at_quantile(0.5)),
                us(l.value_at_quantile(0.99)),
                r.per_client.0,
                r.per_client.1
            ),
        }
    }

    /// Appends to the human note.
    pub(crate) fn with_note(mut self, note: &str) -> Self {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(note);
        self
    }
}

/// The machine the run happened on.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    cpus: usize,
    kernel: String,
    cpu_model: String,
    commit: String,
}

impl Host {
    fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).ok();
        let kernel = match (read("/proc/sys/kernel/ostype"), read("/proc/sys/kernel/osrelease")) {
            (Some(t), Some(r)) => format!("{t} {r}"),
            _ => "unknown".into(),
        };
        let cpu_model = read("/proc/cpuinfo")
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.to_string()))
            .and_then(|l| l.split_once(':').map(|(_, m)| m.trim().to_string()))
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            kernel,
            cpu_model,
            commit: commit(),
        }
    }
}

/// `RAYLET_BENCH_COMMIT`, else `git rev-parse` in the directory of this executable (the
/// target dir usually sits in the checkout), with `+dirty` for uncommitted changes.
fn commit() -> String {
    if let Ok(c) = std::env::var("RAYLET_BENCH_COMMIT") {
        return c;
    }
    let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.to_path_buf()));
    let git = |args: &[&str]| {
        let mut cmd = std::process::Command::new("git");
        if let Some(d) = &dir {
            cmd.arg("-C").arg(d);
        }
        cmd.args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}+dirty")
            } else {
                c
            }
        }
        _ => "unknown".into(),
    }
}

/// A suite's findings.
#[derive(Debug)]
pub(crate) struct Report {
    suite: String,
    host: Host,
    notes: Vec<String>,
    /// (case, its baseline).
    results: Vec<(Measured, Measured)>,
}

fn round(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    (x * 1000.0).round() / 1000.0
}

impl Report {
    /// An empty report of `suite` on this host.
    pub(crate) fn new(suite: &str) -> Self {
        Self { suite: suite.into(), host: Host::probe(), notes: Vec::new(), results: Vec::new() }
    }

    /// A line for the table's header (setup, placement): human output only.
    pub(crate) fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// Records a case beside the baseline measured for it in the same run.
    pub(crate) fn push(&mut self, case: Measured, baseline: Measured) {
        self.results.push((case, baseline));
    }

    /// The JSON object of DESIGN.md §7.
    pub(crate) fn to_json(&self) -> Value {
        let results: Vec<Value> = self
            .results
            .iter()
            .map(|(c, b)| {
                json!({
                    "case": c.case,
                    "unit": c.unit.as_str(),
                    "value": round(c.value),
                    "p99": c.p99.map(round),
                    "p999": c.p999.map(round),
                    "baseline": {"case": b.case, "value": round(b.value)},
                    "ratio": round(c.value / b.value),
                })
            })
            .collect();
        json!({
            "suite": self.suite,
            "host": {"cpus": self.host.cpus, "kernel": self.host.kernel},
            "results": results,
        })
    }

    /// The human table: each baseline once, followed by the cases compared to it.
    pub(crate) fn to_table(&self) -> String {
        let h = &self.host;
        let mut out = String::new();
        let _ = writeln!(out, "raylet-bench {}", self.suite);
        let _ = writeln!(out, "host: {} CPUs ({}), {}, commit {}", h.cpus, h.cpu_model, h.kernel, h.commit);
        for n in &self.notes {
            let _ = writeln!(out, "{n}");
        }
        let _ = writeln!(
            out,
            "\n{:<26} {:>6} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}  note",
            "case", "unit", "p50|rate", "p99", "p999", "min", "max", "n", "ratio"
        );
        let mut shown: Vec<&str> = Vec::new();
        for (c, b) in &self.results {
            if !shown.contains(&b.case.as_str()) {
                shown.push(&b.case);
                row(&mut out, b, None);
            }
            row(&mut out, c, Some(c.value / b.value));
        }
        let _ = writeln!(out, "\nratio = value / baseline (the raw row above it); latencies in us, p50 is the value.");
        out
    }
}

fn row(out: &mut String, m: &Measured, ratio: Option<f64>) {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    let name = if ratio.is_some() { format!("  {}", m.case) } else { m.case.clone() };
    let value = match m.unit {
        Unit::Us => format!("{:.2}", m.value),
        Unit::OpsPerS => format!("{:.0}", m.value),
    };
    let ratio = ratio.map(|r| format!("{r:.2}")).unwrap_or_default();
    let _ = writeln!(
        out,
        "{name:<26} {:>6} {value:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {ratio:>7}  {}",
        m.unit.as_str(),
        f(m.p99),
        f(m.p999),
        f(m.min),
        f(m.max),
        m.n,
        m.note
    );
}
