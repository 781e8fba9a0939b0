//! Tasks on the workers of several hosts: each task goes to the host the plan placed it on.

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::invoker::Invoker;
use crate::task::{Task, TaskReport};

/// One invoker per host, in the hosts' order.
#[derive(Debug)]
pub struct OnHosts {
    hosts: Vec<(String, Box<dyn Invoker>)>,
}

impl OnHosts {
    /// `hosts`: each host's name and the invoker of its workers.
    pub fn new(hosts: Vec<(String, Box<dyn Invoker>)>) -> Result<Self> {
        if hosts.is_empty() {
            return Err(Error::BadJob { reason: "no hosts with workers".into() });
        }
        Ok(Self { hosts })
    }
}

#[async_trait]
impl Invoker for OnHosts {
    fn slots(&self) -> usize {
        self.hosts.iter().map(|(_, i)| i.slots()).sum()
    }

    /// A task placed nowhere goes to the first host.
    async fn invoke(&self, task: Task) -> Result<TaskReport> {
        self.invoke_on(0, task).await
    }

    fn host_slots(&self, host: usize) -> usize {
        self.hosts.get(host).map_or(0, |(_, i)| i.slots())
    }

    async fn invoke_on(&self, host: usize, task: Task) -> Result<TaskReport> {
        let (name, invoker) = self.hosts.get(host).ok_or_else(|| Error::BadJob {
            reason: format!("a task placed on host {host} of a cluster of {}", self.hosts.len()),
        })?;
        invoker.invoke(task).await.map_err(|e| match e {
            Error::WorkerLost { endpoint, reason } => {
                Error::WorkerLost { endpoint: format!("{endpoint} on {name}"), reason }
            }
            other => other,
        })
    }
}
