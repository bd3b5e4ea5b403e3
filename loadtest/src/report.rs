//! The end-of-run report: a two-column summary table for people, or one JSON object (`--json`),
//! with latency percentiles from the HDR histogram, the client's own CPU use and every error.

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles of a nanosecond histogram; `None` when it is empty.
    pub fn from_ns(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            p50: us(h.value_at_quantile(0.5)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        })
    }
}

/// The client's own CPU use over the measured phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    /// User + system CPU seconds.
    pub seconds: f64,
    /// Wall-clock seconds of the phase.
    pub wall: f64,
    /// Client worker threads (the CPUs it ran on).
    pub workers: usize,
    /// The server's CPU seconds over the same phase (`--server-pid`).
    pub server: Option<f64>,
}

impl CpuUse {
    /// CPU time as a percentage of wall time (100 = one CPU busy).
    pub fn percent(&self) -> f64 {
        if self.wall > 0.0 {
            self.seconds / self.wall * 100.0
        } else {
            0.0
        }
    }

    /// More than 90 % of the client's CPUs were busy: the figures may be the client's limit.
    pub fn saturated(&self) -> bool {
        self.percent() > 90.0 * self.workers as f64
    }

    /// The server's CPU time as a percentage of wall time, when known.
    pub fn server_percent(&self) -> Option<f64> {
        self.server
            .filter(|_| self.wall > 0.0)
            .map(|s| s / self.wall * 100.0)
    }
}

/// One summary row.
#[derive(Debug, Clone)]
struct Row {
    key: &'static str,
    label: &'static str,
    value: Value,
}

/// A scenario's result.
#[derive(Debug, Clone)]
pub struct Report {
    scenario: &'static str,
    rows: Vec<Row>,
    latency: Option<(&'static str, Latency)>,
    cpu: Option<CpuUse>,
    errors: Vec<String>,
    notes: Vec<String>,
}

/// `1234567.0` as `1.23M`, for the progress line.
pub fn si(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.2}G", x / 1e9),
        x if x >= 1e6 => format!("{:.2}M", x / 1e6),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            if x.abs() >= 100.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        }
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            rows: Vec::new(),
            latency: None,
            cpu: None,
            errors: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row: `key` in JSON, `label` in the table.
    pub fn row(&mut self, key: &'static str, label: &'static str, value: impl Into<Value>) {
        self.rows.push(Row {
            key,
            label,
            value: value.into(),
        });
    }

    /// Sets the latency figures and what they measure.
    pub fn latency(&mut self, what: &'static str, latency: Option<Latency>) {
        self.latency = latency.map(|l| (what, l));
    }

    /// Sets the client's CPU use; a saturated client adds a warning.
    pub fn cpu(&mut self, cpu: CpuUse) {
        self.cpu = Some(cpu);
        if cpu.saturated() {
            self.note(format!(
                "the client used {:.0}% CPU on {} worker(s): the load client, not the server, may be the bottleneck (try more --workers)",
                cpu.percent(),
                cpu.workers
            ));
        }
    }

    /// Records an error: the run fails.
    pub fn error(&mut self, e: impl Into<String>) {
        self.errors.push(e.into());
    }

    /// Records a warning that does not fail the run.
    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// Adds an error when `count` is nonzero (`what` names it).
    pub fn error_if(&mut self, count: u64, what: &str) {
        if count > 0 {
            self.error(format!("{count} {what}"));
        }
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("scenario".into(), self.scenario.into());
        m.insert("ok".into(), self.errors.is_empty().into());
        for r in &self.rows {
            m.insert(r.key.into(), r.value.clone());
        }
        if let Some((what, l)) = &self.latency {
            m.insert(
                "latency_us".into(),
                json!({"measures": what, "count": l.count, "p50": l.p50, "p99": l.p99,
                       "p99_9": l.p999, "max": l.max, "mean": l.mean}),
            );
        }
        if let Some(c) = &self.cpu {
            m.insert(
                "client_cpu".into(),
                json!({"seconds": c.seconds, "wall_seconds": c.wall, "percent": c.percent(),
                       "workers": c.workers, "saturated": c.saturated()}),
            );
            if let (Some(s), Some(p)) = (c.server, c.server_percent()) {
                m.insert("server_cpu".into(), json!({"seconds": s, "percent": p}));
            }
        }
        m.insert("errors".into(), json!(self.errors));
        m.insert("warnings".into(), json!(self.notes));
        Value::Object(m)
    }

    /// The report as an aligned two-column table.
    pub fn to_table(&self) -> String {
        let mut lines: Vec<(String, String)> = vec![("scenario".into(), self.scenario.into())];
        for r in &self.rows {
            lines.push((r.label.into(), display(&r.value)));
        }
        if let Some((what, l)) = &self.latency {
            lines.push(("latency".into(), format!("{what} ({} samples)", l.count)));
            for (label, v) in [
                ("p50", l.p50),
                ("p99", l.p99),
                ("p99.9", l.p999),
                ("max", l.max),
            ] {
                lines.push((format!("  {label}"), format!("{v:.1} µs")));
            }
        }
        if let Some(c) = &self.cpu {
            lines.push((
                "client CPU".into(),
                format!(
                    "{:.2} s in {:.2} s = {:.0}% (of {} worker(s): {:.0}% max)",
                    c.seconds,
                    c.wall,
                    c.percent(),
                    c.workers,
                    100.0 * c.workers as f64
                ),
            ));
            if let (Some(s), Some(p)) = (c.server, c.server_percent()) {
                lines.push(("server CPU".into(), format!("{s:.2} s = {p:.0}%")));
            }
        }
        for n in &self.notes {
            lines.push(("warning".into(), n.clone()));
        }
        let result = if self.errors.is_empty() {
            "OK".to_owned()
        } else {
            format!("FAILED: {}", self.errors.join("; "))
        };
        lines.push(("result".into(), result));
        let width = lines
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in lines {
            out.push_str(&format!("{k:<width$}  {v}\n"));
        }
        out
    }

    /// Prints the table or the JSON on stdout; an error when the run failed.
    pub fn finish(self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", self.to_json());
        } else {
            print!("{}", self.to_table());
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{} failed: {}", self.scenario, self.errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("fanout");
        r.row("members", "members", 1000u64);
        r.row("deliveries_per_second", "deliveries/s", 1_234_567.891);
        r.row("seconds", "seconds", 2.5);
        let mut h = crate::harness::histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        r.latency("publish to delivery", Latency::from_ns(&h));
        r
    }

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut h = crate::harness::histogram();
        assert_eq!(Latency::from_ns(&h), None);
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = Latency::from_ns(&h).unwrap();
        assert_eq!(l.count, 1000);
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.p999 - 999.0).abs() < 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() < 1.0, "{l:?}");
    }

    #[test]
    fn table_aligns_rows_and_says_ok() {
        let mut r = sample();
        r.cpu(CpuUse {
            seconds: 1.0,
            wall: 2.0,
            workers: 1,
            server: None,
        });
        let t = r.to_table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["scenario", "fanout"]
        );
        assert!(t.contains("deliveries/s  "), "{t}");
        assert!(t.contains("1234568\n"), "{t}");
        assert!(t.contains("seconds       ") && t.contains("2.50\n"), "{t}");
        assert!(
            t.contains("  p99.9") && t.contains("999.") && t.contains(" µs"),
            "{t}"
        );
        assert!(t.contains("50%"), "{t}");
        assert!(!t.contains("warning") && !t.contains("server CPU"), "{t}");
        assert!(lines.last().unwrap().ends_with("OK"), "{t}");
        let col = lines[0].find("fanout").unwrap();
        assert!(lines.iter().all(|l| l.chars().count() > col), "{t}");
        assert!(r.finish(false).is_ok());
    }

    #[test]
    fn errors_and_a_busy_client_show_in_both_forms() {
        let mut r = sample();
        r.cpu(CpuUse {
            seconds: 1.9,
            wall: 2.0,
            workers: 1,
            server: Some(1.5),
        });
        r.error_if(0, "lost");
        r.error_if(3, "lost");
        r.error_if(2, "duplicated");
        let t = r.to_table();
        assert!(t.contains("may be the bottleneck"), "{t}");
        assert!(
            t.contains("server CPU") && t.contains("  1.50 s = 75%"),
            "{t}"
        );
        assert!(
            t.contains("server CPU") && t.contains("  1.50 s = 75%"),
            "{t}"
        );
        assert!(t.ends_with("FAILED: 3 lost; 2 duplicated\n"), "{t}");
        let j = r.to_json();
        assert_eq!(j["ok"], false);
        assert_eq!(j["members"], 1000);
        assert_eq!(j["errors"], json!(["3 lost", "2 duplicated"]));
        assert_eq!(j["client_cpu"]["saturated"], true);
        assert_eq!(j["server_cpu"]["percent"], 75.0);
        assert_eq!(j["server_cpu"]["percent"], 75.0);
        assert_eq!(j["latency_us"]["count"], 1000);
        assert!(j["warnings"][0].as_str().unwrap().contains("bottleneck"));
        assert!(r.finish(true).is_err());
    }

    #[test]
    fn rates_read_well_on_the_progress_line() {
        assert_eq!(si(12.0), "12");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(1_234_567.0), "1.23M");
    }
}
