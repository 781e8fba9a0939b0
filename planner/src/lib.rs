//! Baton's planner: for every edge of a job's DAG, which path the data takes (VM-local, direct,
//! remote store, object store, RDMA map) and which shuffle topology it uses; the parallelism and
//! placement of every stage; and an explanation of why.
//!
//! The planner is pure — no I/O, no clocks, no async — so that its decisions can be tested
//! table-driven and against golden files. It is filled by the planner issue; for now it only
//! names the paths the fabric implements.

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
    /// Every path, fastest-to-set-up first.
    pub const ALL: [Path; 5] = [Path::VmLocal, Path::Direct, Path::RemoteStore, Path::ObjectStore, Path::RdmaMap];

    /// The name used in plans and reports.
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
