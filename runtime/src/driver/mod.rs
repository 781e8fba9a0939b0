//! The driver: runs a job's stages in dependency order on an [`Invoker`], with retries.
//!
//! For each stage it launches one task per partition (as many at once as the invoker has
//! slots), hands each task the committed map outputs of its input edges, retries attempts that
//! fail with a retryable error (a lost worker, a timeout, a path fault) up to
//! [`DriverConfig::max_attempts`], and commits the first attempt of each partition to succeed
//! (see [`schedule`]). Before the first stage it opens the job on every path its edges use; at
//! the end, whether the job succeeded or not, it ends the job there, which deletes every
//! object of it.

pub mod progress;
pub mod schedule;
pub mod summary;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use baton_fabric::{EdgeId, JobId, StageId, TaskId};
use baton_shuffle::{Layout, MapOutput};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::invoker::Invoker;
use crate::paths::PathSpec;
use crate::task::{Input, Output, Task, TaskReport};
pub use progress::Progress;
use schedule::{Outcome, StageSchedule};
pub use summary::{EdgeSummary, JobSummary, StageSummary};

/// A job: stages and the edges between them, each edge with its path and layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// A name for reports.
    pub name: String,
    /// The stages; an edge goes from an earlier stage to a later one.
    pub stages: Vec<StageSpec>,
    /// The edges.
    pub edges: Vec<EdgeSpec>,
}

/// One stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    /// A name for reports (`map`, `reduce`).
    pub name: String,
    /// The operator each task runs.
    pub op: String,
    /// The operator's parameters (the same for every task; a task knows its partition).
    pub params: serde_json::Value,
    /// Tasks (partitions).
    pub tasks: u32,
}

/// One edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeSpec {
    /// The producing stage (index into [`JobSpec::stages`]).
    pub from: usize,
    /// The consuming stage.
    pub to: usize,
    /// The path its objects travel.
    pub path: PathSpec,
    /// How they are laid out.
    pub layout: Layout,
}

impl JobSpec {
    /// The id of stage `index` (`stage-1` for the first).
    pub fn stage_id(index: usize) -> StageId {
        StageId(index as u32 + 1)
    }

    /// The id of edge `index` (`edge-1` for the first).
    pub fn edge_id(index: usize) -> EdgeId {
        EdgeId(index as u32 + 1)
    }

    /// Checks that edges go forward between known stages and every stage has tasks.
    pub fn check(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::BadJob { reason });
        if self.stages.is_empty() {
            return bad(format!("{} has no stages", self.name));
        }
        for s in &self.stages {
            if s.tasks == 0 {
                return bad(format!("stage {} has no tasks", s.name));
            }
        }
        for (i, e) in self.edges.iter().enumerate() {
            if e.to >= self.stages.len() || e.from >= e.to {
                return bad(format!("edge {} goes from stage {} to stage {}: edges must go forward", i, e.from, e.to));
            }
        }
        Ok(())
    }

    /// The distinct paths the job's edges use.
    pub fn paths(&self) -> Vec<PathSpec> {
        let mut seen = Vec::new();
        for e in &self.edges {
            if !seen.contains(&e.path) {
                seen.push(e.path.clone());
            }
        }
        seen
    }
}

/// How the driver runs a job.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// The job's id (its objects' keys start with it).
    pub job: JobId,
    /// The job's token for paths that check one.
    pub token: Option<String>,
    /// Attempts per task before the job fails.
    pub max_attempts: u32,
    /// Bytes each task may buffer before spilling.
    pub memory_budget: u64,
    /// The job's lease on the node paths; renewed while the job runs.
    pub lease: Duration,
    /// Show progress on stderr.
    pub progress: Progress,
}

impl DriverConfig {
    /// Defaults for `job`: 4 attempts, 256 MiB per task, a 2-minute lease, no progress.
    pub fn new(job: JobId) -> Self {
        Self {
            job,
            token: None,
            max_attempts: 4,
            memory_budget: 256 << 20,
            lease: Duration::from_secs(120),
            progress: Progress::Off,
        }
    }
}

/// Runs `job` on `invoker`; ends the job on every path afterwards, also when it fails.
pub async fn run(job: &JobSpec, invoker: &dyn Invoker, config: &DriverConfig) -> Result<JobSummary> {
    job.check()?;
    let paths = job.paths();
    let token = config.token.as_deref();
    for path in &paths {
        path.open_job(config.job, token, config.lease).await?;
    }
    let renew = tokio::spawn(renew_loop(paths.clone(), config.job, config.token.clone(), config.lease));
    let result = run_stages(job, invoker, config).await;
    renew.abort();
    let mut freed = 0;
    for path in &paths {
        match path.end_job(config.job, token).await {
            Ok(bytes) => freed += bytes,
            Err(e) => tracing::warn!("cannot end {} on {}: {e}", config.job, path.name()),
        }
    }
    let mut summary = result?;
    summary.freed_bytes = freed;
    Ok(summary)
}

async fn renew_loop(paths: Vec<PathSpec>, job: JobId, token: Option<String>, lease: Duration) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        for path in &paths {
            if let Err(e) = path.open_job(job, token.as_deref(), lease).await {
                tracing::warn!("cannot renew {job} on {}: {e}", path.name());
            }
        }
    }
}

async fn run_stages(job: &JobSpec, invoker: &dyn Invoker, config: &DriverConfig) -> Result<JobSummary> {
    let start = Instant::now();
    // Committed map outputs of each edge, by producer partition.
    let mut edge_maps: Vec<Vec<MapOutput>> = vec![Vec::new(); job.edges.len()];
    let mut summary = JobSummary { job: job.name.clone(), ..JobSummary::default() };
    for (s, stage) in job.stages.iter().enumerate() {
        let (reports, attempts, seconds) = run_stage(job, s, &edge_maps, invoker, config).await?;
        let outgoing: Vec<usize> = (0..job.edges.len()).filter(|&e| job.edges[e].from == s).collect();
        for (&edge, slot) in outgoing.iter().zip(0..) {
            edge_maps[edge] = reports
                .iter()
                .map(|r| {
                    r.outputs.get(slot).cloned().ok_or_else(|| Error::BadJob {
                        reason: format!("a task of {} reported no output for edge {edge}", stage.name),
                    })
                })
                .collect::<Result<_>>()?;
        }
        summary.stages.push(StageSummary::new(stage, &reports, attempts, seconds));
        summary.reports.push(reports);
    }
    for (e, edge) in job.edges.iter().enumerate() {
        summary.edges.push(EdgeSummary::new(job, e, edge, &edge_maps[e]));
    }
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// Runs stage `s` to completion; returns the committed reports, attempts made and seconds.
async fn run_stage(
    job: &JobSpec,
    s: usize,
    edge_maps: &[Vec<MapOutput>],
    invoker: &dyn Invoker,
    config: &DriverConfig,
) -> Result<(Vec<TaskReport>, u32, f64)> {
    let stage = &job.stages[s];
    let start = Instant::now();
    let inputs: Vec<Input> = (0..job.edges.len())
        .filter(|&e| job.edges[e].to == s)
        .map(|e| Input { edge: JobSpec::edge_id(e), path: job.edges[e].path.clone(), maps: edge_maps[e].clone() })
        .collect();
    let outputs: Vec<Output> = (0..job.edges.len())
        .filter(|&e| job.edges[e].from == s)
        .map(|e| Output {
            edge: JobSpec::edge_id(e),
            path: job.edges[e].path.clone(),
            layout: job.edges[e].layout,
            partitions: job.stages[job.edges[e].to].tasks,
        })
        .collect();
    let task = |partition: u32, attempt: u32| Task {
        job: config.job,
        token: config.token.clone(),
        id: TaskId { stage: JobSpec::stage_id(s), partition, attempt },
        partitions: stage.tasks,
        op: stage.op.clone(),
        params: stage.params.clone(),
        inputs: inputs.clone(),
        outputs: outputs.clone(),
        memory_budget: config.memory_budget,
    };
    let mut schedule = StageSchedule::new(stage.tasks, config.max_attempts);
    let mut running = FuturesUnordered::new();
    let mut bar = config.progress.stage(&stage.name, stage.tasks);
    let mut retries = BTreeSet::new();
    loop {
        while running.len() < invoker.slots() {
            let Some((p, a)) = schedule.launch() else { break };
            let t = task(p, a);
            running.push(async move { (p, a, invoker.invoke(t).await) });
        }
        let Some((p, a, result)) = running.next().await else { break };
        let outcome = match result {
            Ok(report) => schedule.succeeded(p, a, report),
            Err(e) => {
                let retryable = e.is_retryable();
                let outcome = schedule.failed(p, a, e.to_string(), retryable);
                if outcome == Outcome::Retry {
                    tracing::info!("{}: retrying partition {p} after: {e}", stage.name);
                    retries.insert((p, a));
                }
                outcome
            }
        };
        if let Outcome::GiveUp { attempts } = outcome {
            bar.fail();
            // Let the attempts still running end before the job is ended, so that none of
            // them writes objects after the purge.
            while running.next().await.is_some() {}
            return Err(Error::Exhausted {
                stage: stage.name.clone(),
                partition: p,
                attempts,
                last: schedule.last_error(p).unwrap_or("?").to_string(),
            });
        }
        bar.update(schedule.committed(), retries.len());
    }
    let attempts = schedule.attempts();
    let committed = schedule
        .into_committed()
        .ok_or_else(|| Error::BadJob { reason: format!("stage {} ended with partitions not done", stage.name) })?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish(seconds);
    Ok((committed.into_iter().map(|(_, r)| r).collect(), attempts, seconds))
}
