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

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use baton_fabric::{EdgeId, JobId, StageId, TaskId};
use baton_planner::Topology;
use baton_shuffle::klevel::KLevel;
use baton_shuffle::{Layout, MapOutput, ShuffleReader, Target};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hosts::Hosts;
use crate::invoker::Invoker;
use crate::operator::MERGE;
use crate::paths::{PathCache, PathSpec};
use crate::task::{Input, Output, Route, Task, TaskReport};
pub use progress::{Progress, StageBar};
use schedule::{Outcome, StageSchedule};
pub use summary::{EdgeSummary, HostPair, JobSummary, StageSummary};

/// A job: stages and the edges between them, each edge with its path and layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// A name for reports.
    pub name: String,
    /// The stages; an edge goes from an earlier stage to a later one.
    pub stages: Vec<StageSpec>,
    /// The edges.
    pub edges: Vec<EdgeSpec>,
    /// The stage whose output the driver reads back (a query's result), if any.
    #[serde(default)]
    pub collect: Option<Collect>,
}

/// Output the driver reads back at the end of a job, before the job's data is deleted: each
/// task of `stage` writes one more output edge, of one partition, on `path`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Collect {
    /// The stage (index into [`JobSpec::stages`]).
    pub stage: usize,
    /// The path the rows travel to the driver.
    pub path: PathSpec,
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
    /// The host (index into the driver's [`Hosts`]) all its tasks run on, when the plan put the
    /// stage on one; `None` spreads them over every host. Ignored without hosts.
    #[serde(default)]
    pub host: Option<u32>,
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
    /// How they are laid out: all-to-all, coalesced, or a k-level exchange (coalesced rounds
    /// through k-1 merge stages the driver adds; see [`baton_shuffle::klevel`]).
    pub topology: Topology,
    /// Whether consumers start before every producer is done (direct passing): they read each
    /// producer's output as soon as the driver publishes it on the path. Node paths only.
    #[serde(default)]
    pub pipelined: bool,
    /// Partitions each producer writes, when not one per consumer task: 1 for a broadcast or a
    /// gather (every consumer reads partition 0 of every producer), or the partitions of a
    /// query's hash exchange, whose readers choose which to read ([`crate::operator::EdgeSource`]).
    #[serde(default)]
    pub partitions: Option<u32>,
}

impl EdgeSpec {
    fn levels(&self) -> u32 {
        match self.topology {
            Topology::KLevel { levels } => levels,
            _ => 1,
        }
    }
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
            if e.pipelined
                && (e.path.kind() == baton_planner::Path::ObjectStore || e.topology.name().ends_with("level"))
            {
                return bad(format!("edge {i}: only all-to-all or coalesced edges on a node's path are pipelined"));
            }
            if let Topology::KLevel { levels } = e.topology
                && !(2..=4).contains(&levels)
            {
                return bad(format!("edge {i} asks for {levels} levels: a k-level exchange has 2 to 4"));
            }
            match e.partitions {
                Some(0) => return bad(format!("edge {i} has no partitions")),
                Some(_) if e.levels() > 1 => {
                    return bad(format!("edge {i}: a k-level exchange has one partition per consumer task"));
                }
                _ => {}
            }
        }
        if let Some(collect) = &self.collect
            && collect.stage >= self.stages.len()
        {
            return bad(format!("the job collects stage {} of {}", collect.stage, self.stages.len()));
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
        if let Some(c) = &self.collect
            && !seen.contains(&c.path)
        {
            seen.push(c.path.clone());
        }
        seen
    }
}

/// How one edge of the job as run (after expansion) routes rows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum EdgeRoute {
    /// Straight from producers to consumers: edge `of` of the job as given.
    Direct { of: usize },
    /// Round `round` of a k-level exchange with `reducers` reducers at its end: edge `of` of
    /// the job as given.
    Round { klevel: KLevel, round: u32, reducers: u32, of: usize },
}

impl EdgeRoute {
    /// The edge of the job as given (before its k-level edges became rounds).
    fn of(self) -> usize {
        match self {
            EdgeRoute::Direct { of } | EdgeRoute::Round { of, .. } => of,
        }
    }
}

/// The job with every k-level edge replaced by its rounds and merge stages, and each edge's route.
fn expand(job: &JobSpec) -> (JobSpec, Vec<EdgeRoute>) {
    let mut stages = Vec::new();
    let mut index = vec![0; job.stages.len()];
    // Merge stages go just before their consumer, so that edges still go forward.
    let mut merges: Vec<Vec<usize>> = vec![Vec::new(); job.edges.len()];
    for (i, stage) in job.stages.iter().enumerate() {
        for (e, edge) in job.edges.iter().enumerate() {
            if edge.to == i && edge.levels() > 1 {
                let klevel = KLevel::new(edge.levels(), job.stages[edge.from].tasks, stage.tasks);
                for round in 1..edge.levels() {
                    merges[e].push(stages.len());
                    stages.push(StageSpec {
                        name: format!("merge {round}/{}", edge.levels() - 1),
                        op: MERGE.into(),
                        params: serde_json::Value::Null,
                        tasks: klevel.width(),
                        host: None,
                    });
                }
            }
        }
        index[i] = stages.len();
        stages.push(stage.clone());
    }
    let mut edges = Vec::new();
    let mut routes = Vec::new();
    for (e, edge) in job.edges.iter().enumerate() {
        if edge.levels() <= 1 {
            edges.push(EdgeSpec { from: index[edge.from], to: index[edge.to], ..edge.clone() });
            routes.push(EdgeRoute::Direct { of: e });
            continue;
        }
        let reducers = job.stages[edge.to].tasks;
        let klevel = KLevel::new(edge.levels(), job.stages[edge.from].tasks, reducers);
        let hops: Vec<usize> =
            std::iter::once(index[edge.from]).chain(merges[e].iter().copied()).chain([index[edge.to]]).collect();
        for (round, pair) in hops.windows(2).enumerate() {
            edges.push(EdgeSpec {
                from: pair[0],
                to: pair[1],
                path: edge.path.clone(),
                topology: Topology::Coalesced,
                pipelined: false,
                partitions: None,
            });
            routes.push(EdgeRoute::Round { klevel, round: round as u32, reducers, of: e });
        }
    }
    let collect = job.collect.as_ref().map(|c| Collect { stage: index[c.stage], path: c.path.clone() });
    (JobSpec { name: job.name.clone(), stages, edges, collect }, routes)
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
    /// The hosts tasks run on, for jobs that span them: where each task runs, and what a
    /// [`PathSpec::HostNode`] (or [`PathSpec::HostRdma`]) edge is for each task. `None`: one host, paths as given.
    pub hosts: Option<Arc<Hosts>>,
}

impl DriverConfig {
    /// How much of a worker's memory one of its tasks may buffer before spilling: a quarter
    /// (the rest is its operators' own state, the batches in flight and the runtime's).
    pub fn task_budget(worker_memory: u64) -> u64 {
        worker_memory / 4
    }

    /// Defaults for `job`: 4 attempts, 256 MiB per task, a 2-minute lease, no progress.
    pub fn new(job: JobId) -> Self {
        Self {
            job,
            token: None,
            max_attempts: 4,
            memory_budget: 256 << 20,
            lease: Duration::from_secs(120),
            progress: Progress::Off,
            hosts: None,
        }
    }
}

/// Runs `job` on `invoker`; ends the job on every path afterwards, also when it fails.
pub async fn run(job: &JobSpec, invoker: &dyn Invoker, config: &DriverConfig) -> Result<JobSummary> {
    Ok(run_collect(job, invoker, config).await?.0)
}

/// Runs `job` like [`run`], and returns with its summary the batches of the stage it collects
/// (see [`JobSpec::collect`]), task by task in partition order.
pub async fn run_collect(
    job: &JobSpec,
    invoker: &dyn Invoker,
    config: &DriverConfig,
) -> Result<(JobSummary, Vec<RecordBatch>)> {
    job.check()?;
    let paths = driver_paths(job, config);
    let token = config.token.as_deref();
    for path in &paths {
        path.open_job(config.job, token, config.lease).await?;
    }
    let renew = tokio::spawn(renew_loop(paths.clone(), config.job, config.token.clone(), config.lease));
    let (expanded, routes) = expand(job);
    let result = match run_stages(&expanded, &routes, invoker, config).await {
        Ok((summary, results)) => read_results(&expanded, &results, config).await.map(|batches| (summary, batches)),
        Err(e) => Err(e),
    };
    renew.abort();
    let mut freed = 0;
    for path in &paths {
        match path.end_job(config.job, token).await {
            Ok(bytes) => freed += bytes,
            // A failed job was ended on the node's paths already.
            Err(Error::Fabric(baton_fabric::Error::UnknownJob { .. })) if result.is_err() => {}
            Err(e) => tracing::warn!("cannot end {} on {}: {e}", config.job, path.name()),
        }
    }
    let (mut summary, batches) = result?;
    summary.freed_bytes = freed;
    Ok((summary, batches))
}

/// The paths the driver opens, renews and ends the job on: each edge's, with a host-node edge's
/// every node.
fn driver_paths(job: &JobSpec, config: &DriverConfig) -> Vec<PathSpec> {
    let mut out: Vec<PathSpec> = Vec::new();
    for spec in job.paths() {
        let all = match &config.hosts {
            Some(hosts) => hosts.driver_paths(&spec),
            None => vec![spec],
        };
        for path in all {
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

/// The edge id of the collected output (after the job's own edges).
fn collect_edge(job: &JobSpec) -> EdgeId {
    JobSpec::edge_id(job.edges.len())
}

/// Reads the collected stage's committed outputs, in partition order.
async fn read_results(
    job: &JobSpec,
    results: &[(usize, MapOutput)],
    config: &DriverConfig,
) -> Result<Vec<RecordBatch>> {
    let Some(collect) = &job.collect else { return Ok(Vec::new()) };
    let paths = PathCache::default();
    let mut batches = Vec::new();
    for (host, map) in results {
        let spec = match &config.hosts {
            Some(hosts) => hosts.read_path(&collect.path, *host, None),
            None => collect.path.clone(),
        };
        let path = paths.get(&spec, config.token.as_deref()).await?;
        let reader = ShuffleReader::new(Target { path, job: config.job, edge: collect_edge(job) }, 0);
        batches.extend(reader.read_mapper(map).await?);
    }
    Ok(batches)
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

/// One stage while the job runs.
#[derive(Debug)]
struct StageRun {
    schedule: StageSchedule,
    started: Instant,
    bar: StageBar,
    retried: usize,
    done: Option<f64>,
}

/// Whether stage `s` may launch tasks: each input edge's producers are done, or the edge is
/// pipelined and its producers are all launched (their outputs are then polled for).
fn ready(job: &JobSpec, stages: &[Option<StageRun>], s: usize) -> bool {
    job.edges.iter().filter(|e| e.to == s).all(|e| match &stages[e.from] {
        Some(run) => run.done.is_some() || (e.pipelined && run.schedule.all_launched()),
        None => false,
    })
}

async fn run_stages(
    job: &JobSpec,
    routes: &[EdgeRoute],
    invoker: &dyn Invoker,
    config: &DriverConfig,
) -> Result<(JobSummary, Vec<(usize, MapOutput)>)> {
    let start = Instant::now();
    let n = job.stages.len();
    let hosts = config.hosts.as_deref();
    // The host each task runs on: its stage's, or spread (moved off a host whose node is lost).
    let mut placed: Vec<Vec<usize>> =
        job.stages.iter().map(|st| (0..st.tasks).map(|p| hosts.map_or(0, |h| h.place(st.host, p))).collect()).collect();
    // The host each partition's committed output is on (its attempt's host).
    let mut held = placed.clone();
    let mut lost: Vec<bool> = vec![false; hosts.map_or(1, Hosts::len)];
    // Requests every attempt made, per edge, as its task counted them; the driver's own notes.
    let mut requests = crate::requests::EdgeRequests::new();
    let mut notes = vec![0u64; job.edges.len()];
    // The longest a committed producer took writing each edge, and a consumer reading it (µs).
    let mut spans = vec![(0u64, 0u64); job.edges.len()];
    // Committed map outputs of each edge, by producer partition.
    let mut committed: Vec<Vec<Option<MapOutput>>> =
        job.edges.iter().map(|e| vec![None; job.stages[e.from].tasks as usize]).collect();
    let mut results: Vec<Option<MapOutput>> =
        job.collect.as_ref().map_or_else(Vec::new, |c| vec![None; job.stages[c.stage].tasks as usize]);
    let mut stages: Vec<Option<StageRun>> = (0..n).map(|_| None).collect();
    let markers = PathCache::default();
    let mut running = FuturesUnordered::new();
    // Tasks launched before their producers were done: they hold slots while they wait, so
    // they never take a host's last one (a producer's retry must always find a slot).
    let host_count = hosts.map_or(1, Hosts::len);
    let mut early = vec![0usize; host_count];
    let host_slots: Vec<usize> = (0..host_count).map(|h| invoker.host_slots(h)).collect();
    loop {
        while running.len() < invoker.slots() {
            let Some(s) = (0..n).find(|&s| {
                let pending = stages[s].as_ref().is_none_or(|r| r.done.is_none() && r.schedule.has_queued());
                pending && ready(job, &stages, s)
            }) else {
                break;
            };
            let is_early =
                job.edges.iter().any(|e| e.to == s && stages[e.from].as_ref().is_some_and(|r| r.done.is_none()));
            if is_early && early.iter().zip(&host_slots).any(|(e, slots)| e + 1 >= *slots) {
                break;
            }
            let stage = &job.stages[s];
            let run = stages[s].get_or_insert_with(|| StageRun {
                schedule: StageSchedule::new(stage.tasks, config.max_attempts),
                started: Instant::now(),
                bar: config.progress.stage(&stage.name, stage.tasks),
                retried: 0,
                done: None,
            });
            let Some((p, a)) = run.schedule.launch() else { break };
            let host = placed[s][p as usize];
            let task = build_task(job, routes, s, p, a, &committed, &held, host, config)?;
            early[host] += usize::from(is_early);
            let wait = retry_backoff(config.job, s, p, a);
            running.push(async move {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let sent = Instant::now();
                let result = invoker.invoke_on(host, task).await.map(|mut report| {
                    report.invoked_seconds = sent.elapsed().as_secs_f64();
                    report
                });
                (s, p, a, host, is_early, result)
            });
        }
        let Some((s, p, a, host, was_early, result)) = running.next().await else { break };
        early[host] -= usize::from(was_early);
        let Some(run) = stages[s].as_mut() else { continue };
        let outcome = match result {
            Ok(report) => {
                crate::requests::merge(&mut requests, &report.requests);
                let outputs = report.outputs.clone();
                let outcome = run.schedule.succeeded(p, a, report);
                if outcome == Outcome::Committed {
                    held[s][p as usize] = host;
                    for (e, edge) in job.edges.iter().enumerate() {
                        let Some(r) = run.schedule.report(p).and_then(|r| r.requests.get(&JobSpec::edge_id(e).0))
                        else {
                            continue;
                        };
                        if edge.from == s {
                            spans[e].0 = spans[e].0.max(r.busy_us);
                        } else if edge.to == s {
                            spans[e].1 = spans[e].1.max(r.busy_us);
                        }
                    }
                    let outgoing: Vec<usize> = (0..job.edges.len()).filter(|&e| job.edges[e].from == s).collect();
                    for (&e, slot) in outgoing.iter().zip(0..) {
                        let output: &MapOutput = outputs.get(slot).ok_or_else(|| Error::BadJob {
                            reason: format!("a task of {} reported no output for edge {e}", job.stages[s].name),
                        })?;
                        if job.edges[e].pipelined {
                            let spec = hosts
                                .map_or(job.edges[e].path.clone(), |h| h.read_path(&job.edges[e].path, host, None));
                            publish(&markers, &spec, config, JobSpec::edge_id(e), output).await?;
                            notes[e] += 1;
                        }
                        committed[e][p as usize] = Some(output.clone());
                    }
                    if job.collect.as_ref().is_some_and(|c| c.stage == s) {
                        let output = outputs.get(outgoing.len()).ok_or_else(|| Error::BadJob {
                            reason: format!("a task of {} reported no output to collect", job.stages[s].name),
                        })?;
                        results[p as usize] = Some(output.clone());
                    }
                }
                outcome
            }
            Err(e) => {
                crate::requests::merge(&mut requests, &e.requests());
                let outcome = run.schedule.failed(p, a, e.to_string(), e.is_retryable());
                if outcome == Outcome::Retry {
                    tracing::info!("{}: retrying partition {p} after: {e}", job.stages[s].name);
                    run.retried += 1;
                }
                // A fault may be a host's node gone: then what only it held is made again.
                if e.is_retryable()
                    && let Some(hosts) = hosts
                {
                    let mut state = Recovery {
                        job,
                        stages: &mut stages,
                        committed: &mut committed,
                        results: &mut results,
                        placed: &mut placed,
                        held: &held,
                        lost: &mut lost,
                    };
                    state.find_lost(hosts).await?;
                }
                outcome
            }
        };
        let Some(run) = stages[s].as_mut() else { continue };
        let counted = match outcome {
            Outcome::Committed => "committed",
            Outcome::Superseded => "superseded",
            Outcome::Retry => "retried",
            Outcome::GiveUp { .. } => "failed",
        };
        metrics::counter!("baton_task_attempts_total", "outcome" => counted).increment(1);
        if let Outcome::GiveUp { attempts } = outcome {
            run.bar.fail();
            let mut last = run.schedule.last_error(p).unwrap_or("?").to_string();
            if let Some(hosts) = hosts {
                let gone: Vec<&str> = (0..hosts.len()).filter(|&h| lost[h]).map(|h| hosts.name(h)).collect();
                if !gone.is_empty() {
                    last.push_str(&format!(" (lost during the job: the node of {})", gone.join(", ")));
                }
            }
            // Tasks waiting for outputs that will never come fail once the node forgets the job;
            // then let every running attempt end, so none writes after the job's end.
            for path in driver_paths(job, config).iter().filter(|p| p.kind() != baton_planner::Path::ObjectStore) {
                let _ = path.end_job(config.job, config.token.as_deref()).await;
            }
            while running.next().await.is_some() {}
            return Err(Error::Exhausted { stage: job.stages[s].name.clone(), partition: p, attempts, last });
        }
        run.bar.update(run.schedule.committed(), run.retried);
        if run.done.is_none() && run.schedule.is_done() {
            let seconds = run.started.elapsed().as_secs_f64();
            run.bar.finish(seconds);
            run.done = Some(seconds);
        }
    }
    let mut summary = JobSummary { job: job.name.clone(), ..JobSummary::default() };
    for (s, run) in stages.into_iter().enumerate() {
        let stage = &job.stages[s];
        let Some(run) = run.filter(|r| r.done.is_some()) else {
            return Err(Error::BadJob { reason: format!("stage {} never ran to the end", stage.name) });
        };
        let seconds = run.done.unwrap_or_default();
        let attempts = run.schedule.attempts();
        let reports: Vec<TaskReport> = run
            .schedule
            .into_committed()
            .ok_or_else(|| Error::BadJob { reason: format!("stage {} ended with partitions not done", stage.name) })?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        let mut row = StageSummary::new(stage, &reports, attempts, seconds);
        if let Some(hosts) = hosts {
            for &h in &held[s] {
                *row.hosts.entry(hosts.name(h).to_string()).or_default() += 1;
            }
        }
        summary.stages.push(row);
        summary.reports.push(reports);
    }
    for (e, edge) in job.edges.iter().enumerate() {
        let round = match routes[e] {
            EdgeRoute::Direct { .. } => None,
            EdgeRoute::Round { klevel, round, .. } => Some((round + 1, klevel.levels)),
        };
        let maps: Vec<MapOutput> = committed[e].iter().flatten().cloned().collect();
        let counted = requests.get(&JobSpec::edge_id(e).0).copied().unwrap_or_default();
        let mut row = EdgeSummary::new(job, edge, round, &maps, counted);
        row.notes = notes[e];
        (row.write_s, row.read_s) = (spans[e].0 as f64 / 1e6, spans[e].1 as f64 / 1e6);
        if let Some(hosts) = hosts {
            row.add_pairs(hosts, edge, &edge_pairs(job, routes, e, &committed[e], &held));
        }
        summary.edges.push(row);
    }
    summary.seconds = start.elapsed().as_secs_f64();
    let results = match &job.collect {
        Some(c) => results.into_iter().zip(&held[c.stage]).filter_map(|(m, &h)| Some((h, m?))).collect(),
        None => Vec::new(),
    };
    Ok((summary, results))
}

/// How long a node may take to answer before the driver counts its host lost.
const NODE_ANSWER: Duration = Duration::from_secs(3);

/// What the driver changes when a host's node is lost: the stages' schedules, the committed
/// outputs, where tasks run.
struct Recovery<'a> {
    job: &'a JobSpec,
    stages: &'a mut [Option<StageRun>],
    committed: &'a mut [Vec<Option<MapOutput>>],
    results: &'a mut [Option<MapOutput>],
    placed: &'a mut [Vec<usize>],
    held: &'a [Vec<usize>],
    lost: &'a mut [bool],
}

impl Recovery<'_> {
    /// Asks every node not yet lost whether it answers; recovers from each that does not.
    async fn find_lost(&mut self, hosts: &Hosts) -> Result<()> {
        let candidates: Vec<usize> = (0..hosts.len()).filter(|&h| !self.lost[h]).collect();
        let answers = futures::future::join_all(candidates.iter().map(|&h| hosts.answers(h, NODE_ANSWER))).await;
        for (&h, up) in candidates.iter().zip(answers) {
            if !up {
                self.lose(hosts, h)?;
            }
        }
        Ok(())
    }

    /// Host `x`'s node is gone: its tasks move to the other hosts, and every committed output
    /// it held that a stage still to run needs is made again there (its producers' lost
    /// outputs too, as far back as needed: the driver keeps each stage's lineage).
    fn lose(&mut self, hosts: &Hosts, x: usize) -> Result<()> {
        self.lost[x] = true;
        metrics::counter!("baton_hosts_lost_total").increment(1);
        let live: Vec<usize> = (0..self.lost.len()).filter(|&h| !self.lost[h]).collect();
        tracing::warn!("the node of {} does not answer: its tasks move to the other hosts", hosts.name(x));
        if live.is_empty() {
            return Err(Error::BadJob { reason: "the node of every host is lost".into() });
        }
        let mut next = 0;
        for stage in self.placed.iter_mut() {
            for h in stage.iter_mut().filter(|h| **h == x) {
                *h = live[next % live.len()];
                next += 1;
            }
        }
        let job = self.job;
        let done = |stages: &[Option<StageRun>], s: usize| stages[s].as_ref().is_some_and(|r| r.done.is_some());
        loop {
            let mut changed = false;
            for s in 0..job.stages.len() {
                let collected = job.collect.as_ref().is_some_and(|c| c.stage == s);
                let needed = collected || job.edges.iter().any(|e| e.from == s && !done(self.stages, e.to));
                let Some(run) = self.stages[s].as_mut().filter(|_| needed) else { continue };
                for p in 0..job.stages[s].tasks {
                    if self.held[s][p as usize] != x || !run.schedule.reopen(p) {
                        continue;
                    }
                    run.done = None;
                    changed = true;
                    for (e, edge) in job.edges.iter().enumerate() {
                        if edge.from == s {
                            self.committed[e][p as usize] = None;
                        }
                    }
                    if collected {
                        self.results[p as usize] = None;
                    }
                }
            }
            if !changed {
                return Ok(());
            }
        }
    }
}

/// Bytes edge `e` carried between each (producer host, consumer host), as its consumers read.
fn edge_pairs(
    job: &JobSpec,
    routes: &[EdgeRoute],
    e: usize,
    committed: &[Option<MapOutput>],
    placed: &[Vec<usize>],
) -> std::collections::BTreeMap<(usize, usize), u64> {
    let edge = &job.edges[e];
    let mut pairs = std::collections::BTreeMap::new();
    for t in 0..job.stages[edge.to].tasks {
        let (producers, partition, _) = reads(job, routes, e, t);
        for x in producers {
            let bytes = committed[x as usize].as_ref().and_then(|m| m.partition(partition)).map_or(0, |p| p.bytes);
            *pairs.entry((placed[edge.from][x as usize], placed[edge.to][t as usize])).or_default() += bytes;
        }
    }
    pairs
}

/// What task `t` of edge `e`'s consumer reads: its producers, the partition of each, and whether
/// to drop the k-level tag — every producer's partition t, or in a k-level round partition
/// digit(t) of the senders that agree with t on the other digits.
fn reads(job: &JobSpec, routes: &[EdgeRoute], e: usize, t: u32) -> (Vec<u32>, u32, bool) {
    let edge = &job.edges[e];
    match routes[e] {
        EdgeRoute::Direct { .. } => {
            ((0..job.stages[edge.from].tasks).collect(), edge.partitions.map_or(t, |p| t.min(p - 1)), false)
        }
        EdgeRoute::Round { klevel, round, .. } => (
            klevel.senders(t, round).filter(|&x| x < job.stages[edge.from].tasks).collect(),
            klevel.digit(t, round),
            round + 1 == klevel.levels,
        ),
    }
}

/// How long attempt `attempt` of a task waits before it starts: nothing for a first attempt;
/// for a retry, exponential backoff from 100 ms, capped at 5 s, with full jitter (between half
/// and all of it) so that the retries of a fault that hit many tasks at once do not all land
/// together. The jitter is a hash of the task, so a run can be replayed.
pub fn retry_backoff(job: JobId, stage: usize, partition: u32, attempt: u32) -> std::time::Duration {
    if attempt == 0 {
        return std::time::Duration::ZERO;
    }
    let ceiling_ms = (100u64 << (attempt - 1).min(6)).min(5_000);
    let h = spread(job.0 ^ (stage as u64).rotate_left(48) ^ u64::from(partition).rotate_left(24) ^ u64::from(attempt));
    std::time::Duration::from_millis(ceiling_ms / 2 + h % (ceiling_ms / 2 + 1))
}

/// splitmix64's finalizer: a well-spread hash of `h`, for jitter that can be replayed.
pub(crate) fn spread(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Says on the edge's path that `output` is its producer's committed output, for consumers
/// that started before it was.
async fn publish(
    paths: &PathCache,
    spec: &PathSpec,
    config: &DriverConfig,
    edge: EdgeId,
    output: &MapOutput,
) -> Result<()> {
    let path = paths.get(spec, config.token.as_deref()).await?;
    let body = serde_json::to_vec(output).map_err(|e| Error::BadJob { reason: e.to_string() })?;
    path.put(&committed_key(config.job, edge, output.mapper), bytes::Bytes::from(body)).await?;
    Ok(())
}

/// The key under which the driver publishes producer `producer`'s committed output.
pub fn committed_key(job: JobId, edge: EdgeId, producer: u32) -> baton_fabric::ObjectKey {
    baton_fabric::ObjectKey::new(job, edge, producer, baton_shuffle::exchange::COMMITTED)
}

/// Task `t`, attempt `attempt` of stage `s`, to run on `host`, with what its input edges have
/// committed so far; `held` is the host of every stage's every partition's output.
#[allow(clippy::too_many_arguments)]
fn build_task(
    job: &JobSpec,
    routes: &[EdgeRoute],
    s: usize,
    t: u32,
    attempt: u32,
    committed: &[Vec<Option<MapOutput>>],
    held: &[Vec<usize>],
    host: usize,
    config: &DriverConfig,
) -> Result<Task> {
    let stage = &job.stages[s];
    let hosts = config.hosts.as_deref();
    let inputs = (0..job.edges.len())
        .filter(|&e| job.edges[e].to == s)
        .map(|e| {
            let edge = &job.edges[e];
            let (producers, partition, untag) = reads(job, routes, e, t);
            let maps = producers
                .iter()
                .filter_map(|&x| committed[e][x as usize].as_ref().map(|m| m.only(partition)))
                .collect();
            let pending = producers.into_iter().filter(|&x| committed[e][x as usize].is_none()).collect();
            let (mut at, mut producer_at) = (Vec::new(), Vec::new());
            if let (Some(hosts), true) = (hosts, edge.path.on_hosts()) {
                for &holder in &held[edge.from] {
                    let path = hosts.read_path(&edge.path, holder, Some(host));
                    let index = at.iter().position(|p| *p == path).unwrap_or_else(|| {
                        at.push(path);
                        at.len() - 1
                    });
                    producer_at.push(index as u16);
                }
            }
            let path = at.first().cloned().unwrap_or_else(|| edge.path.clone());
            let of = JobSpec::edge_id(routes[e].of());
            Input { edge: JobSpec::edge_id(e), of, path, maps, pending, partition, untag, at, producer_at }
        })
        .collect();
    let write_path = |spec: &PathSpec| hosts.map_or(spec.clone(), |h| h.write_path(spec, host));
    let outputs = (0..job.edges.len())
        .filter(|&e| job.edges[e].from == s)
        .map(|e| -> Result<Output> {
            let edge = &job.edges[e];
            let (partitions, route) = match routes[e] {
                EdgeRoute::Direct { .. } => (edge.partitions.unwrap_or(job.stages[edge.to].tasks), Route::Direct),
                EdgeRoute::Round { klevel, round: 0, reducers, .. } => (klevel.fanout, Route::Tag { klevel, reducers }),
                EdgeRoute::Round { klevel, round, .. } => (klevel.fanout, Route::Forward { klevel, round }),
            };
            let layout = Layout::try_from(edge.topology)?;
            Ok(Output { edge: JobSpec::edge_id(e), path: write_path(&edge.path), layout, partitions, route })
        })
        .chain(job.collect.as_ref().filter(|c| c.stage == s).map(|c| {
            Ok(Output {
                edge: collect_edge(job),
                path: write_path(&c.path),
                layout: Layout::AllToAll,
                partitions: 1,
                route: Route::Direct,
            })
        }))
        .collect::<Result<_>>()?;
    Ok(Task {
        job: config.job,
        token: config.token.clone(),
        id: TaskId { stage: JobSpec::stage_id(s), partition: t, attempt },
        partitions: stage.tasks,
        op: stage.op.clone(),
        params: stage.params.clone(),
        inputs,
        outputs,
        memory_budget: config.memory_budget,
    })
}

#[cfg(test)]
mod backoff_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_back_off_exponentially_with_jitter_and_a_cap() {
        let job = JobId(77);
        assert_eq!(retry_backoff(job, 1, 3, 0), Duration::ZERO, "a first attempt starts at once");
        for attempt in 1..12u32 {
            let ceiling = Duration::from_millis((100u64 << (attempt - 1).min(6)).min(5_000));
            for partition in 0..50 {
                let wait = retry_backoff(job, 1, partition, attempt);
                assert!(wait >= ceiling / 2 && wait <= ceiling, "attempt {attempt}: {wait:?} outside {ceiling:?}");
            }
        }
        let spread: std::collections::BTreeSet<_> = (0..50).map(|p| retry_backoff(job, 1, p, 3)).collect();
        assert!(spread.len() > 20, "retries of one fault should not land together: {spread:?}");
        assert_eq!(retry_backoff(job, 1, 5, 2), retry_backoff(job, 1, 5, 2), "replayable");
    }
}
