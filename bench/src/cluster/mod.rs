//! Jobs across emulated hosts (`cluster up --emulate N --s3-host --store-host`, so it needs
//! root): the sort ([`sort`]) and TPC-H queries ([`tpch`]), each planned against the same job
//! with every edge through the object store — an S3 server in a host of its own, its link
//! capped like the others — through the remote store — a node in a host of its own, capped
//! likewise — and with every cross-host edge on direct; the planner's prediction of the sort's
//! shuffle against what it measured; and each variant's requests as counted.
//!
//! The emulated hosts share this machine's cores: the link caps are real, the CPUs are not
//! each host's own.

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
    /// Bytes to sort.
    pub bytes: u64,
    /// Map and reduce tasks.
    pub tasks: u32,
    /// TPC-H's scale factor (0: no TPC-H).
    pub sf: f64,
    /// TPC-H queries to run, by number (all 22 when empty).
    pub queries: Vec<usize>,
    /// Runs of each variant (the median is reported).
    pub repeats: usize,
    /// A directory for the run (the emulation, the input, the outputs; the TPC-H data, kept).
    pub work_dir: PathBuf,
    /// Whether the S3 host enforces S3's request rates per prefix (`503 SlowDown` past them).
    pub s3_rates: bool,
}

/// The ways every job runs: a name, and the `--path` it runs with (`auto`: the planner's).
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
    /// The sort.
    pub sort: sort::SortReport,
    /// TPC-H, when it ran.
    pub tpch: Option<tpch::TpchReport>,
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
        .envs(s3_host().environment())
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
    if unsafe { libc::geteuid() } != 0 {
        bail!("the cluster benchmark runs on emulated hosts, which need root (network namespaces)");
    }
    baton_fabric::private::ensure_dir(&options.work_dir, "work directory")?;
    // The TPC-H data set outlives the run (made once per scale factor).
    let data = options.work_dir.join(format!("tpch-sf{}", options.sf));
    if options.sf > 0.0 {
        baton_sql::tpch::ensure(options.sf, &data)?;
    }
    let dir = tempfile::Builder::new().prefix("cluster-").tempdir_in(&options.work_dir)?;
    let d = dir.path();
    let hosts = options.hosts.to_string();
    let workers = options.workers.to_string();
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
        "--s3-host",
        "--store-host",
    ];
    let rates = ["--s3-rate-limit"];
    let up = if options.s3_rates { [&up[..], &rates[..]].concat() } else { up.to_vec() };
    baton(options, d, &up)?;
    let result = (|| -> anyhow::Result<ClusterReport> {
        let sort = sort::run(options, d)?;
        let tpch = if options.sf > 0.0 { Some(tpch::run(options, d, &data)?) } else { None };
        Ok(ClusterReport { hosts: options.hosts, nic: options.nic.clone(), workers: options.workers, sort, tpch })
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
    out.push_str(&sort::markdown(&r.sort));
    if let Some(tpch) = &r.tpch {
        out.push('\n');
        out.push_str(&tpch::markdown(tpch));
    }
    out
}
