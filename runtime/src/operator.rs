//! Operators: the code a task runs, registered by name, and the context they run in.
//!
//! A worker holds a [`Registry`] of operators. A task names one; the worker builds a
//! [`TaskContext`] (the task, its opened paths, a scratch directory) and runs it. Operators read
//! their input edges through [`TaskContext::input`] (one producer at a time, so a reducer holds
//! one map output at once) and write output edges through the shuffle library's writers made by
//! [`TaskContext::writer`], handing them back to [`TaskContext::commit`].
//!
//! ```no_run
//! use async_trait::async_trait;
//! use baton_runtime::operator::{Operator, TaskContext};
//!
//! /// Counts the rows of its input partition.
//! #[derive(Debug)]
//! struct CountRows;
//!
//! #[async_trait]
//! impl Operator for CountRows {
//!     async fn run(&self, ctx: &mut TaskContext) -> baton_runtime::Result<()> {
//!         let mut input = ctx.input(0)?;
//!         let mut rows = 0;
//!         while let Some(batches) = input.next().await? {
//!             rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
//!         }
//!         ctx.set_extra(serde_json::json!({ "rows": rows }));
//!         Ok(())
//!     }
//! }
//! ```

use futures::FutureExt as _;
use futures::stream::{BoxStream, StreamExt as _, TryStreamExt as _};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use baton_fabric::DataPath;
use baton_shuffle::klevel::{DigitPartitioner, KLevel};
use baton_shuffle::{MapOutput, PartitionInfo, Partitioner, ShuffleReader, ShuffleWriter, Target};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::paths::PathCache;
use crate::requests::EdgeCounters;
use crate::task::{Route, Task, TaskReport};

/// The code one task runs.
#[async_trait]
pub trait Operator: Send + Sync + std::fmt::Debug {
    /// Runs the task; everything it read and wrote is recorded in `ctx`.
    async fn run(&self, ctx: &mut TaskContext) -> Result<()>;
}

/// The operator of a k-level exchange's intermediate rounds (the driver adds those stages).
pub const MERGE: &str = "shuffle.merge";

/// Operators by name.
#[derive(Clone, Debug)]
pub struct Registry {
    ops: BTreeMap<String, Arc<dyn Operator>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with the runtime's own operators ([`MERGE`]).
    pub fn new() -> Self {
        let mut r = Self { ops: BTreeMap::new() };
        r.register(MERGE, Merge);
        r
    }

    /// Adds `op` under `name`, replacing any operator of that name.
    pub fn register(&mut self, name: impl Into<String>, op: impl Operator + 'static) -> &mut Self {
        self.ops.insert(name.into(), Arc::new(op));
        self
    }

    /// The operator called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Operator>> {
        self.ops.get(name).cloned().ok_or_else(|| Error::UnknownOperator {
            name: name.to_string(),
            known: self.ops.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}

/// What a running task sees: its description, its paths, its scratch space, and its counters.
#[derive(Debug)]
pub struct TaskContext {
    task: Arc<Task>,
    paths: Arc<PathCache>,
    scratch: PathBuf,
    report: TaskReport,
    committed: Vec<Option<MapOutput>>,
    read: Arc<ReadCounter>,
    requests: Arc<EdgeCounters>,
    roots: Option<Arc<crate::roots::Roots>>,
}

impl TaskContext {
    /// The context for `task`, opening paths through `paths`, spilling into `scratch`.
    pub fn new(task: Task, paths: Arc<PathCache>, scratch: impl Into<PathBuf>) -> Self {
        let committed = vec![None; task.outputs.len()];
        Self {
            task: Arc::new(task),
            paths,
            scratch: scratch.into(),
            report: TaskReport::default(),
            committed,
            read: Arc::default(),
            requests: Arc::default(),
            roots: None,
        }
    }

    /// Whether the task may read or write `location` (a path or URL): under its worker's
    /// roots, if the worker was given any. Operators ask before they open what a task names.
    pub fn allow(&self, location: &str) -> Result<()> {
        match &self.roots {
            Some(roots) => {
                roots.check(location).map_err(|reason| Error::BadParams { op: self.task.op.clone(), reason })
            }
            None => Ok(()),
        }
    }

    /// The task.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The local directory for spills and temporary files.
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// The operator's parameters, parsed.
    pub fn params<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.task.params.clone())
            .map_err(|e| Error::BadParams { op: self.task.op.clone(), reason: e.to_string() })
    }

    /// The path `spec`, its requests counted as edge `edge`'s.
    async fn path(&self, spec: &crate::paths::PathSpec, edge: baton_fabric::EdgeId) -> Result<Arc<dyn DataPath>> {
        // The places a path names on this host, or the store it names by URL. (A node over
        // QUIC and the elastic store answer only with the cluster's certificate and the job's
        // token.)
        match spec {
            crate::paths::PathSpec::ObjectStore { url } => self.allow(url)?,
            crate::paths::PathSpec::VmLocal { socket } => self.allow(&socket.display().to_string())?,
            _ => {}
        }
        Ok(self.requests.count(edge, self.paths.get(spec, self.task.token.as_deref()).await?, spec.kind().name()))
    }

    /// A reader of input edge `index`: this task's partition from every producer, one producer
    /// at a time.
    pub fn input(&self, index: usize) -> Result<InputReader> {
        Ok(InputReader { source: self.source(index)?, next: 0 })
    }

    /// Input edge `index`, to read in any order (see [`EdgeSource`]).
    pub fn source(&self, index: usize) -> Result<EdgeSource> {
        if index >= self.task.inputs.len() {
            return Err(Error::BadJob {
                reason: format!("{} asked for input {index} of a task with {}", self.task.op, self.task.inputs.len()),
            });
        }
        Ok(EdgeSource {
            task: self.task.clone(),
            input: index,
            paths: self.paths.clone(),
            read: self.read.clone(),
            requests: self.requests.clone(),
        })
    }

    fn output(&self, index: usize) -> Result<&crate::task::Output> {
        self.task.outputs.get(index).ok_or_else(|| Error::BadJob {
            reason: format!("{} asked for output {index} of a task with {}", self.task.op, self.task.outputs.len()),
        })
    }

    async fn shuffle_writer(
        &self,
        output: &crate::task::Output,
        schema: SchemaRef,
        partitioner: Box<dyn Partitioner>,
    ) -> Result<ShuffleWriter> {
        let target =
            Target { path: self.path(&output.path, output.edge).await?, job: self.task.job, edge: output.edge };
        Ok(ShuffleWriter::new(target, self.task.id.partition, schema, partitioner, output.layout)
            .with_attempt(self.task.id.attempt)
            .with_memory_budget(self.task.memory_budget as usize, &self.scratch))
    }

    /// How many partitions rows written to output edge `index` are routed into: the edge's
    /// consumers, or for a k-level exchange its final reducers (the rounds between are the
    /// writer's business).
    pub fn consumers(&self, index: usize) -> Result<u32> {
        let output = self.output(index)?;
        match output.route {
            Route::Direct => Ok(output.partitions),
            Route::Tag { reducers, .. } => Ok(reducers),
            Route::Forward { .. } => {
                Err(Error::BadJob { reason: format!("output {index} is a k-level round: use forward()") })
            }
        }
    }

    /// A writer for output edge `index` that routes rows by `partitioner`, in the edge's layout,
    /// as this attempt, within the task's memory budget.
    pub async fn writer(
        &self,
        index: usize,
        schema: SchemaRef,
        partitioner: Box<dyn Partitioner>,
    ) -> Result<EdgeWriter> {
        let output = self.output(index)?;
        let consumers = self.consumers(index)?;
        if partitioner.partitions() != consumers {
            return Err(Error::BadJob {
                reason: format!(
                    "{} partitions into {} but edge {} has {consumers} consumers",
                    self.task.op,
                    partitioner.partitions(),
                    output.edge,
                ),
            });
        }
        Ok(match output.route {
            Route::Tag { klevel, .. } => {
                klevel.check()?;
                let tagged = KLevel::tagged_schema(&schema);
                let inner =
                    self.shuffle_writer(output, tagged.clone(), Box::new(DigitPartitioner::new(klevel, 0))).await?;
                EdgeWriter { inner, tag: Some((partitioner, tagged)) }
            }
            _ => EdgeWriter { inner: self.shuffle_writer(output, schema, partitioner).await?, tag: None },
        })
    }

    /// A writer for output edge `index` of a k-level round: rows of `schema` (tagged) go out
    /// by their reducer's digit for this round.
    pub async fn forward(&self, index: usize, schema: SchemaRef) -> Result<EdgeWriter> {
        let output = self.output(index)?;
        let Route::Forward { klevel, round } = output.route else {
            return Err(Error::BadJob { reason: format!("output {index} is not a k-level round") });
        };
        klevel.check()?;
        let inner = self.shuffle_writer(output, schema, Box::new(DigitPartitioner::new(klevel, round))).await?;
        Ok(EdgeWriter { inner, tag: None })
    }

    /// Finishes `writer` (writes its objects) as output edge `index`.
    pub async fn commit(&mut self, index: usize, writer: EdgeWriter) -> Result<()> {
        let output = writer.inner.finish().await?;
        self.record(index, output)
    }

    /// Commits output edge `index` as empty (a task that had nothing to write).
    pub fn commit_empty(&mut self, index: usize) -> Result<()> {
        let output = self.output(index)?;
        let empty = MapOutput {
            mapper: self.task.id.partition,
            attempt: self.task.id.attempt,
            spilled_bytes: 0,
            layout: output.layout,
            partitions: vec![PartitionInfo::default(); output.partitions as usize],
            first: 0,
        };
        self.record(index, empty)
    }

    fn record(&mut self, index: usize, output: MapOutput) -> Result<()> {
        self.report.rows_out += output.partitions.iter().map(|p| p.rows).sum::<u64>();
        self.report.bytes_out += output.partitions.iter().map(|p| p.bytes).sum::<u64>();
        match self.committed.get_mut(index) {
            Some(slot) => *slot = Some(output),
            None => return Err(Error::BadJob { reason: format!("no output {index}") }),
        }
        Ok(())
    }

    /// Counts rows and bytes read from outside the job (a source file).
    pub fn count_in(&mut self, rows: u64, bytes: u64) {
        self.report.rows_in += rows;
        self.report.bytes_in += bytes;
    }

    /// Counts rows and bytes written outside the job (an output file).
    pub fn count_out(&mut self, rows: u64, bytes: u64) {
        self.report.rows_out += rows;
        self.report.bytes_out += bytes;
    }

    /// Counts bytes the operator spilled to local disk (beyond its output writers' spills).
    pub fn count_spilled(&mut self, bytes: u64) {
        self.report.spilled_bytes += bytes;
    }

    /// Sets what the operator reports beyond the counters.
    pub fn set_extra(&mut self, extra: serde_json::Value) {
        self.report.extra = extra;
    }

    /// The report, once the operator is done: every output edge must have been committed.
    fn into_report(self) -> Result<TaskReport> {
        let mut report = self.report;
        for (i, slot) in self.committed.into_iter().enumerate() {
            match slot {
                Some(output) => report.outputs.push(output),
                None => {
                    return Err(Error::BadJob {
                        reason: format!("{} finished without writing output {i}", self.task.op),
                    });
                }
            }
        }
        Ok(report)
    }
}

/// Reads one input edge's partition, producer by producer.
#[derive(Debug)]
pub struct InputReader {
    source: EdgeSource,
    next: usize,
}

impl InputReader {
    /// The next producer's batches for this partition (empty when it had none), or `None`
    /// when every producer has been read.
    pub async fn next(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        let Some(producer) = self.source.producers().nth(self.next) else { return Ok(None) };
        let batches = self.source.read(producer, self.source.partition()).await?;
        self.next += 1;
        Ok(Some(batches))
    }
}

/// Rows and bytes a task read from its input edges.
#[derive(Debug, Default)]
struct ReadCounter {
    rows: AtomicU64,
    bytes: AtomicU64,
}

/// An input edge that can be read in any order, owned (`'static`), for operators that pick
/// which producer and which partition to read — a query plan's exchange readers.
#[derive(Clone, Debug)]
pub struct EdgeSource {
    task: Arc<Task>,
    input: usize,
    paths: Arc<PathCache>,
    read: Arc<ReadCounter>,
    requests: Arc<EdgeCounters>,
}

impl EdgeSource {
    /// The path holding `producer`'s output, its requests counted as this edge's.
    async fn path(&self, producer: u32) -> Result<Arc<dyn DataPath>> {
        let input = self.spec();
        let spec = input.location(producer);
        let path = self.paths.get(spec, self.task.token.as_deref()).await?;
        Ok(self.requests.count(input.edge, path, spec.kind().name()))
    }

    /// The edge, as the job runs (a k-level exchange's rounds are edges of their own).
    pub fn edge(&self) -> baton_fabric::EdgeId {
        self.spec().edge
    }

    /// The edge of the job as given that this input ends (what a query plan's readers name).
    pub fn job_edge(&self) -> baton_fabric::EdgeId {
        self.spec().of
    }

    fn spec(&self) -> &crate::task::Input {
        &self.task.inputs[self.input]
    }

    /// The partition this task reads by default (its own).
    pub fn partition(&self) -> u32 {
        self.spec().partition
    }

    /// Which partition of each producer's output holds partition `partition` of the edge: the
    /// same one, except at the end of a k-level exchange, where a task's rows come from its
    /// partition of the last round (and a task reads no other partition than its own).
    pub fn layout_partition(&self, partition: u32) -> Result<u32> {
        let input = self.spec();
        match (input.untag, partition == self.task.id.partition) {
            (false, _) => Ok(partition),
            (true, true) => Ok(input.partition),
            (true, false) => Err(Error::BadJob {
                reason: format!(
                    "{} asked for partition {partition} of {}, a k-level exchange's end, in task {}: \
                     a task reads only its own partition of one",
                    self.task.op, input.edge, self.task.id.partition
                ),
            }),
        }
    }

    /// The producers of the edge: those committed at launch first, then those still pending.
    pub fn producers(&self) -> impl Iterator<Item = u32> + '_ {
        let input = self.spec();
        input.maps.iter().map(|m| m.mapper).chain(input.pending.iter().copied())
    }

    /// Partition `partition` of `producer`'s committed output (waiting for it when the edge
    /// is pipelined and the producer was not done at launch), k-level tags dropped.
    pub async fn read(&self, producer: u32, partition: u32) -> Result<Vec<RecordBatch>> {
        self.stream(producer, partition).await?.try_collect().await
    }

    /// [`EdgeSource::read`] as a stream of batches: a large partition arrives in pieces, so the
    /// task holds the batches it has not yet consumed rather than the whole object.
    pub async fn stream(&self, producer: u32, partition: u32) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let input = self.spec();
        let map = match input.maps.iter().find(|m| m.mapper == producer) {
            Some(map) => map.clone(),
            None if input.pending.contains(&producer) => self.wait_for(producer).await?,
            None => {
                return Err(Error::BadJob {
                    reason: format!("{} has no producer {producer} on {}", self.task.op, input.edge),
                });
            }
        };
        let Some(info) = map.partition(partition) else {
            return Err(Error::BadJob {
                reason: format!(
                    "{} asked for partition {partition} of {}, which holds {} from {}",
                    self.task.op,
                    input.edge,
                    map.partitions.len(),
                    map.first
                ),
            });
        };
        let path = self.path(producer).await?;
        let target = Target { path, job: self.task.job, edge: input.edge };
        let batches = ShuffleReader::new(target, partition).stream_mapper(&map)?;
        self.read.rows.fetch_add(info.rows, Ordering::Relaxed);
        self.read.bytes.fetch_add(info.bytes, Ordering::Relaxed);
        let untag = input.untag;
        Ok(batches
            .map(move |batch| match untag {
                true => Ok(KLevel::untag(&batch?)?),
                false => Ok(batch?),
            })
            .boxed())
    }

    /// Waits until the driver publishes `producer`'s committed output.
    async fn wait_for(&self, producer: u32) -> Result<MapOutput> {
        let input = self.spec();
        let path = self.path(producer).await?;
        let key = crate::driver::committed_key(self.task.job, input.edge, producer);
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            match path.get(&key).await {
                Ok(bytes) => {
                    return serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                        endpoint: format!("the driver's note at {key}"),
                        reason: e.to_string(),
                    });
                }
                Err(baton_fabric::Error::NotFound { .. }) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Runs `task` with the operators of `registry`: what a worker does per invocation.
pub async fn run_task(registry: &Registry, paths: Arc<PathCache>, scratch: &Path, task: Task) -> Result<TaskReport> {
    run_task_within(registry, paths, scratch, None, task).await
}

/// [`run_task`], the task reading and writing only under `roots` (when given).
pub async fn run_task_within(
    registry: &Registry,
    paths: Arc<PathCache>,
    scratch: &Path,
    roots: Option<Arc<crate::roots::Roots>>,
    task: Task,
) -> Result<TaskReport> {
    let start = Instant::now();
    task.check().map_err(|reason| Error::BadParams { op: task.op.clone(), reason })?;
    let op = registry.get(&task.op)?;
    // What the task was given to read from its input edges.
    let (id, name) = (task.id, task.op.clone());
    let mut ctx = TaskContext::new(task, paths, scratch);
    ctx.roots = roots;
    let requests = ctx.requests.clone();
    // A failed task reports what it asked of its paths too.
    let failed = |e: Error| Error::Task {
        task: id,
        message: e.failure_message(),
        retryable: e.is_retryable(),
        requests: requests.snapshot(),
    };
    // A panic is a bug in the operator or an input it cannot take: the same attempt would panic
    // again, so it is a final error carrying the panic's message, and the worker lives on.
    match std::panic::AssertUnwindSafe(op.run(&mut ctx)).catch_unwind().await {
        Ok(outcome) => outcome.map_err(failed)?,
        Err(panic) => {
            let why = baton_fabric::error::panic_message(panic.as_ref());
            return Err(Error::Task {
                task: id,
                message: format!("operator {name} panicked: {why}"),
                retryable: false,
                requests: requests.snapshot(),
            });
        }
    }
    let read = ctx.read.clone();
    let mut report = ctx.into_report().map_err(failed)?;
    report.requests = requests.snapshot();
    report.rows_in += read.rows.load(Ordering::Relaxed);
    report.bytes_in += read.bytes.load(Ordering::Relaxed);
    report.pid = std::process::id();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// A writer of one output edge: the shuffle library's writer, tagging rows with their reducer
/// first when the edge starts a k-level exchange.
#[derive(Debug)]
pub struct EdgeWriter {
    inner: ShuffleWriter,
    tag: Option<(Box<dyn Partitioner>, SchemaRef)>,
}

impl EdgeWriter {
    /// Adds a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &self.tag {
            Some((partitioner, schema)) => {
                let dests = partitioner.assign(batch)?;
                self.inner.write(&KLevel::tag(schema, batch, dests)?)?;
            }
            None => self.inner.write(batch)?,
        }
        Ok(())
    }
}

/// A k-level exchange's intermediate round: reads its partition from its senders and passes
/// the rows on by their reducer's next digit.
#[derive(Debug)]
struct Merge;

#[async_trait]
impl Operator for Merge {
    async fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let mut writer = None;
        let mut input = ctx.input(0)?;
        while let Some(batches) = input.next().await? {
            for batch in &batches {
                if writer.is_none() {
                    writer = Some(ctx.forward(0, batch.schema()).await?);
                }
                if let Some(w) = writer.as_mut() {
                    w.write(batch)?;
                }
            }
        }
        drop(input);
        match writer {
            Some(writer) => ctx.commit(0, writer).await,
            None => ctx.commit_empty(0),
        }
    }
}
