//! TPC-H across emulated hosts: each query in each variant (`baton sql --cluster`, the variants
//! taking turns, each round starting with the next one, so that none always goes first),
//! timed from the driver's start to its written result; every variant's rows checked equal to
//! the round's first run's; each query's requests as counted. In a build with the peers,
//! datafusion-distributed and Ballista run each query too (after Baton's variants in even
//! rounds, before them in odd ones), their workers on the same emulated hosts as Baton's
//! ([`crate::peers`]), timed from planning to the collected result (no driver process to
//! start). A peer whose rows differ from Baton's is reported so, beside its time.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use baton_fabric::path::counted::Requests;
use baton_runtime::cluster::ClusterFile;
use serde::Serialize;

use super::shared::Shared;
use super::{CLUSTER, ClusterOptions, baton, block_on};
use crate::peers::{Peers, PeersOptions, Place};
use crate::stats::median;

/// One query.
#[derive(Clone, Debug, Serialize)]
pub struct QueryReport {
    /// `q01`…`q22`.
    pub name: String,
    /// Result rows.
    pub rows: usize,
    /// Median seconds per variant, in the report's `variants` order.
    pub seconds: Vec<f64>,
    /// Median seconds per variant from the main job's first task to its last, as its driver
    /// reported them: what is left of `seconds` is the driver's start, planning, scalar
    /// subqueries and writing the result.
    #[serde(default)]
    pub job_seconds: Vec<f64>,
    /// Requests of its exchanges per variant, as counted (the last run's; its main job's, not
    /// its scalar subqueries').
    pub requests: Vec<u64>,
    /// Median seconds per peer, in the report's `peers` order.
    pub peer_seconds: Vec<f64>,
    /// Per peer: whether its rows differed from Baton's in some run.
    #[serde(default)]
    pub peer_rows_differ: Vec<bool>,
    /// Per peer: whether the query failed on it in some run (its seconds then count only the
    /// runs that did not fail; none: 0, and the query counts in no total of it).
    #[serde(default)]
    pub peer_failed: Vec<bool>,
}

/// TPC-H's part of the report.
#[derive(Clone, Debug, Serialize)]
pub struct TpchReport {
    /// Scale factor.
    pub sf: f64,
    /// The variants, in the order of each query's figures.
    pub variants: Vec<String>,
    /// Per query.
    pub queries: Vec<QueryReport>,
    /// Total seconds per variant.
    pub totals: Vec<f64>,
    /// Total seconds per variant from the main jobs' first tasks to their last.
    #[serde(default)]
    pub job_totals: Vec<f64>,
    /// Total requests per variant.
    pub total_requests: Vec<u64>,
    /// The peers that ran (none without them, or over ssh).
    pub peers: Vec<String>,
    /// Total seconds per peer.
    pub peer_totals: Vec<f64>,
}

/// Runs the queries on the emulation in `d`, over the data set in `data`.
pub fn run(
    options: &ClusterOptions,
    d: &Path,
    sf: f64,
    data: &Path,
    shared: &Shared,
    variants: &[(&str, &str)],
    file: &ClusterFile,
) -> anyhow::Result<TpchReport> {
    // The peers on the emulated hosts (not over ssh: their processes are not deployed there).
    let peers = if options.inventory.is_none() && !crate::peers::NAMES.is_empty() {
        Some(block_on(start_peers(options, file, data))??)
    } else {
        None
    };
    let peer_names: Vec<String> =
        peers.as_ref().map_or(Vec::new(), |p| p.sessions().iter().map(|(n, _)| n.to_string()).collect());
    // The tables where the hosts reach them: the data set's directory, or its files uploaded
    // once per scale factor.
    let tables: Vec<String> = match shared {
        Shared::Local => vec!["--tpch".into(), data.to_string_lossy().into_owned()],
        Shared::Objects(_) => {
            let mut args = Vec::new();
            for table in baton_sql::tpch::TABLES {
                let key = format!("tpch-sf{sf}/{table}.parquet");
                let file = data.join(format!("{table}.parquet"));
                let name = if block_on(shared.has(d, &key))? {
                    shared.name(&key)
                } else {
                    block_on(shared.publish(d, &file.to_string_lossy(), &key))??
                };
                args.extend(["--table".to_string(), format!("{table}={name}")]);
            }
            args
        }
    };
    let tables: Vec<&str> = tables.iter().map(AsRef::as_ref).collect();
    let mut queries = Vec::new();
    for (i, (name, sql)) in baton_sql::tpch::QUERIES.iter().enumerate() {
        if !options.queries.is_empty() && !options.queries.contains(&(i + 1)) {
            continue;
        }
        let mut seconds = vec![Vec::new(); variants.len()];
        let mut job_seconds = vec![Vec::new(); variants.len()];
        let mut requests = vec![0; variants.len()];
        let mut peer_seconds = vec![Vec::new(); peer_names.len()];
        let mut peer_rows_differ = vec![false; peer_names.len()];
        let mut peer_failed = vec![false; peer_names.len()];
        let mut rows = 0;
        for round in 0..options.repeats {
            let mut expected: Option<(String, &str)> = None;
            let peers_first = round % 2 == 1;
            let mut peer_runs = match (&peers, peers_first) {
                (Some(peers), true) => Some(block_on(peers.run(sql))??),
                _ => None,
            };
            for k in 0..variants.len() {
                let v = (k + round) % variants.len();
                let (variant, path) = variants[v];
                let (csv, summary) = (format!("{name}-{path}-{round}.csv"), format!("{name}-{path}-{round}.json"));
                let args = ["sql", sql, "--cluster", CLUSTER, "--path", path, "--format", "csv"];
                let start = Instant::now();
                baton(options, d, &[&args[..], &tables, &["-o", &csv, "--summary-json", &summary]].concat())?;
                seconds[v].push(start.elapsed().as_secs_f64());
                let got = std::fs::read_to_string(d.join(&csv))?;
                match &expected {
                    None => {
                        rows = got.lines().count().saturating_sub(1);
                        expected = Some((got, variant));
                    }
                    Some((first, by)) if !same_rows(first, &got) => {
                        bail!("{name}: the {variant} run's rows differ from the {by} run's")
                    }
                    Some(_) => {}
                }
                let s: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join(&summary))?)?;
                job_seconds[v].push(s["seconds"].as_f64().unwrap_or(0.0));
                requests[v] =
                    s["edges"].as_array().map_or(0, |edges| edges.iter().map(|e| request_total(&e["requests"])).sum());
                std::fs::remove_file(d.join(&csv))?;
            }
            if let (Some(peers), false) = (&peers, peers_first) {
                peer_runs = Some(block_on(peers.run(sql))??);
            }
            if let (Some(runs), Some((expected, _))) = (peer_runs, &expected) {
                for (i, run) in runs.into_iter().enumerate() {
                    if let Some(e) = &run.failed {
                        eprintln!("{name}: failed on {}: {e}", run.name);
                        peer_failed[i] = true;
                        continue;
                    }
                    if !same_rows(expected, &to_csv(&run.batches)?) {
                        eprintln!("{name}: {}'s rows differ from Baton's", run.name);
                        peer_rows_differ[i] = true;
                    }
                    peer_seconds[i].push(run.seconds);
                }
            }
        }
        let seconds = seconds.into_iter().map(median).collect();
        let job_seconds = job_seconds.into_iter().map(median).collect();
        let peer_seconds = peer_seconds.into_iter().map(|s| if s.is_empty() { 0.0 } else { median(s) }).collect();
        queries.push(QueryReport {
            name: name.to_string(),
            rows,
            seconds,
            job_seconds,
            requests,
            peer_seconds,
            peer_rows_differ,
            peer_failed,
        });
    }
    let totals = (0..variants.len()).map(|v| queries.iter().map(|q| q.seconds[v]).sum()).collect();
    let job_totals = (0..variants.len()).map(|v| queries.iter().map(|q| q.job_seconds[v]).sum()).collect();
    let total_requests = (0..variants.len()).map(|v| queries.iter().map(|q| q.requests[v]).sum()).collect();
    let variants = variants.iter().map(|(name, _)| name.to_string()).collect();
    let peer_totals = (0..peer_names.len()).map(|p| queries.iter().map(|q| q.peer_seconds[p]).sum()).collect();
    Ok(TpchReport { sf, variants, queries, totals, job_totals, total_requests, peers: peer_names, peer_totals })
}

/// The peers, their workers where Baton's are: as many on each emulated host (in its network
/// namespace, on its address), Ballista's scheduler on the first host.
async fn start_peers(options: &ClusterOptions, file: &ClusterFile, data: &Path) -> anyhow::Result<Peers> {
    let mut workers = Vec::new();
    for host in &file.hosts {
        let ip = host.node.ip();
        let netns = baton_runtime::cluster::emulate::host_namespace(ip);
        anyhow::ensure!(netns.is_some(), "{} at {ip} is not an emulated host", host.name);
        workers.extend(std::iter::repeat_n(Place { ip, netns }, host.workers.len()));
    }
    let first = workers.first().cloned().context("the cluster has no workers")?;
    let memory = file.hosts.first().map_or(2 << 30, |h| h.worker_memory.0);
    let peers = PeersOptions {
        exe: options.exe.clone(),
        partitions: workers.len(),
        scan_bytes_per_task: None,
        workers,
        scheduler: first,
        worker_memory: memory,
        work_dir: options.work_dir.clone(),
    };
    Peers::start(&peers, &baton_sql::session::tpch_tables(data)?).await
}

/// Batches as `baton sql --format csv` writes them.
fn to_csv(batches: &[arrow_array::RecordBatch]) -> anyhow::Result<String> {
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
        for b in batches {
            writer.write(b)?;
        }
    }
    Ok(String::from_utf8(out)?)
}

/// Every request an edge's summary counted.
fn request_total(requests: &serde_json::Value) -> u64 {
    serde_json::from_value::<Requests>(requests.clone()).map_or(0, |r| r.total())
}

/// Whether two CSV results hold the same rows, in any order, numbers equal to 1e-9 relative
/// (sums of floating-point values may round differently when added in another order).
fn same_rows(a: &str, b: &str) -> bool {
    fn sorted(text: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines
    }
    let (a, b) = (sorted(a), sorted(b));
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            let (xs, ys): (Vec<&str>, Vec<&str>) = (x.split(',').collect(), y.split(',').collect());
            xs.len() == ys.len()
                && xs.iter().zip(&ys).all(|(p, q)| {
                    p == q
                        || matches!((p.parse::<f64>(), q.parse::<f64>()), (Ok(p), Ok(q))
                            if (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0))
                })
        })
}

/// TPC-H's part as Markdown.
pub fn markdown(r: &TpchReport) -> String {
    let mut out = format!(
        "## TPC-H at scale factor {}\n\nEach query timed from the driver's start to its written result (median of the \
         runs); every variant's rows equal; requests of each query's exchanges as counted; † a peer's rows differed \
         from Baton's; ‡ the query failed on the peer in a run (a total with ‡ lacks what failed).\n\n| query | rows |",
        r.sf
    );
    for name in &r.variants {
        out.push_str(&format!(" {name} s | requests |"));
    }
    for name in &r.peers {
        out.push_str(&format!(" {name} s |"));
    }
    out.push_str("\n| --- | ---: |");
    out.push_str(&" ---: | ---: |".repeat(r.variants.len()));
    out.push_str(&" ---: |".repeat(r.peers.len()));
    out.push('\n');
    for q in &r.queries {
        out.push_str(&format!("| {} | {} |", q.name, q.rows));
        for (s, n) in q.seconds.iter().zip(&q.requests) {
            out.push_str(&format!(" {s:.2} | {n} |"));
        }
        for (i, s) in q.peer_seconds.iter().enumerate() {
            let differs = if q.peer_rows_differ.get(i).copied().unwrap_or(false) { " †" } else { "" };
            let failed = if q.peer_failed.get(i).copied().unwrap_or(false) { " ‡" } else { "" };
            out.push_str(&format!(" {s:.2}{differs}{failed} |"));
        }
        out.push('\n');
    }
    out.push_str("| **total** | |");
    for (s, n) in r.totals.iter().zip(&r.total_requests) {
        out.push_str(&format!(" **{s:.2}** | **{n}** |"));
    }
    for (i, s) in r.peer_totals.iter().enumerate() {
        let failed = r.queries.iter().any(|q| q.peer_failed.get(i).copied().unwrap_or(false));
        out.push_str(&format!(" **{s:.2}**{} |", if failed { " ‡" } else { "" }));
    }
    let planned = r.totals.first().copied().unwrap_or(0.0).max(1e-9);
    let ratios: Vec<String> = r
        .variants
        .iter()
        .zip(&r.totals)
        .skip(1)
        .chain(r.peers.iter().zip(&r.peer_totals))
        .map(|(name, total)| format!("{name}'s time over planned: **{:.2}x**", total / planned))
        .collect();
    out.push_str(&format!("\n\n{}.\n", ratios.join("; ")));
    if !r.job_totals.is_empty() {
        let jobs: Vec<String> = r
            .variants
            .iter()
            .zip(r.totals.iter().zip(&r.job_totals))
            .map(|(name, (total, jobs))| format!("{name} {jobs:.2} of {total:.2} s"))
            .collect();
        out.push_str(&format!(
            "\nOf each variant's total, the seconds from its main jobs' first tasks to their last (the rest is each \
             driver's start, planning, scalar subqueries and writing the result): {}.\n",
            jobs.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_compare_in_any_order_with_rounding_in_the_last_digits() {
        let a = "n,s\na,1.0000000000001\nb,2\n";
        assert!(same_rows(a, "n,s\nb,2\na,1\n"));
        assert!(!same_rows(a, "n,s\nb,2\na,1.01\n"));
        assert!(!same_rows(a, "n,s\nb,2\n"));
        assert!(!same_rows(a, "n,s\nb,2\nc,1\n"));
    }
}
