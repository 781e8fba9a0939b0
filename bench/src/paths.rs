//! The path benchmark: how fast each path moves objects, against an in-process memcpy.
//!
//! Two parts, in one run:
//! - **Throughput**: objects of 4 KiB to 256 MiB are put, got and checked (every frame's CRC,
//!   which touches every byte) through the VM-local path, the object-store path on file://,
//!   and a plain in-process copy as the ceiling. MB/s at the median, p50 and p99 latency.
//! - **Across processes**: a 256 MiB Arrow object is written by one OS process and read by
//!   another, which decodes it and touches every byte; VM-local against file://, and the
//!   consumer's read against the same read from its own heap.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use baton_fabric::frame::{decode_records, encode_records};
use baton_fabric::node::Node;
use baton_fabric::path::vm_local::VmLocalPath;
use baton_fabric::store::{StoreConfig, TieredStore};
use baton_fabric::{DataPath, EdgeId, JobId, ObjectKey};
use bytes::Bytes;
use serde::Serialize;

use crate::data::ROW_BYTES;
use crate::stats::{Summary, median, summarize};
use crate::worker::{PathSpec, Role, WorkerArgs, WorkerReport, spawn};

/// How to run the benchmark.
#[derive(Clone, Debug)]
pub struct PathsOptions {
    /// Small sizes and few repetitions (for tests and smoke runs).
    pub quick: bool,
    /// The `baton` binary, to start worker processes with.
    pub exe: PathBuf,
    /// Where the node's flash tier and the file:// store live (on local disk).
    pub work_dir: PathBuf,
    /// Directory for shared-memory segments.
    pub shm_dir: PathBuf,
}

/// One cell of the throughput table.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputRow {
    /// The path measured.
    pub path: String,
    /// Object size in bytes.
    pub size: u64,
    /// Timings.
    #[serde(flatten)]
    pub summary: Summary,
}

/// One path's cross-process transfer (medians over repetitions).
#[derive(Clone, Debug, Serialize)]
pub struct Transfer {
    /// The path.
    pub path: String,
    /// Producer's seconds to write.
    pub write_s: f64,
    /// Consumer's seconds to read, decode and touch every byte.
    pub read_s: f64,
    /// `write_s + read_s`.
    pub total_s: f64,
    /// Consumer's seconds for the same read from its own heap.
    pub heap_read_s: f64,
    /// Whether every decoded buffer pointed into the mapping (VM-local only).
    pub zero_copy: Option<bool>,
    /// Producer and consumer process ids of the last repetition (they differ from each other
    /// and from the benchmark's).
    pub pids: (u32, u32),
}

/// The cross-process part.
#[derive(Clone, Debug, Serialize)]
pub struct CrossProcess {
    /// Bytes of the Arrow object.
    pub bytes: u64,
    /// Rows in it.
    pub rows: u64,
    /// Each path's transfer.
    pub transfers: Vec<Transfer>,
    /// file:// end-to-end time over VM-local's (goal: at least 2).
    pub vm_local_speedup_over_file: f64,
    /// VM-local consumer read over the heap read (goal: at most 1.5).
    pub vm_local_read_over_heap: f64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct PathsReport {
    /// The throughput table.
    pub throughput: Vec<ThroughputRow>,
    /// The cross-process transfer.
    pub cross_process: CrossProcess,
}

const JOB: JobId = JobId(0xbe9c);

fn sizes(quick: bool) -> Vec<u64> {
    if quick { vec![4 << 10, 64 << 10, 1 << 20] } else { vec![4 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20] }
}

/// Runs the benchmark.
pub async fn run(options: &PathsOptions) -> anyhow::Result<PathsReport> {
    std::fs::create_dir_all(&options.work_dir)?;
    let work = tempfile::tempdir_in(&options.work_dir)?;
    let store = Arc::new(TieredStore::open(&StoreConfig {
        memory_bytes: 4 << 30,
        flash_dir: work.path().join("flash"),
        flash_bytes: 8 << 30,
        shm_dir: options.shm_dir.clone(),
    })?);
    store.open_job(JOB, Duration::from_secs(3600))?;
    let socket = work.path().join("node.sock");
    let _node = Node::serve(store.clone(), &socket, Duration::from_secs(1)).await?;
    let file_url = format!("file://{}", work.path().join("objects").display());

    let vm = VmLocalPath::connect(&socket).await?;
    let file = baton_connectors::object_store_path(&file_url)?;
    let paths: Vec<(&str, Option<&dyn DataPath>)> =
        vec![("memcpy (ceiling)", None), ("vm-local", Some(&vm)), ("file://", Some(&file))];

    let mut throughput = Vec::new();
    for size in sizes(options.quick) {
        let object = encode_records([&vec![0x5a; size as usize][..]]);
        for (name, path) in &paths {
            let seconds = measure(*path, &object, size, options.quick).await?;
            throughput.push(ThroughputRow {
                path: name.to_string(),
                size,
                summary: summarize(object.len() as u64, seconds),
            });
        }
    }

    let rows = if options.quick { (8 << 20) / ROW_BYTES } else { (256 << 20) / ROW_BYTES };
    let specs = [PathSpec::VmLocal { socket: socket.clone() }, PathSpec::ObjectStore { url: file_url }];
    let repeats = if options.quick { 1 } else { 3 };
    let mut transfers = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let mut runs = Vec::new();
        for r in 0..repeats {
            let key = ObjectKey::new(JOB, EdgeId(1000 + i as u32), r, 0);
            runs.push(transfer(options, spec, key, rows)?);
            match spec {
                PathSpec::VmLocal { .. } => vm.delete(&key).await?,
                _ => file.delete(&key).await?,
            }
        }
        let (producer, consumer) = runs.last().cloned().context("no runs")?;
        let write_s = median(runs.iter().map(|(p, _)| p.seconds).collect());
        let read_s = median(runs.iter().map(|(_, c)| c.seconds).collect());
        transfers.push(Transfer {
            path: spec.name(),
            write_s,
            read_s,
            total_s: write_s + read_s,
            heap_read_s: median(runs.iter().filter_map(|(_, c)| c.heap_seconds).collect()),
            zero_copy: consumer.zero_copy,
            pids: (producer.pid, consumer.pid),
        });
    }
    let vm_t = &transfers[0];
    let file_t = &transfers[1];
    let cross_process = CrossProcess {
        bytes: rows * ROW_BYTES,
        rows,
        vm_local_speedup_over_file: file_t.total_s / vm_t.total_s,
        vm_local_read_over_heap: vm_t.read_s / vm_t.heap_read_s,
        transfers,
    };
    store.end_job(JOB).await?;
    Ok(PathsReport { throughput, cross_process })
}

fn transfer(
    options: &PathsOptions,
    spec: &PathSpec,
    key: ObjectKey,
    rows: u64,
) -> anyhow::Result<(WorkerReport, WorkerReport)> {
    let timeout = Duration::from_secs(300);
    let produce = WorkerArgs { role: Role::Produce, path: spec.clone(), key, rows };
    let producer = spawn(&options.exe, &produce, timeout)?;
    let consume = WorkerArgs { role: Role::Consume, ..produce };
    let consumer = spawn(&options.exe, &consume, timeout)?;
    ensure!(consumer.rows == rows, "{}: consumer read {} rows of {rows}", spec.name(), consumer.rows);
    ensure!(consumer.checksum == producer.checksum, "{}: consumer's checksum differs", spec.name());
    Ok((producer, consumer))
}

/// Times put + get + check of `object` through `path` (or a plain copy when `None`).
async fn measure(path: Option<&dyn DataPath>, object: &Bytes, size: u64, quick: bool) -> anyhow::Result<Vec<f64>> {
    let (max_iters, budget) = if quick { (20, Duration::from_millis(300)) } else { (200, Duration::from_secs(4)) };
    let min_iters = 5;
    let started = Instant::now();
    let mut seconds = Vec::new();
    for i in 0..max_iters {
        if i >= min_iters && started.elapsed() > budget {
            break;
        }
        let key = ObjectKey::new(JOB, EdgeId(size as u32 % 997), i, 0);
        let t = Instant::now();
        let back = match path {
            Some(path) => {
                path.put(&key, object.clone()).await?;
                path.get(&key).await?
            }
            None => Bytes::from(object.to_vec()),
        };
        let records = decode_records(key, back)?;
        seconds.push(t.elapsed().as_secs_f64());
        ensure!(records.len() == 1 && records[0].len() as u64 == size, "object came back wrong");
        drop(records);
        if let Some(path) = path {
            path.delete(&key).await?;
        }
    }
    Ok(seconds)
}

pub(crate) fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b >> 10),
    }
}

/// The report as Markdown tables.
pub fn markdown(report: &PathsReport) -> String {
    let mut out = String::from("### Path throughput (put + get + CRC check, one process)\n\n");
    out.push_str("| size | path | MB/s (p50) | p50 | p99 | samples |\n|---:|---|---:|---:|---:|---:|\n");
    for row in &report.throughput {
        let s = &row.summary;
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.3} ms | {:.3} ms | {} |\n",
            human(row.size),
            row.path,
            s.mb_per_s,
            s.p50_s * 1e3,
            s.p99_s * 1e3,
            s.samples
        ));
    }
    let cp = &report.cross_process;
    out.push_str(&format!(
        "\n### Arrow object across processes ({} rows, {})\n\n",
        cp.rows,
        human(cp.rows * ROW_BYTES)
    ));
    out.push_str("| path | write | read (decode + touch every byte) | end to end | same read from heap | zero-copy |\n|---|---:|---:|---:|---:|---|\n");
    for t in &cp.transfers {
        out.push_str(&format!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} |\n",
            t.path,
            t.write_s * 1e3,
            t.read_s * 1e3,
            t.total_s * 1e3,
            t.heap_read_s * 1e3,
            t.zero_copy.map_or("-".into(), |z| z.to_string())
        ));
    }
    out.push_str(&format!(
        "\nVM-local end to end is **{:.2}x** faster than file:// (goal ≥ 2x); its read is **{:.2}x** the heap read (goal ≤ 1.5x).\n",
        cp.vm_local_speedup_over_file, cp.vm_local_read_over_heap
    ));
    out
}
