//! What a job did: per stage time and tasks, per edge path, bytes and requests.

use std::collections::BTreeMap;
use std::fmt;

use baton_planner::ByteSize;
use baton_shuffle::MapOutput;
use serde::{Deserialize, Serialize};

use crate::driver::{EdgeSpec, JobSpec, StageSpec};
use crate::hosts::Hosts;
use crate::task::TaskReport;
use baton_fabric::path::counted::Requests;

/// A finished job.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job's name.
    pub job: String,
    /// Seconds from the first task to the last.
    pub seconds: f64,
    /// Per stage.
    pub stages: Vec<StageSummary>,
    /// Per edge.
    pub edges: Vec<EdgeSummary>,
    /// Bytes deleted from the paths when the job ended.
    pub freed_bytes: u64,
    /// The committed reports of every stage's tasks, in partition order.
    pub reports: Vec<Vec<TaskReport>>,
}

/// One stage of a finished job.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StageSummary {
    /// Its name.
    pub name: String,
    /// Tasks (partitions).
    pub tasks: u32,
    /// Attempts launched (tasks plus retries).
    pub attempts: u32,
    /// Seconds from its first launch to its last commit.
    pub seconds: f64,
    /// Rows its committed tasks wrote.
    pub rows_out: u64,
    /// Bytes its committed tasks wrote.
    pub bytes_out: u64,
    /// Bytes its committed tasks spilled to local disk (operators and output writers).
    #[serde(default)]
    pub spilled_bytes: u64,
    /// Tasks per host, when the job ran on hosts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, u32>,
    /// Committed tasks whose invocation was their worker's first (cold starts).
    #[serde(default)]
    pub cold: u32,
    /// The median start latency of those: an invocation's time seen by the driver beyond the
    /// task's own, in ms.
    #[serde(default)]
    pub cold_start_ms: Option<f64>,
    /// The same for warm invocations, in ms: what reaching a function costs without a start.
    #[serde(default)]
    pub warm_overhead_ms: Option<f64>,
}

/// One edge of a finished job.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EdgeSummary {
    /// `map -> reduce`.
    pub name: String,
    /// The path it travelled.
    pub path: String,
    /// Its layout.
    pub layout: String,
    /// Bytes of its committed objects.
    pub bytes: u64,
    /// Objects its tasks wrote, every attempt's, as counted where they were written.
    pub writes: u64,
    /// Objects (or ranges of them) its tasks read, every attempt's, as counted.
    pub reads: u64,
    /// Every request on its path by kind, as counted (polls for outputs not yet committed are
    /// misses).
    #[serde(default)]
    pub requests: Requests,
    /// Notes the driver wrote on its path (a committed output's description, for consumers
    /// that started early).
    #[serde(default)]
    pub notes: u64,
    /// Seconds the slowest committed producer spent writing it (with a request in flight).
    #[serde(default)]
    pub write_s: f64,
    /// Seconds the slowest committed consumer spent reading it (with a request in flight: a
    /// pipelined consumer's waits for producers still running are left out).
    #[serde(default)]
    pub read_s: f64,
    /// Seconds the planner predicted for it, when the job was planned edge by edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_s: Option<f64>,
    /// What it measured of the same: its write and read phases combined as the planner's
    /// model combines them for its path ([`baton_planner::transfer_s`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_s: Option<f64>,
    /// Bytes between each pair of hosts and the path between them, when the job ran on hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<HostPair>,
}

/// Bytes an edge carried from a producer's host to a consumer's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostPair {
    /// The producers' host.
    pub from: String,
    /// The consumers' host.
    pub to: String,
    /// The path between them (vm-local on one host, direct between two).
    pub path: String,
    /// Bytes the consumers read.
    pub bytes: u64,
}

impl StageSummary {
    pub(crate) fn new(stage: &StageSpec, reports: &[TaskReport], attempts: u32, seconds: f64) -> Self {
        Self {
            name: stage.name.clone(),
            tasks: stage.tasks,
            attempts,
            seconds,
            rows_out: reports.iter().map(|r| r.rows_out).sum(),
            bytes_out: reports.iter().map(|r| r.bytes_out).sum(),
            spilled_bytes: reports
                .iter()
                .map(|r| r.spilled_bytes + r.outputs.iter().map(|o| o.spilled_bytes).sum::<u64>())
                .sum(),
            hosts: BTreeMap::new(),
            cold: reports.iter().filter(|r| r.cold).count() as u32,
            cold_start_ms: overhead_ms(reports.iter().filter(|r| r.cold)),
            warm_overhead_ms: overhead_ms(reports.iter().filter(|r| !r.cold)),
        }
    }
}

/// The median of the invocations' time beyond their tasks' (ms); `None` without any timed.
fn overhead_ms<'a>(reports: impl Iterator<Item = &'a TaskReport>) -> Option<f64> {
    let mut ms: Vec<f64> =
        reports.filter(|r| r.invoked_seconds > 0.0).map(|r| (r.invoked_seconds - r.seconds).max(0.0) * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms.get(ms.len() / 2).copied()
}

impl EdgeSummary {
    /// `round`: (round, levels) of a k-level exchange; `requests`: what its tasks counted.
    pub(crate) fn new(
        job: &JobSpec,
        edge: &EdgeSpec,
        round: Option<(u32, u32)>,
        maps: &[MapOutput],
        requests: Requests,
    ) -> Self {
        Self {
            name: format!("{} -> {}", job.stages[edge.from].name, job.stages[edge.to].name),
            path: edge.path.name(),
            layout: match round {
                Some((round, levels)) => format!("{levels}-level {round}/{levels}"),
                None => edge.topology.name(),
            },
            bytes: maps.iter().flat_map(|m| &m.partitions).map(|p| p.bytes).sum(),
            writes: requests.puts,
            reads: requests.gets,
            requests,
            notes: 0,
            write_s: 0.0,
            read_s: 0.0,
            predicted_s: None,
            measured_s: None,
            pairs: Vec::new(),
        }
    }

    /// Records the bytes between host pairs (`(from, to) -> bytes`); the edge's path becomes the
    /// paths its pairs used.
    pub(crate) fn add_pairs(&mut self, hosts: &Hosts, edge: &EdgeSpec, pairs: &BTreeMap<(usize, usize), u64>) {
        let mut used: Vec<String> = Vec::new();
        for (&(from, to), &bytes) in pairs {
            let path = hosts.pair_path(&edge.path, from, to);
            if bytes > 0 && !used.contains(&path) {
                used.push(path.clone());
            }
            self.pairs.push(HostPair { from: hosts.name(from).into(), to: hosts.name(to).into(), path, bytes });
        }
        if !used.is_empty() {
            used.sort();
            self.path = used.join(" + ");
        }
    }
}

impl fmt::Display for JobSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} · {:.2} s", self.job, self.seconds)?;
        writeln!(
            f,
            "  {:<12} {:>6} {:>9} {:>9} {:>12} {:>12}  cold starts",
            "stage", "tasks", "attempts", "seconds", "wrote", "spilled"
        )?;
        for s in &self.stages {
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
            let cold = match (s.cold, s.warm_overhead_ms) {
                (0, None) => "-".to_string(),
                (0, Some(_)) => format!("0 (warm: {} each)", ms(s.warm_overhead_ms)),
                (n, _) => format!("{n}, starting in {} (warm: {})", ms(s.cold_start_ms), ms(s.warm_overhead_ms)),
            };
            writeln!(
                f,
                "  {:<12} {:>6} {:>9} {:>9.2} {:>12} {:>12}  {}",
                s.name,
                s.tasks,
                s.attempts,
                s.seconds,
                ByteSize(s.bytes_out).to_string(),
                ByteSize(s.spilled_bytes).to_string(),
                cold
            )?;
        }
        writeln!(
            f,
            "  {:<22} {:<24} {:<13} {:>11} {:>7} {:>7} {:>7}",
            "edge", "path", "topology", "bytes", "writes", "reads", "other"
        )?;
        for e in &self.edges {
            writeln!(
                f,
                "  {:<22} {:<24} {:<13} {:>11} {:>7} {:>7} {:>7}",
                e.name,
                e.path,
                e.layout,
                ByteSize(e.bytes).to_string(),
                e.writes,
                e.reads,
                e.requests.total() - e.writes - e.reads + e.notes
            )?;
            if e.write_s > 0.0 || e.read_s > 0.0 {
                let predicted = match (e.predicted_s, e.measured_s) {
                    (Some(p), Some(m)) => format!(" · predicted {p:.3} s against {m:.3} s measured"),
                    (Some(p), None) => format!(" · predicted {p:.3} s"),
                    _ => String::new(),
                };
                writeln!(f, "    measured: written in {:.3} s, read in {:.3} s{predicted}", e.write_s, e.read_s)?;
            }
            for p in e.pairs.iter().filter(|p| p.bytes > 0) {
                writeln!(
                    f,
                    "    {:<20} {:<24} {:>25}",
                    format!("{} -> {}", p.from, p.to),
                    p.path,
                    ByteSize(p.bytes).to_string()
                )?;
            }
        }
        if self.stages.iter().any(|s| !s.hosts.is_empty()) {
            writeln!(f, "  tasks per host:")?;
            for s in &self.stages {
                let on: Vec<String> = s.hosts.iter().map(|(h, n)| format!("{h} {n}")).collect();
                writeln!(f, "    {:<12} {}", s.name, on.join(", "))?;
            }
        }
        write!(f, "  job ended: {} freed from every path", ByteSize(self.freed_bytes))
    }
}
