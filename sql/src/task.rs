//! The operator a SQL stage's tasks run: decode the stage's plan, bind its exchange readers to
//! the task's input edges, run the task's partition, and route the rows out.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use baton_runtime::operator::{Operator, Registry, TaskContext};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::exchange::ExchangeWriter;
use crate::session;

/// The operator's registered name.
pub const STAGE: &str = "sql.stage";

/// What every task of a stage is given.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageParams {
    /// The stage's plan ([`crate::codec`]), base64.
    pub plan: String,
    /// Locations of the tables it reads that are not local files (their stores are
    /// registered before the plan is decoded).
    pub stores: Vec<String>,
    /// The session's target partitions (for operators that size themselves by it).
    pub partitions: usize,
}

impl StageParams {
    /// The parameters for `plan`.
    pub fn new(plan: &[u8], stores: Vec<String>, partitions: usize) -> Self {
        Self { plan: BASE64.encode(plan), stores, partitions }
    }
}

/// Runs one partition of a SQL stage.
#[derive(Debug)]
pub struct StageTask;

fn failed(ctx: &TaskContext, e: impl std::fmt::Display, retryable: bool) -> baton_runtime::Error {
    baton_runtime::Error::Task { task: ctx.task().id, message: e.to_string(), retryable, requests: Default::default() }
}

/// A task's error from DataFusion's: what a fabric read failed with keeps its retryability,
/// anything else (a bad plan, an overflow, a type error) would fail again.
fn from_datafusion(ctx: &TaskContext, e: DataFusionError) -> baton_runtime::Error {
    if let DataFusionError::External(inner) = e.find_root()
        && let Some(runtime) = inner.downcast_ref::<baton_runtime::Error>()
    {
        return failed(ctx, runtime, runtime.is_retryable());
    }
    match crate::located::place(&e) {
        Some(place) => failed(ctx, format!("{} ({place})", e.find_root()), false),
        None => failed(ctx, e.find_root(), false),
    }
}

/// DataFusion's runtime for a task: its operators share a memory pool of the task's budget and
/// spill past it (sorts, aggregations, joins' probe-side buffers) into the task's scratch
/// directory, rather than growing until the worker's memory limit kills it.
fn task_runtime(ctx: &TaskContext) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let budget = usize::try_from(ctx.task().memory_budget).unwrap_or(usize::MAX).max(MIN_POOL);
    let disk = DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![ctx.scratch().to_path_buf()]));
    RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(budget)))
        .with_disk_manager_builder(disk)
        .build_arc()
}

/// The smallest pool a task gets, whatever its budget: below this, operators that cannot spill
/// (a hash join's build side) fail on ordinary inputs.
const MIN_POOL: usize = 16 << 20;

#[async_trait]
impl Operator for StageTask {
    async fn run(&self, ctx: &mut TaskContext) -> baton_runtime::Result<()> {
        let params: StageParams = ctx.params()?;
        let bytes =
            BASE64.decode(&params.plan).map_err(|e| failed(ctx, format!("the plan is not base64: {e}"), false))?;
        let runtime = task_runtime(ctx).map_err(|e| from_datafusion(ctx, e))?;
        let session = SessionContext::new_with_config_rt(session::config(params.partitions), runtime);
        session::register_stores(&session, &params.stores).map_err(|e| failed(ctx, e, true))?;
        let task_ctx = session.task_ctx();
        let sources = (0..ctx.task().inputs.len()).map(|i| ctx.source(i)).collect::<baton_runtime::Result<_>>()?;
        let plan = crate::codec::decode(&bytes, &task_ctx, sources).map_err(|e| from_datafusion(ctx, e))?;
        // Every table file it reads, under the worker's roots, with the settings of the store
        // it is read through.
        for store in &params.stores {
            ctx.allow(store)?;
        }
        for file in crate::located::every_scanned_file(&plan) {
            let settings = params.stores.iter().find_map(|s| {
                let (base, query) = s.split_once('?')?;
                let bucket = |u: &str| u.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
                (bucket(base) == bucket(&file)).then(|| query.to_string())
            });
            ctx.allow(&settings.map_or(file.clone(), |q| format!("{file}?{q}")))?;
        }
        let Some(writer) = plan.downcast_ref::<ExchangeWriter>() else {
            return Err(failed(ctx, format!("a stage's plan ends in {}, not an exchange writer", plan.name()), false));
        };
        // Errors name the operator, expression or file they came from.
        let mut input = crate::located::locate(writer.input().clone()).map_err(|e| from_datafusion(ctx, e))?;
        let schema = input.schema();
        let partitioner = writer.route().partitioner(&schema)?;
        let mut out = ctx.writer(0, schema, partitioner).await?;
        // A stage with no partitions (an empty table) still has a task, which writes nothing.
        let partition = ctx.task().id.partition as usize;
        if partition < input.output_partitioning().partition_count() {
            // Narrowed to the task's partition, the plan runs as in one DataFusion process (join
            // filters included); a plan that cannot be narrowed runs its partition of the whole,
            // with join filters off, since they would wait for partitions other tasks run.
            let (run, task_ctx) = match crate::narrow::narrow(&input, partition).map_err(|e| from_datafusion(ctx, e))? {
                Some(narrowed) => {
                    input = narrowed;
                    (0, task_ctx)
                }
                None => {
                    session
                        .state_ref()
                        .write()
                        .config_mut()
                        .options_mut()
                        .optimizer
                        .enable_join_dynamic_filter_pushdown = false;
                    (partition, session.task_ctx())
                }
            };
            let mut stream = input.execute(run, task_ctx).map_err(|e| from_datafusion(ctx, e))?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| from_datafusion(ctx, e))?;
                if batch.num_rows() > 0 {
                    out.write(&batch)?;
                }
            }
        }
        ctx.count_spilled(spilled_bytes(&input));
        ctx.commit(0, out).await
    }
}

/// Bytes the plan's operators spilled (sorts, aggregations, joins), from their metrics.
fn spilled_bytes(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let own = plan.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0) as u64;
    own + plan.children().into_iter().map(spilled_bytes).sum::<u64>()
}

/// The SQL operators, for a worker's registry.
pub fn register(registry: &mut Registry) {
    registry.register(STAGE, StageTask);
}
