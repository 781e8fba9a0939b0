//! Tasks on an AWS Lambda function, through the Invoke API (`POST
//! /2015-03-31/functions/NAME/invocations`, synchronous), signed with SigV4 (`aws-sigv4`) with
//! the credentials in the environment.
//!
//! It respects Lambda's limits: a payload of at most 6 MB (a task larger than that is refused
//! before it is sent), a run of at most 15 minutes (the timeout is capped there), and
//! throttling — `429` (`TooManyRequestsException`) is retried after a backoff with jitter, as a
//! gateway's. A function error (`X-Amz-Function-Error`: the function crashed, ran out of
//! memory or time) is a retryable task failure that says what Lambda said.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
pub use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use baton_fabric::net::TokenKey;
use baton_fabric::net::token::unix_ms_now;
use hyper::StatusCode;

use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::invoker::Invoker;
use crate::invoker::http::{Backoff, Slots, answer, retry_after};
use crate::lambda::{LambdaAnswer, LambdaInvocation, MAX_DURATION, MAX_PAYLOAD};
use crate::task::{Task, TaskReport};

/// Where and how to reach the function.
#[derive(Clone, Debug)]
pub struct LambdaConfig {
    /// The function's name, ARN or partial ARN (with a `:qualifier` if wanted).
    pub function: String,
    /// The Invoke API's base URL (default: `https://lambda.REGION.amazonaws.com`; an
    /// emulator's, such as `cargo lambda watch`'s `http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// The region (default: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Invocations at once (the function's reserved concurrency, or less).
    pub concurrency: usize,
    /// How long one invocation may take (at most 15 minutes).
    pub timeout: Duration,
}

/// Invokes one Lambda function.
#[derive(Debug)]
pub struct LambdaInvoker {
    url: String,
    function: String,
    region: String,
    credentials: Credentials,
    client: HttpClient,
    slots: Slots,
    concurrency: usize,
    timeout: Duration,
    signer: Option<Arc<TokenKey>>,
    backoff: Backoff,
}

impl LambdaInvoker {
    /// An invoker of `config.function`, with the AWS credentials in the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).
    pub fn new(config: &LambdaConfig) -> Result<Self> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) else {
            return Err(Error::BadJob {
                reason: "the Lambda invoker needs AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .into(),
            });
        };
        Self::with_credentials(config, Credentials::new(key, secret, env("AWS_SESSION_TOKEN"), None, "environment"))
    }

    /// An invoker of `config.function` that signs with `credentials`.
    pub fn with_credentials(config: &LambdaConfig, credentials: Credentials) -> Result<Self> {
        let bad = |reason: String| Error::BadJob { reason: format!("the Lambda invoker: {reason}") };
        let function = config.function.trim();
        if function.is_empty() || function.contains('/') || function.chars().any(char::is_whitespace) {
            return Err(bad(format!("{function:?} is not a function name or ARN")));
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let region = config
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let base = config.endpoint.clone().unwrap_or_else(|| format!("https://lambda.{region}.amazonaws.com"));
        let base = base.trim_end_matches('/');
        if !base.starts_with("https://") && !base.starts_with("http://") {
            return Err(bad(format!("endpoint {base:?} must start with https:// or http://")));
        }
        // ARNs hold colons, which the path keeps as they are (SigV4 signs the path as sent).
        let url = format!("{base}/2015-03-31/functions/{}/invocations", function.replace(':', "%3A"));
        reqwest::Url::parse(&url).map_err(|e| bad(format!("{url}: {e}")))?;
        if config.timeout > MAX_DURATION {
            tracing::warn!("a Lambda function runs at most 15 minutes: invocations time out after that");
        }
        let concurrency = config.concurrency.max(1);
        Ok(Self {
            url,
            function: function.to_string(),
            region,
            credentials,
            client: HttpClient::shared()?,
            slots: Slots::new(concurrency),
            concurrency,
            timeout: config.timeout.min(MAX_DURATION + Duration::from_secs(5)),
            signer: None,
            backoff: Backoff::default(),
        })
    }

    /// Signs every invocation with `key` (the function runs only those its cluster's key signed).
    pub fn with_signer(mut self, key: Arc<TokenKey>) -> Self {
        self.signer = Some(key);
        self
    }

    /// Retries throttled invocations as `backoff` says.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The invocation's payload: the task's text, signed.
    fn payload(&self, task: &Task) -> Result<Vec<u8>> {
        let text = serde_json::to_string(task).map_err(|e| Error::BadJob { reason: e.to_string() })?;
        let (signature, expires) = match &self.signer {
            Some(key) => {
                let expires = unix_ms_now() + self.timeout.as_millis() as u64 + 60_000;
                (Some(key.sign_invocation(text.as_bytes(), expires)), Some(expires))
            }
            None => (None, None),
        };
        let payload = serde_json::to_vec(&LambdaInvocation { task: text, expires, signature })
            .map_err(|e| Error::BadJob { reason: e.to_string() })?;
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::Task {
                task: task.id,
                message: format!(
                    "its invocation payload of {} bytes is past Lambda's synchronous limit of 6 MB",
                    payload.len()
                ),
                retryable: false,
                requests: Default::default(),
            });
        }
        Ok(payload)
    }

    /// The SigV4 headers of a POST of `body` to the function.
    fn sign(&self, body: &[u8]) -> Result<Vec<(String, String)>> {
        let bad = |reason: String| Error::BadJob { reason: format!("signing the Lambda invocation: {reason}") };
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("lambda")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| bad(e.to_string()))?
            .into();
        let headers = [("content-type", "application/json")];
        let request = SignableRequest::new("POST", &self.url, headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| bad(e.to_string()))?;
        let (instructions, _) = sign(request, &params).map_err(|e| bad(e.to_string()))?.into_parts();
        Ok(instructions.headers().map(|(name, value)| (name.to_string(), value.to_string())).collect())
    }

    async fn invoke_once(&self, task: &Task) -> Result<TaskReport> {
        let payload = self.payload(task)?;
        let mut headers = self.sign(&payload)?;
        headers.push(("content-type".into(), "application/json".into()));
        let headers: Vec<(&str, String)> = headers.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        let answered = self.client.post(&self.url, payload, &headers, self.timeout).await?;
        let (status, body) = (answered.status, answered.body);
        let function_error =
            answered.headers.get("x-amz-function-error").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let name = format!("Lambda function {}", self.function);
        match (status, function_error) {
            (StatusCode::OK, None) => {
                let answered: LambdaAnswer = serde_json::from_slice(&body).map_err(|e| Error::Protocol {
                    endpoint: name.clone(),
                    reason: format!("an answer that is not Baton's: {e}"),
                })?;
                let status = StatusCode::from_u16(answered.status).unwrap_or(StatusCode::BAD_GATEWAY);
                answer(&name, task, status, answered.body.as_bytes())
            }
            // The function crashed, ran out of memory or of time: another instance may do.
            (StatusCode::OK, Some(kind)) => Err(Error::Task {
                task: task.id,
                message: format!("{name} failed ({kind}): {}", String::from_utf8_lossy(&body)),
                retryable: true,
                requests: Default::default(),
            }),
            (StatusCode::TOO_MANY_REQUESTS, _) => {
                Err(Error::WorkerBusy { endpoint: name, retry_after: retry_after(&answered.headers) })
            }
            (status, _) => Err(Error::Task {
                task: task.id,
                message: format!("{name}: the Invoke API answered {status}: {}", String::from_utf8_lossy(&body)),
                // Lambda's own faults (5xx) pass; a refusal (4xx: no such function, no right)
                // does not.
                retryable: status.is_server_error(),
                requests: Default::default(),
            }),
        }
    }
}

#[async_trait]
impl Invoker for LambdaInvoker {
    fn slots(&self) -> usize {
        self.concurrency
    }

    async fn invoke(&self, task: Task) -> Result<TaskReport> {
        let slot = self.slots.checkout().await;
        let result = self.backoff.retry_busy(&task, || self.invoke_once(&task)).await;
        self.slots.checkin(slot).await;
        result
    }
}
