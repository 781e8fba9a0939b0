//! What the planner decides: the objective it was given and the plan it returns.

use crate::dag::EdgeKind;
use crate::estimate::Estimate;
use crate::ids::{EdgeId, HostId, StageId};

/// What the plan optimizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Objective {
    /// The least predicted time; dollars break ties.
    LeastTime,
    /// The fewest predicted dollars; time breaks ties.
    LeastCost,
    /// The fewest dollars among plans predicted to finish within the deadline, or the fastest
    /// plan when none does.
    LeastCostWithin {
        /// The deadline in seconds.
        deadline_s: f64,
    },
}

impl Objective {
    /// A key to compare predictions under this objective: smaller is better.
    pub fn key(self, time_s: f64, dollars: f64) -> (u8, f64, f64) {
        match self {
            Objective::LeastTime => (0, time_s, dollars),
            Objective::LeastCost => (0, dollars, time_s),
            Objective::LeastCostWithin { deadline_s } if time_s <= deadline_s => (0, dollars, time_s),
            Objective::LeastCostWithin { .. } => (1, time_s, dollars),
        }
    }

    /// Parses `least-time`, `least-cost`, or `least-cost-within:SECONDS`.
    pub fn parse(text: &str) -> Option<Objective> {
        match text {
            "least-time" => Some(Objective::LeastTime),
            "least-cost" => Some(Objective::LeastCost),
            other => {
                let deadline_s: f64 = other.strip_prefix("least-cost-within:")?.parse().ok()?;
                (deadline_s > 0.0 && deadline_s.is_finite()).then_some(Objective::LeastCostWithin { deadline_s })
            }
        }
    }

    /// Words for explanations.
    pub fn describe(self) -> String {
        match self {
            Objective::LeastTime => "least time".into(),
            Objective::LeastCost => "least cost".into(),
            Objective::LeastCostWithin { deadline_s } => format!("least cost within {deadline_s} s"),
        }
    }
}

/// Where a stage's tasks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Wherever functions are free, across all hosts.
    Spread,
    /// All on one host, so that its edges to stages on the same host can be VM-local.
    Host(HostId),
}

/// The plan for one stage.
#[derive(Clone, Debug, PartialEq)]
pub struct StagePlan {
    /// The stage.
    pub id: StageId,
    /// Its name.
    pub name: String,
    /// Tasks it runs as.
    pub dop: u32,
    /// Where they run.
    pub placement: Placement,
    /// Seconds from its first task's start to its last task's end.
    pub time_s: f64,
    /// Dollars of function time.
    pub dollars: f64,
}

/// The plan for one edge.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgePlan {
    /// The edge.
    pub id: EdgeId,
    /// Producer stage.
    pub from: StageId,
    /// Consumer stage.
    pub to: StageId,
    /// Its kind.
    pub kind: EdgeKind,
    /// Estimated bytes.
    pub bytes: u64,
    /// What was chosen.
    pub chosen: Estimate,
    /// Every option that was possible, best first under the objective (the chosen one first).
    pub alternatives: Vec<Estimate>,
    /// Why, in words.
    pub reasons: Vec<String>,
}

/// A job's plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What it optimizes.
    pub objective: Objective,
    /// Every stage, in dependency order.
    pub stages: Vec<StagePlan>,
    /// Every edge, in the DAG's order.
    pub edges: Vec<EdgePlan>,
    /// Predicted seconds for the whole job (its critical path).
    pub time_s: f64,
    /// Predicted dollars for the whole job.
    pub dollars: f64,
    /// The same prediction with every edge through the object store, if the cluster has one.
    pub object_store_only: Option<(f64, f64)>,
    /// Things worth saying about the plan as a whole.
    pub notes: Vec<String>,
}

impl Plan {
    /// The plan of `edge`.
    pub fn edge(&self, edge: EdgeId) -> Option<&EdgePlan> {
        self.edges.iter().find(|e| e.id == edge)
    }

    /// The plan of `stage`.
    pub fn stage(&self, stage: StageId) -> Option<&StagePlan> {
        self.stages.iter().find(|s| s.id == stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objectives_parse_by_name_and_bad_ones_do_not() {
        assert_eq!(Objective::parse("least-time"), Some(Objective::LeastTime));
        assert_eq!(Objective::parse("least-cost"), Some(Objective::LeastCost));
        assert_eq!(Objective::parse("least-cost-within:30"), Some(Objective::LeastCostWithin { deadline_s: 30.0 }));
        for bad in ["fastest", "least-cost-within:0", "least-cost-within:-1", "least-cost-within:inf", ""] {
            assert_eq!(Objective::parse(bad), None, "{bad}");
        }
    }
}
