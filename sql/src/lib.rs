//! Baton's SQL frontend: DataFusion plans cut into stages at their exchanges, each stage run as
//! function tasks, exchanges carried by the shuffle library. Filled by the SQL issue.

pub use baton_runtime as runtime;
