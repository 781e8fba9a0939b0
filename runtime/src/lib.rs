//! Baton's runtime: jobs on functions. The worker that serves invocations over HTTP, the
//! invokers (local process pool, HTTP FaaS endpoints, in-process threads) and the DAG driver
//! that runs a plan with retries. Filled by the runtime and shuffle issue.

pub use baton_shuffle as shuffle;
