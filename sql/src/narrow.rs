//! A stage's plan narrowed to the one partition a task runs.
//!
//! A task runs partition `p` of its stage. Left as it is, every operator of the plan still
//! believes in all `n` partitions, and those that coordinate their partitions wait for the
//! others — a hash join's dynamic filter waits until every partition's build side has reported,
//! which in a task never happens. Narrowed, the plan has one partition, partition `p` of the
//! stage: each leaf of `n` partitions becomes a one-partition view of its partition `p`, and the
//! operators above are rebuilt over them. Then a join's filter is made from the build side this
//! task holds and prunes the rows this task's scan reads, as in one DataFusion process.
//!
//! Only operators known to run partition `i` from their children's partition `i` are narrowed
//! through; a subtree of one partition (under a coalesce or merge) is left whole. Anything else
//! and [`narrow`] says no, and the task runs the stage's plan as it is, with join filters off.

use std::fmt;
use std::sync::Arc;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::Partitioning;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec};
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::union::InterleaveExec;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowAggExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties, SendableRecordBatchStream,
    replace_children_if_necessary,
};

/// `plan` (of `n` partitions) narrowed to its partition `partition`: a plan of one partition
/// that yields the same rows. `None` when an operator is not known to be narrowable.
pub fn narrow(plan: &Arc<dyn ExecutionPlan>, partition: usize) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let n = plan.output_partitioning().partition_count();
    if n <= 1 {
        return Ok(Some(plan.clone()));
    }
    if partition >= n {
        return Err(DataFusionError::Internal(format!("partition {partition} of a plan of {n}")));
    }
    let children = plan.children();
    if children.is_empty() {
        return Ok(Some(Arc::new(OnePartition::new(plan.clone(), partition))));
    }
    if !partitionwise(plan) {
        return Ok(None);
    }
    let mut narrowed = Vec::with_capacity(children.len());
    for child in children {
        match child.output_partitioning().partition_count() {
            // A side every partition reads whole (a broadcast join's build side).
            1 => narrowed.push(child.clone()),
            m if m == n => match narrow(child, partition)? {
                Some(child) => narrowed.push(child),
                None => return Ok(None),
            },
            _ => return Ok(None),
        }
    }
    replace_children_if_necessary(plan.clone(), narrowed).map(Some)
}

/// Whether `plan`'s partition `i` is made from its children's partitions `i` alone (and from
/// the whole of any child of one partition).
fn partitionwise(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.is::<FilterExec>()
        || plan.is::<ProjectionExec>()
        || plan.is::<AggregateExec>()
        || plan.name() == "CoalesceBatchesExec"
        || plan.is::<HashJoinExec>()
        || plan.is::<SortMergeJoinExec>()
        || plan.is::<NestedLoopJoinExec>()
        || plan.is::<InterleaveExec>()
        || plan.is::<LocalLimitExec>()
        || plan.is::<BoundedWindowAggExec>()
        || plan.is::<WindowAggExec>()
        || plan.downcast_ref::<SortExec>().is_some_and(SortExec::preserve_partitioning)
}

/// A leaf's partition `partition`, as a plan of one partition.
#[derive(Debug)]
struct OnePartition {
    inner: Arc<dyn ExecutionPlan>,
    partition: usize,
    properties: Arc<PlanProperties>,
}

impl OnePartition {
    fn new(inner: Arc<dyn ExecutionPlan>, partition: usize) -> Self {
        // The rows of one hash partition are still hash-partitioned by the same keys: operators
        // above that require it (a union that interleaves its inputs) keep their footing.
        let partitioning = match inner.output_partitioning() {
            Partitioning::Hash(keys, _) => Partitioning::Hash(keys.clone(), 1),
            _ => Partitioning::UnknownPartitioning(1),
        };
        let properties = Arc::new(PlanProperties::new(
            inner.equivalence_properties().clone(),
            partitioning,
            inner.pipeline_behavior(),
            inner.boundedness(),
        ));
        Self { inner, partition, properties }
    }
}

impl DisplayAs for OnePartition {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition {} of ", self.partition)?;
        self.inner.fmt_as(t, f)
    }
}

impl ExecutionPlan for OnePartition {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion> {
        // The leaf's own expressions (a scan's pushed-down filters, dynamic ones among them).
        self.inner.apply_expressions(f)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("a one-partition view has no partition {partition}")));
        }
        self.inner.execute(self.partition, context)
    }

    fn metrics(&self) -> Option<datafusion::physical_plan::metrics::MetricsSet> {
        self.inner.metrics()
    }
}
