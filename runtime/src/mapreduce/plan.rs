//! Asking the planner how a two-stage MapReduce job's shuffle should travel.

use baton_planner::{
    ClusterModel, Compute, Dag, DopBounds, Edge, EdgeId, EdgeKind, Objective, Path, Plan, Stage, StageId, Topology,
};

use crate::error::Result;

/// The shape of a map-shuffle-reduce job, for the planner.
#[derive(Clone, Debug)]
pub struct Shape {
    /// A name for the explanation.
    pub name: String,
    /// Bytes the mappers read and shuffle.
    pub bytes: u64,
    /// Rows they shuffle.
    pub rows: u64,
    /// Map tasks.
    pub mappers: u32,
    /// Reduce tasks.
    pub reducers: u32,
    /// Core-seconds per byte of the map work.
    pub map_per_byte_s: f64,
    /// Core-seconds per byte of the reduce work.
    pub reduce_per_byte_s: f64,
    /// Whether reducers may start as mappers end, pulling each output from the node that
    /// keeps it (on a cluster, where each host's node keeps its producers' outputs).
    pub pipelined: bool,
}

/// What the planner chose for the shuffle edge, in the runtime's terms.
#[derive(Clone, Debug)]
pub struct ShuffleChoice {
    /// The whole plan (for `--explain`).
    pub plan: Plan,
    /// The path.
    pub path: Path,
    /// The topology.
    pub topology: Topology,
}

/// Plans `shape` on `cluster` under `objective`. `path` and `topology`, when given, override
/// the planner's choices (the path by planning with only that path).
pub fn choose(
    cluster: &ClusterModel,
    shape: &Shape,
    objective: Objective,
    path: Option<Path>,
    topology: Option<Topology>,
) -> Result<ShuffleChoice> {
    let mut cluster = cluster.clone();
    if let Some(path) = path {
        cluster.paths.retain(|p| p.path == path);
    }
    // VM-local passing is within one host: asked for on a cluster, the job runs on its first.
    if path == Some(Path::VmLocal) {
        cluster.hosts.truncate(1);
    }
    let dag = Dag {
        stages: vec![
            Stage {
                id: StageId(1),
                name: format!("{}: map", shape.name),
                dop: DopBounds::fixed(shape.mappers),
                compute: Compute { per_row_s: 0.0, per_byte_s: shape.map_per_byte_s },
                source_rows: shape.rows,
                source_bytes: shape.bytes,
            },
            Stage {
                id: StageId(2),
                name: format!("{}: reduce", shape.name),
                dop: DopBounds::fixed(shape.reducers),
                compute: Compute { per_row_s: 0.0, per_byte_s: shape.reduce_per_byte_s },
                source_rows: 0,
                source_bytes: 0,
            },
        ],
        edges: vec![Edge {
            id: EdgeId(1),
            from: StageId(1),
            to: StageId(2),
            kind: EdgeKind::Shuffle,
            bytes: shape.bytes,
            rows: shape.rows,
            pipelined: shape.pipelined,
        }],
    };
    let plan = baton_planner::plan(&dag, &cluster, objective)?;
    let chosen = plan.edges.first().map(|e| e.chosen);
    let (planned_path, planned_topology) =
        chosen.map_or((Path::ObjectStore, Topology::Coalesced), |c| (c.path, c.topology));
    Ok(ShuffleChoice { plan, path: path.unwrap_or(planned_path), topology: topology.unwrap_or(planned_topology) })
}

/// Parses a shuffle topology's name: `all-to-all`, `coalesced`, or `K-level` for K in 2..=4.
pub fn parse_topology(name: &str) -> Option<Topology> {
    match name {
        "all-to-all" => Some(Topology::AllToAll),
        "coalesced" => Some(Topology::Coalesced),
        other => {
            let levels: u32 = other.strip_suffix("-level")?.parse().ok()?;
            (2..=4).contains(&levels).then_some(Topology::KLevel { levels })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_job_on_one_host_goes_vm_local() {
        let mut cluster = ClusterModel::uniform(1, 2, 8 << 30);
        cluster.paths.retain(|p| matches!(p.path, Path::VmLocal | Path::RemoteStore | Path::ObjectStore));
        let shape = Shape {
            name: "sort".into(),
            bytes: 1 << 30,
            rows: 10_737_418,
            mappers: 8,
            reducers: 8,
            map_per_byte_s: 2e-9,
            reduce_per_byte_s: 8e-9,
            pipelined: false,
        };
        let choice = choose(&cluster, &shape, Objective::LeastTime, None, None).unwrap();
        assert_eq!(choice.path, Path::VmLocal);
        let forced =
            choose(&cluster, &shape, Objective::LeastTime, Some(Path::ObjectStore), Some(Topology::AllToAll)).unwrap();
        assert_eq!((forced.path, forced.topology), (Path::ObjectStore, Topology::AllToAll));
        // More tasks than cores run in waves on the one host: still VM-local, also when forced.
        let forced = choose(
            &cluster,
            &Shape { mappers: 64, reducers: 64, ..shape },
            Objective::LeastTime,
            Some(Path::VmLocal),
            None,
        )
        .unwrap();
        assert_eq!(forced.path, Path::VmLocal);
    }

    #[test]
    fn topology_names_parse() {
        assert_eq!(parse_topology("2-level"), Some(Topology::KLevel { levels: 2 }));
        assert_eq!(parse_topology("coalesced"), Some(Topology::Coalesced));
        assert_eq!(parse_topology("9-level"), None);
        assert_eq!(parse_topology("star"), None);
    }
}
