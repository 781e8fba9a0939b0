//! The entry point: a DAG, a cluster and an objective in, a [`Plan`] out.

use crate::Path;
use crate::cluster::ClusterModel;
use crate::dag::Dag;
use crate::error::{Error, Result};
use crate::plan::{EdgePlan, Objective, Placement, Plan, StagePlan};
use crate::search::{Search, State, Weigh};

fn check_cluster(cluster: &ClusterModel) -> Result<()> {
    let bad = |what: &str, reason: &str| Err(Error::Invalid { what: what.into(), reason: reason.into() });
    if cluster.hosts.is_empty() || cluster.hosts.iter().any(|h| h.cores == 0) {
        return bad("cluster", "needs at least one host, each with at least one core");
    }
    if cluster.paths.is_empty() {
        return bad("cluster", "has no path to carry data between stages");
    }
    for (i, p) in cluster.paths.iter().enumerate() {
        if cluster.paths[..i].iter().any(|q| q.path == p.path) {
            return bad(p.path.name(), "is listed twice");
        }
        if !(p.task_bandwidth > 0.0 && p.aggregate_bandwidth > 0.0 && p.latency_s >= 0.0) {
            return bad(p.path.name(), "bandwidths must be positive and latency not negative");
        }
    }
    if cluster.function.memory == 0 || cluster.function.duration_cap_s <= 0.0 {
        return bad("function", "memory and duration cap must be positive");
    }
    Ok(())
}

/// Plans `dag` on `cluster` under `objective`.
///
/// The plan never predicts worse under the objective than sending every edge through the
/// object store: that plan is searched too, and kept if it wins.
pub fn plan(dag: &Dag, cluster: &ClusterModel, objective: Objective) -> Result<Plan> {
    let checked = dag.check()?;
    check_cluster(cluster)?;
    let search = Search::new(&checked, cluster, objective);
    let mut best = search.run()?;
    let mut notes = Vec::new();
    let mut object_store_only = None;
    if cluster.path(Path::ObjectStore).is_some() && cluster.paths.len() > 1 {
        let only = cluster.object_store_only();
        let baseline = Search::new(&checked, &only, objective).run()?;
        object_store_only = Some((baseline.time_s, baseline.dollars));
        if objective.key(baseline.time_s, baseline.dollars) < objective.key(best.time_s, best.dollars) {
            notes.push("every edge through the object store was predicted best".into());
            best = baseline;
        }
    }
    if let Objective::LeastCostWithin { deadline_s } = objective
        && best.time_s > deadline_s
    {
        notes.push(format!("no plan is predicted to meet the {deadline_s} s deadline; this is the fastest found"));
    }
    Ok(assemble(&search, best, objective, object_store_only, notes))
}

fn assemble(
    search: &Search<'_>,
    st: State,
    objective: Objective,
    object_store_only: Option<(f64, f64)>,
    notes: Vec<String>,
) -> Plan {
    let dag = search.c.dag;
    let stages = search
        .c
        .order
        .iter()
        .map(|&s| StagePlan {
            id: dag.stages[s].id,
            name: dag.stages[s].name.clone(),
            dop: st.dop[s],
            placement: st.place[s],
            time_s: st.stage_time[s],
            dollars: st.stage_dollars[s],
        })
        .collect();
    let edges = dag
        .edges
        .iter()
        .enumerate()
        .map(|(e, edge)| {
            let chosen = st.choice[e];
            let mut alternatives = search.options(&st, e);
            let order = |a: &crate::Estimate| {
                let (feasible, first, second) = objective.key(a.time_s, a.dollars);
                (feasible, first, second, a.requests.writes + a.requests.reads)
            };
            alternatives.sort_by(|a, b| order(a).partial_cmp(&order(b)).unwrap_or(std::cmp::Ordering::Equal));
            alternatives.retain(|a| (a.path, a.topology) != (chosen.path, chosen.topology));
            alternatives.insert(0, chosen);
            let mut reasons = vec![match st.weigh {
                Weigh::TimeFirst => format!("fastest of {} options", alternatives.len()),
                Weigh::CostFirst => format!("cheapest of {} options", alternatives.len()),
                Weigh::Weighted(l) => {
                    format!("best of {} options at ${l:e} per second saved", alternatives.len())
                }
            }];
            let (from, to) = search.c.ends[e];
            if let (Placement::Host(a), Placement::Host(b)) = (st.place[from], st.place[to])
                && a == b
            {
                reasons.push(format!("{} and {} share {a}", edge.from, edge.to));
            }
            if chosen.spilled > 0 {
                reasons.push(format!(
                    "{} bytes do not fit {} and go to the object store at the same time",
                    chosen.spilled,
                    chosen.path.name()
                ));
            }
            for path in Path::ALL {
                if let Some(why) = search.ruled_out(&st, e, path)
                    && search.cluster.path(path).is_some()
                {
                    reasons.push(format!("not {}: {why}", path.name()));
                }
            }
            EdgePlan {
                id: edge.id,
                from: edge.from,
                to: edge.to,
                kind: edge.kind,
                bytes: edge.bytes,
                chosen,
                alternatives,
                reasons,
            }
        })
        .collect();
    Plan { objective, stages, edges, time_s: st.time_s, dollars: st.dollars, object_store_only, notes }
}
