//! Workers as AWS Lambda functions: the same [`Worker`] behind the Lambda runtime API
//! (`lambda_runtime`), and the payloads the Lambda invoker ([`crate::invoker::LambdaInvoker`])
//! and the function exchange.
//!
//! An invocation's payload is a [`LambdaInvocation`]: the task as the JSON text the driver
//! signed (a string, so that its bytes — which the signature covers — arrive as they left),
//! its expiry and signature. The function answers a [`LambdaAnswer`]: the status and body a
//! `baton worker` would have answered `POST /invoke` with, so that both invokers read answers
//! the same way. Task data never travels in the payload: tasks name their edges' paths.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::worker::Worker;

/// The largest synchronous invocation payload Lambda takes (request and response), 6 MB.
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

/// The longest a Lambda function may run.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(900);

/// The environment the Lambda runtime API gives a function (`lambda_runtime` needs them all).
const RUNTIME_ENV: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// An invocation, as the Lambda invoker sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LambdaInvocation {
    /// The task, as the JSON text that was signed.
    pub task: String,
    /// When the signature lapses (ms since the Unix epoch).
    #[serde(default)]
    pub expires: Option<u64>,
    /// The driver's signature over the expiry and the task's text (hex).
    #[serde(default)]
    pub signature: Option<String>,
}

/// The function's answer: what `POST /invoke` would have answered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LambdaAnswer {
    /// The HTTP status a worker would have answered.
    pub status: u16,
    /// Its body (a task report or failure as JSON, or a refusal's text).
    pub body: String,
}

/// Serves invocations from the Lambda runtime API until the platform stops the function. An
/// error if this process is not a Lambda function (its runtime API's environment is missing).
pub async fn serve(worker: Arc<Worker>) -> Result<()> {
    if let Some(missing) = RUNTIME_ENV.iter().find(|name| std::env::var_os(name).is_none()) {
        return Err(Error::BadJob {
            reason: format!(
                "`baton lambda` runs as an AWS Lambda function (or under an emulator of its runtime API, such as \
                 `cargo lambda watch`): {missing} is not set"
            ),
        });
    }
    let handler = lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<LambdaInvocation>| {
        let worker = worker.clone();
        async move {
            let invocation = event.payload;
            let (status, body) =
                worker.invoke(invocation.task.as_bytes(), invocation.signature.as_deref(), invocation.expires).await;
            Ok::<_, lambda_runtime::Error>(LambdaAnswer {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        }
    });
    lambda_runtime::run(handler).await.map_err(|e| Error::BadJob { reason: format!("the Lambda runtime: {e}") })
}
