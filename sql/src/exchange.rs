//! The exchange operators: where a query plan is cut into stages.
//!
//! A stage's plan has an [`ExchangeWriter`] at its root: it says how the rows of each task's
//! partition are routed to the next stage (hashed on expressions into partitions, or all to
//! one partition). Where the consuming stage's plan had the exchange, it has an
//! [`ExchangeReader`]: a leaf that streams the edge's batches back from the fabric. Until a
//! task runs, a reader is a placeholder (it knows its edge, not where the data is); the task's
//! codec ([`crate::codec`]) resolves it to the task's input.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use baton_runtime::operator::EdgeSource;
use baton_shuffle::{HashPartitioner, Partitioner};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

/// How a stage's rows go to the next stage.
#[derive(Clone, Debug)]
pub enum Route {
    /// Hashed on the expressions into that many partitions (a hash repartition).
    Hash(Vec<Arc<dyn PhysicalExpr>>, usize),
    /// Spread evenly over that many partitions (a round-robin repartition).
    RoundRobin(usize),
    /// All to one partition, kept apart per producer (a coalesce, a merge, a broadcast, the
    /// query's result).
    Single,
}

impl Route {
    /// Partitions each producer writes.
    pub fn partitions(&self) -> usize {
        match self {
            Route::Hash(_, n) | Route::RoundRobin(n) => *n,
            Route::Single => 1,
        }
    }

    /// The partitioner of the rows of `schema`.
    pub fn partitioner(&self, schema: &SchemaRef) -> baton_shuffle::Result<Box<dyn Partitioner>> {
        Ok(match self {
            Route::Hash(exprs, n) => Box::new(ExprPartitioner::new(exprs.clone(), schema, *n as u32)?),
            Route::RoundRobin(n) => Box::new(RoundRobin { partitions: *n as u32, next: AtomicU64::new(0) }),
            Route::Single => Box::new(RoundRobin { partitions: 1, next: AtomicU64::new(0) }),
        })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Hash(exprs, n) => {
                let keys: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                write!(f, "hash({}) into {n}", keys.join(", "))
            }
            Route::RoundRobin(n) => write!(f, "round-robin into {n}"),
            Route::Single => write!(f, "single"),
        }
    }
}

/// Rows go to the stable hash of their key expressions' values (the same in every process).
#[derive(Debug)]
struct ExprPartitioner {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    keys: SchemaRef,
    hash: HashPartitioner,
}

impl ExprPartitioner {
    fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: &SchemaRef, partitions: u32) -> baton_shuffle::Result<Self> {
        let fields = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let field = e.return_field(schema).map_err(shuffle_error)?;
                Ok(Field::new(format!("k{i}"), field.data_type().clone(), true))
            })
            .collect::<baton_shuffle::Result<Vec<_>>>()?;
        let keys = Arc::new(Schema::new(fields));
        let columns: Vec<usize> = (0..exprs.len()).collect();
        let hash = HashPartitioner::new(&keys, &columns, partitions)?;
        Ok(Self { exprs, keys, hash })
    }
}

impl Partitioner for ExprPartitioner {
    fn partitions(&self) -> u32 {
        self.hash.partitions()
    }

    fn assign(&self, batch: &RecordBatch) -> baton_shuffle::Result<Vec<u32>> {
        let arrays = self
            .exprs
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())))
            .collect::<DfResult<Vec<ArrayRef>>>()
            .map_err(shuffle_error)?;
        let keys = RecordBatch::try_new(self.keys.clone(), arrays)?;
        self.hash.assign(&keys)
    }
}

/// DataFusion's error as the shuffle library's.
fn shuffle_error(e: DataFusionError) -> baton_shuffle::Error {
    baton_shuffle::Error::Arrow { source: arrow_schema::ArrowError::ExternalError(Box::new(e)) }
}

/// Rows go to the partitions in turn, a batch at a time.
#[derive(Debug)]
struct RoundRobin {
    partitions: u32,
    next: AtomicU64,
}

impl Partitioner for RoundRobin {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn assign(&self, batch: &RecordBatch) -> baton_shuffle::Result<Vec<u32>> {
        let p = (self.next.fetch_add(1, Ordering::Relaxed) % u64::from(self.partitions)) as u32;
        Ok(vec![p; batch.num_rows()])
    }
}

fn properties(schema: SchemaRef, partitioning: Partitioning) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        partitioning,
        EmissionType::Incremental,
        Boundedness::Bounded,
    ))
}

/// The root of a stage's plan: each task runs one partition of `input` and routes its rows by
/// `route` to the edge out of the stage (the task's first output).
#[derive(Debug)]
pub struct ExchangeWriter {
    input: Arc<dyn ExecutionPlan>,
    route: Route,
}

impl ExchangeWriter {
    /// A writer of `input`'s partitions by `route`.
    pub fn new(input: Arc<dyn ExecutionPlan>, route: Route) -> Self {
        Self { input, route }
    }

    /// The plan whose partitions the stage's tasks run.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// How rows go out.
    pub fn route(&self) -> &Route {
        &self.route
    }
}

impl DisplayAs for ExchangeWriter {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExchangeWriter: {}", self.route)
    }
}

impl ExecutionPlan for ExchangeWriter {
    fn name(&self) -> &str {
        "ExchangeWriter"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        let mut next = TreeNodeRecursion::Continue;
        if let Route::Hash(exprs, _) = &self.route {
            for e in exprs {
                next = f(e)?;
                if next == TreeNodeRecursion::Stop {
                    break;
                }
            }
        }
        Ok(next)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|c| DataFusionError::Internal(format!("ExchangeWriter takes 1 child, not {}", c.len())))?;
        Ok(Arc::new(Self { input, route: self.route.clone() }))
    }

    /// The input's partition unchanged: routing happens in the task that runs the stage.
    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}

/// A leaf that reads an edge of the job: partition `p` is every producer's partition `p`
/// (after a hash or round-robin exchange), or producer `p`'s only partition (`per_producer`:
/// under a coalesce or a merge, which read each producer's stream apart).
#[derive(Debug)]
pub struct ExchangeReader {
    edge: u32,
    schema: SchemaRef,
    partitions: usize,
    per_producer: bool,
    /// The keys rows were hashed by on their way here (empty if they were not): partition `p`
    /// holds exactly the rows whose keys hash to `p`, as after the repartition it replaces, so
    /// the operators above (a union that interleaves its inputs, say) may rely on it.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    source: Option<EdgeSource>,
    cache: Arc<PlanProperties>,
}

impl ExchangeReader {
    /// A placeholder for edge `edge` (its id in the job), not yet bound to a task's input.
    pub fn new(edge: u32, schema: SchemaRef, partitions: usize, per_producer: bool) -> Self {
        let cache = properties(schema.clone(), Partitioning::UnknownPartitioning(partitions));
        Self { edge, schema, partitions, per_producer, keys: Vec::new(), source: None, cache }
    }

    /// The same reader, declaring that its rows were hash-partitioned by `keys` (expressions
    /// over its schema).
    pub fn hashed(mut self, keys: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        if !keys.is_empty() {
            self.cache = properties(self.schema.clone(), Partitioning::Hash(keys.clone(), self.partitions));
        }
        self.keys = keys;
        self
    }

    /// The keys its rows were hashed by (empty if none).
    pub fn keys(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.keys
    }

    /// The same reader, reading `source`.
    pub fn bound(mut self, source: EdgeSource) -> Self {
        self.source = Some(source);
        self
    }

    /// The edge's id in the job.
    pub fn edge(&self) -> u32 {
        self.edge
    }

    /// Partitions it exposes.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Whether partition `p` is producer `p`'s output.
    pub fn per_producer(&self) -> bool {
        self.per_producer
    }
}

impl DisplayAs for ExchangeReader {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.per_producer { "a partition per producer" } else { "hashed" };
        write!(f, "ExchangeReader: edge-{}, {} partitions, {how}", self.edge, self.partitions)
    }
}

impl ExecutionPlan for ExchangeReader {
    fn name(&self) -> &str {
        "ExchangeReader"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let Some(source) = self.source.clone() else {
            return Err(DataFusionError::Execution(format!(
                "edge-{} is read only inside a Baton task (the reader is a placeholder here)",
                self.edge
            )));
        };
        if partition >= self.partitions {
            return Err(DataFusionError::Internal(format!(
                "edge-{} has {} partitions, not {}",
                self.edge,
                self.partitions,
                partition + 1
            )));
        }
        let reads: Vec<(u32, u32)> = if self.per_producer {
            vec![(partition as u32, 0)]
        } else {
            let at = source.layout_partition(partition as u32).map_err(|e| DataFusionError::External(Box::new(e)))?;
            source.producers().map(|producer| (producer, at)).collect()
        };
        // One producer at a time, each partition streamed in pieces as it is read.
        let stream = futures::stream::iter(reads)
            .then(move |(producer, p)| {
                let source = source.clone();
                async move { source.stream(producer, p).await }
            })
            .try_flatten()
            .map_err(|e| DataFusionError::External(Box::new(e)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }
}
