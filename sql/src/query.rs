//! Running a query on functions: DataFusion plans it, Baton cuts the plan into stages, the
//! planner picks each edge's path and topology, and the driver runs the stages' tasks.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use baton_fabric::JobId;
use baton_planner::{ClusterModel, Compute, Dag, DopBounds, EdgeId, Objective, Path, Plan, StageId, Topology};
use baton_runtime::driver::{self, Collect, DriverConfig, EdgeSpec, JobSpec, JobSummary, StageSpec};
use baton_runtime::env::Environment;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::physical_planning_context::{ScalarSubqueryResults, SubqueryIndex};
use datafusion::physical_plan::scalar_subquery::ScalarSubqueryExec;
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};

use crate::error::{Error, Result};
use crate::stages::{self, Fan, Stages};
use crate::task::{STAGE, StageParams};

/// Bytes assumed for an edge DataFusion cannot estimate.
const UNKNOWN_BYTES: u64 = 1 << 20;
/// Bytes per row assumed when DataFusion estimates rows but not bytes.
const ROW_BYTES: u64 = 64;
/// Core-seconds per byte of a SQL stage's work, for the planner.
const PER_BYTE_S: f64 = 5e-9;

/// How to run queries.
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    /// Run every edge on this path instead of the planner's choice.
    pub path: Option<Path>,
    /// Lay out every hash exchange this way (all-to-all or coalesced).
    pub topology: Option<Topology>,
}

/// A query cut into stages with a path and topology for each edge.
#[derive(Debug)]
pub struct PlannedQuery {
    /// The stages and edges.
    pub stages: Stages,
    /// The planner's plan (for `--explain`).
    pub plan: Plan,
    /// Each edge's path and topology, in edge order.
    pub choices: Vec<(Path, Topology)>,
    /// The path the result travels to the driver.
    pub collect: Path,
    /// Stores of the tables the query reads, for the tasks.
    pub stores: Vec<String>,
    /// The session's target partitions.
    pub partitions: usize,
}

/// A query's result and what running it did.
#[derive(Debug)]
pub struct QueryRun {
    /// The rows' schema (what an empty result still has).
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// The query's job.
    pub summary: JobSummary,
    /// How it was planned.
    pub planned: PlannedQuery,
    /// The jobs of its scalar subqueries, which ran first.
    pub subqueries: Vec<JobSummary>,
    /// Every job's id (subqueries' first, the query's last).
    pub jobs: Vec<JobId>,
}

/// An uncorrelated scalar subquery: a plan of its own, run before the query that uses it,
/// its value handed to that query's expressions.
#[derive(Debug)]
pub struct Subquery {
    /// Its plan (without subqueries of its own: those come earlier in the list).
    pub plan: Arc<dyn ExecutionPlan>,
    index: SubqueryIndex,
    results: ScalarSubqueryResults,
}

impl Subquery {
    /// Hands the subquery's result to the expressions that use it: its one value, or a NULL
    /// when it returned no row.
    pub fn resolve(&self, batches: &[RecordBatch]) -> Result<()> {
        let mut rows = batches.iter().filter(|b| b.num_rows() > 0);
        let value = match (rows.next(), rows.next()) {
            (None, _) => ScalarValue::try_from(self.plan.schema().field(0).data_type())?,
            (Some(b), None) if b.num_rows() == 1 && b.num_columns() == 1 => {
                ScalarValue::try_from_array(b.column(0), 0)?
            }
            _ => return Err(DataFusionError::Execution("Scalar subquery returned more than one row".into()).into()),
        };
        Ok(self.results.set(self.index, value)?)
    }
}

/// `plan` without its `ScalarSubqueryExec`s, and their subqueries, innermost first.
pub fn detach_subqueries(plan: Arc<dyn ExecutionPlan>) -> Result<(Arc<dyn ExecutionPlan>, Vec<Subquery>)> {
    let mut subqueries = Vec::new();
    let mut children = Vec::new();
    for child in plan.children() {
        let (child, mut inner) = detach_subqueries(child.clone())?;
        children.push(child);
        subqueries.append(&mut inner);
    }
    let plan = if children.is_empty() { plan } else { replace_children_if_necessary(plan, children)? };
    let Some(exec) = plan.downcast_ref::<ScalarSubqueryExec>() else { return Ok((plan, subqueries)) };
    for link in exec.subqueries() {
        subqueries.push(Subquery { plan: link.plan.clone(), index: link.index, results: exec.results().clone() });
    }
    Ok((exec.input().clone(), subqueries))
}

/// DataFusion's physical plan of `sql` (statements that are not queries, such as `CREATE
/// VIEW`, run as DataFusion runs them and plan to nothing).
pub async fn physical_plan(ctx: &SessionContext, sql: &str) -> Result<Arc<dyn ExecutionPlan>> {
    let df = ctx.sql(sql).await?;
    Ok(df.create_physical_plan().await?)
}

/// Cuts `plan` into stages and plans each edge on `cluster`.
pub fn plan(
    plan: Arc<dyn ExecutionPlan>,
    cluster: &ClusterModel,
    options: &QueryOptions,
    stores: Vec<String>,
    partitions: usize,
) -> Result<PlannedQuery> {
    let mut stages = stages::split(plan)?;
    let mut cluster = cluster.clone();
    if let Some(path) = options.path {
        cluster.paths.retain(|p| p.path == path);
    }
    // Each stage runs as many tasks as the planner chose. A stage whose operators would not
    // run as that many (DataFusion decides its partitioning) keeps its count, and the
    // planner plans again around it.
    let mut pinned = vec![false; stages.stages.len()];
    let plan = loop {
        let plan = baton_planner::plan(&dag(&stages, partitions, &pinned), &cluster, Objective::LeastTime)?;
        let mut resized = stages.clone();
        let mut refused = None;
        for (i, chosen) in plan.stages.iter().enumerate() {
            if !resized.resize(i, chosen.dop as usize)? {
                refused = Some(i);
                break;
            }
        }
        match refused {
            Some(i) => pinned[i] = true,
            None => {
                stages = resized;
                break plan;
            }
        }
    };
    let choices = plan
        .edges
        .iter()
        .zip(&stages.edges)
        .map(|(e, edge)| {
            // A k-level exchange ends in one partition per consumer task.
            let klevel_fits = edge.fan == Fan::Partitioned && stages.stages[edge.to].tasks == edge.partitions;
            choose(std::iter::once(&e.chosen).chain(&e.alternatives), edge.fan, klevel_fits, options.topology)
        })
        .collect();
    let collect = options.path.unwrap_or(if cluster.paths.iter().any(|p| p.path == Path::VmLocal) {
        Path::VmLocal
    } else {
        Path::ObjectStore
    });
    Ok(PlannedQuery { stages, plan, choices, collect, stores, partitions })
}

/// An edge's path and topology from the planner's `options` (best first): a whole output per
/// producer goes per task; a hash exchange takes the forced topology, or the planner's,
/// including a k-level exchange where it `klevel_fits` (else the best option that is not one,
/// and a forced k-level one is coalesced).
fn choose<'a>(
    mut options: impl Iterator<Item = &'a baton_planner::Estimate> + Clone,
    fan: Fan,
    klevel_fits: bool,
    forced: Option<Topology>,
) -> (Path, Topology) {
    let klevel = |t: Topology| matches!(t, Topology::KLevel { .. });
    let first = options.clone().next();
    let best = options.find(|a| klevel_fits || !klevel(a.topology)).or(first);
    let path = best.map_or(Path::ObjectStore, |b| b.path);
    let topology = match (fan, forced) {
        (Fan::Whole, _) => Topology::PerTask,
        (Fan::Partitioned, Some(t)) if klevel(t) && !klevel_fits => Topology::Coalesced,
        (Fan::Partitioned, Some(t)) => t,
        (Fan::Partitioned, None) => match best.map(|b| b.topology) {
            Some(t) if klevel(t) && !klevel_fits => Topology::Coalesced,
            Some(t) => t,
            None => Topology::Coalesced,
        },
    };
    (path, topology)
}

/// The planner's view of the stages: a stage that may run as any number of tasks
/// ([`Stages::resizable`]) gets from one up to DataFusion's count or the session's partitions,
/// whichever is more; any other (or one `pinned`) runs as DataFusion planned it.
fn dag(stages: &Stages, partitions: usize, pinned: &[bool]) -> Dag {
    let bytes = |e: &stages::Estimate| e.bytes.or(e.rows.map(|r| r * ROW_BYTES)).unwrap_or(UNKNOWN_BYTES).max(1);
    Dag {
        stages: stages
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| baton_planner::Stage {
                id: StageId(i as u32 + 1),
                name: format!("stage-{}", i + 1),
                dop: if stages.resizable(i) && !pinned[i] {
                    DopBounds::range(1, s.tasks.max(partitions) as u32)
                } else {
                    DopBounds::fixed(s.tasks as u32)
                },
                compute: Compute { per_row_s: 0.0, per_byte_s: PER_BYTE_S },
                source_rows: s.source.rows.unwrap_or(0),
                source_bytes: if s.source == stages::Estimate::default() { 0 } else { bytes(&s.source) },
            })
            .collect(),
        edges: stages
            .edges
            .iter()
            .enumerate()
            .map(|(i, e)| baton_planner::Edge {
                id: EdgeId(i as u32 + 1),
                from: StageId(e.from as u32 + 1),
                to: StageId(e.to as u32 + 1),
                kind: stages.kind(i),
                bytes: bytes(&e.estimate),
                rows: e.estimate.rows.unwrap_or(0),
                pipelined: false,
            })
            .collect(),
    }
}

impl PlannedQuery {
    /// The job that runs the stages on `env`.
    pub fn job(&self, name: &str, env: &dyn Environment) -> Result<JobSpec> {
        let spec = |path: Path| {
            env.spec(path).ok_or_else(|| Error::BadTable {
                table: name.to_string(),
                reason: format!("the {} path is not available here", path.name()),
            })
        };
        let stages = self
            .stages
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let bytes = crate::codec::encode(s.plan.clone())?;
                let params = StageParams::new(&bytes, self.stores.clone(), self.partitions);
                Ok(StageSpec {
                    name: format!("stage-{}", i + 1),
                    op: STAGE.into(),
                    params: serde_json::to_value(params)?,
                    tasks: s.tasks as u32,
                    // Where the plan put the stage (on a cluster: one host, or spread).
                    host: match self.plan.stages.get(i).map(|p| p.placement) {
                        Some(baton_planner::Placement::Host(h)) => Some(h.0),
                        _ => None,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let edges = self
            .stages
            .edges
            .iter()
            .zip(&self.choices)
            .map(|(e, &(path, topology))| {
                Ok(EdgeSpec {
                    from: e.from,
                    to: e.to,
                    path: spec(path)?,
                    topology,
                    pipelined: false,
                    // A k-level exchange has one partition per consumer task.
                    partitions: (!matches!(topology, Topology::KLevel { .. })).then_some(e.partitions as u32),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let collect = Some(Collect { stage: stages.len() - 1, path: spec(self.collect)? });
        Ok(JobSpec { name: name.to_string(), stages, edges, collect })
    }

    /// The stages, and each edge with its path and topology: what `--explain` prints.
    pub fn explain(&self) -> String {
        let mut out = self.stages.display();
        for (i, (e, (path, topology))) in self.stages.edges.iter().zip(&self.choices).enumerate() {
            let estimate = self.plan.edges.get(i).map_or(0, |p| p.bytes);
            let _ = writeln!(
                out,
                "edge-{} stage-{} -> stage-{} · {} into {} partitions, ~{} · {}, {}",
                i + 1,
                e.from + 1,
                e.to + 1,
                self.stages.kind(i).name(),
                e.partitions,
                baton_planner::ByteSize(estimate),
                path.name(),
                topology.name(),
            );
        }
        let _ = writeln!(out, "result stage-{} -> driver · {}", self.stages.stages.len(), self.collect.name());
        out
    }
}

/// Plans and runs `sql` on `env`'s workers, with tables registered in `ctx`: its scalar
/// subqueries first, each as a job of its own, then the query. `settings` is the template of
/// every job's driver configuration (each job gets a fresh id and token).
pub async fn run(
    ctx: &SessionContext,
    sql: &str,
    env: &dyn Environment,
    options: &QueryOptions,
    stores: Vec<String>,
    settings: &DriverConfig,
) -> Result<QueryRun> {
    let physical = physical_plan(ctx, sql).await?;
    let partitions = ctx.state().config().target_partitions();
    let (main, subqueries) = detach_subqueries(physical)?;
    let cluster = env.cluster_model();
    let name = first_line(sql);
    let mut jobs = Vec::new();
    let mut summaries = Vec::new();
    for (i, subquery) in subqueries.iter().enumerate() {
        let planned = plan(subquery.plan.clone(), &cluster, options, stores.clone(), partitions)?;
        let job = planned.job(&format!("{name} · subquery {}", i + 1), env)?;
        let config = fresh(env, settings)?;
        jobs.push(config.job);
        let (summary, batches) = driver::run_collect(&job, env.invoker(), &config).await?;
        subquery.resolve(&batches)?;
        summaries.push(summary);
    }
    let schema = main.schema();
    let planned = plan(main, &cluster, options, stores, partitions)?;
    let job = planned.job(&name, env)?;
    let config = fresh(env, settings)?;
    jobs.push(config.job);
    let (summary, batches) = driver::run_collect(&job, env.invoker(), &config).await?;
    Ok(QueryRun { schema, batches, summary, planned, subqueries: summaries, jobs })
}

/// What `--explain` prints for `physical`: each job's stages, edges and the planner's reasons
/// (the subqueries' jobs first, as they run first). Runs nothing.
pub fn explain(
    physical: Arc<dyn ExecutionPlan>,
    cluster: &ClusterModel,
    options: &QueryOptions,
    partitions: usize,
) -> Result<String> {
    let (main, subqueries) = detach_subqueries(physical)?;
    let mut out = String::new();
    let plans = subqueries.iter().map(|s| s.plan.clone()).chain([main]);
    for (i, p) in plans.enumerate() {
        let planned = plan(p, cluster, options, Vec::new(), partitions)?;
        if i < subqueries.len() {
            let _ = writeln!(out, "subquery {} (runs first, as a job of its own)", i + 1);
        } else if !subqueries.is_empty() {
            let _ = writeln!(out, "the query");
        }
        out.push_str(&planned.explain());
        out.push_str(&baton_planner::explain(&planned.plan));
        out.push('\n');
    }
    Ok(out)
}

/// How `physical` is cut into stages, as text (the golden files): its subqueries' stages
/// first, then its own.
pub fn display_stages(physical: Arc<dyn ExecutionPlan>) -> Result<String> {
    let (main, subqueries) = detach_subqueries(physical)?;
    let mut out = String::new();
    for (i, s) in subqueries.iter().enumerate() {
        let _ = writeln!(out, "subquery {} (runs first)", i + 1);
        out.push_str(&stages::split(s.plan.clone())?.display());
    }
    out.push_str(&stages::split(main)?.display());
    Ok(out)
}

/// `settings` with a new job's id and token.
fn fresh(env: &dyn Environment, settings: &DriverConfig) -> Result<DriverConfig> {
    let new = env.job_config()?;
    Ok(DriverConfig { job: new.job, token: new.token, hosts: new.hosts, ..settings.clone() })
}

/// `sql` run by DataFusion in this process: the baseline.
pub async fn run_single(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(run_single_with_schema(ctx, sql).await?.1)
}

/// [`run_single`], with the rows' schema (what an empty result still has).
pub async fn run_single_with_schema(ctx: &SessionContext, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let frame = ctx.sql(sql).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    Ok((schema, frame.collect().await?))
}

/// A short name for a query: its first non-empty line, cut at 60 characters.
fn first_line(sql: &str) -> String {
    let line = sql.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("--")).unwrap_or("query");
    line.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_planner::{Estimate, Requests};

    fn option(path: Path, topology: Topology) -> Estimate {
        Estimate { path, topology, time_s: 1.0, requests: Requests::default(), dollars: 0.0, spilled: 0 }
    }

    #[test]
    fn a_k_level_exchange_the_planner_picks_runs_where_it_fits_and_nothing_else_is_replaced() {
        let two = Topology::KLevel { levels: 2 };
        let options = [option(Path::ObjectStore, two), option(Path::VmLocal, Topology::Coalesced)];
        assert_eq!(choose(options.iter(), Fan::Partitioned, true, None), (Path::ObjectStore, two));
        // Where it does not fit, the best option that is not one.
        assert_eq!(choose(options.iter(), Fan::Partitioned, false, None), (Path::VmLocal, Topology::Coalesced));
        // Forced: as forced, where it fits.
        let three = Topology::KLevel { levels: 3 };
        assert_eq!(choose(options.iter(), Fan::Partitioned, true, Some(three)), (Path::ObjectStore, three));
        assert_eq!(choose(options.iter(), Fan::Partitioned, false, Some(three)).1, Topology::Coalesced);
        assert_eq!(choose(options.iter(), Fan::Whole, true, None).1, Topology::PerTask);
        let only_klevel = [option(Path::ObjectStore, two)];
        assert_eq!(choose(only_klevel.iter(), Fan::Partitioned, false, None), (Path::ObjectStore, Topology::Coalesced));
    }
}
