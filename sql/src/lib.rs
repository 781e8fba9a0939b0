//! Baton's SQL frontend: DataFusion plans cut into stages at their exchanges, each stage run as
//! function tasks, exchanges carried by the shuffle library.
//!
//! - [`session`]: DataFusion sessions planned for stages; tables on `file://` or `s3://`.
//! - [`stages`]: the physical plan cut at its exchanges ([`exchange`]'s writer and reader).
//! - [`codec`]: a stage's plan as bytes (datafusion-proto and Baton's own nodes).
//! - [`task`]: the operator a stage's tasks run in a worker; `located` makes its errors name
//!   the operator, expression or file they came from; [`narrow`] cuts the plan down to the
//!   task's partition.
//! - [`query`]: a query planned, run on workers, and its result collected.
//! - [`tpch`]: TPC-H data ([`tpch::generate`], `baton tpch gen`) and the 22 queries.

pub mod codec;
pub mod compare;
pub mod error;
pub mod exchange;
mod located;
pub mod narrow;
pub mod query;
pub mod session;
pub mod stages;
pub mod task;
pub mod tpch;

pub use baton_runtime as runtime;
pub use error::{Error, Result};

/// Every operator a worker serves: MapReduce's and SQL's.
pub fn registry() -> baton_runtime::operator::Registry {
    let mut registry = baton_runtime::mapreduce::registry();
    task::register(&mut registry);
    registry
}
