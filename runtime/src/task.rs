//! What travels to a worker and back: a task and its report.
//!
//! These are the invocation payloads (JSON over HTTP to a worker, or handed over in process).
//! A task names everything it needs: its job and token, its stage, partition and attempt, the
//! operator to run with its parameters, where each input edge's map outputs are, and where and
//! how to write each output edge.

use baton_fabric::{EdgeId, JobId, TaskId};
use baton_shuffle::klevel::KLevel;
use baton_shuffle::{Layout, MapOutput};
use serde::{Deserialize, Serialize};

use crate::paths::PathSpec;
use crate::requests::EdgeRequests;

/// One invocation: one attempt at one partition of one stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The job.
    pub job: JobId,
    /// The job's capability token (for paths that check one: the node over QUIC).
    pub token: Option<String>,
    /// Stage, partition and attempt.
    pub id: TaskId,
    /// Partitions of the stage (tasks in it).
    pub partitions: u32,
    /// The operator to run, by its registered name.
    pub op: String,
    /// The operator's parameters.
    pub params: serde_json::Value,
    /// One entry per input edge.
    pub inputs: Vec<Input>,
    /// One entry per output edge.
    pub outputs: Vec<Output>,
    /// Bytes the task may buffer before its shuffle writers spill to local disk.
    pub memory_budget: u64,
}

/// The most partitions a task may name (its stage's, an output edge's, a k-level exchange's
/// reducers): sizes that come from outside the worker are bounded before anything is sized by
/// them.
pub const MAX_PARTITIONS: u32 = 1 << 20;

impl Task {
    /// Checks the numbers a worker will size things by: partition counts within
    /// [`MAX_PARTITIONS`], this task's partition among its stage's.
    pub fn check(&self) -> Result<(), String> {
        let bounded = |what: &str, n: u32| {
            if n == 0 || n > MAX_PARTITIONS {
                Err(format!("{what} has {n} partitions; a task may name 1 to {MAX_PARTITIONS}"))
            } else {
                Ok(())
            }
        };
        bounded("the stage", self.partitions)?;
        if self.id.partition >= self.partitions {
            return Err(format!("partition {} of a stage of {}", self.id.partition, self.partitions));
        }
        for input in &self.inputs {
            if let Some(&i) = input.producer_at.iter().find(|&&i| usize::from(i) >= input.at.len()) {
                return Err(format!("input {} places a producer at path {i} of {}", input.edge, input.at.len()));
            }
        }
        for output in &self.outputs {
            bounded(&format!("output edge {}", output.edge), output.partitions)?;
            if let Route::Tag { reducers, .. } = output.route {
                bounded(&format!("the k-level exchange of {}", output.edge), reducers)?;
            }
        }
        Ok(())
    }
}

/// Where an input edge's data is: the winning attempt of every producer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// The edge, as the job runs: a k-level exchange's rounds are edges of their own.
    pub edge: EdgeId,
    /// The edge of the job as given that this input ends (the same as `edge`, unless the
    /// job has a k-level exchange: then the rounds shift the numbers).
    pub of: EdgeId,
    /// The path that carries it.
    pub path: PathSpec,
    /// What each producer this task reads wrote (its committed attempt).
    pub maps: Vec<MapOutput>,
    /// Producers not done when the task was launched (a pipelined edge): the task reads each
    /// once the driver publishes its committed output on the path.
    #[serde(default)]
    pub pending: Vec<u32>,
    /// Which partition of each producer's output to read (the task's own, except in the rounds
    /// of a k-level exchange).
    pub partition: u32,
    /// Whether to drop the k-level destination column before the operator sees the batches
    /// (the last round of a k-level exchange).
    pub untag: bool,
    /// Where producers' outputs are when they are not all on `path` (an edge between hosts,
    /// each producer's output on its own host's node): the distinct paths ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at: Vec<PathSpec>,
    /// ... and for each producer, by number, the index of its path in `at`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub producer_at: Vec<u16>,
}

impl Input {
    /// The path holding `producer`'s output.
    pub fn location(&self, producer: u32) -> &PathSpec {
        match self.producer_at.get(producer as usize) {
            Some(&i) => self.at.get(usize::from(i)).unwrap_or(&self.path),
            None => &self.path,
        }
    }
}

/// Where and how to write an output edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// The edge.
    pub edge: EdgeId,
    /// The path that carries it.
    pub path: PathSpec,
    /// How partitions are laid out in objects.
    pub layout: Layout,
    /// Partitions to write (tasks of the consuming stage, or a k-level round's fan-out).
    pub partitions: u32,
    /// How rows are routed to partitions.
    pub route: Route,
}

/// How an output edge routes rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Route {
    /// By the operator's partitioner, straight to the consumers.
    #[default]
    Direct,
    /// The first round of a k-level exchange: the operator's partitioner (into `reducers`
    /// partitions) tags each row with its reducer; rows go out by the first digit.
    Tag {
        /// The exchange.
        klevel: KLevel,
        /// Reducers at the end of it.
        reducers: u32,
    },
    /// A later round: rows (already tagged) go out by digit `round` of their reducer.
    Forward {
        /// The exchange.
        klevel: KLevel,
        /// The round this task sends in.
        round: u32,
    },
}

/// What a task did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The worker's process id.
    pub pid: u32,
    /// One entry per output edge, in the task's order.
    pub outputs: Vec<MapOutput>,
    /// Rows read from input edges and sources.
    pub rows_in: u64,
    /// Bytes read from input edges and sources.
    pub bytes_in: u64,
    /// Rows written to output edges and sinks.
    pub rows_out: u64,
    /// Bytes written to output edges and sinks.
    pub bytes_out: u64,
    /// Bytes the operator spilled to local disk on the way (its output writers' spills are in
    /// `outputs`).
    #[serde(default)]
    pub spilled_bytes: u64,
    /// Seconds from the start of the invocation to its end, in the worker.
    pub seconds: f64,
    /// Anything the operator wants the driver to see (a checksum, files written).
    pub extra: serde_json::Value,
    /// Requests it made on each edge's path, counted as they were made.
    #[serde(default)]
    pub requests: EdgeRequests,
    /// Whether this was its worker's first invocation (a cold start; a warm instance has
    /// served one before).
    #[serde(default)]
    pub cold: bool,
    /// Seconds from the driver's sending the invocation to its answer (the driver sets it):
    /// beyond `seconds`, what reaching the function and starting it took.
    #[serde(default)]
    pub invoked_seconds: f64,
}

/// A failed invocation, as a worker reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// What went wrong.
    pub message: String,
    /// Whether another attempt might succeed.
    pub retryable: bool,
    /// Requests it made before it failed, per edge.
    #[serde(default)]
    pub requests: EdgeRequests,
}
