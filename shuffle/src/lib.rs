//! Baton's shuffle library: partitioners, writers that stay within a memory budget, readers that
//! stream, and the planner's topologies (all-to-all, coalesced, k-level) on top of the fabric's
//! paths — usable directly by MapReduce code.
//!
//! Today: the partitioners ([`partition`]). Writers, readers and topologies come with the
//! runtime issue.

pub mod error;
pub mod partition;

pub use baton_fabric as fabric;
pub use error::{Error, Result};
pub use partition::{HashPartitioner, Partitioner, RangePartitioner, split, stable_hash};
