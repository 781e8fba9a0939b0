//! The planner benchmark: how long planning takes for a large DAG (goal: a 100-stage DAG with
//! DoP up to 1000 in under 50 ms).

use std::time::Instant;

use baton_planner::{ClusterModel, Compute, Dag, DopBounds, Edge, EdgeId, EdgeKind, Objective, Stage, StageId, plan};
use serde::Serialize;

use crate::stats::{Summary, summarize};

/// A DAG of `stages` stages: a chain of shuffles, every fifth stage also joining an earlier
/// one's output (broadcast or shuffle), every stage with DoP 1 to `max_dop`.
pub fn large_dag(stages: u32, max_dop: u32) -> Dag {
    let stage = |id: u32| Stage {
        id: StageId(id),
        name: format!("stage {id}"),
        dop: DopBounds::range(1, max_dop),
        compute: Compute { per_row_s: 5e-8, per_byte_s: 0.0 },
        source_rows: if id % 10 == 1 { 200_000_000 } else { 0 },
        source_bytes: 0,
    };
    let mut edges = Vec::new();
    for id in 2..=stages {
        let bytes = (1u64 << 30) * u64::from(1 + id % 7);
        edges.push(Edge {
            id: EdgeId(id * 2),
            from: StageId(id - 1),
            to: StageId(id),
            kind: EdgeKind::Shuffle,
            bytes,
            rows: bytes / 100,
            pipelined: false,
        });
        if id % 5 == 0 && id > 5 {
            let kind = if id % 10 == 0 { EdgeKind::Broadcast } else { EdgeKind::Shuffle };
            let bytes = if kind == EdgeKind::Broadcast { 64 << 20 } else { 2 << 30 };
            edges.push(Edge {
                id: EdgeId(id * 2 + 1),
                from: StageId(id - 5),
                to: StageId(id),
                kind,
                bytes,
                rows: bytes / 100,
                pipelined: false,
            });
        }
    }
    Dag { stages: (1..=stages).map(stage).collect(), edges }
}

/// What the planner benchmark measured.
#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    /// Stages in the DAG.
    pub stages: usize,
    /// Edges in the DAG.
    pub edges: usize,
    /// Largest DoP allowed.
    pub max_dop: u32,
    /// Per objective: timings of one plan.
    pub runs: Vec<(String, Summary)>,
}

/// Plans the large DAG `repeats` times under each objective.
pub fn run(repeats: usize) -> anyhow::Result<PlanReport> {
    let dag = large_dag(100, 1000);
    let cluster = ClusterModel::uniform(16, 64, 256 << 30);
    let mut runs = Vec::new();
    for objective in [Objective::LeastTime, Objective::LeastCost, Objective::LeastCostWithin { deadline_s: 60.0 }] {
        let mut seconds = Vec::new();
        for _ in 0..repeats.max(1) {
            let start = Instant::now();
            let p = plan(&dag, &cluster, objective)?;
            seconds.push(start.elapsed().as_secs_f64());
            anyhow::ensure!(p.edges.len() == dag.edges.len(), "plan lost edges");
        }
        runs.push((objective.describe(), summarize(0, seconds)));
    }
    Ok(PlanReport { stages: dag.stages.len(), edges: dag.edges.len(), max_dop: 1000, runs })
}

/// The report as Markdown.
pub fn markdown(report: &PlanReport) -> String {
    let mut out = format!(
        "### Planning a {}-stage, {}-edge DAG with DoP up to {}\n\n| objective | p50 | p99 | runs |\n|---|---:|---:|---:|\n",
        report.stages, report.edges, report.max_dop
    );
    for (name, s) in &report.runs {
        out.push_str(&format!("| {name} | {:.2} ms | {:.2} ms | {} |\n", s.p50_s * 1e3, s.p99_s * 1e3, s.samples));
    }
    out.push_str("\nGoal: under 50 ms.\n");
    out
}
