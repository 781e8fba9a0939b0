//! Baton's SQL frontend: DataFusion plans cut into stages at their exchanges, each stage run as
//! function tasks, exchanges carried by the shuffle library.
//!
//! Today: TPC-H data generation as Parquet ([`tpch::generate`], `baton tpch gen`) and the 22
//! TPC-H queries ([`tpch::QUERIES`]). The planner over DataFusion comes next.

pub mod error;
pub mod tpch;

pub use baton_runtime as runtime;
pub use error::{Error, Result};
