//! Tasks on this process's runtime.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::invoker::Invoker;
use crate::operator::{Registry, run_task};
use crate::paths::PathCache;
use crate::task::{Task, TaskReport};

/// Runs operators in this process, `slots` at a time.
#[derive(Debug)]
pub struct InProcess {
    registry: Arc<Registry>,
    paths: Arc<PathCache>,
    scratch: PathBuf,
    slots: usize,
}

impl InProcess {
    /// An invoker running `registry`'s operators, spilling into `scratch`.
    pub fn new(registry: Registry, scratch: impl Into<PathBuf>, slots: usize) -> Self {
        Self { registry: Arc::new(registry), paths: Arc::default(), scratch: scratch.into(), slots: slots.max(1) }
    }
}

#[async_trait]
impl Invoker for InProcess {
    fn slots(&self) -> usize {
        self.slots
    }

    async fn invoke(&self, task: Task) -> Result<TaskReport> {
        let (registry, paths, scratch) = (self.registry.clone(), self.paths.clone(), self.scratch.clone());
        let id = task.id;
        // On its own tokio task, so that a panicking operator is a failed task, not a dead driver.
        match tokio::spawn(async move { run_task(&registry, paths, &scratch, task).await }).await {
            Ok(result) => result.map_err(|e| {
                let retryable = e.is_retryable();
                Error::Task { task: id, message: e.failure_message(), retryable, requests: e.requests() }
            }),
            Err(e) => Err(Error::Task {
                task: id,
                message: format!("the operator panicked: {e}"),
                retryable: false,
                requests: Default::default(),
            }),
        }
    }
}
