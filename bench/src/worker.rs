//! A producer or consumer running in its own OS process, for demos and benchmarks that move
//! data between processes. The `baton` binary runs it as `baton __worker '<json args>'`.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_fabric::ObjectKey;
use baton_fabric::arrow::{encode_batches, read_batches};
use baton_fabric::mapping::is_within;
use baton_fabric::path::vm_local::VmLocalPath;
use serde::{Deserialize, Serialize};

use crate::data;

pub use baton_runtime::paths::PathSpec;

/// What a worker does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Generate rows and write them as one Arrow object.
    Produce,
    /// Read the Arrow object and touch every byte of it.
    Consume,
    /// Map the object, report, then wait (up to a minute) to be killed: a consumer that
    /// crashes while holding the node's memory.
    Hold,
}

/// A worker's instructions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerArgs {
    /// Produce or consume.
    pub role: Role,
    /// Through which path.
    pub path: PathSpec,
    /// The object.
    pub key: ObjectKey,
    /// Rows to generate (producers).
    pub rows: u64,
}

/// What a worker measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The worker's process id.
    pub pid: u32,
    /// Bytes of the object.
    pub bytes: u64,
    /// Rows written or read.
    pub rows: u64,
    /// Seconds spent writing or reading (reading includes decoding and touching every byte).
    pub seconds: f64,
    /// Checksum over every byte of the data.
    pub checksum: u64,
    /// For VM-local consumers: whether the decoded arrays point into the node's mapping.
    pub zero_copy: Option<bool>,
    /// For consumers: seconds to read the same bytes with the same code from the heap.
    pub heap_seconds: Option<f64>,
}

/// Runs a worker in this process.
pub async fn run(args: &WorkerArgs) -> anyhow::Result<WorkerReport> {
    let pid = std::process::id();
    match args.role {
        Role::Produce => {
            let batches = data::batches(args.rows, 1 << 20);
            let checksum = data::checksum(&batches);
            let schema = data::schema();
            let start = Instant::now();
            let bytes = match &args.path {
                PathSpec::VmLocal { socket } => {
                    let vm = VmLocalPath::connect(socket).await?;
                    vm.put_batches(&args.key, &schema, &batches).await?.1
                }
                other => {
                    let object = encode_batches(&schema, &batches)?;
                    let len = object.len() as u64;
                    other.open(None).await?.put(&args.key, object).await?;
                    len
                }
            };
            let seconds = start.elapsed().as_secs_f64();
            Ok(WorkerReport { pid, bytes, rows: args.rows, seconds, checksum, ..Default::default() })
        }
        Role::Hold => {
            let object = args.path.open(None).await?.get(&args.key).await?;
            let (_, batches) = read_batches(args.key, object.clone())?;
            let checksum = data::checksum(&batches);
            let report = WorkerReport { pid, bytes: object.len() as u64, checksum, ..Default::default() };
            println!("{}", serde_json::to_string(&report)?);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(report)
        }
        Role::Consume => {
            let path = args.path.open(None).await?;
            let start = Instant::now();
            let object = path.get(&args.key).await?;
            let (_, batches) = read_batches(args.key, object.clone())?;
            let checksum = data::checksum(&batches);
            let seconds = start.elapsed().as_secs_f64();
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
            let zero_copy = matches!(args.path, PathSpec::VmLocal { .. }).then(|| {
                batches.iter().all(|b| {
                    b.columns()
                        .iter()
                        .all(|c| c.to_data().buffers().iter().all(|buf| is_within(buf.as_slice(), &object)))
                })
            });
            let bytes = object.len() as u64;
            drop(batches);
            // The same read, from this process's own heap.
            let heap = bytes::Bytes::from(object.to_vec());
            drop(object);
            let start = Instant::now();
            let (_, batches) = read_batches(args.key, heap)?;
            let heap_checksum = data::checksum(&batches);
            let heap_seconds = Some(start.elapsed().as_secs_f64());
            if heap_checksum != checksum {
                bail!("heap copy read back differently");
            }
            Ok(WorkerReport { pid, bytes, rows, seconds, checksum, zero_copy, heap_seconds })
        }
    }
}

/// Runs a worker as a child process of `exe` (`exe __worker '<json>'`) and returns its report.
pub fn spawn(exe: &std::path::Path, args: &WorkerArgs, timeout: Duration) -> anyhow::Result<WorkerReport> {
    let json = serde_json::to_string(args)?;
    let mut child = Command::new(exe)
        .arg("__worker")
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start worker {}", exe.display()))?;
    let deadline = Instant::now() + timeout;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("worker {:?} did not finish within {timeout:?}", args.role);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("worker {:?} failed ({}): {}", args.role, output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("worker printed {:?}", String::from_utf8_lossy(&output.stdout)))
}

/// The entry point of `baton __worker`: runs the worker and prints its report as JSON.
pub async fn main(json: &str) -> anyhow::Result<()> {
    let args: WorkerArgs = serde_json::from_str(json).context("bad worker arguments")?;
    let report = run(&args).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
