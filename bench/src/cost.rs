//! Dollars of a run, from what its summary counted: each invocation, each task's seconds at
//! the functions' memory (Lambda's GB-seconds), each object-store request (S3's request
//! prices) and the bytes each edge held while the job ran (S3's storage, a memory store's
//! rent). Edges on VM-local or direct passing live in the functions' own memory, paid for by
//! their GB-seconds. Prices: [`baton_planner::prices`].

use baton_planner::prices;
use baton_runtime::driver::JobSummary;
use serde::{Deserialize, Serialize};

/// A run's dollars by what they paid for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Function GB-seconds.
    pub functions: f64,
    /// Invocations (every attempt).
    pub invocations: f64,
    /// Object-store requests.
    pub requests: f64,
    /// Bytes held on a store while the job ran.
    pub storage: f64,
}

impl Cost {
    /// The sum.
    pub fn total(&self) -> f64 {
        self.functions + self.invocations + self.requests + self.storage
    }

    /// Adds another run's.
    pub fn add(&mut self, other: Cost) {
        self.functions += other.functions;
        self.invocations += other.invocations;
        self.requests += other.requests;
        self.storage += other.storage;
    }
}

const GB: f64 = 1e9;

/// The dollars of the job `summary` describes, its functions having `function_memory` bytes.
pub fn of_job(summary: &JobSummary, function_memory: u64) -> Cost {
    let attempts: u64 = summary.stages.iter().map(|s| u64::from(s.attempts)).sum();
    let task_s: f64 = summary.reports.iter().flatten().map(|r| r.seconds).sum();
    let mut cost = Cost {
        functions: task_s * function_memory as f64 / GB * prices::LAMBDA_PER_GB_S,
        invocations: attempts as f64 * prices::LAMBDA_PER_REQUEST,
        ..Cost::default()
    };
    for edge in &summary.edges {
        let held_gb_s = edge.bytes as f64 / GB * summary.seconds;
        if edge.path.starts_with("object-store") {
            let r = &edge.requests;
            cost.requests +=
                (r.puts + r.lists) as f64 * prices::S3_PER_WRITE + (r.gets + r.misses) as f64 * prices::S3_PER_READ;
            cost.storage += held_gb_s * prices::S3_PER_GB_MONTH / (30.0 * 86400.0);
        } else if edge.path.starts_with("remote-store") {
            cost.storage += held_gb_s * prices::MEMORY_STORE_PER_GB_HOUR / 3600.0;
        }
    }
    cost
}

/// The dollars of the job whose summary `baton … --summary-json FILE` wrote to `file`.
pub fn of_summary_file(file: &std::path::Path, function_memory: u64) -> anyhow::Result<Cost> {
    let text = std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let summary: JobSummary =
        serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{} is not a job summary: {e}", file.display()))?;
    Ok(of_job(&summary, function_memory))
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_runtime::driver::{EdgeSummary, StageSummary};

    #[test]
    fn object_store_requests_and_function_seconds_are_priced() {
        let mut summary = JobSummary { job: "j".into(), seconds: 10.0, ..JobSummary::default() };
        summary.stages.push(StageSummary { attempts: 1_000_000, ..StageSummary::default() });
        let mut edge = EdgeSummary { path: "object-store (s3://)".into(), bytes: 0, ..EdgeSummary::default() };
        edge.requests.puts = 1000;
        edge.requests.gets = 1000;
        summary.edges.push(edge);
        summary.edges.push(EdgeSummary { path: "vm-local".into(), bytes: 1 << 40, ..EdgeSummary::default() });
        let cost = of_job(&summary, 1 << 30);
        assert!((cost.invocations - 0.20).abs() < 1e-9, "{cost:?}");
        assert!((cost.requests - (0.005 + 0.0004)).abs() < 1e-12, "{cost:?}");
        assert_eq!(cost.storage, 0.0, "nothing held on a store: {cost:?}");
        assert_eq!(cost.functions, 0.0);
        assert!((cost.total() - 0.2054).abs() < 1e-9);
    }
}
