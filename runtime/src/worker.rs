//! `baton worker`: serves task invocations over HTTP, one at a time, like a function instance.
//!
//! - `POST /invoke` with a [`Task`] as JSON: runs it and answers `200` with a [`TaskReport`],
//!   `500` with a [`TaskFailure`] when the task failed, `400` when the body is not a task, and
//!   `503` while another invocation runs (one at a time, as a FaaS instance).
//! - `GET /health`: `200 ok`.
//!
//! It serves HTTPS (HTTP/2 or HTTP/1.1) with its host's certificate, or plain HTTP/1.1 on
//! loopback or behind a gateway that terminates TLS.
//!
//! A worker given its cluster's token public key ([`Worker::verifying`]) runs only invocations
//! the driver signed (`x-baton-signature` over the body and `x-baton-expires`), checked before
//! the task is decoded: an unsigned or expired one gets `401`, a bad signature `403`.
//!
//! The worker keeps its opened paths between invocations (a warm instance reuses its
//! connections) and spills into its scratch directory.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use baton_fabric::net::token::unix_ms_now;
use baton_fabric::net::{InvocationError, TokenPublicKey};

use crate::error::{Error, Result};
use crate::http::{EXPIRES_HEADER, SIGNATURE_HEADER};
use crate::operator::{Registry, run_task_within};
use crate::paths::PathCache;
use crate::task::{Task, TaskFailure};

/// Where a worker answers with its metrics.
pub const METRICS_PATH: &str = "/metrics";

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest task description accepted.
pub const MAX_TASK_BYTES: usize = 64 << 20;

/// A worker's state, shared by its connections.
#[derive(Debug)]
pub struct Worker {
    registry: Registry,
    paths: Arc<PathCache>,
    scratch: PathBuf,
    busy: Semaphore,
    verifier: Option<TokenPublicKey>,
    /// Whether it has run an invocation yet (the first is a cold start).
    served: std::sync::atomic::AtomicBool,
    /// Where its tasks may read and write (anywhere its user may, without).
    roots: Option<Arc<crate::roots::Roots>>,
}

impl Worker {
    /// A worker running the operators of `registry`, spilling into `scratch`.
    pub fn new(registry: Registry, scratch: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            paths: Arc::default(),
            scratch: scratch.into(),
            busy: Semaphore::new(1),
            verifier: None,
            served: Default::default(),
            roots: None,
        })
    }

    /// A worker that runs only invocations signed with the key `verifier` checks.
    pub fn verifying(registry: Registry, scratch: impl Into<PathBuf>, verifier: TokenPublicKey) -> Arc<Self> {
        Arc::new(Self {
            registry,
            paths: Arc::default(),
            scratch: scratch.into(),
            busy: Semaphore::new(1),
            verifier: Some(verifier),
            served: Default::default(),
            roots: None,
        })
    }

    /// The same worker, its tasks reading and writing only under `roots` (and its scratch).
    pub fn within(self: Arc<Self>, roots: &[String]) -> Result<Arc<Self>> {
        let roots = crate::roots::Roots::new(roots, &self.scratch).map_err(|reason| Error::BadJob { reason })?;
        let mut worker = Arc::try_unwrap(self)
            .map_err(|_| Error::BadJob { reason: "a worker's roots are set before it serves".into() })?;
        worker.roots = Some(Arc::new(roots));
        Ok(Arc::new(worker))
    }

    /// Serves invocations on `listener` until the process ends: over TLS with `tls` (HTTP/2
    /// or HTTP/1.1, as the client's ALPN asks), plain HTTP/1.1 without.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Result<()> {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        loop {
            let (stream, peer) = listener.accept().await.map_err(|e| Error::io("accept on", "worker socket", e))?;
            let _ = stream.set_nodelay(true);
            let worker = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let worker = worker.clone();
                    async move { Ok::<_, Infallible>(worker.handle(req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let served = match acceptor {
                    Some(acceptor) => {
                        // A handshake that stalls holds only its own task, and not for long.
                        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => return tracing::debug!("TLS handshake with {peer} failed: {e}"),
                            Err(_) => return tracing::debug!("TLS handshake with {peer} timed out"),
                        };
                        builder.serve_connection(TokioIo::new(stream), service).await
                    }
                    None => builder.http1_only().serve_connection(TokioIo::new(stream), service).await,
                };
                if let Err(e) = served {
                    tracing::debug!("worker connection ended: {e}");
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            // `/_/health` is where OpenFaaS asks whether a function is ready.
            (&Method::GET, "/health" | "/_/health") => reply(StatusCode::OK, Bytes::from_static(b"ok")),
            // What it counted, for whoever holds the cluster's key (signed like an invocation,
            // over the path's name).
            (&Method::GET, "/metrics") => {
                let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                if let Some(verifier) = &self.verifier
                    && let Err(e) = verifier.verify_invocation(
                        METRICS_PATH.as_bytes(),
                        header(EXPIRES_HEADER).and_then(|e| e.parse::<u64>().ok()),
                        header(SIGNATURE_HEADER).as_deref(),
                        unix_ms_now(),
                    )
                {
                    return reply(StatusCode::UNAUTHORIZED, Bytes::from(e.to_string()));
                }
                reply(StatusCode::OK, Bytes::from(baton_fabric::metrics::render()))
            }
            (&Method::POST, "/invoke") => {
                let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                let signature = header(SIGNATURE_HEADER);
                let expires = header(EXPIRES_HEADER).and_then(|e| e.parse::<u64>().ok());
                let body = match Limited::new(req.into_body(), MAX_TASK_BYTES).collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(e) => return failure(StatusCode::BAD_REQUEST, format!("cannot read the task: {e}"), false),
                };
                let (status, body) = self.invoke(&body, signature.as_deref(), expires).await;
                reply(status, body)
            }
            _ => reply(StatusCode::NOT_FOUND, Bytes::from_static(b"POST /invoke or GET /health")),
        }
    }
}

impl Worker {
    /// Runs the invocation whose task is `body`, signed with `signature` until `expires` —
    /// checked before the task is decoded, so nothing of an unsigned one runs; the answer's
    /// status and body, as `POST /invoke` gives them (the Lambda handler wraps the same).
    pub async fn invoke(&self, body: &[u8], signature: Option<&str>, expires: Option<u64>) -> (StatusCode, Bytes) {
        let failed = |status, message: String, retryable| {
            let failure = TaskFailure { message, retryable, requests: Default::default() };
            (status, Bytes::from(serde_json::to_vec(&failure).unwrap_or_default()))
        };
        if let Some(verifier) = &self.verifier
            && let Err(e) = verifier.verify_invocation(body, expires, signature, unix_ms_now())
        {
            let status = match e {
                InvocationError::BadSignature => StatusCode::FORBIDDEN,
                InvocationError::Unsigned | InvocationError::Expired(_) => StatusCode::UNAUTHORIZED,
            };
            tracing::warn!("refused an invocation: {e}");
            return (status, Bytes::from(e.to_string()));
        }
        if body.len() > MAX_TASK_BYTES {
            return failed(StatusCode::BAD_REQUEST, format!("a task of {} bytes is too large", body.len()), false);
        }
        let task: Task = match serde_json::from_slice(body) {
            Ok(task) => task,
            Err(e) => return failed(StatusCode::BAD_REQUEST, format!("not a task: {e}"), false),
        };
        let Ok(_permit) = self.busy.try_acquire() else {
            return failed(StatusCode::SERVICE_UNAVAILABLE, "busy with another invocation".into(), true);
        };
        let cold = !self.served.swap(true, std::sync::atomic::Ordering::Relaxed);
        let ran = run_task_within(&self.registry, self.paths.clone(), &self.scratch, self.roots.clone(), task).await;
        release_freed_memory();
        match ran {
            Ok(mut report) => match serde_json::to_vec(&{
                report.cold = cold;
                report
            }) {
                Ok(json) => (StatusCode::OK, Bytes::from(json)),
                Err(e) => failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), false),
            },
            Err(e) => {
                if e.is_retryable() {
                    // A fault on a path may have broken a cached connection.
                    self.paths.clear().await;
                }
                let failure =
                    TaskFailure { message: e.failure_message(), retryable: e.is_retryable(), requests: e.requests() };
                (StatusCode::INTERNAL_SERVER_ERROR, Bytes::from(serde_json::to_vec(&failure).unwrap_or_default()))
            }
        }
    }
}

/// Gives what the task freed back to the host, off the answer's path: a warm worker waits for
/// its next invocation holding what it keeps, not the task's garbage, which the allocator
/// would otherwise hold on to (arenas of DataFusion's threads) and which the other workers on
/// the host may need.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only returns free memory to the kernel.
        unsafe { libc::malloc_trim(0) };
    });
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

fn failure(status: StatusCode, message: String, retryable: bool) -> Response<Full<Bytes>> {
    answer_failure(status, &TaskFailure { message, retryable, requests: Default::default() })
}

fn answer_failure(status: StatusCode, failed: &TaskFailure) -> Response<Full<Bytes>> {
    reply(status, Bytes::from(serde_json::to_vec(failed).unwrap_or_default()))
}

/// Binds `listen` and prints `listening on http[s]://ADDR` on stdout (a pool reads it to
/// learn a port the OS chose), then serves: HTTPS with `tls`.
pub async fn listen_and_serve(
    worker: Arc<Worker>,
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<()> {
    let listener = TcpListener::bind(listen).await.map_err(|e| Error::io("bind", listen.to_string(), e))?;
    let addr = listener.local_addr().map_err(|e| Error::io("read the address of", listen.to_string(), e))?;
    println!("listening on {}://{addr}", if tls.is_some() { "https" } else { "http" });
    use std::io::Write;
    let _ = std::io::stdout().flush();
    worker.serve(listener, tls).await
}

/// Limits this process's data segment (heap and private mappings) to `bytes`, as a function
/// instance's memory size does; an allocation past it fails instead of swapping the host. The
/// fabric's pool of idle buffers may keep an eighth of it.
pub fn limit_memory(bytes: u64) -> Result<()> {
    baton_fabric::buffers::Pool::global().set_share_of(bytes);
    let limit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
    // SAFETY: setrlimit reads the struct we pass and changes only this process's limits.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) };
    if rc != 0 {
        return Err(Error::io("set the memory limit of", "this worker", std::io::Error::last_os_error()));
    }
    Ok(())
}
