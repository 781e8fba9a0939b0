//! How a job on the embedded default reaches functions other than its own pool: workers at
//! HTTP(S) endpoints, or an AWS Lambda function (flags shared by `sort`, `wordcount`, `sql`).

use std::path::PathBuf;

use baton_runtime::invoker::LambdaConfig;
use baton_runtime::local::LocalConfig;
use clap::Args;

#[derive(Debug, Args, Clone)]
pub struct InvokeArgs {
    /// Send tasks to workers already running (`baton worker`) at these URLs (http:// or
    /// https://) instead of starting a pool.
    #[arg(long, value_delimiter = ',', conflicts_with = "lambda")]
    endpoints: Vec<String>,
    /// Invocations sent at once to each of --endpoints (a gateway that scales functions out
    /// takes many; a `baton worker` runs one at a time).
    #[arg(long, default_value_t = 1)]
    endpoint_concurrency: usize,
    /// Send tasks to this AWS Lambda function (name or ARN) through the Invoke API, signed
    /// with SigV4 by the credentials in the environment (AWS_ACCESS_KEY_ID, ...).
    #[arg(long)]
    lambda: Option<String>,
    /// The Invoke API's URL (default: https://lambda.REGION.amazonaws.com; an emulator's such
    /// as `cargo lambda watch`'s http://127.0.0.1:9000).
    #[arg(long, requires = "lambda")]
    lambda_endpoint: Option<String>,
    /// The Lambda function's region (default: AWS_REGION, AWS_DEFAULT_REGION, us-east-1).
    #[arg(long, requires = "lambda")]
    lambda_region: Option<String>,
    /// Lambda invocations at once.
    #[arg(long, default_value_t = 4, requires = "lambda")]
    lambda_concurrency: usize,
    /// The TLS directory of the cluster the --endpoints' or --lambda's workers trust: every
    /// invocation is signed with its token key, and https:// endpoints are checked against its
    /// CA.
    #[arg(long)]
    endpoints_tls_dir: Option<PathBuf>,
}

impl InvokeArgs {
    /// Whether tasks go anywhere but a pool this run starts.
    pub fn elsewhere(&self) -> bool {
        !self.endpoints.is_empty() || self.lambda.is_some()
    }

    /// Sets `local` to invoke where these flags say; its timeout must be set already.
    pub fn apply(&self, local: &mut LocalConfig) -> anyhow::Result<()> {
        if self.endpoints_tls_dir.is_some() && !self.elsewhere() {
            anyhow::bail!("--endpoints-tls-dir signs invocations to --endpoints or --lambda: give one of them");
        }
        if self.endpoint_concurrency == 0 || self.lambda_concurrency == 0 {
            anyhow::bail!("--endpoint-concurrency and --lambda-concurrency must be at least 1");
        }
        local.endpoint_tls = self.endpoints_tls_dir.clone();
        if !self.endpoints.is_empty() {
            local.workers = self.endpoints.len() * self.endpoint_concurrency;
            local.endpoints = self.endpoints.clone();
            local.endpoint_concurrency = self.endpoint_concurrency;
        }
        if let Some(function) = &self.lambda {
            local.workers = self.lambda_concurrency;
            local.lambda = Some(LambdaConfig {
                function: function.clone(),
                endpoint: self.lambda_endpoint.clone(),
                region: self.lambda_region.clone(),
                concurrency: self.lambda_concurrency,
                timeout: local.timeout,
            });
        }
        Ok(())
    }
}
