//! Calibration: measured transfers update the cluster model, so the next plan reflects what
//! the hardware really did (SONIC's regression).
//!
//! Each path's per-task time is modelled as `rounds·latency + bytes/bandwidth`, where `rounds`
//! is the task's requests over its requests in flight. Measurements fit `latency` and
//! `1/bandwidth` by least squares; with too few distinct measurements to separate the two,
//! both are scaled by how much slower or faster the path was than predicted.
//!
//! A measurement of many tasks at once (a job's edge, not a probe's single stream) says what
//! the path carried in all while they shared it — links, a store, the hosts' CPUs: the path's
//! aggregate bandwidth becomes the mean of those, where each task moved enough bytes (at least
//! [`AGGREGATE_MIN_BYTES`]) for bandwidth rather than latency to bound it. It says little of
//! one task alone (each had a share of what they shared), so where single streams were measured
//! too, only they fit the per-task latency and bandwidth: a 4 GiB job's 32 readers at 77 MB/s
//! each had made the path look slower per task than a store whose probe alone was fitted.

use std::collections::BTreeMap;

use crate::Path;
use crate::cluster::{ClusterModel, PathModel};

/// One measured transfer over a path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// The path.
    pub path: Path,
    /// Bytes moved in all.
    pub bytes: u64,
    /// Requests made in all.
    pub requests: u64,
    /// Tasks that moved them, at once.
    pub tasks: u32,
    /// Seconds it took.
    pub seconds: f64,
}

/// Measurements gathered per path.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    samples: BTreeMap<Path, Vec<Measurement>>,
}

impl Calibration {
    /// Records a measurement; nonsensical ones (no time, no work) are ignored.
    pub fn record(&mut self, m: Measurement) {
        if m.seconds.is_finite() && m.seconds > 0.0 && (m.bytes > 0 || m.requests > 0) {
            self.samples.entry(m.path).or_default().push(m);
        }
    }

    /// How many measurements there are of `path`.
    pub fn count(&self, path: Path) -> usize {
        self.samples.get(&path).map_or(0, Vec::len)
    }

    /// The cluster model with every measured path refitted.
    pub fn apply(&self, cluster: &ClusterModel) -> ClusterModel {
        let mut out = cluster.clone();
        for model in &mut out.paths {
            if let Some(samples) = self.samples.get(&model.path) {
                fit(model, samples);
            }
        }
        out
    }
}

/// Bytes per task below which a many-task measurement says nothing of the aggregate bandwidth.
pub const AGGREGATE_MIN_BYTES: u64 = 1 << 20;

fn features(model: &PathModel, m: &Measurement) -> (f64, f64) {
    let tasks = f64::from(m.tasks.max(1));
    let rounds = (m.requests as f64 / tasks / f64::from(model.concurrency.max(1))).ceil();
    (rounds, m.bytes as f64 / tasks)
}

fn fit(model: &mut PathModel, samples: &[Measurement]) {
    let alone: Vec<Measurement> = samples.iter().filter(|m| m.tasks <= 1).copied().collect();
    fit_task(model, if alone.is_empty() { samples } else { &alone });
    let shared: Vec<f64> = samples
        .iter()
        .filter(|m| m.tasks > 1 && m.bytes / u64::from(m.tasks) >= AGGREGATE_MIN_BYTES)
        .map(|m| m.bytes as f64 / m.seconds)
        .collect();
    if !shared.is_empty() {
        model.aggregate_bandwidth = shared.iter().sum::<f64>() / shared.len() as f64;
    }
}

/// Fits the per-task latency and bandwidth.
fn fit_task(model: &mut PathModel, samples: &[Measurement]) {
    let (mut a11, mut a12, mut a22, mut b1, mut b2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for m in samples {
        let (x1, x2) = features(model, m);
        a11 += x1 * x1;
        a12 += x1 * x2;
        a22 += x2 * x2;
        b1 += x1 * m.seconds;
        b2 += x2 * m.seconds;
    }
    let det = a11 * a22 - a12 * a12;
    if samples.len() >= 2 && det.abs() > 1e-9 * a11 * a22 {
        let latency = (b1 * a22 - b2 * a12) / det;
        let inv_bw = (a11 * b2 - a12 * b1) / det;
        if latency >= 0.0 && inv_bw > 0.0 {
            model.latency_s = latency;
            model.task_bandwidth = 1.0 / inv_bw;
            return;
        }
    }
    // Too little to separate latency from bandwidth: scale the model to the observations.
    let predicted: f64 = samples
        .iter()
        .map(|m| {
            let (x1, x2) = features(model, m);
            x1 * model.latency_s + x2 / model.task_bandwidth
        })
        .sum();
    let observed: f64 = samples.iter().map(|m| m.seconds).sum();
    if predicted > 0.0 && observed > 0.0 {
        let ratio = observed / predicted;
        model.latency_s *= ratio;
        model.task_bandwidth /= ratio;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_and_bandwidth_are_recovered_from_measurements() {
        let cluster = ClusterModel::uniform(1, 8, 32 << 30);
        let mut cal = Calibration::default();
        // A path with 5 ms per round and 50 MB/s per task.
        for (bytes, requests) in [(10_000_000u64, 8u64), (100_000_000, 80), (1_000_000, 800), (50_000_000, 8)] {
            let rounds = (requests as f64 / 8.0).ceil();
            let seconds = rounds * 0.005 + bytes as f64 / 50e6;
            cal.record(Measurement { path: Path::RemoteStore, bytes, requests, tasks: 1, seconds });
        }
        let fitted = cal.apply(&cluster);
        let model = fitted.path(Path::RemoteStore).unwrap();
        assert!((model.latency_s - 0.005).abs() < 1e-6, "{}", model.latency_s);
        assert!((model.task_bandwidth - 50e6).abs() < 1.0, "{}", model.task_bandwidth);
        // Paths without measurements keep their model.
        assert_eq!(fitted.path(Path::ObjectStore), cluster.path(Path::ObjectStore));
    }

    #[test]
    fn many_tasks_at_once_set_what_the_path_carries_in_all() {
        let cluster = ClusterModel::uniform(4, 2, 32 << 30);
        let mut cal = Calibration::default();
        // A probe's single streams at 110 MB/s, and a job's 16 readers that moved 1 GiB in 3.4 s
        // between them: 316 MB/s in all.
        for _ in 0..4 {
            cal.record(Measurement { path: Path::Direct, bytes: 1024, requests: 1, tasks: 1, seconds: 0.000_3 });
            cal.record(Measurement { path: Path::Direct, bytes: 8 << 20, requests: 1, tasks: 1, seconds: 0.076 });
        }
        cal.record(Measurement { path: Path::Direct, bytes: 1 << 30, requests: 256, tasks: 16, seconds: 3.4 });
        // Many tasks with little each: latency, not bandwidth; it sets nothing.
        cal.record(Measurement { path: Path::Direct, bytes: 16_000, requests: 16, tasks: 16, seconds: 0.01 });
        let model = cal.apply(&cluster).path(Path::Direct).cloned().unwrap();
        assert!((model.aggregate_bandwidth / ((1u64 << 30) as f64 / 3.4) - 1.0).abs() < 1e-9, "{model:?}");
        // The job's readers, each with a sixteenth of the path, do not make one task slower:
        // the probe's single streams alone set the per-task bandwidth.
        let mut probes_only = Calibration::default();
        for m in cal.samples[&Path::Direct].iter().filter(|m| m.tasks == 1) {
            probes_only.record(*m);
        }
        let alone = probes_only.apply(&cluster).path(Path::Direct).cloned().unwrap();
        assert_eq!((model.task_bandwidth, model.latency_s), (alone.task_bandwidth, alone.latency_s));
        // A single-stream probe leaves the aggregate alone.
        let mut probe = Calibration::default();
        probe.record(Measurement { path: Path::Direct, bytes: 8 << 20, requests: 1, tasks: 1, seconds: 0.076 });
        let before = cluster.path(Path::Direct).unwrap().aggregate_bandwidth;
        assert_eq!(probe.apply(&cluster).path(Path::Direct).unwrap().aggregate_bandwidth, before);
    }

    #[test]
    fn one_measurement_scales_the_model() {
        let cluster = ClusterModel::uniform(1, 8, 32 << 30);
        let before = cluster.path(Path::Direct).unwrap().clone();
        let mut cal = Calibration::default();
        let predicted = 1e9 / before.task_bandwidth + before.latency_s;
        cal.record(Measurement {
            path: Path::Direct,
            bytes: 1_000_000_000,
            requests: 1,
            tasks: 1,
            seconds: 10.0 * predicted,
        });
        let after = cal.apply(&cluster);
        let model = after.path(Path::Direct).unwrap();
        assert!((model.task_bandwidth - before.task_bandwidth / 10.0).abs() / before.task_bandwidth < 1e-9);
    }
}
