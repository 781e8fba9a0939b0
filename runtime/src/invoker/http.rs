//! Tasks on workers reached over HTTP.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hyper::StatusCode;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

use baton_fabric::net::TokenKey;
use baton_fabric::net::token::unix_ms_now;

use crate::error::{Error, Result};
use crate::http::{EXPIRES_HEADER, Endpoint, HttpClient, SIGNATURE_HEADER};
use crate::invoker::Invoker;
use crate::task::{Task, TaskFailure, TaskReport};

/// Invokes workers at a list of endpoints: `concurrency` invocations at once per endpoint (one
/// for a `baton worker`, more for a gateway that scales functions out), each answered `429` or
/// `503` retried after a backoff with jitter.
#[derive(Debug)]
pub struct HttpInvoker {
    endpoints: Vec<Endpoint>,
    concurrency: usize,
    slots: Slots,
    timeout: Duration,
    signer: Option<Arc<TokenKey>>,
    backoff: Backoff,
}

/// Retries of an invocation that a gateway turned away (`429`, `503`).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The first wait's ceiling; each later one doubles it, up to `max`.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { attempts: 8, base: Duration::from_millis(50), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// Runs `attempt` until it is not turned away as busy (`429`, `503`), or the attempts
    /// run out, waiting between tries.
    pub(crate) async fn retry_busy<F, Fut>(&self, task: &Task, mut attempt: F) -> Result<TaskReport>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<TaskReport>>,
    {
        let mut retry = 0;
        loop {
            match attempt().await {
                Err(Error::WorkerBusy { retry_after, .. }) if retry + 1 < self.attempts => {
                    // As long as the server asked (within reason), else the backoff's wait.
                    let wait = retry_after.map_or_else(|| self.wait(task, retry), |after| after.min(MAX_RETRY_AFTER));
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                other => return other,
            }
        }
    }

    /// The wait before retry `retry` (0 for the first) of `task`: between half and all of the
    /// ceiling, by a hash of the task, so that invocations turned away together do not come
    /// back together (as the driver's retries, [`crate::driver::retry_backoff`]).
    pub fn wait(&self, task: &Task, retry: u32) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << retry.min(16)).min(self.max);
        let id = task.id;
        let seed = task.job.0 ^ u64::from(id.stage.0).rotate_left(48) ^ u64::from(id.partition).rotate_left(24);
        let fraction = (crate::driver::spread(seed ^ u64::from(retry)) >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(0.5 + fraction / 2.0)
    }
}

impl HttpInvoker {
    /// An invoker over `urls` (`http[s]://host:port[/prefix]`); an invocation that takes
    /// longer than `timeout` counts as a lost worker.
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self> {
        if urls.is_empty() {
            return Err(Error::BadJob { reason: "no worker endpoints given".into() });
        }
        let endpoints = urls.iter().map(|u| Endpoint::parse(u)).collect::<Result<Vec<_>>>()?;
        let slots = Slots::new(endpoints.len());
        Ok(Self { endpoints, concurrency: 1, slots, timeout, signer: None, backoff: Backoff::default() })
    }

    /// Signs every invocation with `key` (workers that check invocations run only those
    /// signed with their cluster's key).
    pub fn with_signer(mut self, key: Arc<TokenKey>) -> Self {
        self.signer = Some(key);
        self
    }

    /// Reaches the endpoints with `client` (one that trusts the cluster's CA).
    pub fn with_client(mut self, client: HttpClient) -> Self {
        self.endpoints = self.endpoints.into_iter().map(|e| e.with_client(client.clone())).collect();
        self
    }

    /// Sends up to `n` invocations at once to each endpoint (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self.slots = Slots::new(self.endpoints.len() * self.concurrency);
        self
    }

    /// Retries turned-away invocations as `backoff` says.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

#[async_trait]
impl Invoker for HttpInvoker {
    fn slots(&self) -> usize {
        self.endpoints.len() * self.concurrency
    }

    async fn invoke(&self, task: Task) -> Result<TaskReport> {
        let slot = self.slots.checkout().await;
        let endpoint = &self.endpoints[slot.index % self.endpoints.len()];
        let result = self
            .backoff
            .retry_busy(&task, || invoke_endpoint(endpoint, &task, self.timeout, self.signer.as_deref()))
            .await;
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
    let answered = endpoint.post_answer("/invoke", body, &headers, timeout).await?;
    match answer(&endpoint.to_string(), task, answered.status, &answered.body) {
        Err(Error::WorkerBusy { endpoint, .. }) => {
            Err(Error::WorkerBusy { endpoint, retry_after: retry_after(&answered.headers) })
        }
        other => other,
    }
}

/// The longest `Retry-After` honoured: a server that asks for more is asked again sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A `Retry-After` of whole seconds, if the answer has one (an HTTP date is not read).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds))
}

/// What a worker's answer to `task` (`status`, `body`, as `POST /invoke` gives them) means.
pub(crate) fn answer(endpoint: &str, task: &Task, status: StatusCode, body: &[u8]) -> Result<TaskReport> {
    let protocol = |reason: String| Error::Protocol { endpoint: endpoint.to_string(), reason };
    match status {
        StatusCode::OK => serde_json::from_slice(body).map_err(|e| protocol(format!("bad report: {e}"))),
        // Busy, or a gateway throttling: worth another try after a while.
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
            Err(Error::WorkerBusy { endpoint: endpoint.to_string(), retry_after: None })
        }
        StatusCode::INTERNAL_SERVER_ERROR | StatusCode::BAD_REQUEST => {
            let failure: TaskFailure =
                serde_json::from_slice(body).map_err(|e| protocol(format!("bad failure report ({status}): {e}")))?;
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
            message: format!("{endpoint} refused the invocation ({status}): {}", String::from_utf8_lossy(body)),
            retryable: false,
            requests: Default::default(),
        }),
        other => Err(protocol(format!("answered {other}: {}", String::from_utf8_lossy(body)))),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::Response;
    use hyper_util::rt::TokioIo;

    use super::*;

    /// A gateway on 127.0.0.1 that answers `429` to the first `throttled` requests and then
    /// `400` with a task failure; returns its URL and the requests it saw.
    async fn gateway(throttled: u32, retry_after: Option<u64>) -> (String, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let seen = Arc::new(AtomicU32::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let (status, body) = if n < throttled {
                                (StatusCode::TOO_MANY_REQUESTS, "slow down".to_string())
                            } else {
                                let failure = TaskFailure {
                                    message: "the operator said no".into(),
                                    retryable: false,
                                    requests: Default::default(),
                                };
                                (StatusCode::BAD_REQUEST, serde_json::to_string(&failure).unwrap_or_default())
                            };
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = status;
                            if let (Some(seconds), true) = (retry_after, status == StatusCode::TOO_MANY_REQUESTS) {
                                response
                                    .headers_mut()
                                    .insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from(seconds));
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (url, seen)
    }

    fn task() -> Task {
        Task {
            job: baton_fabric::JobId(7),
            token: None,
            id: baton_fabric::TaskId { stage: baton_fabric::StageId(0), partition: 0, attempt: 0 },
            partitions: 1,
            op: "none".into(),
            params: serde_json::Value::Null,
            inputs: Vec::new(),
            outputs: Vec::new(),
            memory_budget: 0,
        }
    }

    const QUICK: Backoff = Backoff { attempts: 4, base: Duration::from_millis(2), max: Duration::from_millis(20) };

    #[tokio::test]
    async fn a_throttled_invocation_is_retried_until_the_gateway_answers() {
        let (url, seen) = gateway(2, None).await;
        let invoker = HttpInvoker::new(&[url], Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        let result = invoker.with_backoff(QUICK).invoke(task()).await;
        // Two 429s, then the gateway's real answer, passed on as it is.
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        match result {
            Err(Error::Task { message, retryable: false, .. }) => assert_eq!(message, "the operator said no"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn throttling_that_does_not_stop_gives_up_after_the_attempts_as_busy() {
        let (url, seen) = gateway(u32::MAX, None).await;
        let invoker = HttpInvoker::new(&[url], Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        let result = invoker.with_backoff(QUICK).invoke(task()).await;
        assert_eq!(seen.load(Ordering::SeqCst), QUICK.attempts);
        assert!(matches!(result, Err(Error::WorkerBusy { .. })), "{result:?}");
    }

    #[tokio::test]
    async fn a_gateway_that_says_when_to_come_back_is_asked_again_then() {
        let (url, seen) = gateway(1, Some(1)).await;
        let invoker = HttpInvoker::new(&[url], Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        let start = std::time::Instant::now();
        let result = invoker.with_backoff(QUICK).invoke(task()).await;
        // QUICK's own waits are milliseconds: the second ask waited for the Retry-After.
        assert!(start.elapsed() >= Duration::from_secs(1), "{:?}", start.elapsed());
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert!(matches!(result, Err(Error::Task { retryable: false, .. })), "{result:?}");
    }

    #[test]
    fn backoff_waits_grow_stay_under_their_ceiling_and_differ_between_tasks() {
        let backoff = Backoff { attempts: 8, base: Duration::from_millis(10), max: Duration::from_millis(100) };
        let tasks: Vec<Task> = (0..50)
            .map(|p| {
                let mut t = task();
                t.id.partition = p;
                t
            })
            .collect();
        let waits: Vec<Duration> = tasks.iter().map(|t| backoff.wait(t, 2)).collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_millis(20) && *w <= Duration::from_millis(40)), "{waits:?}");
        assert!(waits.iter().any(|w| *w != waits[0]), "no jitter");
        assert!(tasks.iter().all(|t| backoff.wait(t, 12) <= Duration::from_millis(100)));
    }

    #[tokio::test]
    async fn each_endpoint_takes_as_many_invocations_at_once_as_asked() {
        let urls = vec!["http://127.0.0.1:9".to_string(), "http://127.0.0.1:10".to_string()];
        let invoker = HttpInvoker::new(&urls, Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(invoker.slots(), 2);
        assert_eq!(invoker.with_concurrency(8).slots(), 16);
    }
}
