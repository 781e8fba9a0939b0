//! The planner's errors: each names the stage or edge at fault.

use crate::ids::{EdgeId, StageId};

/// Why a DAG and cluster could not be planned.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The DAG has a cycle through this stage.
    #[error("the DAG has a cycle through {stage}")]
    Cycle {
        /// A stage on the cycle.
        stage: StageId,
    },
    /// A stage, edge or setting is malformed.
    #[error("{what}: {reason}")]
    Invalid {
        /// What is at fault.
        what: String,
        /// Why.
        reason: String,
    },
    /// No path the cluster has can carry this edge.
    #[error("no path can carry {edge}: {reason}")]
    NoPath {
        /// The edge.
        edge: EdgeId,
        /// Why each path was ruled out.
        reason: String,
    },
    /// A stage fits no host or function.
    #[error("{stage} fits nowhere: {reason}")]
    StageDoesNotFit {
        /// The stage.
        stage: StageId,
        /// Why.
        reason: String,
    },
}

/// The planner's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
