//! What a job did: per stage time and tasks, per edge path, bytes and requests.

use std::fmt;

use baton_planner::ByteSize;
use baton_planner::Topology;
use baton_shuffle::MapOutput;
use serde::{Deserialize, Serialize};

use crate::driver::{EdgeSpec, JobSpec, StageSpec};
use crate::task::TaskReport;

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
    /// Write requests of the committed attempts.
    pub writes: u64,
    /// Read requests consumers made.
    pub reads: u64,
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
        }
    }
}

impl EdgeSummary {
    /// `round`: (round, levels) of a k-level exchange.
    pub(crate) fn new(job: &JobSpec, edge: &EdgeSpec, round: Option<(u32, u32)>, maps: &[MapOutput]) -> Self {
        let nonempty = |m: &MapOutput| m.partitions.iter().filter(|p| p.rows > 0).count() as u64;
        let reads: u64 = maps.iter().map(nonempty).sum();
        let writes = match edge.topology {
            Topology::Coalesced | Topology::KLevel { .. } => maps.iter().filter(|m| nonempty(m) > 0).count() as u64,
            Topology::AllToAll | Topology::PerTask => reads,
        };
        Self {
            name: format!("{} -> {}", job.stages[edge.from].name, job.stages[edge.to].name),
            path: edge.path.name(),
            layout: match round {
                Some((round, levels)) => format!("{levels}-level {round}/{levels}"),
                None => edge.topology.name(),
            },
            bytes: maps.iter().flat_map(|m| &m.partitions).map(|p| p.bytes).sum(),
            writes,
            reads,
        }
    }
}

impl fmt::Display for JobSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} · {:.2} s", self.job, self.seconds)?;
        writeln!(
            f,
            "  {:<12} {:>6} {:>9} {:>9} {:>12} {:>12}",
            "stage", "tasks", "attempts", "seconds", "wrote", "spilled"
        )?;
        for s in &self.stages {
            writeln!(
                f,
                "  {:<12} {:>6} {:>9} {:>9.2} {:>12} {:>12}",
                s.name,
                s.tasks,
                s.attempts,
                s.seconds,
                ByteSize(s.bytes_out).to_string(),
                ByteSize(s.spilled_bytes).to_string()
            )?;
        }
        writeln!(
            f,
            "  {:<22} {:<24} {:<13} {:>11} {:>7} {:>7}",
            "edge", "path", "topology", "bytes", "writes", "reads"
        )?;
        for e in &self.edges {
            writeln!(
                f,
                "  {:<22} {:<24} {:<13} {:>11} {:>7} {:>7}",
                e.name,
                e.path,
                e.layout,
                ByteSize(e.bytes).to_string(),
                e.writes,
                e.reads
            )?;
        }
        write!(f, "  job ended: {} freed from every path", ByteSize(self.freed_bytes))
    }
}
