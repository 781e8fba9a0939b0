//! Storage tiers of a node: memory (heap or shared memory) and flash (files on local disk).
//!
//! Each tier is a budgeted store of whole objects with a synchronous core, which the node's
//! [`TieredStore`](crate::store::TieredStore) composes, and a [`DataPath`](crate::DataPath)
//! implementation so that each runs the conformance suite on its own.

pub mod flash;
pub mod memory;

pub use flash::FlashTier;
pub use memory::MemoryTier;
