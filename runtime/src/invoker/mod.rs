//! Invokers: how the driver runs a task on a function.
//!
//! One narrow trait, [`Invoker`], and its implementations:
//! - [`LocalPool`]: warm `baton worker` processes on this host, each with a memory limit and
//!   one invocation at a time, like function instances (the embedded default);
//! - [`HttpInvoker`]: a list of worker endpoint URLs (a FaaS platform's functions, or workers
//!   started by hand on other hosts);
//! - [`LambdaInvoker`]: an AWS Lambda function through the Invoke API;
//! - [`InProcess`]: the operators run on this process's runtime (fast tests);
//! - [`OnHosts`]: one of the above per host of a cluster, a task sent to the host the plan
//!   placed it on.

pub mod conformance;
mod http;
mod in_process;
mod lambda;
mod local_pool;
mod on_hosts;

use async_trait::async_trait;

pub use http::{Backoff, HttpInvoker};
pub use in_process::InProcess;
pub use lambda::{Credentials, LambdaConfig, LambdaInvoker};
pub use local_pool::{LocalPool, PoolConfig};
pub use on_hosts::OnHosts;

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

    /// Invocations that may run at once on host `host` (an invoker without hosts has one).
    fn host_slots(&self, host: usize) -> usize {
        let _ = host;
        self.slots()
    }

    /// Runs `task` on a worker of host `host` (an invoker without hosts runs it anywhere).
    async fn invoke_on(&self, host: usize, task: Task) -> Result<TaskReport> {
        let _ = host;
        self.invoke(task).await
    }
}
