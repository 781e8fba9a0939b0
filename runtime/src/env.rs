//! Where a job runs, as the commands that run jobs see it: the embedded single host
//! ([`crate::local::LocalEnv`]) or a cluster of hosts ([`crate::cluster::ClusterEnv`]).

use baton_planner::{ClusterModel, Path};

use crate::driver::DriverConfig;
use crate::error::Result;
use crate::invoker::Invoker;
use crate::paths::PathSpec;

/// What running a job needs from its environment.
pub trait Environment: Send + Sync + std::fmt::Debug {
    /// The invoker tasks run on.
    fn invoker(&self) -> &dyn Invoker;

    /// The concrete path for the planner's `path`, if this environment has it.
    fn spec(&self, path: Path) -> Option<PathSpec>;

    /// The planner's view of the environment.
    fn cluster_model(&self) -> ClusterModel;

    /// A driver configuration for a new job: a fresh id, its token, and the hosts.
    fn job_config(&self) -> Result<DriverConfig>;

    /// What runs the tasks, for a line of output ("4 worker processes", "3 hosts, 6 workers").
    fn describe(&self) -> String;
}

/// The object-store path's model for a local directory (a `file://` store): a file made per
/// request, the page cache's bandwidth, no request-rate limits.
pub(crate) fn directory_store(base: &baton_planner::PathModel) -> baton_planner::PathModel {
    baton_planner::PathModel {
        task_bandwidth: 600e6,
        aggregate_bandwidth: 1.2e9,
        latency_s: 200e-6,
        write_rate_per_prefix: None,
        read_rate_per_prefix: None,
        ..base.clone()
    }
}

/// A job id no other job of this machine has: this process's id, and the time and a counter.
pub(crate) fn fresh_job_id() -> baton_fabric::JobId {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let low = nanos ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_left(20);
    baton_fabric::JobId(u64::from(std::process::id()) << 32 | u64::from(low))
}
