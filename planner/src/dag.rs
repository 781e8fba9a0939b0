//! A job as the planner sees it: stages, the edges between them, and what each costs.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::ids::{EdgeId, StageId};

/// How many tasks a stage may run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DopBounds {
    /// At least this many tasks.
    pub min: u32,
    /// At most this many tasks.
    pub max: u32,
}

impl DopBounds {
    /// Exactly `n` tasks.
    pub fn fixed(n: u32) -> Self {
        Self { min: n, max: n }
    }

    /// Between `min` and `max` tasks.
    pub fn range(min: u32, max: u32) -> Self {
        Self { min, max }
    }
}

/// The work a stage does, per row and per byte of its input, in seconds of one core.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Compute {
    /// Core-seconds per input row.
    pub per_row_s: f64,
    /// Core-seconds per input byte.
    pub per_byte_s: f64,
}

/// One stage: a piece of the job that runs as `dop` identical tasks on a partition each.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Its id.
    pub id: StageId,
    /// A name for explanations (`scan lineitem`).
    pub name: String,
    /// How many tasks it may run as.
    pub dop: DopBounds,
    /// Its work per unit of input.
    pub compute: Compute,
    /// Rows it reads from outside the job (a table scan), besides its input edges.
    pub source_rows: u64,
    /// Bytes it reads from outside the job.
    pub source_bytes: u64,
}

/// How an edge's data is distributed from producer tasks to consumer tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// Producer task i feeds consumer task i.
    OneToOne,
    /// Every producer task sends a partition to every consumer task.
    Shuffle,
    /// Every consumer task reads all of the producer's output.
    Broadcast,
    /// All producer tasks send to one consumer task.
    Gather,
}

impl EdgeKind {
    /// The name used in files and explanations.
    pub fn name(self) -> &'static str {
        match self {
            EdgeKind::OneToOne => "one-to-one",
            EdgeKind::Shuffle => "shuffle",
            EdgeKind::Broadcast => "broadcast",
            EdgeKind::Gather => "gather",
        }
    }
}

/// One edge: data produced by one stage and consumed by another.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    /// Its id.
    pub id: EdgeId,
    /// The producing stage.
    pub from: StageId,
    /// The consuming stage.
    pub to: StageId,
    /// How the data is distributed.
    pub kind: EdgeKind,
    /// Estimated bytes produced.
    pub bytes: u64,
    /// Estimated rows produced.
    pub rows: u64,
    /// Whether the consumer runs while the producer does (a pipelined edge).
    pub pipelined: bool,
}

/// A job's stages and edges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dag {
    /// The stages.
    pub stages: Vec<Stage>,
    /// The edges.
    pub edges: Vec<Edge>,
}

/// A checked DAG: ids resolved to indices, stages in dependency order.
#[derive(Clone, Debug)]
pub(crate) struct Checked<'a> {
    pub dag: &'a Dag,
    /// Stage indices in an order where every edge goes forward.
    pub order: Vec<usize>,
    /// For each stage index, the indices of its incoming edges.
    pub incoming: Vec<Vec<usize>>,
    /// For each edge index, (producer stage index, consumer stage index).
    pub ends: Vec<(usize, usize)>,
}

impl Dag {
    /// Checks the DAG: unique ids, edges between known stages, sane bounds, no cycle.
    pub(crate) fn check(&self) -> Result<Checked<'_>> {
        let mut index = BTreeMap::new();
        for (i, stage) in self.stages.iter().enumerate() {
            if index.insert(stage.id, i).is_some() {
                return Err(Error::Invalid { what: stage.id.to_string(), reason: "two stages have this id".into() });
            }
            if stage.dop.min == 0 || stage.dop.min > stage.dop.max {
                return Err(Error::Invalid {
                    what: format!("{} ({})", stage.id, stage.name),
                    reason: format!("parallelism bounds {}..{} are empty or zero", stage.dop.min, stage.dop.max),
                });
            }
            let c = stage.compute;
            if !(c.per_row_s >= 0.0 && c.per_byte_s >= 0.0 && c.per_row_s.is_finite() && c.per_byte_s.is_finite()) {
                return Err(Error::Invalid {
                    what: format!("{} ({})", stage.id, stage.name),
                    reason: "compute costs must be finite and not negative".into(),
                });
            }
        }
        let mut ends = Vec::with_capacity(self.edges.len());
        let mut incoming = vec![Vec::new(); self.stages.len()];
        let mut seen = BTreeMap::new();
        for (e, edge) in self.edges.iter().enumerate() {
            if seen.insert(edge.id, e).is_some() {
                return Err(Error::Invalid { what: edge.id.to_string(), reason: "two edges have this id".into() });
            }
            let lookup = |s: StageId| {
                index.get(&s).copied().ok_or_else(|| Error::Invalid {
                    what: edge.id.to_string(),
                    reason: format!("names {s}, which is not a stage"),
                })
            };
            let (from, to) = (lookup(edge.from)?, lookup(edge.to)?);
            if from == to {
                return Err(Error::Cycle { stage: edge.from });
            }
            ends.push((from, to));
            incoming[to].push(e);
        }
        // Kahn's algorithm, smallest index first so the order is deterministic.
        let mut indegree: Vec<usize> = incoming.iter().map(Vec::len).collect();
        let mut outgoing = vec![Vec::new(); self.stages.len()];
        for (e, &(from, _)) in ends.iter().enumerate() {
            outgoing[from].push(e);
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..self.stages.len()).filter(|&s| indegree[s] == 0).collect();
        let mut order = Vec::with_capacity(self.stages.len());
        while let Some(s) = ready.pop_first() {
            order.push(s);
            for &e in &outgoing[s] {
                let to = ends[e].1;
                indegree[to] -= 1;
                if indegree[to] == 0 {
                    ready.insert(to);
                }
            }
        }
        if order.len() != self.stages.len() {
            let stuck = (0..self.stages.len()).find(|&s| indegree[s] > 0).map_or(StageId(0), |s| self.stages[s].id);
            return Err(Error::Cycle { stage: stuck });
        }
        Ok(Checked { dag: self, order, incoming, ends })
    }
}
