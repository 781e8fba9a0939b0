//! Asking the planner how a two-stage MapReduce job's shuffle should travel.

use baton_planner::{
    ClusterModel, Compute, Dag, DopBounds, Edge, EdgeId, EdgeKind, Objective, Path, Plan, Stage, StageId, Topology,
};
use baton_shuffle::Layout;

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
}

/// What the planner chose for the shuffle edge, in the runtime's terms.
#[derive(Clone, Debug)]
pub struct ShuffleChoice {
    /// The whole plan (for `--explain`).
    pub plan: Plan,
    /// The path.
    pub path: Path,
    /// The layout.
    pub layout: Layout,
    /// Anything the runtime changed from the plan, in words.
    pub notes: Vec<String>,
}

/// Plans `shape` on `cluster` for the least time. `path` and `layout`, when given, override
/// the planner's choices (the path by planning with only that path).
pub fn choose(
    cluster: &ClusterModel,
    shape: &Shape,
    path: Option<Path>,
    layout: Option<Layout>,
) -> Result<ShuffleChoice> {
    let mut cluster = cluster.clone();
    if let Some(path) = path {
        cluster.paths.retain(|p| p.path == path);
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
            pipelined: false,
        }],
    };
    let plan = baton_planner::plan(&dag, &cluster, Objective::LeastTime)?;
    let mut notes = Vec::new();
    let chosen = plan.edges.first().map(|e| e.chosen);
    let (planned_path, topology) = chosen.map_or((Path::ObjectStore, Topology::Coalesced), |c| (c.path, c.topology));
    let planned_layout = match topology {
        Topology::AllToAll | Topology::PerTask => Layout::AllToAll,
        Topology::Coalesced => Layout::Coalesced,
        Topology::KLevel { levels } => {
            notes.push(format!("the plan's {levels}-level merge runs as a coalesced shuffle (k-level is not run yet)"));
            Layout::Coalesced
        }
    };
    Ok(ShuffleChoice { plan, path: path.unwrap_or(planned_path), layout: layout.unwrap_or(planned_layout), notes })
}

/// The planner's name for a layout.
pub fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::AllToAll => "all-to-all",
        Layout::Coalesced => "coalesced",
    }
}

/// Parses a layout name (`all-to-all`, `coalesced`).
pub fn parse_layout(name: &str) -> Option<Layout> {
    match name {
        "all-to-all" => Some(Layout::AllToAll),
        "coalesced" => Some(Layout::Coalesced),
        _ => None,
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
        };
        let choice = choose(&cluster, &shape, None, None).unwrap();
        assert_eq!(choice.path, Path::VmLocal);
        let forced = choose(&cluster, &shape, Some(Path::ObjectStore), Some(Layout::AllToAll)).unwrap();
        assert_eq!((forced.path, forced.layout), (Path::ObjectStore, Layout::AllToAll));
        // More tasks than cores run in waves on the one host: still VM-local, also when forced.
        let forced =
            choose(&cluster, &Shape { mappers: 64, reducers: 64, ..shape }, Some(Path::VmLocal), None).unwrap();
        assert_eq!(forced.path, Path::VmLocal);
    }
}
