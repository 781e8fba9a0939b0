//! Baton's planner: for every edge of a job's DAG, which path the data takes (VM-local, direct,
//! remote store, object store, RDMA map) and which shuffle topology it uses; the parallelism and
//! placement of every stage; and an explanation of why.
//!
//! The planner is pure — no I/O, no clocks, no async — so that its decisions are tested
//! table-driven and against golden files. Inputs in ([`Dag`], [`ClusterModel`], [`Objective`]),
//! a [`Plan`] out; [`explain`] turns a plan into text, and [`Calibration`] feeds measured
//! transfers back into the cluster model.
//!
//! ```
//! use baton_planner::*;
//!
//! let dag = Dag {
//!     stages: vec![
//!         Stage { id: StageId(1), name: "map".into(), dop: DopBounds::range(1, 64),
//!                 compute: Compute { per_row_s: 1e-7, per_byte_s: 0.0 },
//!                 source_rows: 100_000_000, source_bytes: 0 },
//!         Stage { id: StageId(2), name: "reduce".into(), dop: DopBounds::range(1, 64),
//!                 compute: Compute { per_row_s: 1e-7, per_byte_s: 0.0 },
//!                 source_rows: 0, source_bytes: 0 },
//!     ],
//!     edges: vec![Edge { id: EdgeId(1), from: StageId(1), to: StageId(2), kind: EdgeKind::Shuffle,
//!                        bytes: 4 << 30, rows: 100_000_000, pipelined: false }],
//! };
//! let plan = plan(&dag, &ClusterModel::uniform(4, 16, 64 << 30), Objective::LeastTime).unwrap();
//! let (t, _) = plan.object_store_only.unwrap();
//! assert!(plan.time_s <= t);
//! println!("{}", explain(&plan));
//! ```

mod calibrate;
mod cluster;
mod dag;
mod error;
mod estimate;
mod explain;
mod ids;
mod plan;
mod planner;
pub mod prices;
mod search;
pub mod spec;
mod topology;
mod units;

pub use calibrate::{Calibration, Measurement};
pub use cluster::{ClusterModel, FunctionModel, Host, NIC_10G, PathModel, RDMA_NIC_FACTOR};
pub use dag::{Compute, Dag, DopBounds, Edge, EdgeKind, Stage};
pub use error::{Error, Result};
pub use estimate::{Estimate, Limits, estimate, transfer_s};
pub use explain::explain;
pub use ids::{EdgeId, HostId, StageId};
pub use plan::{EdgePlan, Objective, Placement, Plan, StagePlan};
pub use planner::plan;
pub use topology::{Requests, Topology, fanout};
pub use units::{ByteSize, SizeError};

use serde::{Deserialize, Serialize};

/// A way bytes can cross an edge of a DAG.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Path {
    /// Shared memory held by the host's node: producer and consumer on one host.
    VmLocal,
    /// Function to function over QUIC.
    Direct,
    /// The remote store's memory and flash tiers.
    RemoteStore,
    /// An object store such as S3.
    ObjectStore,
    /// One-sided RDMA reads of the producer's registered memory.
    RdmaMap,
}

impl Path {
    /// Every path.
    pub const ALL: [Path; 5] = [Path::VmLocal, Path::Direct, Path::RemoteStore, Path::ObjectStore, Path::RdmaMap];

    /// The name used in plans, files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Path::VmLocal => "vm-local",
            Path::Direct => "direct",
            Path::RemoteStore => "remote-store",
            Path::ObjectStore => "object-store",
            Path::RdmaMap => "rdma-map",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names_are_distinct() {
        let mut names: Vec<_> = Path::ALL.iter().map(|p| p.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Path::ALL.len());
    }
}
