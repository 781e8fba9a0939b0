//! The sort benchmark: `baton sort` of gensort input, five ways in one run — the planner's
//! least-time plan, its least-cost plan, every edge forced through the object store (file://),
//! a single-process sort on every core, and the direct path with reducers started as mappers
//! end — and with `local_s3` a sixth: every edge through an object store that speaks S3
//! (s3s-fs, served on 127.0.0.1 by this process). Each distributed run's dollars come from
//! its summary's counts ([`crate::cost`]).
//! Goal: the planned job at least 2x faster than the object-store-only job, and within 2x of
//! the single-process sort.
//!
//! Each variant is a `baton` process, timed from start to exit (worker start-up included);
//! the distributed variants run 8 mappers and 8 reducers per GiB on a worker per core. The
//! variants take turns, repeat after repeat, so that a drift in the machine's state (its page
//! cache, the memory its host has taken back) falls on all of them alike.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::stats::median;

/// What to run.
#[derive(Clone, Debug)]
pub struct SortOptions {
    /// The `baton` binary.
    pub exe: PathBuf,
    /// Input sizes in bytes (whole records are sorted: the size rounded down to 100 bytes).
    pub sizes: Vec<u64>,
    /// Runs of each variant (the median is reported).
    pub repeats: usize,
    /// Where inputs and outputs go (local disk).
    pub work_dir: PathBuf,
    /// Also run every edge through a local S3 server.
    pub local_s3: bool,
}

/// One variant at one size.
#[derive(Clone, Debug, Serialize)]
pub struct Variant {
    /// Its name.
    pub name: String,
    /// The shuffle's path and topology as the job reported them.
    pub shuffle: String,
    /// Seconds of each run.
    pub seconds: Vec<f64>,
    /// The median.
    pub median_s: f64,
    /// The dollars of its last run (none for the single process, which is no job).
    pub dollars: Option<crate::cost::Cost>,
}

/// One size.
#[derive(Clone, Debug, Serialize)]
pub struct SizeReport {
    /// Bytes sorted.
    pub bytes: u64,
    /// Map and reduce tasks of the distributed variants.
    pub tasks: u32,
    /// Planned, object-store only, single process, direct.
    pub variants: Vec<Variant>,
    /// Object-store-only (file://) time over planned time (goal ≥ 2).
    pub speedup_vs_object_store: f64,
    /// Object-store-only (S3 protocol) time over planned time, when that variant ran.
    pub speedup_vs_s3: Option<f64>,
    /// Planned time over single-process time (goal ≤ 2).
    pub ratio_vs_single_process: f64,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct SortReport {
    /// Worker processes of the distributed variants.
    pub workers: usize,
    /// Per size.
    pub sizes: Vec<SizeReport>,
}

pub(crate) fn run_baton(exe: &Path, dir: &Path, args: &[String]) -> anyhow::Result<(f64, String)> {
    let start = Instant::now();
    let out = Command::new(exe)
        .args(args)
        .current_dir(dir)
        .env("BATON_LOG", "warn")
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("baton {} failed: {stdout}\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok((seconds, stdout))
}

/// Memory of each worker (a function's memory, for its dollars).
pub(crate) const WORKER_MEMORY: u64 = 2 << 30;

/// Runs each of `variants` (a name and `baton` arguments that write their summary to
/// `summary`), taking turns, `repeats` times; each one's times, shuffle, median and the
/// dollars of its last run.
pub(crate) fn take_turns(
    exe: &Path,
    work_dir: &Path,
    variants: &[(&str, Vec<String>)],
    repeats: usize,
    summary: &Path,
    what: &str,
) -> anyhow::Result<Vec<Variant>> {
    let mut reports: Vec<Variant> = variants
        .iter()
        .map(|(name, _)| Variant {
            name: name.to_string(),
            shuffle: String::new(),
            seconds: Vec::new(),
            median_s: 0.0,
            dollars: None,
        })
        .collect();
    for _ in 0..repeats.max(1) {
        for ((variant, args), report) in variants.iter().zip(&mut reports) {
            let _ = std::fs::remove_file(summary);
            let (s, stdout) = run_baton(exe, work_dir, args)?;
            eprintln!("{what} · {variant}: {s:.2} s");
            report.seconds.push(s);
            report.shuffle = stdout
                .lines()
                .find_map(|l| l.split_once("shuffle via ").map(|(_, rest)| rest.to_string()))
                .unwrap_or_else(|| "—".into());
            if summary.exists() {
                report.dollars = Some(crate::cost::of_summary_file(summary, WORKER_MEMORY)?);
            }
        }
    }
    let _ = std::fs::remove_file(summary);
    for report in &mut reports {
        report.median_s = median(report.seconds.clone());
    }
    Ok(reports)
}

const S3_VARIANT: &str = "object-store only (S3 protocol, local server)";

/// `1 GiB`, `64 MiB`, `1.50 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    // A GiB of whole 100-byte records is a few bytes short of one.
    if bytes >= (1 << 30) - 100 {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        if (gib - gib.round()).abs() < 0.01 { format!("{} GiB", gib.round()) } else { format!("{gib:.2} GiB") }
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// Runs the benchmark (on a thread that may block, inside a Tokio runtime when `local_s3`).
pub fn run(options: &SortOptions) -> anyhow::Result<SortReport> {
    std::fs::create_dir_all(&options.work_dir)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    // The S3 server's directory goes with the run (s3s-fs keeps a metadata file for every
    // object it ever held, deleted or not).
    let s3_root = if options.local_s3 { Some(tempfile::tempdir_in(&options.work_dir)?) } else { None };
    let s3_url = match &s3_root {
        Some(root) => {
            let runtime = tokio::runtime::Handle::try_current().context("the local S3 server needs a Tokio runtime")?;
            let addr = runtime.block_on(baton_connectors::testing::start_open_s3(root.path()))?;
            Some(baton_connectors::testing::open_url(addr, "sort"))
        }
        None => None,
    };
    let mut sizes = Vec::new();
    for &bytes in &options.sizes {
        let records = bytes / 100;
        let bytes = records * 100;
        let name = human_bytes(bytes);
        let input = options.work_dir.join(format!("sort-{bytes}.bin"));
        if std::fs::metadata(&input).map(|m| m.len()).ok() != Some(bytes) {
            let args = ["gensort".to_string(), input.display().to_string(), "--records".into(), records.to_string()];
            run_baton(&options.exe, &options.work_dir, &args)?;
        }
        // 8 tasks a GiB, at least 4 (and 8 from 256 MiB).
        let tasks = ((bytes >> 27) as u32).max(if bytes >= 256 << 20 { 8 } else { 4 });
        let out = options.work_dir.join("sort-out");
        let summary = options.work_dir.join("sort-summary.json");
        let common = |path: &str| {
            vec![
                "sort".to_string(),
                input.display().to_string(),
                "--output".into(),
                out.display().to_string(),
                "--mappers".into(),
                tasks.to_string(),
                "--reducers".into(),
                tasks.to_string(),
                "--path".into(),
                path.into(),
                "--node-memory".into(),
                format!("{}MiB", 2 * (bytes >> 20) + 1024),
                "--worker-memory".into(),
                format!("{}MiB", WORKER_MEMORY >> 20),
                "--summary-json".into(),
                summary.display().to_string(),
            ]
        };
        let single = vec![
            "sort".to_string(),
            input.display().to_string(),
            "--output".into(),
            out.display().to_string(),
            "--single-process".into(),
        ];
        let mut least_cost = common("auto");
        least_cost.extend(["--objective".to_string(), "least-cost".into()]);
        let mut variants = vec![
            ("planned", common("auto")),
            ("object-store only (file://)", common("object-store")),
            ("single process", single),
            ("direct, reducers start early", common("direct")),
            ("planned for least cost", least_cost),
        ];
        if let Some(url) = &s3_url {
            let mut s3 = common("object-store");
            s3.extend(["--objects".to_string(), url.clone()]);
            variants.push((S3_VARIANT, s3));
        }
        let reports = take_turns(&options.exe, &options.work_dir, &variants, options.repeats, &summary, &name)?;
        let _ = std::fs::remove_dir_all(&out);
        let time = |name: &str| reports.iter().find(|r| r.name == name).map(|r| r.median_s);
        let planned = time("planned").unwrap_or(f64::NAN);
        sizes.push(SizeReport {
            bytes,
            tasks,
            speedup_vs_object_store: time("object-store only (file://)").unwrap_or(f64::NAN) / planned,
            speedup_vs_s3: time(S3_VARIANT).map(|s3| s3 / planned),
            ratio_vs_single_process: planned / time("single process").unwrap_or(f64::NAN),
            variants: reports,
        });
    }
    Ok(SortReport { workers, sizes })
}

/// The report as Markdown.
pub fn markdown(report: &SortReport) -> String {
    let mut md = format!(
        "## Sort (gensort records), {} worker processes\n\n| size | tasks | variant | shuffle | median s | runs | dollars (last run) |\n|---|---:|---|---|---:|---|---:|\n",
        report.workers
    );
    for s in &report.sizes {
        for v in &s.variants {
            let runs: Vec<String> = v.seconds.iter().map(|x| format!("{x:.2}")).collect();
            md.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} | {} |\n",
                human_bytes(s.bytes),
                s.tasks,
                v.name,
                v.shuffle,
                v.median_s,
                runs.join(", "),
                v.dollars.map_or("—".into(), |d| format!("${:.6}", d.total()))
            ));
        }
    }
    md.push('\n');
    for s in &report.sizes {
        md.push_str(&format!(
            "- {}: planned is **{:.2}x** faster than object-store only (goal ≥ 2x) and **{:.2}x** the single-process time (goal ≤ 2x)\n",
            human_bytes(s.bytes), s.speedup_vs_object_store, s.ratio_vs_single_process
        ));
        if let Some(x) = s.speedup_vs_s3 {
            md.push_str(&format!(
                "- {}: planned is **{x:.2}x** faster than object-store only over the S3 protocol (a local s3s-fs server on the same cores)\n",
                human_bytes(s.bytes)
            ));
        }
    }
    md
}
