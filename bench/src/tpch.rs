//! The TPC-H benchmark: the 22 queries, three ways in one run — Baton on local worker
//! processes with the planner's paths, single-process DataFusion, and Baton with every
//! exchange forced through the object store.
//! Goal: Baton within 1.5x of single-process DataFusion in total, and faster than the
//! object-store-only exchange.
//!
//! The workers stay up for the whole run (warm functions); each query is timed from planning
//! to its collected result, `repeats` times per variant (the three take turns), and the median
//! is reported. The baseline is DataFusion with its default settings and a partition per
//! worker, in this process. Every run's row count must agree with its.
//!
//! The object store is a `file://` directory of the run unless `objects` names another (an
//! `s3://` bucket, with the usual `AWS_*` settings): on one machine `file://` is the page
//! cache, the kindest object store there is. With `local_s3` the run serves one over the S3
//! protocol itself (s3s-fs on 127.0.0.1): every exchange then pays S3's requests, though not
//! a real service's latency.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use baton_planner::Path;
use baton_runtime::local::{LocalConfig, LocalEnv};
use baton_sql::query::{self, QueryOptions};
use baton_sql::{session, tpch};
use datafusion::execution::context::SessionContext;
use datafusion::prelude::SessionConfig;
use serde::Serialize;

use crate::stats::median;

/// What to run.
#[derive(Clone, Debug)]
pub struct TpchOptions {
    /// The `baton` binary (workers are started from it).
    pub exe: PathBuf,
    /// Scale factor.
    pub sf: f64,
    /// Where the data set is (generated there unless present) and runs keep their files.
    pub work_dir: PathBuf,
    /// Worker processes, and partitions per stage.
    pub workers: usize,
    /// Queries to run, by number (all 22 when empty).
    pub queries: Vec<usize>,
    /// Runs of each variant of each query (the median is reported).
    pub repeats: usize,
    /// The object store of the object-store path (default: a `file://` directory of the run).
    pub objects: Option<String>,
    /// Serve the object store over the S3 protocol from this process (s3s-fs over a directory
    /// of the run, on 127.0.0.1) instead.
    pub local_s3: bool,
}

/// One query.
#[derive(Clone, Debug, Serialize)]
pub struct QueryReport {
    /// `q01`…`q22`.
    pub name: String,
    /// Result rows.
    pub rows: usize,
    /// Single-process DataFusion, seconds.
    pub single_s: f64,
    /// Baton with the planner's paths, seconds.
    pub baton_s: f64,
    /// Baton with every exchange through the object store, seconds.
    pub object_store_s: f64,
    /// Stages of the Baton run.
    pub stages: usize,
    /// Bytes its exchanges moved.
    pub moved_bytes: u64,
    /// Paths its exchanges took (`vm-local ×3`).
    pub paths: String,
    /// Every run's seconds: single-process DataFusion, Baton planned, Baton object-store only.
    pub runs: [Vec<f64>; 3],
    /// The dollars of the last planned run and of the last object-store-only run (its main
    /// job's, from its counts: [`crate::cost`]).
    pub dollars: [crate::cost::Cost; 2],
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct TpchReport {
    /// Scale factor.
    pub sf: f64,
    /// Worker processes.
    pub workers: usize,
    /// Runs per variant and query.
    pub repeats: usize,
    /// The object store of the object-store path.
    pub objects: String,
    /// Per query.
    pub queries: Vec<QueryReport>,
    /// Sums of the three columns.
    pub total_single_s: f64,
    /// Baton's total.
    pub total_baton_s: f64,
    /// The object-store-only total.
    pub total_object_store_s: f64,
}

/// Runs the benchmark.
pub async fn run(options: &TpchOptions) -> anyhow::Result<TpchReport> {
    let data = options.work_dir.join(format!("tpch-sf{}", options.sf));
    let (sf, dir) = (options.sf, data.clone());
    tokio::task::spawn_blocking(move || tpch::ensure(sf, &dir)).await??;
    let mut local = LocalConfig::new(options.work_dir.join("runs"), Some(options.exe.clone()));
    local.workers = options.workers;
    local.objects = options.objects.clone();
    // The local S3 server's directory goes with the run (s3s-fs keeps a metadata file for
    // every object it ever held, deleted or not).
    let s3_root = if options.local_s3 { Some(tempfile::tempdir_in(&options.work_dir)?) } else { None };
    if let Some(root) = &s3_root {
        let addr = baton_connectors::testing::start_open_s3(root.path()).await?;
        local.objects = Some(baton_connectors::testing::open_url(addr, "runs"));
    }
    let env = LocalEnv::start(&local).await?;
    let tables = session::tpch_tables(&data)?;
    let ctx = SessionContext::new_with_config(session::config(options.workers));
    session::register(&ctx, &tables).await?;
    // The baseline is DataFusion as it comes, with a partition per worker.
    let baseline = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(options.workers));
    session::register(&baseline, &tables).await?;
    let mut queries = Vec::new();
    for (i, (name, sql)) in tpch::QUERIES.iter().enumerate() {
        if !options.queries.is_empty() && !options.queries.contains(&(i + 1)) {
            continue;
        }
        let mut single = Vec::new();
        let mut planned = Vec::new();
        let mut object_store = Vec::new();
        let mut rows = None;
        let mut last = None;
        let mut dollars = [crate::cost::Cost::default(); 2];
        for _ in 0..options.repeats.max(1) {
            let start = Instant::now();
            let got: usize = query::run_single(&baseline, sql).await?.iter().map(|b| b.num_rows()).sum();
            single.push(start.elapsed().as_secs_f64());
            let expected = *rows.get_or_insert(got);
            for (variant, (path, times)) in
                [(None, &mut planned), (Some(Path::ObjectStore), &mut object_store)].into_iter().enumerate()
            {
                let options = QueryOptions { path, topology: None };
                let start = Instant::now();
                let run = query::run(&ctx, sql, &env, &options, Vec::new(), &env.job_config()?)
                    .await
                    .with_context(|| format!("{name} on {}", path.map_or("the planned paths", |p| p.name())))?;
                times.push(start.elapsed().as_secs_f64());
                let got: usize = run.batches.iter().map(|b| b.num_rows()).sum();
                if got != expected {
                    bail!("{name}: Baton returned {got} rows, DataFusion {expected}");
                }
                dollars[variant] = crate::cost::of_job(&run.summary, local.worker_memory);
                if path.is_none() {
                    last = Some(run);
                }
            }
        }
        let (rows, run) = (rows.unwrap_or(0), last.context("no planned run")?);
        let (single_s, baton_s, object_store_s) =
            (median(single.clone()), median(planned.clone()), median(object_store.clone()));
        let mut paths: Vec<(String, usize)> = Vec::new();
        for e in &run.summary.edges {
            match paths.iter_mut().find(|(p, _)| *p == e.path) {
                Some((_, n)) => *n += 1,
                None => paths.push((e.path.clone(), 1)),
            }
        }
        let report = QueryReport {
            name: name.to_string(),
            rows,
            single_s,
            baton_s,
            object_store_s,
            stages: run.summary.stages.len(),
            moved_bytes: run.summary.edges.iter().map(|e| e.bytes).sum(),
            paths: paths.iter().map(|(p, n)| format!("{p} ×{n}")).collect::<Vec<_>>().join(", "),
            runs: [single, planned, object_store],
            dollars,
        };
        eprintln!(
            "{name}: single {:.3} s, baton {:.3} s, object store {:.3} s",
            report.single_s, report.baton_s, report.object_store_s
        );
        queries.push(report);
    }
    Ok(TpchReport {
        sf: options.sf,
        workers: options.workers,
        repeats: options.repeats.max(1),
        objects: env.object_store_url().to_string(),
        total_single_s: queries.iter().map(|q| q.single_s).sum(),
        total_baton_s: queries.iter().map(|q| q.baton_s).sum(),
        total_object_store_s: queries.iter().map(|q| q.object_store_s).sum(),
        queries,
    })
}

/// The report as Markdown: a row per query, the totals, and the goals.
pub fn markdown(r: &TpchReport) -> String {
    let mut md = format!(
        "## TPC-H sf {}, {} worker processes, median of {} runs, object store {}\n\n| query | rows | DataFusion s | Baton s | object store only s | Baton / DataFusion | stages | moved | paths |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        r.sf, r.workers, r.repeats, r.objects
    );
    for q in &r.queries {
        md.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.2} | {} | {} | {} |\n",
            q.name,
            q.rows,
            q.single_s,
            q.baton_s,
            q.object_store_s,
            q.baton_s / q.single_s.max(1e-9),
            q.stages,
            baton_planner::ByteSize(q.moved_bytes),
            q.paths
        ));
    }
    md.push_str(&format!(
        "| **total** | | **{:.2}** | **{:.2}** | **{:.2}** | **{:.2}** | | | |\n\n",
        r.total_single_s,
        r.total_baton_s,
        r.total_object_store_s,
        r.total_baton_s / r.total_single_s.max(1e-9)
    ));
    md.push_str(&format!(
        "- Baton is **{:.2}x** single-process DataFusion in total (goal ≤ 1.5x)\n- Baton is **{:.2}x** faster than the object-store-only exchange (goal > 1x)\n",
        r.total_baton_s / r.total_single_s.max(1e-9),
        r.total_object_store_s / r.total_baton_s.max(1e-9)
    ));
    md
}
