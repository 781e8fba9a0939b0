//! The sort across emulated hosts: each variant's time, its shuffle's requests as counted, and
//! the planner's prediction of the shuffle against what it measured.
//!
//! Before the timed runs, one planned run with `--calibrate` (not timed) adds its measured
//! shuffle to the probe's samples, so that the timed runs are planned and predicted from what
//! this cluster's paths did under a real job's load.

use std::path::Path;

use baton_fabric::path::counted::Requests;
use serde::Serialize;

use super::shared::Shared;
use super::{CLUSTER, ClusterOptions, baton, block_on};
use crate::stats::median;

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
    /// The planner's prediction of the shuffle, each run's (calibration changes it).
    pub predicted: Vec<f64>,
    /// What each run measured of the same: the slowest producer's writing and the slowest
    /// consumer's reading, combined as the model combines them for the path.
    pub measured: Vec<f64>,
    /// The median prediction.
    pub predicted_s: f64,
    /// The median measurement.
    pub measured_s: f64,
}

/// The sort's part of the report.
#[derive(Clone, Debug, Serialize)]
pub struct SortReport {
    /// Bytes sorted.
    pub bytes: u64,
    /// Map and reduce tasks.
    pub tasks: u32,
    /// The variants.
    pub variants: Vec<Variant>,
    /// The planned job's speedup over the object-store-only job.
    pub planned_over_object_store: f64,
    /// The planned shuffle's measured time over its prediction, less one (+0.2: 20% slower
    /// than predicted).
    pub planned_prediction_error: f64,
}

/// Runs the sort's variants on the emulation in `d`, taking turns.
pub fn run(
    options: &ClusterOptions,
    d: &Path,
    shared: &Shared,
    variants: &[(&str, &str)],
    bytes: u64,
    tasks: u32,
) -> anyhow::Result<SortReport> {
    let records = bytes / 100;
    baton(options, d, &["gensort", "in.bin", "--records", &records.to_string()])?;
    let input = block_on(shared.publish(d, "in.bin", "in.bin"))??;
    let task_count = tasks;
    let tasks = tasks.to_string();
    let sort = |path: &str, out: &str, extra: &[&str]| -> anyhow::Result<serde_json::Value> {
        let summary = format!("{out}.json");
        let output = shared.name(out);
        let mut args = vec!["sort", &input, "-o", &output, "--cluster", CLUSTER, "--mappers", &tasks];
        args.extend(["--reducers", &tasks, "--path", path, "--validate", "--summary-json", &summary]);
        args.extend(extra);
        baton(options, d, &args)?;
        // Checked by --validate: gone, so that many runs of a large sort fit on the disk.
        block_on(shared.remove(d, out))??;
        Ok(serde_json::from_slice(&std::fs::read(d.join(&summary))?)?)
    };
    // Calibration from a job, as `--calibrate` keeps it (untimed).
    sort("auto", "out-warm-up", &["--calibrate"])?;
    let mut variants: Vec<Variant> = variants
        .iter()
        .map(|(name, path)| Variant {
            name: name.to_string(),
            path: path.to_string(),
            shuffle: String::new(),
            seconds: Vec::new(),
            median_s: 0.0,
            requests: Requests::default(),
            predicted: Vec::new(),
            measured: Vec::new(),
            predicted_s: 0.0,
            measured_s: 0.0,
        })
        .collect();
    for round in 0..options.repeats {
        for v in &mut variants {
            let s = sort(&v.path, &format!("out-{}-{round}", v.path), &[])?;
            let edge = &s["edges"][0];
            v.seconds.push(s["seconds"].as_f64().unwrap_or_default());
            v.shuffle = format!("{}, {}", edge["path"].as_str().unwrap_or("?"), edge["layout"].as_str().unwrap_or("?"));
            v.requests = serde_json::from_value(edge["requests"].clone()).unwrap_or_default();
            v.predicted.push(edge["predicted_s"].as_f64().unwrap_or_default());
            v.measured.push(edge["measured_s"].as_f64().unwrap_or_default());
        }
    }
    // The input goes before the next size's is made: two large inputs need not fit at once.
    block_on(shared.remove(d, "in.bin"))??;
    if d.join("in.bin").exists() {
        std::fs::remove_file(d.join("in.bin"))?;
    }
    for v in &mut variants {
        v.median_s = median(v.seconds.clone());
        v.predicted_s = median(v.predicted.clone());
        v.measured_s = median(v.measured.clone());
    }
    let planned_over_object_store = variants[1].median_s / variants[0].median_s.max(1e-9);
    let planned_prediction_error = variants[0].measured_s / variants[0].predicted_s.max(1e-9) - 1.0;
    Ok(SortReport { bytes, tasks: task_count, variants, planned_over_object_store, planned_prediction_error })
}

/// The sort's part as Markdown.
pub fn markdown(r: &SortReport) -> String {
    let mut out = format!(
        "## Sort\n\n{:.2} GiB sorted by {} mappers and {} reducers; the median of the runs; the shuffle's \
         requests as counted; its predicted and measured seconds, the medians of the runs (measured: the slowest \
         producer's writing and the slowest consumer's reading, combined as the planner's model combines them for the \
         path).\n\n| variant | \
         shuffle | median s | writes | reads | other requests | shuffle predicted s | shuffle measured s |\n| --- | \
         --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
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
    let fastest = r.variants.iter().min_by(|a, b| a.median_s.total_cmp(&b.median_s)).map_or("-", |v| v.name.as_str());
    out.push_str(&format!(
        "\nPlanned over object store only: **{:.2}x** (goal ≥ 1.5x); fastest: {fastest}; the planned shuffle measured \
         {:+.0}% against its prediction (goal within ±30%).\n",
        r.planned_over_object_store,
        r.planned_prediction_error * 100.0
    ));
    out
}
