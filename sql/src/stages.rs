//! Cutting a DataFusion physical plan into stages at its exchanges.
//!
//! Walking the plan from its leaves up, every exchange becomes an edge between two stages:
//!
//! | in the plan | the producing stage writes | the consuming stage reads |
//! | --- | --- | --- |
//! | `RepartitionExec` (hash) | each row to the hash of its keys | partition `p` of every producer |
//! | `RepartitionExec` (round robin) | batches to partitions in turn | partition `p` of every producer |
//! | `CoalescePartitionsExec`, `SortPreservingMergeExec` over several partitions | everything to one partition | producer `p`'s output as partition `p`, under the coalesce or merge, which stays |
//!
//! The build side of a broadcast join (`HashJoinExec` in `CollectLeft` mode) sits under a
//! coalesce, so it becomes a gather edge that every task of the joining stage reads whole.
//! The plan's root becomes the last stage, whose tasks' output the driver collects.
//!
//! A join that emits its unmatched build rows when its last partition ends (a left outer, semi
//! or anti join collected once for all partitions) would wait forever in a task that runs one
//! partition, so it is first made a partitioned hash join (both sides hashed on the keys), or,
//! for a nested-loop join, run as one partition.

use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, StatisticsArgs, StatisticsContext, displayable,
    replace_children_if_necessary,
};

use crate::exchange::{ExchangeReader, ExchangeWriter, Route};

/// One stage: a plan whose root is an [`ExchangeWriter`], run as one task per partition.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The plan, its exchanges below replaced by [`ExchangeReader`]s.
    pub plan: Arc<ExchangeWriter>,
    /// Tasks: the partitions of the writer's input (at least 1).
    pub tasks: usize,
    /// Rows and bytes DataFusion estimates the stage reads from tables.
    pub source: Estimate,
}

/// How an edge fans out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fan {
    /// Producer output is partitioned; consumer partition `p` reads partition `p` of each.
    Partitioned,
    /// Each producer writes one partition; the consumers read them whole (a gather into one
    /// task, or a broadcast to many).
    Whole,
}

/// An edge between two stages.
#[derive(Debug, Clone)]
pub struct Edge {
    /// The producing stage.
    pub from: usize,
    /// The consuming stage.
    pub to: usize,
    /// How it fans out.
    pub fan: Fan,
    /// Partitions each producer writes.
    pub partitions: usize,
    /// DataFusion's estimate of what crosses it.
    pub estimate: Estimate,
}

/// DataFusion's estimate of rows and bytes, where it has one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Rows.
    pub rows: Option<u64>,
    /// Bytes.
    pub bytes: Option<u64>,
}

impl Estimate {
    fn of(plan: &Arc<dyn ExecutionPlan>) -> Self {
        let Ok(stats) = StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new()) else {
            return Self::default();
        };
        let value = |p: &Precision<usize>| p.get_value().map(|&v| v as u64);
        Self { rows: value(&stats.num_rows), bytes: value(&stats.total_byte_size) }
    }
}

/// A query plan cut into stages, in dependency order (the last one is the root).
#[derive(Debug, Clone)]
pub struct Stages {
    /// The stages.
    pub stages: Vec<Stage>,
    /// The edges, in the order the readers name them (`edge-1` is the first).
    pub edges: Vec<Edge>,
}

/// Cuts `plan` into stages.
pub fn split(plan: Arc<dyn ExecutionPlan>) -> DfResult<Stages> {
    let plan = build_sides_apart(plan)?;
    let mut cut = Cutter { stages: Vec::new(), edges: Vec::new() };
    let (root, inputs) = cut.walk(plan.clone())?;
    cut.push(root, Route::Single, inputs, &plan);
    Ok(Stages { stages: cut.stages, edges: cut.edges })
}

/// Whether a join of this type emits build-side rows once every probe partition is done (the
/// unmatched rows of an outer, semi or anti join on the build side).
fn emits_build_rows_at_end(join_type: JoinType) -> bool {
    matches!(join_type, JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark | JoinType::Full)
}

/// `plan` with every join that collects its build side once for all its partitions, and emits
/// unmatched build rows when the last partition ends, rewritten so that no task depends on
/// partitions that run in other tasks: a hash join becomes a partitioned one (both sides
/// hashed on the join keys), a nested-loop join runs as one partition.
fn build_sides_apart(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    let children = plan.children().into_iter().map(|c| build_sides_apart(c.clone())).collect::<DfResult<Vec<_>>>()?;
    let plan = if children.is_empty() { plan } else { replace_children_if_necessary(plan, children)? };
    if let Some(join) = plan.downcast_ref::<HashJoinExec>()
        && *join.partition_mode() == PartitionMode::CollectLeft
        && emits_build_rows_at_end(*join.join_type())
    {
        let partitions = join.right().output_partitioning().partition_count().max(1);
        let left = match join.left().downcast_ref::<CoalescePartitionsExec>() {
            Some(coalesce) => coalesce.input().clone(),
            None => join.left().clone(),
        };
        let (left_keys, right_keys): (Vec<_>, Vec<_>) = join.on().iter().cloned().unzip();
        let left = Arc::new(RepartitionExec::try_new(left, Partitioning::Hash(left_keys, partitions))?);
        let right =
            Arc::new(RepartitionExec::try_new(join.right().clone(), Partitioning::Hash(right_keys, partitions))?);
        return join
            .builder()
            .with_partition_mode(PartitionMode::Partitioned)
            .with_new_children(vec![left, right])?
            .recompute_properties()
            .build_exec();
    }
    if let Some(join) = plan.downcast_ref::<NestedLoopJoinExec>()
        && emits_build_rows_at_end(*join.join_type())
        && join.right().output_partitioning().partition_count() > 1
    {
        let right: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(join.right().clone()));
        return replace_children_if_necessary(plan.clone(), vec![join.left().clone(), right]);
    }
    Ok(plan)
}

struct Cutter {
    stages: Vec<Stage>,
    edges: Vec<Edge>,
}

impl Cutter {
    /// `plan` with its exchanges replaced by readers, and the edges those readers read (whose
    /// consumer is the stage the plan ends up in).
    fn walk(&mut self, plan: Arc<dyn ExecutionPlan>) -> DfResult<(Arc<dyn ExecutionPlan>, Vec<usize>)> {
        if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
            if repartition.preserve_order() {
                return Err(DataFusionError::NotImplemented(
                    "an order-preserving repartition (Baton plans with prefer_existing_sort off)".into(),
                ));
            }
            let route = match repartition.partitioning() {
                Partitioning::Hash(keys, n) => Route::Hash(keys.clone(), *n),
                Partitioning::RoundRobinBatch(n) => Route::RoundRobin(*n),
                other => return Err(DataFusionError::NotImplemented(format!("a repartition by {other}"))),
            };
            let original = repartition.input().clone();
            let (input, inputs) = self.walk(original.clone())?;
            let partitions = route.partitions();
            let from = self.push(input, route, inputs, &original);
            let edge = self.edge(from, Fan::Partitioned, partitions, &original);
            let keys = match repartition.partitioning() {
                Partitioning::Hash(keys, _) => keys.clone(),
                _ => Vec::new(),
            };
            let reader = ExchangeReader::new(edge as u32 + 1, plan.schema(), partitions, false).hashed(keys);
            return Ok((Arc::new(reader), vec![edge]));
        }
        let gathers = plan.is::<CoalescePartitionsExec>() || plan.is::<SortPreservingMergeExec>();
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        if gathers
            && let [original] = children.as_slice()
            && original.output_partitioning().partition_count() > 1
        {
            let (input, inputs) = self.walk(original.clone())?;
            let partitions = original.output_partitioning().partition_count();
            let from = self.push(input, Route::Single, inputs, original);
            let edge = self.edge(from, Fan::Whole, 1, original);
            let reader = ExchangeReader::new(edge as u32 + 1, original.schema(), partitions, true);
            let plan = replace_children_if_necessary(plan, vec![Arc::new(reader)])?;
            return Ok((plan, vec![edge]));
        }
        let mut inputs = Vec::new();
        let mut walked = Vec::with_capacity(children.len());
        for child in children {
            let (child, mut more) = self.walk(child)?;
            walked.push(child);
            inputs.append(&mut more);
        }
        let plan = if walked.is_empty() { plan } else { replace_children_if_necessary(plan, walked)? };
        Ok((plan, inputs))
    }

    /// Adds the stage that runs `plan` and routes its rows by `route`; `inputs` are the edges
    /// it reads; `original` is the plan before cutting (for estimates).
    fn push(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
        route: Route,
        inputs: Vec<usize>,
        original: &Arc<dyn ExecutionPlan>,
    ) -> usize {
        let index = self.stages.len();
        for e in inputs {
            self.edges[e].to = index;
        }
        let tasks = plan.output_partitioning().partition_count().max(1);
        let source =
            if self.edges.iter().any(|e| e.to == index) { Estimate::default() } else { Estimate::of(original) };
        self.stages.push(Stage { plan: Arc::new(ExchangeWriter::new(plan, route)), tasks, source });
        index
    }

    /// Adds an edge out of stage `from`; its consumer is set when that stage is pushed.
    fn edge(&mut self, from: usize, fan: Fan, partitions: usize, original: &Arc<dyn ExecutionPlan>) -> usize {
        self.edges.push(Edge { from, to: usize::MAX, fan, partitions, estimate: Estimate::of(original) });
        self.edges.len() - 1
    }
}

impl Stages {
    /// Whether stage `index` may run as any number of tasks: it reads no table (a scan's
    /// partitions are DataFusion's), it reads at least one edge partitioned, and each of those
    /// has one partition per task and an estimate of its size (what the planner sizes it by).
    /// Repartitioned to another count ([`Stages::resize`]), its plan runs that many.
    pub fn resizable(&self, index: usize) -> bool {
        let stage = &self.stages[index];
        let mut partitioned = self.edges.iter().filter(|e| e.to == index && e.fan == Fan::Partitioned).peekable();
        partitioned.peek().is_some()
            && partitioned.all(|e| e.partitions == stage.tasks && e.estimate != Estimate::default())
            && reads_no_table(&stage.plan.input().clone())
    }

    /// Runs stage `index` as `tasks` tasks: the edges it reads partitioned are repartitioned
    /// into that many (their producers' routes and its readers), and the readers of its
    /// output that take a partition per producer (under a coalesce or a merge) take that
    /// many. Returns whether it did; where DataFusion's operators would not run the stage's
    /// plan as exactly `tasks` partitions afterwards, nothing changes.
    pub fn resize(&mut self, index: usize, tasks: usize) -> DfResult<bool> {
        if tasks == self.stages[index].tasks {
            return Ok(true);
        }
        if tasks == 0 || !self.resizable(index) {
            return Ok(false);
        }
        let mut next = self.clone();
        let reads: Vec<usize> = (0..self.edges.len())
            .filter(|&e| self.edges[e].to == index && self.edges[e].fan == Fan::Partitioned)
            .collect();
        for &e in &reads {
            let producer = &mut next.stages[self.edges[e].from];
            let route = match producer.plan.route() {
                Route::Hash(keys, _) => Route::Hash(keys.clone(), tasks),
                Route::RoundRobin(_) => Route::RoundRobin(tasks),
                Route::Single => return Ok(false),
            };
            producer.plan = Arc::new(ExchangeWriter::new(producer.plan.input().clone(), route));
            next.edges[e].partitions = tasks;
        }
        let ids: Vec<u32> = reads.iter().map(|&e| e as u32 + 1).collect();
        next.stages[index].plan = with_readers(&next.stages[index].plan, &ids, tasks)?;
        if next.stages[index].plan.input().output_partitioning().partition_count() != tasks {
            return Ok(false);
        }
        next.stages[index].tasks = tasks;
        for e in (0..self.edges.len()).filter(|&e| self.edges[e].from == index && self.edges[e].fan == Fan::Whole) {
            let consumer = self.edges[e].to;
            let before = next.stages[consumer].plan.input().output_partitioning().partition_count();
            next.stages[consumer].plan = with_readers(&next.stages[consumer].plan, &[e as u32 + 1], tasks)?;
            if next.stages[consumer].plan.input().output_partitioning().partition_count() != before {
                return Ok(false);
            }
        }
        *self = next;
        Ok(true)
    }

    /// How edge `index` distributes its data, in the planner's terms: a shuffle, a broadcast
    /// (whole outputs read by every task of a stage with several), or a gather (into one task).
    pub fn kind(&self, index: usize) -> baton_planner::EdgeKind {
        let edge = &self.edges[index];
        match edge.fan {
            Fan::Partitioned => baton_planner::EdgeKind::Shuffle,
            Fan::Whole if self.stages[edge.to].tasks > 1 => baton_planner::EdgeKind::Broadcast,
            Fan::Whole => baton_planner::EdgeKind::Gather,
        }
    }

    /// The stages as text: each stage's tasks, its plan, and the edges between them (what the
    /// plan-splitting golden files hold).
    pub fn display(&self) -> String {
        let mut out = String::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let reads: Vec<String> = self
                .edges
                .iter()
                .enumerate()
                .filter(|(_, e)| e.to == i)
                .map(|(n, e)| format!("edge-{} from stage-{}", n + 1, e.from + 1))
                .collect();
            let reads = if reads.is_empty() { "tables".to_string() } else { reads.join(", ") };
            let _ = writeln!(out, "stage-{} · {} tasks · reads {reads}", i + 1, stage.tasks);
            let plan: Arc<dyn ExecutionPlan> = stage.plan.clone();
            tree(&mut out, &plan, 1);
            for note in join_filters(&plan, &self.stages) {
                let _ = writeln!(out, "  {note}");
            }
        }
        out
    }
}

/// Whether every leaf of `plan` is an exchange reader.
fn reads_no_table(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let children = plan.children();
    if children.is_empty() { plan.is::<ExchangeReader>() } else { children.into_iter().all(reads_no_table) }
}

/// `writer`'s plan with the readers of the edges `ids` reading `partitions` partitions (as
/// they read them: hashed on the same keys, or one per producer), the operators above rebuilt.
fn with_readers(writer: &Arc<ExchangeWriter>, ids: &[u32], partitions: usize) -> DfResult<Arc<ExchangeWriter>> {
    let input = writer
        .input()
        .clone()
        .transform_up(|node| {
            let Some(reader) = node.downcast_ref::<ExchangeReader>().filter(|r| ids.contains(&r.edge())) else {
                return Ok(Transformed::no(node));
            };
            let resized = ExchangeReader::new(reader.edge(), node.schema(), partitions, reader.per_producer())
                .hashed(reader.keys().to_vec());
            Ok(Transformed::yes(Arc::new(resized) as Arc<dyn ExecutionPlan>))
        })?
        .data;
    Ok(Arc::new(ExchangeWriter::new(input, writer.route().clone())))
}

/// What becomes of the dynamic filter of each hash join in a stage's plan: it prunes the scan
/// of the join's probe side when that scan is in the same stage; one pushed into a scan of
/// another stage (below an exchange) is not applied, since that stage's tasks ran before.
fn join_filters(plan: &Arc<dyn ExecutionPlan>, stages: &[Stage]) -> Vec<String> {
    let mut notes = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            let on: Vec<String> = join.on().iter().map(|(l, r)| format!("{l} = {r}")).collect();
            let on = crate::located::without_indices(&on.join(", "));
            for filter in node.dynamic_expressions_produced() {
                let Some(id) = filter.expression_id() else { continue };
                let note = if contains_expression(join.right(), id) {
                    "prunes the probe side's scan in this stage".to_string()
                } else if let Some(at) = stages.iter().position(|s| {
                    let other: Arc<dyn ExecutionPlan> = s.plan.clone();
                    !Arc::ptr_eq(&other, plan) && contains_expression(&other, id)
                }) {
                    format!(
                        "not applied: it went into a scan of stage-{}, whose tasks run before this \
                         stage's (a filter does not cross a stage boundary)",
                        at + 1
                    )
                } else {
                    "not applied: no scan below the join takes it".to_string()
                };
                notes.push(format!("join filter on {on}: {note}"));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    notes
}

/// Whether `plan` or an operator below holds the expression `id`.
fn contains_expression(plan: &Arc<dyn ExecutionPlan>, id: u64) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        node.apply_expressions(&mut |root| {
            root.apply(|e| {
                found |= e.expression_id() == Some(id);
                Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
            })
        })?;
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

/// One line per operator, indented by depth: Baton's exchanges in full, DataFusion's by name
/// (their details hold file paths and sizes that differ from run to run).
fn tree(out: &mut String, plan: &Arc<dyn ExecutionPlan>, depth: usize) {
    let line = if plan.is::<ExchangeReader>() || plan.is::<ExchangeWriter>() {
        displayable(plan.as_ref()).one_line().to_string()
    } else {
        plan.name().to_string()
    };
    let _ = writeln!(out, "{:width$}{}", "", line.trim_end(), width = 2 * depth);
    for child in plan.children() {
        tree(out, child, depth + 1);
    }
}
