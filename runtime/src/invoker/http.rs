//! Tasks on workers reached over HTTP.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hyper::StatusCode;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use baton_fabric::net::TokenKey;
use baton_fabric::net::token::unix_ms_now;

use crate::error::{Error, Result};
use crate::http::{EXPIRES_HEADER, Endpoint, SIGNATURE_HEADER};
use crate::invoker::Invoker;
use crate::task::{Task, TaskFailure, TaskReport};

/// Invokes workers at a list of endpoints, one invocation per endpoint at a time.
#[derive(Debug)]
pub struct HttpInvoker {
    endpoints: Vec<Endpoint>,
    slots: Slots,
    timeout: Duration,
    signer: Option<Arc<TokenKey>>,
}

impl HttpInvoker {
    /// An invoker over `urls` (`http://host:port[/prefix]`); an invocation that takes longer
    /// than `timeout` counts as a lost worker.
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self> {
        if urls.is_empty() {
            return Err(Error::BadJob { reason: "no worker endpoints given".into() });
        }
        let endpoints = urls.iter().map(|u| Endpoint::parse(u)).collect::<Result<Vec<_>>>()?;
        let slots = Slots::new(endpoints.len());
        Ok(Self { endpoints, slots, timeout, signer: None })
    }

    /// Signs every invocation with `key` (workers that check invocations run only those
    /// signed with their cluster's key).
    pub fn with_signer(mut self, key: Arc<TokenKey>) -> Self {
        self.signer = Some(key);
        self
    }
}

#[async_trait]
impl Invoker for HttpInvoker {
    fn slots(&self) -> usize {
        self.endpoints.len()
    }

    async fn invoke(&self, task: Task) -> Result<TaskReport> {
        let slot = self.slots.checkout().await;
        let result = invoke_endpoint(&self.endpoints[slot.index], &task, self.timeout, self.signer.as_deref()).await;
        self.slots.checkin(slot).await;
        result
    }
}

/// Invokes `task` on the worker at `endpoint`, signed with `signer` if given.
pub(crate) async fn invoke_endpoint(
    endpoint: &Endpoint,
    task: &Task,
    timeout: Duration,
    signer: Option<&TokenKey>,
) -> Result<TaskReport> {
    let body = serde_json::to_vec(task).map_err(|e| Error::BadJob { reason: e.to_string() })?;
    let mut headers = Vec::new();
    if let Some(key) = signer {
        // Valid for as long as the invocation may take, and a minute for clocks that differ.
        let expires = unix_ms_now() + timeout.as_millis() as u64 + 60_000;
        headers.push((SIGNATURE_HEADER, key.sign_invocation(&body, expires)));
        headers.push((EXPIRES_HEADER, expires.to_string()));
    }
    let (status, body) = endpoint.post_with("/invoke", body, &headers, timeout).await?;
    let protocol = |reason: String| Error::Protocol { endpoint: endpoint.to_string(), reason };
    match status {
        StatusCode::OK => serde_json::from_slice(&body).map_err(|e| protocol(format!("bad report: {e}"))),
        StatusCode::SERVICE_UNAVAILABLE => Err(Error::WorkerBusy { endpoint: endpoint.to_string() }),
        StatusCode::INTERNAL_SERVER_ERROR | StatusCode::BAD_REQUEST => {
            let failure: TaskFailure =
                serde_json::from_slice(&body).map_err(|e| protocol(format!("bad failure report ({status}): {e}")))?;
            Err(Error::Task {
                task: task.id,
                message: failure.message,
                retryable: failure.retryable,
                requests: failure.requests,
            })
        }
        // The worker does not trust this driver: no retry will change that.
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Error::Task {
            task: task.id,
            message: format!("{endpoint} refused the invocation ({status}): {}", String::from_utf8_lossy(&body)),
            retryable: false,
            requests: Default::default(),
        }),
        other => Err(protocol(format!("answered {other}: {}", String::from_utf8_lossy(&body)))),
    }
}

/// Which of n workers are free: one invocation per worker at a time.
#[derive(Debug)]
pub(crate) struct Slots {
    free: Mutex<Vec<usize>>,
    available: Arc<Semaphore>,
}

/// A worker taken from [`Slots`].
#[derive(Debug)]
pub(crate) struct Slot {
    pub index: usize,
    permit: OwnedSemaphorePermit,
}

impl Slots {
    pub fn new(n: usize) -> Self {
        Self { free: Mutex::new((0..n).rev().collect()), available: Arc::new(Semaphore::new(n)) }
    }

    /// Takes a free worker, waiting for one.
    pub async fn checkout(&self) -> Slot {
        #[allow(clippy::expect_used)]
        let permit = self.available.clone().acquire_owned().await.expect("the semaphore is never closed");
        let index = self.free.lock().await.pop().unwrap_or(0);
        Slot { index, permit }
    }

    /// Gives a worker back.
    pub async fn checkin(&self, slot: Slot) {
        self.free.lock().await.push(slot.index);
        drop(slot.permit);
    }
}
