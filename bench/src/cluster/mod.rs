//! Jobs across emulated hosts (`cluster up --emulate N --s3-host --store-host`, so it needs
//! root): the sort ([`sort`]) and TPC-H queries ([`tpch`]), each planned against the same job
//! with every edge through the object store — an S3 server in a host of its own, its link
//! capped like the others — through the remote store — a node in a host of its own, capped
//! likewise — and with every cross-host edge on direct; the planner's prediction of the sort's
//! shuffle against what it measured; and each variant's requests as counted.
//!
//! The emulated hosts share this machine's cores: the link caps are real, the CPUs are not
//! each host's own.

pub mod shared;
pub mod sort;
pub mod tpch;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use baton_runtime::cluster::emulate::S3Host;
use serde::Serialize;

/// What to run.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The `baton` binary (nodes, workers and drivers run it).
    pub exe: PathBuf,
    /// Emulated hosts.
    pub hosts: usize,
    /// Each host's link (`1gbit`).
    pub nic: String,
    /// Workers per host.
    pub workers: usize,
    /// Each worker's memory limit (`cluster up --worker-memory`).
    pub worker_memory: u64,
    /// The sorts: bytes, and map (and reduce) tasks.
    pub sorts: Vec<(u64, u32)>,
    /// TPC-H's scale factors (none: no TPC-H).
    pub sfs: Vec<f64>,
    /// TPC-H queries to run, by number (all 22 when empty).
    pub queries: Vec<usize>,
    /// Runs of each variant (the median is reported).
    pub repeats: usize,
    /// A directory for the run (the emulation, the input, the outputs; the TPC-H data, kept).
    pub work_dir: PathBuf,
    /// Whether the S3 host enforces S3's request rates per prefix (`503 SlowDown` past them).
    pub s3_rates: bool,
    /// Hosts deployed over ssh from this inventory instead of emulated ones (`hosts`, `nic`,
    /// `workers` and `s3_rates` are then the inventory's business).
    pub inventory: Option<PathBuf>,
}

/// The ways every job runs: a name, and the `--path` it runs with (`auto`: the planner's). Hosts
/// over ssh have no remote store: they run all but that one.
pub const VARIANTS: [(&str, &str); 4] = [
    ("planned", "auto"),
    ("object store only (S3 host)", "object-store"),
    ("remote store only (store host)", "remote-store"),
    ("direct between hosts", "direct"),
];

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    /// Hosts.
    pub hosts: usize,
    /// Each host's link.
    pub nic: String,
    /// Workers per host.
    pub workers: usize,
    /// The variants that ran, in order (their figures follow it).
    pub variants: Vec<String>,
    /// The sorts, a report per size.
    pub sorts: Vec<sort::SortReport>,
    /// TPC-H, a report per scale factor.
    pub tpch: Vec<tpch::TpchReport>,
    /// The sizes and scale factors that failed, and why: the others ran all the same.
    pub failed: Vec<(String, String)>,
}

/// The variants a cluster runs: all of [`VARIANTS`], less the remote store where it has none.
pub fn variants(has_store: bool) -> Vec<(&'static str, &'static str)> {
    VARIANTS.iter().copied().filter(|(_, path)| has_store || *path != "remote-store").collect()
}

/// Runs `future` to its end from the harness's blocking thread.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Handle::try_current().context("the cluster benchmark needs a Tokio runtime")?.block_on(future))
}

/// The S3 host of emulated hosts: the test server's bucket and credentials.
pub fn s3_host() -> S3Host {
    S3Host {
        bucket: baton_connectors::testing::BUCKET.into(),
        key: baton_connectors::testing::KEY.into(),
        secret: baton_connectors::testing::SECRET.into(),
        rate_limited: false,
    }
}

/// The emulation's cluster file, relative to the run's directory.
const CLUSTER: &str = "baton-data/cluster/cluster.toml";

/// Runs `baton args` in `dir`; its standard output.
fn baton(options: &ClusterOptions, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(&options.exe)
        .args(args)
        .current_dir(dir)
        .env("BATON_LOG", "warn")
        // The S3 host's test credentials; hosts over ssh reach their store as the environment
        // says (an instance role).
        .envs(if options.inventory.is_none() { s3_host().environment().to_vec() } else { Vec::new() })
        .output()
        .with_context(|| format!("cannot run {}", options.exe.display()))?;
    if !out.status.success() {
        bail!("baton {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the benchmark: up, the sort's variants taking turns, then TPC-H's, down (also when a
/// variant fails).
pub fn run(options: &ClusterOptions) -> anyhow::Result<ClusterReport> {
    // SAFETY: geteuid has no preconditions.
    if options.inventory.is_none() && unsafe { libc::geteuid() } != 0 {
        bail!("the cluster benchmark runs on emulated hosts, which need root (network namespaces)");
    }
    baton_fabric::private::ensure_dir(&options.work_dir, "work directory")?;
    // The TPC-H data sets outlive the run (made once per scale factor).
    let data = |sf: f64| options.work_dir.join(format!("tpch-sf{sf}"));
    for &sf in &options.sfs {
        baton_sql::tpch::ensure(sf, &data(sf))?;
    }
    let dir = tempfile::Builder::new().prefix("cluster-").tempdir_in(&options.work_dir)?;
    let d = dir.path();
    let hosts = options.hosts.to_string();
    let workers = options.workers.to_string();
    let worker_memory = options.worker_memory.to_string();
    // An `up` that fails undoes itself.
    let up = [
        "cluster",
        "up",
        "--emulate",
        &hosts,
        "--nic",
        &options.nic,
        "--workers",
        &workers,
        "--worker-memory",
        &worker_memory,
        "--s3-host",
        "--store-host",
    ];
    let rates = ["--s3-rate-limit"];
    let up = if options.s3_rates { [&up[..], &rates[..]].concat() } else { up.to_vec() };
    let (up, hosts) = match &options.inventory {
        None => (up.iter().map(|s| s.to_string()).collect::<Vec<_>>(), options.hosts),
        Some(inventory) => {
            let inventory = inventory.to_string_lossy().into_owned();
            let hosts = baton_runtime::cluster::ssh::Inventory::load(std::path::Path::new(&inventory))?.hosts.len();
            let deploy = ["cluster", "deploy", "--inventory", &inventory, "--dir", "baton-data/cluster"];
            (deploy.iter().map(|s| s.to_string()).collect::<Vec<_>>(), hosts)
        }
    };
    let up: Vec<&str> = up.iter().map(AsRef::as_ref).collect();
    baton(options, d, &up)?;
    let result = (|| -> anyhow::Result<ClusterReport> {
        let file = baton_runtime::cluster::ClusterFile::read(&d.join(CLUSTER))?;
        let shared = match (&options.inventory, file.objects.clone()) {
            (Some(_), Some(objects)) => shared::Shared::Objects(objects),
            (Some(_), None) => bail!("the inventory names no object store"),
            (None, _) => shared::Shared::Local,
        };
        let variants = variants(file.store.is_some());
        // A size or scale factor that fails is noted; the rest still run.
        let mut failed = Vec::new();
        let mut sorts = Vec::new();
        for &(bytes, tasks) in &options.sorts {
            match sort::run(options, d, &shared, &variants, bytes, tasks) {
                Ok(report) => sorts.push(report),
                Err(e) => failed.push((format!("sort {}", crate::sort::human_bytes(bytes)), format!("{e:#}"))),
            }
        }
        let mut tpch = Vec::new();
        for &sf in &options.sfs {
            match tpch::run(options, d, sf, &data(sf), &shared, &variants, &file) {
                Ok(report) => tpch.push(report),
                Err(e) => failed.push((format!("TPC-H at scale factor {sf}"), format!("{e:#}"))),
            }
        }
        let nic = if options.inventory.is_some() { "the inventory's".to_string() } else { options.nic.clone() };
        let variant_names = variants.iter().map(|(name, _)| name.to_string()).collect();
        Ok(ClusterReport { hosts, nic, workers: options.workers, variants: variant_names, sorts, tpch, failed })
    })();
    let down = baton(options, d, &["cluster", "down", "--dir", "baton-data/cluster"]);
    let report = result?;
    down?;
    Ok(report)
}

/// The report as Markdown.
pub fn markdown(r: &ClusterReport) -> String {
    let mut out = format!(
        "# Jobs across emulated hosts\n\n{} hosts, each link capped at {} (tbf), {} workers per host; the object \
         store an S3 server in a host of its own and the remote store a node in a host of its own, each behind the \
         same cap. The hosts share this machine's cores.\n\n",
        r.hosts, r.nic, r.workers
    );
    for sort in &r.sorts {
        out.push_str(&sort::markdown(sort));
        out.push('\n');
    }
    for tpch in &r.tpch {
        out.push_str(&tpch::markdown(tpch));
        out.push('\n');
    }
    if !r.failed.is_empty() {
        out.push_str("## Failed\n\n");
        for (what, reason) in &r.failed {
            out.push_str(&format!("- {what}: {reason}\n"));
        }
    }
    out
}
