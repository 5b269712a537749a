//! Results and their two renderings: the JSON object of DESIGN.md §7 (exactly its shape)
//! and a human table that also shows each baseline's own tails, min/max and the host.
//!
//! Latency cases carry p50 as the value with p99 and p999; throughput cases carry the
//! rate and `null` tails (their per-operation latency under load is in the table's note).
//! `ratio` is value / baseline value: above 1 a latency is slower than raw, below 1 a
//! throughput is lower than raw.

use crate::measure::Rate;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;

/// Unit of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Microseconds (latencies).
    Us,
    /// Operations per second (throughputs).
    OpsPerS,
    /// Gigabytes (1e9 bytes) per second (bulk copies).
    GBps,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Us => "us",
            Self::OpsPerS => "ops/s",
            Self::GBps => "GB/s",
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
        let lo = r.runs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.runs.iter().copied().fold(0.0, f64::max);
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
                "{} runs {lo:.0}..{hi:.0}/s; per-op p50 {:.1} us p99 {:.1} us; one client's ops in a run {}..{}",
                r.runs.len(),
                us(l.value_at_quantile(0.5)),
                us(l.value_at_quantile(0.99)),
                r.per_client.0,
                r.per_client.1
            ),
        }
    }

    /// A bandwidth case: `bytes` moved per operation, times in `h` (ns). The value is the
    /// bandwidth at the median time; the tails are at the p99 and p99.9 times (slower).
    pub(crate) fn gbps(case: impl Into<String>, bytes: u64, h: &Histogram<u64>) -> Self {
        let at = |q: f64| bytes as f64 / h.value_at_quantile(q).max(1) as f64;
        Self {
            case: case.into(),
            unit: Unit::GBps,
            value: at(0.5),
            p99: Some(at(0.99)),
            p999: Some(at(0.999)),
            min: Some(bytes as f64 / h.max().max(1) as f64),
            max: Some(bytes as f64 / h.min().max(1) as f64),
            n: h.len(),
            note: format!("{} bytes; median {:.1} us", bytes, us(h.value_at_quantile(0.5))),
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

/// CPU accounting snapshot: machine-wide jiffies from `/proc/stat` and this process's
/// own (children included once reaped, so the node this bench started counts as ours).
#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    total: u64,
    busy: u64,
    steal: u64,
    own: u64,
}

impl CpuTimes {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> =
            stat.lines().next().unwrap_or("").split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: u64 = (0..8).map(at).sum();
        let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the parenthesised command name; utime is field 14 overall.
        let rest = me.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let own: u64 = rest.split_whitespace().skip(11).take(4).map(|x| x.parse().unwrap_or(0)).sum();
        Self { total, busy: total - at(3) - at(4), steal: at(7), own }
    }

    /// Share of the machine used by other processes, and stolen by the hypervisor, since
    /// `start`, in percent.
    fn others_since(&self, start: &Self) -> Option<(f64, f64)> {
        let total = self.total.checked_sub(start.total).filter(|&t| t > 0)? as f64;
        let busy = self.busy.saturating_sub(start.busy);
        let own = self.own.saturating_sub(start.own);
        let steal = self.steal.saturating_sub(start.steal);
        Some((100.0 * busy.saturating_sub(own + steal) as f64 / total, 100.0 * steal as f64 / total))
    }
}

/// Above this share of the machine used by others, the report warns.
const NOISY_PERCENT: f64 = 5.0;

#[derive(Serialize)]
struct JsonReport<'a> {
    suite: &'a str,
    host: JsonHost<'a>,
    results: Vec<JsonResult<'a>>,
}

#[derive(Serialize)]
struct JsonHost<'a> {
    cpus: usize,
    kernel: &'a str,
}

#[derive(Serialize)]
struct JsonResult<'a> {
    case: &'a str,
    unit: &'static str,
    value: f64,
    p99: Option<f64>,
    p999: Option<f64>,
    baseline: JsonBaseline<'a>,
    ratio: f64,
}

#[derive(Serialize)]
struct JsonBaseline<'a> {
    case: &'a str,
    value: f64,
}

/// A suite's findings.
#[derive(Debug)]
pub(crate) struct Report {
    suite: String,
    host: Host,
    start: CpuTimes,
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
        Self {
            suite: suite.into(),
            host: Host::probe(),
            start: CpuTimes::now(),
            notes: Vec::new(),
            results: Vec::new(),
        }
    }

    /// A line for the table's header (setup, placement): human output only.
    pub(crate) fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// Records a case beside the baseline measured for it in the same run.
    pub(crate) fn push(&mut self, case: Measured, baseline: Measured) {
        self.results.push((case, baseline));
    }

    /// How much of the machine others used during the run, with a warning when that may
    /// have disturbed the numbers. Call after the suite (and its node) finished.
    pub(crate) fn quietness(&self) -> String {
        let Some((others, steal)) = CpuTimes::now().others_since(&self.start) else {
            return "machine: CPU accounting unavailable".into();
        };
        let mut line =
            format!("machine during the run: other processes {others:.1}% of all CPUs, hypervisor steal {steal:.1}%");
        if others + steal > NOISY_PERCENT {
            line.push_str(" -- WARNING: a busy machine; tails and throughputs are disturbed");
        }
        line
    }

    /// The JSON object of DESIGN.md §7, keys in the documented order.
    pub(crate) fn to_json(&self) -> String {
        let results = self
            .results
            .iter()
            .map(|(c, b)| JsonResult {
                case: &c.case,
                unit: c.unit.as_str(),
                value: round(c.value),
                p99: c.p99.map(round),
                p999: c.p999.map(round),
                baseline: JsonBaseline { case: &b.case, value: round(b.value) },
                ratio: round(c.value / b.value),
            })
            .collect();
        let doc = JsonReport {
            suite: &self.suite,
            host: JsonHost { cpus: self.host.cpus, kernel: &self.host.kernel },
            results,
        };
        serde_json::to_string(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
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
        let _ = writeln!(out, "{}", self.quietness());
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
        Unit::GBps => format!("{:.3}", m.value),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_exactly_the_documented_shape() {
        let mut h = crate::measure::histogram();
        for v in [1000, 2000, 3000] {
            h.record(v).unwrap();
        }
        let mut r = Report::new("rpc");
        r.push(Measured::latency("local_rtt", &h), Measured::latency("raw_uds_rtt", &h));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&v), ["host", "results", "suite"]);
        assert_eq!(keys(&v["host"]), ["cpus", "kernel"]);
        let res = &v["results"][0];
        assert_eq!(keys(res), ["baseline", "case", "p99", "p999", "ratio", "unit", "value"]);
        assert_eq!(keys(&res["baseline"]), ["case", "value"]);
        assert_eq!(res["unit"], "us");
        assert_eq!(res["value"], 2.0);
        assert_eq!(res["ratio"], 1.0);
        let text = r.to_json();
        assert!(text.starts_with(r#"{"suite":"rpc","host":{"cpus":"#), "documented key order: {text}");
    }

    #[test]
    fn throughput_cases_have_null_tails() {
        let run = |rate: f64, ops: u64| Rate {
            ops_per_s: rate,
            ops,
            per_client: (ops, ops),
            latency: crate::measure::histogram(),
            runs: vec![rate],
            elapsed: std::time::Duration::from_secs(2),
        };
        let rate = Rate::merge(vec![run(10.0, 20), run(10.0, 20)]).unwrap();
        let base = run(40.0, 80);
        let mut r = Report::new("rpc");
        r.push(Measured::rate("tcp_rpc_throughput_c1", &rate), Measured::rate("raw_tcp_throughput_c1", &base));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let res = &v["results"][0];
        assert_eq!(res["unit"], "ops/s");
        assert!(res["p99"].is_null() && res["p999"].is_null());
        assert_eq!(res["ratio"], 0.25);
        assert!(r.to_table().contains("tcp_rpc_throughput_c1"));
    }
}
