//! Baton's runtime: jobs on functions.
//!
//! - [`worker`]: `baton worker`, which serves task invocations over HTTP, one at a time, like a
//!   function instance (locally, or in a container behind a FaaS platform).
//! - [`invoker`]: how the driver reaches workers — a local pool of worker processes (the
//!   embedded default), HTTP endpoints, or in-process for tests.
//! - [`driver`]: runs a job's stages in dependency order with retries; the first committed
//!   attempt of each task wins, so a retry neither duplicates nor loses data.
//! - [`operator`]: the code tasks run, registered by name, with a context that reads input
//!   edges and writes output edges through the shuffle library.
//! - [`mapreduce`]: sort (gensort records) and word count, built on the above.
//! - [`local`]: the embedded environment — a node, a scratch object store, a worker pool.

pub mod cluster;
pub mod driver;
pub mod env;
pub mod error;
pub mod hosts;
pub mod http;
pub mod invoker;
pub mod lambda;
pub mod lifeline;
pub mod local;
pub mod mapreduce;
pub mod operator;
pub mod paths;
pub mod requests;
pub mod roots;
pub mod task;
pub mod worker;

pub use baton_shuffle as shuffle;
pub use error::{Error, Result};
