//! The suite's report: one JSON document (schema below, versioned by [`SCHEMA`]) with the
//! machine, the profile, the versions, this machine's limits and every figure with its raw
//! samples; and its Markdown summary.
//!
//! A figure is one measured quantity (a variant's time at a size, a path's throughput at an
//! object size, a run's dollars): its `key` is stable across runs (`compare` matches on it),
//! `samples` are every repetition's value, `value` their median. `plot` places it on one of the
//! suite's charts.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The report schema's version: a reader refuses any other.
pub const SCHEMA: u32 = 1;

/// Which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Better {
    /// Seconds, dollars.
    Lower,
    /// Throughput.
    Higher,
}

/// Where a figure goes on a chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlotPoint {
    /// The chart ([`super::plots::CHARTS`]).
    pub chart: String,
    /// The line or bar group it belongs to (a variant, a path).
    pub series: String,
    /// Its position on the x axis (a size, a host count, a query's number, a prediction).
    pub x: f64,
}

/// One measured quantity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// Stable across runs: `sort/1 GiB/planned`.
    pub key: String,
    /// For people.
    pub label: String,
    /// `s`, `MB/s`, `$`.
    pub unit: String,
    /// Which way is better.
    pub better: Better,
    /// Every repetition's value.
    pub samples: Vec<f64>,
    /// Their median.
    pub value: f64,
    /// The limit it is measured against (a key of the report's `limits`), and the fraction of
    /// it reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of_limit: Option<(String, f64)>,
    /// Its place on a chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plot: Option<PlotPoint>,
}

impl Figure {
    /// A figure of `samples` (its value: their median).
    pub fn new(key: &str, label: &str, unit: &str, better: Better, samples: Vec<f64>) -> Self {
        Figure {
            key: key.into(),
            label: label.into(),
            unit: unit.into(),
            better,
            value: crate::stats::median(samples.clone()),
            samples,
            of_limit: None,
            plot: None,
        }
    }

    /// Places it on `chart` in `series` at `x`.
    pub fn plotted(mut self, chart: &str, series: &str, x: f64) -> Self {
        self.plot = Some(PlotPoint { chart: chart.into(), series: series.into(), x });
        self
    }
}

/// The machine the suite ran on (its driver's, for a cluster profile).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// CPU model.
    pub cpu: String,
    /// Cores available to the process.
    pub cores: usize,
    /// Bytes of memory.
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// This machine, from `/proc`.
    pub fn this() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Machine {
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            cpu: cpuinfo
                .lines()
                .find_map(|l| {
                    l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string())
                })
                .unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        }
    }
}

/// What ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    /// Baton's version.
    pub baton: String,
    /// `release` or `debug`.
    pub build: String,
    /// Whether the peers (datafusion-distributed, Ballista) were built in.
    pub peers: bool,
}

/// A variant or part the suite did not run, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// What.
    pub what: String,
    /// Why.
    pub reason: String,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The profile: `local`, `emulated`.
    pub profile: String,
    /// Its settings in words (hosts, instance type, sizes).
    pub settings: BTreeMap<String, String>,
    /// When it started, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// The machine.
    pub machine: Machine,
    /// The versions.
    pub versions: Versions,
    /// This machine's limits, measured first.
    pub limits: Vec<Figure>,
    /// Every other figure.
    pub figures: Vec<Figure>,
    /// What did not run.
    pub skipped: Vec<Skipped>,
    /// The parts that failed, and their errors (the rest of the suite ran on).
    #[serde(default)]
    pub failed: Vec<Skipped>,
    /// Each part's own report, as that benchmark writes it (for detail beyond the figures).
    pub parts: BTreeMap<String, serde_json::Value>,
}

impl Report {
    /// Sets each figure's fraction of the limit named `limit`.
    pub fn relate(&mut self, key_prefix: &str, limit: &str) {
        let Some(l) = self.limits.iter().find(|f| f.key == limit).map(|f| f.value) else {
            return;
        };
        for f in self.figures.iter_mut().filter(|f| f.key.starts_with(key_prefix)) {
            f.of_limit = Some((limit.to_string(), f.value / l));
        }
    }

    /// Writes the report as `report.json` in `dir` (whole or not at all, 0600).
    pub fn save(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        let file = dir.join("report.json");
        write_whole(&file, &serde_json::to_vec_pretty(self)?)?;
        Ok(file)
    }

    /// Reads a report; one of another schema version is refused, naming both versions.
    pub fn load(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let value: serde_json::Value =
            serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", file.display()))?;
        let schema = value.get("schema").and_then(|s| s.as_u64());
        anyhow::ensure!(
            schema == Some(u64::from(SCHEMA)),
            "{} is a report of schema {}, this baton reads schema {SCHEMA}",
            file.display(),
            schema.map_or("(none)".into(), |s| s.to_string())
        );
        serde_json::from_value(value).with_context(|| format!("{} is not a suite report", file.display()))
    }

    /// The Markdown summary: the machine and limits, then a table per part.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# Baton benchmark suite: profile `{}`\n\n{} · {} cores · {:.0} GiB · kernel {} · baton {} ({} build){}\n\n",
            self.profile,
            self.machine.cpu,
            self.machine.cores,
            self.machine.memory_bytes as f64 / (1u64 << 30) as f64,
            self.machine.kernel,
            self.versions.baton,
            self.versions.build,
            if self.versions.peers { ", peers built in" } else { "" }
        );
        if !self.settings.is_empty() {
            let settings: Vec<String> = self.settings.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            md.push_str(&format!("Settings: {}. Took {:.0} s.\n\n", settings.join("; "), self.seconds));
        }
        md.push_str("## This machine's limits\n\n");
        table(&mut md, &self.limits);
        let mut parts: Vec<&str> = Vec::new();
        for f in &self.figures {
            let part = f.key.split('/').next().unwrap_or("");
            if !parts.contains(&part) {
                parts.push(part);
            }
        }
        for part in parts {
            md.push_str(&format!("\n## {part}\n\n"));
            let figures: Vec<Figure> =
                self.figures.iter().filter(|f| f.key.split('/').next() == Some(part)).cloned().collect();
            table(&mut md, &figures);
        }
        if !self.failed.is_empty() {
            md.push_str("\n## Failed\n\n");
            for s in &self.failed {
                md.push_str(&format!("- {}: {}\n", s.what, s.reason));
            }
        }
        if !self.skipped.is_empty() {
            md.push_str("\n## Not run\n\n");
            for s in &self.skipped {
                md.push_str(&format!("- {}: {}\n", s.what, s.reason));
            }
        }
        md
    }
}

/// Writes `bytes` to `file` whole or not at all: into a new private file (0600, created
/// exclusive) beside it, then renamed over it.
pub fn write_whole(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let partial = file.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    let written = (|| -> anyhow::Result<()> {
        let mut f = baton_fabric::private::create_file(&partial)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&partial, file)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written.with_context(|| format!("cannot write {}", file.display()))
}

/// `1.23 s`, `$0.000123`, `845 MB/s`.
pub fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "$" => format!("${value:.6}"),
        "s" if value < 0.1 => format!("{:.2} ms", value * 1e3),
        "s" => format!("{value:.3} s"),
        _ if value >= 100.0 => format!("{value:.0} {unit}"),
        _ => format!("{value:.2} {unit}"),
    }
}

fn table(md: &mut String, figures: &[Figure]) {
    md.push_str("| figure | median | of limit | samples |\n|---|---:|---:|---:|\n");
    for f in figures {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            f.label,
            format_value(f.value, &f.unit),
            f.of_limit.as_ref().map_or("—".into(), |(_, x)| format!("{:.0}%", x * 100.0)),
            f.samples.len()
        ));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) fn sample() -> Report {
        let mut report = Report {
            schema: SCHEMA,
            profile: "local".into(),
            settings: BTreeMap::from([("sizes".to_string(), "1 GiB".to_string())]),
            started_unix_s: 1_800_000_000,
            seconds: 12.5,
            machine: Machine::this(),
            versions: Versions { baton: "0.1.0".into(), build: "debug".into(), peers: false },
            limits: vec![Figure::new(
                super::super::limits::MEMCPY,
                "memory copy",
                "MB/s",
                Better::Higher,
                vec![9000.0, 10000.0, 11000.0],
            )],
            figures: vec![
                Figure::new("sort/1 GiB/planned", "sort 1 GiB, planned", "s", Better::Lower, vec![2.0, 1.0, 3.0])
                    .plotted("sort-size", "planned", 1.0),
                Figure::new("paths/vm-local/1 MiB", "vm-local 1 MiB", "MB/s", Better::Higher, vec![5000.0]),
            ],
            skipped: vec![Skipped { what: "peers".into(), reason: "built without --features peers".into() }],
            failed: vec![Skipped { what: "store".into(), reason: "etcd did not start".into() }],
            parts: BTreeMap::from([("sort".to_string(), serde_json::json!({"workers": 2}))]),
        };
        report.relate("paths/", super::super::limits::MEMCPY);
        report
    }

    #[test]
    fn the_report_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let report = sample();
        assert_eq!(report.figures[0].value, 2.0, "the median of the samples");
        assert_eq!(report.figures[1].of_limit, Some((super::super::limits::MEMCPY.to_string(), 0.5)));
        let file = report.save(dir.path()).unwrap();
        assert_eq!(Report::load(&file).unwrap(), report);
    }

    #[test]
    fn another_schema_or_not_a_report_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.json");
        let mut value = serde_json::to_value(sample()).unwrap();
        value["schema"] = serde_json::json!(SCHEMA + 1);
        std::fs::write(&file, value.to_string()).unwrap();
        let err = format!("{:#}", Report::load(&file).unwrap_err());
        assert!(err.contains(&format!("schema {}", SCHEMA + 1)), "{err}");
        std::fs::write(&file, r#"{"schema": 1, "profile": 3}"#).unwrap();
        assert!(format!("{:#}", Report::load(&file).unwrap_err()).contains("not a suite report"));
        std::fs::write(&file, "garbage").unwrap();
        assert!(format!("{:#}", Report::load(&file).unwrap_err()).contains("not JSON"));
    }

    #[test]
    fn the_markdown_has_a_table_per_part_what_failed_and_what_did_not_run() {
        let md = sample().markdown();
        for expected in [
            "## This machine's limits",
            "## sort",
            "## paths",
            "| sort 1 GiB, planned | 2.000 s |",
            "50%",
            "## Not run",
            "- peers: built without",
            "## Failed",
            "- store: etcd did not start",
        ] {
            assert!(md.contains(expected), "{expected} missing from\n{md}");
        }
    }
}
