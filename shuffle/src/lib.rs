//! Baton's shuffle library: partitioners, writers that stay within a memory budget, readers that
//! stream, and the planner's topologies (all-to-all, coalesced, k-level) on top of the fabric's
//! paths — usable directly by MapReduce code.
//!
//! The partitioners ([`partition`]); a writer that spills past a memory budget and a reader, for
//! the all-to-all and coalesced layouts ([`exchange`]); and the routing of k-level exchanges
//! ([`klevel`]), whose intermediate rounds the runtime's driver runs as merge stages.

pub mod error;
pub mod exchange;
pub mod klevel;
pub mod partition;

pub use baton_fabric as fabric;
pub use error::{Error, Result};
pub use exchange::{Layout, MapOutput, PartitionInfo, ShuffleReader, ShuffleWriter, Target};
pub use partition::{HashPartitioner, Partitioner, RangePartitioner, split, stable_hash};
