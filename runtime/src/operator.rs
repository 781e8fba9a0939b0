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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use baton_fabric::DataPath;
use baton_shuffle::{MapOutput, Partitioner, ShuffleReader, ShuffleWriter, Target};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::paths::PathCache;
use crate::task::{Task, TaskReport};

/// The code one task runs.
#[async_trait]
pub trait Operator: Send + Sync + std::fmt::Debug {
    /// Runs the task; everything it read and wrote is recorded in `ctx`.
    async fn run(&self, ctx: &mut TaskContext) -> Result<()>;
}

/// Operators by name.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    ops: BTreeMap<String, Arc<dyn Operator>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
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
    task: Task,
    paths: Arc<PathCache>,
    scratch: PathBuf,
    report: TaskReport,
    committed: Vec<Option<MapOutput>>,
}

impl TaskContext {
    /// The context for `task`, opening paths through `paths`, spilling into `scratch`.
    pub fn new(task: Task, paths: Arc<PathCache>, scratch: impl Into<PathBuf>) -> Self {
        let committed = vec![None; task.outputs.len()];
        Self { task, paths, scratch: scratch.into(), report: TaskReport::default(), committed }
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

    async fn path(&self, spec: &crate::paths::PathSpec) -> Result<Arc<dyn DataPath>> {
        self.paths.get(spec, self.task.token.as_deref()).await
    }

    /// A reader of input edge `index`: this task's partition from every producer, one producer
    /// at a time.
    pub fn input(&self, index: usize) -> Result<InputReader<'_>> {
        if index >= self.task.inputs.len() {
            return Err(Error::BadJob {
                reason: format!("{} asked for input {index} of a task with {}", self.task.op, self.task.inputs.len()),
            });
        }
        Ok(InputReader { ctx: self, input: index, next: 0, reader: None })
    }

    /// A shuffle writer for output edge `index`, in the edge's layout, as this attempt, within
    /// the task's memory budget.
    pub async fn writer(
        &self,
        index: usize,
        schema: SchemaRef,
        partitioner: Box<dyn Partitioner>,
    ) -> Result<ShuffleWriter> {
        let output = self.task.outputs.get(index).ok_or_else(|| Error::BadJob {
            reason: format!("{} asked for output {index} of a task with {}", self.task.op, self.task.outputs.len()),
        })?;
        if partitioner.partitions() != output.partitions {
            return Err(Error::BadJob {
                reason: format!(
                    "{} partitions into {} but edge {} has {} consumers",
                    self.task.op,
                    partitioner.partitions(),
                    output.edge,
                    output.partitions
                ),
            });
        }
        let target = Target { path: self.path(&output.path).await?, job: self.task.job, edge: output.edge };
        Ok(ShuffleWriter::new(target, self.task.id.partition, schema, partitioner, output.layout)
            .with_attempt(self.task.id.attempt)
            .with_memory_budget(self.task.memory_budget as usize, &self.scratch))
    }

    /// Finishes `writer` (writes its objects) as output edge `index`.
    pub async fn commit(&mut self, index: usize, writer: ShuffleWriter) -> Result<()> {
        let output = writer.finish().await?;
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
pub struct InputReader<'a> {
    ctx: &'a TaskContext,
    input: usize,
    next: usize,
    reader: Option<ShuffleReader>,
}

impl InputReader<'_> {
    /// The next producer's batches for this partition (empty when it had none), or `None`
    /// when every producer has been read.
    pub async fn next(&mut self) -> Result<Option<Vec<RecordBatch>>> {
        let input = &self.ctx.task.inputs[self.input];
        let Some(map) = input.maps.get(self.next) else { return Ok(None) };
        if self.reader.is_none() {
            let target = Target { path: self.ctx.path(&input.path).await?, job: self.ctx.task.job, edge: input.edge };
            self.reader = Some(ShuffleReader::new(target, self.ctx.task.id.partition));
        }
        let Some(reader) = &self.reader else { return Ok(None) };
        let batches = reader.read_mapper(map).await?;
        self.next += 1;
        Ok(Some(batches))
    }
}

/// Runs `task` with the operators of `registry`: what a worker does per invocation.
pub async fn run_task(registry: &Registry, paths: Arc<PathCache>, scratch: &Path, task: Task) -> Result<TaskReport> {
    let start = Instant::now();
    let op = registry.get(&task.op)?;
    // What the task was given to read from its input edges.
    let (rows_in, bytes_in) = task
        .inputs
        .iter()
        .flat_map(|i| i.maps.iter().filter_map(|m| m.partitions.get(task.id.partition as usize)))
        .fold((0, 0), |(r, b), p| (r + p.rows, b + p.bytes));
    let mut ctx = TaskContext::new(task, paths, scratch);
    op.run(&mut ctx).await?;
    let mut report = ctx.into_report()?;
    report.rows_in += rows_in;
    report.bytes_in += bytes_in;
    report.pid = std::process::id();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
