//! Sort across emulated hosts (`cluster up --emulate N --s3-host`, so it needs root): the
//! planned job against the same job with every edge through the object store — an S3 server in
//! a host of its own, its link capped like the others — and with every cross-host edge on
//! direct (reducers pulling as mappers end); the planner's prediction of the shuffle against
//! what it measured after the probe's calibration; and each variant's requests as counted.
//!
//! The emulated hosts share this machine's cores: the link caps are real, the CPUs are not
//! each host's own.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use baton_fabric::path::counted::Requests;
use baton_runtime::cluster::emulate::S3Host;
use serde::Serialize;

use crate::stats::median;

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
    /// Runs of each variant (the median is reported).
    pub repeats: usize,
    /// A directory for the run (the emulation, the input, the outputs).
    pub work_dir: PathBuf,
}

/// One way of running the sort.
#[derive(Clone, Debug, Serialize)]
pub struct Variant {
    /// Its name.
    pub name: String,
    /// `--path` it ran with (`auto`: the planner's choice).
    pub path: String,
    /// The shuffle's path and topology, as the summary says.
    pub shuffle: String,
    /// Seconds of each run (the job, first task to last).
    pub seconds: Vec<f64>,
    /// Their median.
    pub median_s: f64,
    /// The shuffle's requests, as counted (the last run's).
    pub requests: Requests,
    /// The planner's prediction of the shuffle.
    pub predicted_s: f64,
    /// What it measured: the slowest producer's writing plus the slowest consumer's reading.
    pub measured_s: f64,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    /// Hosts, link, workers per host.
    pub hosts: usize,
    /// Each host's link.
    pub nic: String,
    /// Workers per host.
    pub workers: usize,
    /// Bytes sorted.
    pub bytes: u64,
    /// Map and reduce tasks.
    pub tasks: u32,
    /// The variants.
    pub variants: Vec<Variant>,
    /// The planned job's speedup over the object-store-only job.
    pub planned_over_object_store: f64,
}

/// The S3 host of emulated hosts: the test server's bucket and credentials.
pub fn s3_host() -> S3Host {
    S3Host {
        bucket: baton_connectors::testing::BUCKET.into(),
        key: baton_connectors::testing::KEY.into(),
        secret: baton_connectors::testing::SECRET.into(),
    }
}

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

/// Runs the benchmark: up, the variants taking turns, down (also when a variant fails).
pub fn run(options: &ClusterOptions) -> anyhow::Result<ClusterReport> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the cluster benchmark runs on emulated hosts, which need root (network namespaces)");
    }
    baton_fabric::private::ensure_dir(&options.work_dir, "work directory")?;
    let dir = tempfile::Builder::new().prefix("cluster-").tempdir_in(&options.work_dir)?;
    let d = dir.path();
    let hosts = options.hosts.to_string();
    let workers = options.workers.to_string();
    // An `up` that fails undoes itself.
    let up = ["cluster", "up", "--emulate", &hosts, "--nic", &options.nic, "--workers", &workers, "--s3-host"];
    baton(options, d, &up)?;
    let result = variants(options, d);
    let down = baton(options, d, &["cluster", "down", "--dir", "baton-data/cluster"]);
    let report = result?;
    down?;
    Ok(report)
}

fn variants(options: &ClusterOptions, d: &Path) -> anyhow::Result<ClusterReport> {
    let records = options.bytes / 100;
    baton(options, d, &["gensort", "in.bin", "--records", &records.to_string()])?;
    let tasks = options.tasks.to_string();
    let mut variants: Vec<Variant> =
        [("planned", "auto"), ("object store only (S3 host)", "object-store"), ("direct", "direct")]
            .iter()
            .map(|(name, path)| Variant {
                name: name.to_string(),
                path: path.to_string(),
                shuffle: String::new(),
                seconds: Vec::new(),
                median_s: 0.0,
                requests: Requests::default(),
                predicted_s: 0.0,
                measured_s: 0.0,
            })
            .collect();
    for round in 0..options.repeats {
        for v in &mut variants {
            let out = format!("out-{}", v.path);
            let summary = format!("{}-{round}.json", v.path);
            let args = [
                "sort",
                "in.bin",
                "-o",
                &out,
                "--cluster",
                "baton-data/cluster/cluster.toml",
                "--mappers",
                &tasks,
                "--reducers",
                &tasks,
                "--path",
                &v.path,
                "--validate",
                "--summary-json",
                &summary,
            ];
            baton(options, d, &args)?;
            let s: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join(&summary))?)?;
            let edge = &s["edges"][0];
            v.seconds.push(s["seconds"].as_f64().unwrap_or_default());
            v.shuffle = format!("{}, {}", edge["path"].as_str().unwrap_or("?"), edge["layout"].as_str().unwrap_or("?"));
            v.requests = serde_json::from_value(edge["requests"].clone()).unwrap_or_default();
            v.predicted_s = edge["predicted_s"].as_f64().unwrap_or_default();
            v.measured_s = edge["write_s"].as_f64().unwrap_or_default() + edge["read_s"].as_f64().unwrap_or_default();
        }
    }
    for v in &mut variants {
        v.median_s = median(v.seconds.clone());
    }
    let planned_over_object_store = variants[1].median_s / variants[0].median_s.max(1e-9);
    Ok(ClusterReport {
        hosts: options.hosts,
        nic: options.nic.clone(),
        workers: options.workers,
        bytes: options.bytes,
        tasks: options.tasks,
        variants,
        planned_over_object_store,
    })
}

/// The report as Markdown.
pub fn markdown(r: &ClusterReport) -> String {
    let mut out = format!(
        "# Sort across emulated hosts\n\n{} hosts, each link capped at {} (tbf), {} workers per host, the object store an \
         S3 server in a host of its own with the same cap; {:.2} GiB sorted by {} mappers and {} reducers. The hosts share \
         this machine's cores.\n\n| variant | shuffle | median s | writes | reads | other requests | shuffle predicted s | \
         shuffle measured s |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
        r.hosts,
        r.nic,
        r.workers,
        r.bytes as f64 / f64::from(1u32 << 30),
        r.tasks,
        r.tasks
    );
    for v in &r.variants {
        out.push_str(&format!(
            "| {} | {} | {:.2} | {} | {} | {} | {:.2} | {:.2} |\n",
            v.name,
            v.shuffle,
            v.median_s,
            v.requests.puts,
            v.requests.gets,
            v.requests.total() - v.requests.puts - v.requests.gets,
            v.predicted_s,
            v.measured_s
        ));
    }
    out.push_str(&format!("\nPlanned over object store only: **{:.2}x**.\n", r.planned_over_object_store));
    out
}
