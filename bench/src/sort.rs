//! The sort benchmark: `baton sort` of gensort input, four ways in one run — the planner's
//! plan, every edge forced through the object store (file://), a single-process sort, and the
//! direct path with reducers started as mappers end — and with `local_s3` a fifth: every edge
//! through an object store that speaks S3 (s3s-fs, served on 127.0.0.1 by this process).
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
    /// Input sizes in GiB.
    pub sizes_gib: Vec<u64>,
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
}

/// One size.
#[derive(Clone, Debug, Serialize)]
pub struct SizeReport {
    /// GiB sorted.
    pub gib: u64,
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

fn run_baton(exe: &Path, dir: &Path, args: &[String]) -> anyhow::Result<(f64, String)> {
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
    for &gib in &options.sizes_gib {
        let input = options.work_dir.join(format!("sort-{gib}gib.bin"));
        let records = (gib << 30) / 100;
        if std::fs::metadata(&input).map(|m| m.len()).ok() != Some(records * 100) {
            let args = ["gensort".to_string(), input.display().to_string(), "--records".into(), records.to_string()];
            run_baton(&options.exe, &options.work_dir, &args)?;
        }
        let tasks = (8 * gib).max(8) as u32;
        let out = options.work_dir.join("sort-out");
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
                format!("{}GiB", 2 * gib + 1),
            ]
        };
        let single = vec![
            "sort".to_string(),
            input.display().to_string(),
            "--output".into(),
            out.display().to_string(),
            "--single-process".into(),
        ];
        let mut variants = vec![
            ("planned", common("auto")),
            ("object-store only (file://)", common("object-store")),
            ("single process", single),
            ("direct, reducers start early", common("direct")),
        ];
        if let Some(url) = &s3_url {
            let mut s3 = common("object-store");
            s3.extend(["--objects".to_string(), url.clone()]);
            variants.push(("object-store only (S3 protocol, local server)", s3));
        }
        let mut reports: Vec<Variant> = variants
            .iter()
            .map(|(name, _)| Variant {
                name: name.to_string(),
                shuffle: String::new(),
                seconds: Vec::new(),
                median_s: 0.0,
            })
            .collect();
        for _ in 0..options.repeats.max(1) {
            for ((name, args), report) in variants.iter().zip(&mut reports) {
                let (s, stdout) = run_baton(&options.exe, &options.work_dir, args)?;
                eprintln!("{gib} GiB · {name}: {s:.2} s");
                report.seconds.push(s);
                report.shuffle = stdout
                    .lines()
                    .find_map(|l| l.split_once("shuffle via ").map(|(_, rest)| rest.to_string()))
                    .unwrap_or_else(|| "—".into());
            }
        }
        for report in &mut reports {
            report.median_s = median(report.seconds.clone());
        }
        let _ = std::fs::remove_dir_all(&out);
        sizes.push(SizeReport {
            gib,
            tasks,
            speedup_vs_object_store: reports[1].median_s / reports[0].median_s,
            speedup_vs_s3: reports.get(4).map(|s3| s3.median_s / reports[0].median_s),
            ratio_vs_single_process: reports[0].median_s / reports[2].median_s,
            variants: reports,
        });
    }
    Ok(SortReport { workers, sizes })
}

/// The report as Markdown.
pub fn markdown(report: &SortReport) -> String {
    let mut md = format!(
        "## Sort (gensort records), {} worker processes\n\n| size | tasks | variant | shuffle | median s | runs |\n|---|---:|---|---|---:|---|\n",
        report.workers
    );
    for s in &report.sizes {
        for v in &s.variants {
            let runs: Vec<String> = v.seconds.iter().map(|x| format!("{x:.2}")).collect();
            md.push_str(&format!(
                "| {} GiB | {} | {} | {} | {:.2} | {} |\n",
                s.gib,
                s.tasks,
                v.name,
                v.shuffle,
                v.median_s,
                runs.join(", ")
            ));
        }
    }
    md.push('\n');
    for s in &report.sizes {
        md.push_str(&format!(
            "- {} GiB: planned is **{:.2}x** faster than object-store only (goal ≥ 2x) and **{:.2}x** the single-process time (goal ≤ 2x)\n",
            s.gib, s.speedup_vs_object_store, s.ratio_vs_single_process
        ));
        if let Some(x) = s.speedup_vs_s3 {
            md.push_str(&format!(
                "- {} GiB: planned is **{x:.2}x** faster than object-store only over the S3 protocol (a local s3s-fs server on the same cores)\n",
                s.gib
            ));
        }
    }
    md
}
