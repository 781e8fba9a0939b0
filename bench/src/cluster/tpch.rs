//! TPC-H across emulated hosts: each query in each variant (`baton sql --cluster`, the variants
//! taking turns), timed from the driver's start to its written result; every variant's rows
//! checked equal to the planned run's; each query's requests as counted.

use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use baton_fabric::path::counted::Requests;
use serde::Serialize;

use super::shared::Shared;
use super::{CLUSTER, ClusterOptions, baton, block_on};
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
    /// Requests of its exchanges per variant, as counted (the last run's; its main job's, not
    /// its scalar subqueries').
    pub requests: Vec<u64>,
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
    /// Total requests per variant.
    pub total_requests: Vec<u64>,
}

/// Runs the queries on the emulation in `d`, over the data set in `data`.
pub fn run(
    options: &ClusterOptions,
    d: &Path,
    data: &Path,
    shared: &Shared,
    variants: &[(&str, &str)],
) -> anyhow::Result<TpchReport> {
    // The tables where the hosts reach them: the data set's directory, or its files uploaded
    // once per scale factor.
    let tables: Vec<String> = match shared {
        Shared::Local => vec!["--tpch".into(), data.to_string_lossy().into_owned()],
        Shared::Objects(_) => {
            let mut args = Vec::new();
            for table in baton_sql::tpch::TABLES {
                let key = format!("tpch-sf{}/{table}.parquet", options.sf);
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
        let mut requests = vec![0; variants.len()];
        let mut rows = 0;
        for round in 0..options.repeats {
            let mut expected: Option<String> = None;
            for (v, (variant, path)) in variants.iter().enumerate() {
                let (csv, summary) = (format!("{name}-{path}-{round}.csv"), format!("{name}-{path}-{round}.json"));
                let args = ["sql", sql, "--cluster", CLUSTER, "--path", path, "--format", "csv"];
                let start = Instant::now();
                baton(options, d, &[&args[..], &tables, &["-o", &csv, "--summary-json", &summary]].concat())?;
                seconds[v].push(start.elapsed().as_secs_f64());
                let got = std::fs::read_to_string(d.join(&csv))?;
                match &expected {
                    None => {
                        rows = got.lines().count().saturating_sub(1);
                        expected = Some(got);
                    }
                    Some(first) if !same_rows(first, &got) => {
                        bail!("{name}: the {variant} run's rows differ from the planned run's")
                    }
                    Some(_) => {}
                }
                let s: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join(&summary))?)?;
                requests[v] =
                    s["edges"].as_array().map_or(0, |edges| edges.iter().map(|e| request_total(&e["requests"])).sum());
                std::fs::remove_file(d.join(&csv))?;
            }
        }
        let seconds = seconds.into_iter().map(median).collect();
        queries.push(QueryReport { name: name.to_string(), rows, seconds, requests });
    }
    let totals = (0..variants.len()).map(|v| queries.iter().map(|q| q.seconds[v]).sum()).collect();
    let total_requests = (0..variants.len()).map(|v| queries.iter().map(|q| q.requests[v]).sum()).collect();
    let variants = variants.iter().map(|(name, _)| name.to_string()).collect();
    Ok(TpchReport { sf: options.sf, variants, queries, totals, total_requests })
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
         runs); every variant's rows equal the planned run's; requests of each query's exchanges as counted.\n\n| query \
         | rows |",
        r.sf
    );
    for name in &r.variants {
        out.push_str(&format!(" {name} s | requests |"));
    }
    out.push_str("\n| --- | ---: |");
    out.push_str(&" ---: | ---: |".repeat(r.variants.len()));
    out.push('\n');
    for q in &r.queries {
        out.push_str(&format!("| {} | {} |", q.name, q.rows));
        for (s, n) in q.seconds.iter().zip(&q.requests) {
            out.push_str(&format!(" {s:.2} | {n} |"));
        }
        out.push('\n');
    }
    out.push_str("| **total** | |");
    for (s, n) in r.totals.iter().zip(&r.total_requests) {
        out.push_str(&format!(" **{s:.2}** | **{n}** |"));
    }
    let planned = r.totals.first().copied().unwrap_or(0.0).max(1e-9);
    let ratios: Vec<String> = r
        .variants
        .iter()
        .zip(&r.totals)
        .skip(1)
        .map(|(name, total)| format!("{name}'s time over planned: **{:.2}x**", total / planned))
        .collect();
    out.push_str(&format!("\n\n{}.\n", ratios.join("; ")));
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
