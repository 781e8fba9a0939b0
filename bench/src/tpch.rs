//! The TPC-H benchmark: the 22 queries, three ways in one run — Baton on local worker
//! processes with the planner's paths, single-process DataFusion, and Baton with every
//! exchange forced through the object store.
//! Goal: Baton within 1.5x of single-process DataFusion in total, and faster than the
//! object-store-only exchange.
//!
//! The workers stay up for the whole run (warm functions); each query is timed from planning
//! to its collected result, `repeats` times per variant (the variants take turns), and the
//! median is reported. The baseline is DataFusion with its default settings, a partition per
//! worker and a memory pool of all the workers' memory, in this process. Every run's result
//! must equal its (the same rows, floats within a relative 1e-9: [`baton_sql::compare`]).
//!
//! With `peers` (a build with `--features peers`), datafusion-distributed and Ballista run
//! each query too, their workers in processes of their own beside Baton's ([`crate::peers`]),
//! and their results must equal Baton's.
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
use std::sync::Arc;

use datafusion::execution::context::SessionContext;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
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
    /// Run the peers too (needs a build with `--features peers`).
    pub peers: bool,
    /// Each worker's memory (the peers' workers get as much, DataFusion alone all of it);
    /// none: the local default, 2 GiB.
    pub worker_memory: Option<u64>,
    /// datafusion-distributed's scan bytes per task (none: its default).
    pub peer_scan_bytes: Option<u64>,
}

/// A peer's runs of one query.
#[derive(Clone, Debug, Serialize)]
pub struct PeerRuns {
    /// The peer ([`PEERS`]).
    pub name: String,
    /// Median seconds.
    pub seconds: f64,
    /// Every run's seconds.
    pub runs: Vec<f64>,
    /// CPU seconds the peer's own processes (workers, scheduler) used over all its runs: the
    /// work it did outside the benchmark's process.
    pub worker_cpu_s: f64,
}

/// The peers this build runs.
pub use crate::peers::NAMES as PEERS;

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
    /// The peers' runs (none without them).
    pub peers: Vec<PeerRuns>,
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
    /// Each peer's total, in [`PEERS`]' order (none without them).
    pub total_peers_s: Vec<(String, f64)>,
}

/// Runs the benchmark.
pub async fn run(options: &TpchOptions) -> anyhow::Result<TpchReport> {
    if options.peers {
        crate::peers::available()?;
    }
    let data = options.work_dir.join(format!("tpch-sf{}", options.sf));
    let (sf, dir) = (options.sf, data.clone());
    tokio::task::spawn_blocking(move || tpch::ensure(sf, &dir)).await??;
    let mut local = LocalConfig::new(options.work_dir.join("runs"), Some(options.exe.clone()));
    local.workers = options.workers;
    if let Some(memory) = options.worker_memory {
        local.worker_memory = memory;
    }
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
    // The baseline is DataFusion as it comes, with a partition per worker and all the workers'
    // memory.
    let pool = FairSpillPool::new((local.worker_memory as usize).saturating_mul(options.workers));
    let runtime = RuntimeEnvBuilder::new().with_memory_pool(Arc::new(pool)).build_arc()?;
    let baseline =
        SessionContext::new_with_config_rt(SessionConfig::new().with_target_partitions(options.workers), runtime);
    session::register(&baseline, &tables).await?;
    let peers = if options.peers { Some(start_peers(options, &local, &tables).await?) } else { None };
    let mut queries = Vec::new();
    for (i, (name, sql)) in tpch::QUERIES.iter().enumerate() {
        if !options.queries.is_empty() && !options.queries.contains(&(i + 1)) {
            continue;
        }
        let mut single = Vec::new();
        let mut planned = Vec::new();
        let mut object_store = Vec::new();
        let mut peer_runs: Vec<Vec<f64>> = vec![Vec::new(); PEERS.len()];
        let mut peer_cpu = vec![0.0; PEERS.len()];
        let mut last = None;
        let mut dollars = [crate::cost::Cost::default(); 2];
        let mut expected = Vec::new();
        for _ in 0..options.repeats.max(1) {
            let start = Instant::now();
            expected = query::run_single(&baseline, sql).await?;
            single.push(start.elapsed().as_secs_f64());
            for (variant, (path, times)) in
                [(None, &mut planned), (Some(Path::ObjectStore), &mut object_store)].into_iter().enumerate()
            {
                let options = QueryOptions { path, topology: None };
                let start = Instant::now();
                let run = query::run(&ctx, sql, &env, &options, Vec::new(), &env.job_config()?)
                    .await
                    .with_context(|| format!("{name} on {}", path.map_or("the planned paths", |p| p.name())))?;
                times.push(start.elapsed().as_secs_f64());
                if let Err(e) = baton_sql::compare::same_result(&run.batches, &expected) {
                    bail!("{name}: Baton's result differs from DataFusion's: {e}");
                }
                dollars[variant] = crate::cost::of_job(&run.summary, local.worker_memory);
                if path.is_none() {
                    last = Some(run);
                }
            }
            if let (Some(peers), Some(baton)) = (&peers, &last) {
                let runs = peers.run(sql).await.with_context(|| name.to_string())?;
                for (i, run) in runs.into_iter().enumerate() {
                    if let Some(e) = &run.failed {
                        bail!("{name}: on {}: {e}", run.name);
                    }
                    if let Err(e) = baton_sql::compare::same_result(&run.batches, &baton.batches) {
                        bail!("{name}: {}'s result differs from Baton's: {e}", run.name);
                    }
                    peer_runs[i].push(run.seconds);
                    peer_cpu[i] += run.worker_cpu_s;
                }
            }
        }
        let rows = expected.iter().map(|b| b.num_rows()).sum();
        let run = last.context("no planned run")?;
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
            peers: PEERS
                .iter()
                .zip(peer_runs)
                .zip(peer_cpu)
                .filter(|((_, runs), _)| !runs.is_empty())
                .map(|((name, runs), worker_cpu_s)| PeerRuns {
                    name: name.to_string(),
                    seconds: median(runs.clone()),
                    runs,
                    worker_cpu_s,
                })
                .collect(),
        };
        let peers: String = report.peers.iter().map(|p| format!(", {} {:.3} s", p.name, p.seconds)).collect();
        eprintln!(
            "{name}: single {:.3} s, baton {:.3} s, object store {:.3} s{peers}",
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
        total_peers_s: PEERS
            .iter()
            .filter(|name| queries.iter().any(|q| q.peers.iter().any(|p| p.name == **name)))
            .map(|name| {
                let total = queries.iter().flat_map(|q| &q.peers).filter(|p| p.name == *name).map(|p| p.seconds).sum();
                (name.to_string(), total)
            })
            .collect(),
        queries,
    })
}

/// The peers, up beside the workers: a worker of each per Baton worker, on loopback.
async fn start_peers(
    options: &TpchOptions,
    local: &LocalConfig,
    tables: &[session::Table],
) -> anyhow::Result<crate::peers::Peers> {
    let peers = crate::peers::PeersOptions {
        exe: options.exe.clone(),
        workers: vec![crate::peers::Place::loopback(); options.workers],
        scheduler: crate::peers::Place::loopback(),
        partitions: options.workers,
        scan_bytes_per_task: options.peer_scan_bytes,
        worker_memory: local.worker_memory,
        work_dir: options.work_dir.clone(),
    };
    crate::peers::Peers::start(&peers, tables).await
}

/// The report as Markdown: a row per query, the totals, and the goals.
pub fn markdown(r: &TpchReport) -> String {
    let peers: Vec<&str> = r.total_peers_s.iter().map(|(n, _)| n.as_str()).collect();
    let peer_heads: String = peers.iter().map(|p| format!(" {p} s |")).collect();
    let peer_rules: String = peers.iter().map(|_| "---:|").collect();
    let mut md = format!(
        "## TPC-H sf {}, {} worker processes, median of {} runs, object store {}\n\n| query | rows | DataFusion s | Baton s | object store only s |{peer_heads} Baton / DataFusion | stages | moved | paths |\n|---|---:|---:|---:|---:|{peer_rules}---:|---:|---:|---|\n",
        r.sf, r.workers, r.repeats, r.objects
    );
    for q in &r.queries {
        let peer_cells: String = peers
            .iter()
            .map(|name| {
                q.peers.iter().find(|p| p.name == *name).map_or(" |".to_string(), |p| format!(" {:.3} |", p.seconds))
            })
            .collect();
        md.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {:.3} |{peer_cells} {:.2} | {} | {} | {} |\n",
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
    let peer_totals: String = r.total_peers_s.iter().map(|(_, t)| format!(" **{t:.2}** |")).collect();
    md.push_str(&format!(
        "| **total** | | **{:.2}** | **{:.2}** | **{:.2}** |{peer_totals} **{:.2}** | | | |\n\n",
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
    for (name, total) in &r.total_peers_s {
        let cpu: f64 =
            r.queries.iter().flat_map(|q| &q.peers).filter(|p| p.name == *name).map(|p| p.worker_cpu_s).sum();
        md.push_str(&format!(
            "- Baton is **{:.2}x** faster than {name} in total (its worker processes used {cpu:.1} CPU s over all runs)\n",
            total / r.total_baton_s.max(1e-9)
        ));
    }
    md
}
