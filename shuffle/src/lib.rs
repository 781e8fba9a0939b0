//! Baton's shuffle library: partitioners, writers that stay within a memory budget, readers that
//! stream, and the planner's topologies (all-to-all, coalesced, k-level) on top of the fabric's
//! paths — usable directly by MapReduce code.
//!
//! Today: the partitioners ([`partition`]) and a writer and reader for the all-to-all and
//! coalesced layouts ([`exchange`]). Spilling writers and k-level merges come with the runtime.

pub mod error;
pub mod exchange;
pub mod partition;

pub use baton_fabric as fabric;
pub use error::{Error, Result};
pub use exchange::{Layout, MapOutput, PartitionInfo, ShuffleReader, ShuffleWriter, Target};
pub use partition::{HashPartitioner, Partitioner, RangePartitioner, split, stable_hash};
