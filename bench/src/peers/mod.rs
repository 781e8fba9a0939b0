//! The peers on TPC-H (built with `--features peers`): datafusion-distributed 4 and Ballista
//! 55, both on the DataFusion Baton runs, each with its workers in processes of their own on
//! the same hosts as Baton's, the same partitions per stage and the same memory per worker.
//!
//! - datafusion-distributed: a worker process per Baton worker (`peer-serve
//!   distributed-worker`: Arrow Flight over gRPC, a fair-spill memory pool of the worker's
//!   memory); the coordinator, in this process, plans with the distributed planner and runs
//!   the head stage.
//! - Ballista: a scheduler process (in-memory state, push-staged) and an executor process per
//!   Baton worker, one task slot each (as a Baton worker runs one task at a time) with the
//!   worker's memory as its pool; shuffle files in a directory of the run. The client is a
//!   remote session in this process.
//!
//! Every process here is started from the `baton` binary, listens on the host's own address
//! (loopback on one machine) without authentication — they are benchmark peers, not part of
//! Baton — and exits when this process drops them or dies (their stdin closes).

#[cfg(feature = "peers")]
pub mod serve;
#[cfg(feature = "peers")]
mod up;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use arrow_array::RecordBatch;

#[cfg(feature = "peers")]
pub use up::Peers;

/// The peers this build runs, as reports call them.
#[cfg(feature = "peers")]
pub const NAMES: &[&str] = &["datafusion-distributed", "Ballista"];
/// The largest gRPC message Ballista's scheduler, executors and client take: 1 GiB, since a
/// partition of TPC-H at scale factor 10 passes Ballista's 16 MiB default (Baton's exchanges
/// have no such limit).
#[cfg(feature = "peers")]
const GRPC_MAX_MESSAGE: u32 = 1 << 30;

/// The peers this build runs: none without `--features peers`.
#[cfg(not(feature = "peers"))]
pub const NAMES: &[&str] = &[];

/// Where a peer process runs: an address of the host, and the network namespace of an
/// emulated host (none: this machine's own).
#[derive(Clone, Debug)]
pub struct Place {
    /// The host's address (the process listens there).
    pub ip: IpAddr,
    /// `ip netns exec` into this namespace first.
    pub netns: Option<String>,
}

impl Place {
    /// This machine, on loopback.
    pub fn loopback() -> Self {
        Place { ip: IpAddr::from([127, 0, 0, 1]), netns: None }
    }
}

/// How the peers are set up.
#[derive(Clone, Debug)]
pub struct PeersOptions {
    /// The `baton` binary (its hidden `bench peer-serve` runs each peer process).
    pub exe: PathBuf,
    /// Where each worker runs: a datafusion-distributed worker and a Ballista executor each.
    pub workers: Vec<Place>,
    /// Where the Ballista scheduler runs.
    pub scheduler: Place,
    /// Partitions per stage (Baton's).
    pub partitions: usize,
    /// Scan bytes per task of datafusion-distributed's planner (none: its default, 16 MiB;
    /// smaller spreads small tables over more workers).
    pub scan_bytes_per_task: Option<u64>,
    /// Each worker's memory, bytes (Baton's).
    pub worker_memory: u64,
    /// A directory of the run (Ballista's shuffle files; removed with the peers).
    pub work_dir: PathBuf,
}

/// Whether this build has the peers; a clear error if not.
pub fn available() -> anyhow::Result<()> {
    if NAMES.is_empty() { Err(unavailable()) } else { Ok(()) }
}

fn unavailable() -> anyhow::Error {
    anyhow::anyhow!("this baton was built without the peers: build it with `--features peers`")
}

/// The peers, which a build without `--features peers` cannot start.
#[cfg(not(feature = "peers"))]
#[derive(Debug)]
pub enum Peers {}

#[cfg(not(feature = "peers"))]
impl Peers {
    /// Fails: this build has no peers.
    pub async fn start(_: &PeersOptions, _: &[baton_sql::session::Table]) -> anyhow::Result<Peers> {
        Err(unavailable())
    }

    /// Each peer's session.
    pub fn sessions(&self) -> &[(&'static str, datafusion::prelude::SessionContext)] {
        match *self {}
    }

    /// Each peer's processes' CPU seconds.
    pub fn cpu_seconds(&self) -> Vec<f64> {
        match *self {}
    }
}

/// One peer's run of a query.
#[derive(Debug)]
pub struct PeerRun {
    /// The peer.
    pub name: &'static str,
    /// Seconds from planning to the collected result.
    pub seconds: f64,
    /// CPU seconds its processes (workers, scheduler) used meanwhile.
    pub worker_cpu_s: f64,
    /// The result.
    pub batches: Vec<RecordBatch>,
    /// Why the query failed on this peer (then `seconds` and `batches` say nothing).
    pub failed: Option<String>,
}

impl Peers {
    /// Runs `sql` on each peer in turn; a peer that fails it says why in its run.
    pub async fn run(&self, sql: &str) -> anyhow::Result<Vec<PeerRun>> {
        let mut runs = Vec::new();
        for (i, (peer, ctx)) in self.sessions().iter().enumerate() {
            let cpu = self.cpu_seconds()[i];
            let start = Instant::now();
            let (batches, failed) = match baton_sql::query::run_single(ctx, sql).await {
                Ok(batches) => (batches, None),
                Err(e) => (Vec::new(), Some(format!("{e:#}"))),
            };
            let seconds = start.elapsed().as_secs_f64();
            runs.push(PeerRun { name: peer, seconds, worker_cpu_s: self.cpu_seconds()[i] - cpu, batches, failed });
        }
        Ok(runs)
    }
}
