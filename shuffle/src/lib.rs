//! Baton's shuffle library: partitioners, writers that stay within a memory budget, readers that
//! stream, and the planner's topologies (all-to-all, coalesced, k-level) on top of the fabric's
//! paths — usable directly by MapReduce code. Filled by the runtime and shuffle issue.

pub use baton_fabric as fabric;
