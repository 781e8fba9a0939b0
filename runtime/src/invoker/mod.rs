//! Invokers: how the driver runs a task on a function.
//!
//! One narrow trait, [`Invoker`], and three implementations:
//! - [`LocalPool`]: warm `baton worker` processes on this host, each with a memory limit and
//!   one invocation at a time, like function instances (the embedded default);
//! - [`HttpInvoker`]: a list of worker endpoint URLs (a FaaS platform's functions, or workers
//!   started by hand on other hosts);
//! - [`InProcess`]: the operators run on this process's runtime (fast tests).

pub mod conformance;
mod http;
mod in_process;
mod local_pool;

use async_trait::async_trait;

pub use http::HttpInvoker;
pub use in_process::InProcess;
pub use local_pool::{LocalPool, PoolConfig};

use crate::error::Result;
use crate::task::{Task, TaskReport};

/// Runs tasks on functions.
#[async_trait]
pub trait Invoker: Send + Sync + std::fmt::Debug {
    /// How many invocations may run at once.
    fn slots(&self) -> usize;

    /// Runs `task` and returns its report. A lost worker is [`Error::WorkerLost`]
    /// (retryable); a task that failed is [`Error::Task`] with the worker's message.
    ///
    /// [`Error::WorkerLost`]: crate::Error::WorkerLost
    /// [`Error::Task`]: crate::Error::Task
    async fn invoke(&self, task: Task) -> Result<TaskReport>;
}
