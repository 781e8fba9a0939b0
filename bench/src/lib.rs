//! Baton's benchmark harness: workloads, baselines in the same run, and reports.
//!
//! Benchmarks run in release builds (`baton bench ...`) and report ratios against baselines
//! measured in the same run, as JSON and Markdown.

pub mod cluster;
pub mod cost;
pub mod data;
pub mod direct;
pub mod flight;
pub mod invokers;
pub mod paths;
pub mod peers;
pub mod plan;
pub mod soak;
pub mod sort;
pub mod stats;
pub mod store;
pub mod suite;
pub mod tpch;
pub mod wordcount;
pub mod worker;
