//! The soak: many jobs in a row, some of them killed, then a count of what was left behind.
//!
//! Each round is one of: a `baton sort` that runs to the end; one whose worker is SIGKILLed
//! mid-job (the job retries the task); one whose driver is SIGKILLed mid-job (nothing cleans up
//! but the next start's sweep); or a job on a long-lived `baton node` that ends, lets its lease
//! lapse, or loses its producer to SIGKILL halfway through a put. Rounds are drawn from a seeded
//! generator and stop at a count or a time limit, whichever comes first.
//!
//! At the end (after one clean job, whose start sweeps what killed drivers left) it counts
//! - processes: any process still running from the soak's directories but the node;
//! - segments: entries in the soak's shared-memory directories owned by no live process;
//! - files: run directories of dead processes, and `_temporary` staging left in outputs;
//! - store bytes: what the long-lived node still holds once every lease has lapsed;
//!
//! and the long-lived node's resident memory before and after. Zero leaks is the goal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_fabric::path::vm_local::VmLocalPath;
use serde::Serialize;

/// What to run.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// The `baton` binary.
    pub exe: PathBuf,
    /// Rounds at most.
    pub jobs: usize,
    /// Seconds at most (rounds stop starting after this).
    pub seconds: u64,
    /// Seed of the rounds' draw.
    pub seed: u64,
    /// A directory of its own for the soak (made; removed at the end unless it leaked).
    pub work_dir: PathBuf,
}

/// What the soak found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakReport {
    /// Rounds run.
    pub rounds: usize,
    /// Sort jobs that finished, failed (allowed only where something was killed), and were
    /// killed with their driver.
    pub sorts_ok: usize,
    /// Sort jobs that failed after a worker was killed.
    pub sorts_failed: usize,
    /// Their errors' last lines.
    pub failures: Vec<String>,
    /// Workers SIGKILLed.
    pub workers_killed: usize,
    /// Drivers SIGKILLed.
    pub drivers_killed: usize,
    /// Jobs on the long-lived node: ended, left to lapse, and with a producer killed mid-put.
    pub node_jobs: usize,
    /// Producers SIGKILLed mid-put.
    pub producers_killed: usize,
    /// Seconds the rounds took.
    pub seconds: f64,
    /// Processes left running.
    pub leaked_processes: Vec<String>,
    /// Shared-memory entries left by dead processes.
    pub leaked_segments: Vec<String>,
    /// Files and directories left by dead processes.
    pub leaked_files: Vec<String>,
    /// Bytes the long-lived node still holds.
    pub leaked_store_bytes: u64,
    /// The long-lived node's resident memory before the rounds and after them, in bytes.
    pub node_rss_before: u64,
    /// After.
    pub node_rss_after: u64,
}

impl SoakReport {
    /// Whether nothing leaked.
    pub fn clean(&self) -> bool {
        self.leaked_processes.is_empty()
            && self.leaked_segments.is_empty()
            && self.leaked_files.is_empty()
            && self.leaked_store_bytes == 0
    }
}

/// A xorshift generator: the rounds are the same for the same seed.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The soak's node, killed when dropped.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lease of the node jobs left to lapse.
const LAPSE: Duration = Duration::from_millis(300);

/// Runs the soak (on a thread that may block; it starts a Tokio runtime of its own).
pub fn run(options: &SoakOptions) -> anyhow::Result<SoakReport> {
    let work = &options.work_dir;
    baton_fabric::private::ensure_dir(work, "soak directory")?;
    let jobs_dir = work.join("jobs");
    let shm = shm_dir(work)?;
    let node_shm = shm.join("node");
    for dir in [&jobs_dir, &node_shm] {
        baton_fabric::private::ensure_dir(dir, "soak directory")?;
    }
    let baton = |args: &[&str]| -> Command {
        let mut command = Command::new(&options.exe);
        command.args(args).current_dir(&jobs_dir).env("BATON_LOG", "error").env("BATON_SHM_DIR", &shm);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    };
    let status = baton(&["gensort", "in.bin", "--records", "100000", "--seed", "1"]).status()?;
    if !status.success() {
        bail!("gensort failed");
    }
    let socket = work.join("node.sock");
    let socket_s = socket.display().to_string();
    let flash = work.join("flash");
    baton_fabric::private::ensure_dir(&flash, "soak flash directory")?;
    let node = NodeProcess(
        baton(&["node", "--socket", &socket_s, "--memory", "64MiB", "--reap-interval-ms", "100"])
            .args(["--shm-dir".as_ref(), node_shm.as_os_str(), "--flash-dir".as_ref(), flash.as_os_str()])
            .spawn()
            .context("cannot start the node")?,
    );
    let node_pid = node.0.id();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match VmLocalPath::connect(&socket).await {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })?;
    let mut report = SoakReport { node_rss_before: rss(node_pid), ..SoakReport::default() };
    let mut draw = Draw(options.seed | 1);
    let start = Instant::now();
    let blob = work.join("blob.bin");
    std::fs::write(&blob, vec![0x5au8; 8 << 20])?;
    let blob_s = blob.display().to_string();
    while report.rounds < options.jobs && start.elapsed() < Duration::from_secs(options.seconds) {
        let round = report.rounds;
        report.rounds += 1;
        let out = format!("out-{}", round % 4);
        let sort = ["sort", "in.bin", "-o", &out, "--mappers", "2", "--reducers", "2", "--workers", "2"];
        match draw.below(10) {
            // A job that runs to the end.
            0..=5 => {
                if baton(&sort).status()?.success() {
                    report.sorts_ok += 1;
                } else {
                    bail!("round {round}: a sort nobody disturbed failed");
                }
            }
            // A worker killed mid-job: the job retries its task.
            6 => {
                let driver = baton(&sort).stderr(Stdio::piped()).spawn()?;
                // Once the pool is up, a moment into the job.
                let deadline = Instant::now() + Duration::from_secs(10);
                while children(driver.id()).is_empty() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_millis(draw.below(4)));
                let workers = children(driver.id());
                if let Some(&worker) = workers.get(draw.below(workers.len() as u64) as usize) {
                    kill(worker);
                    report.workers_killed += 1;
                }
                let out = driver.wait_with_output()?;
                if out.status.success() {
                    report.sorts_ok += 1;
                } else {
                    report.sorts_failed += 1;
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    report.failures.push(format!("round {round}: {}", stderr.trim().lines().last().unwrap_or("")));
                }
            }
            // The driver killed mid-job.
            7 => {
                let mut driver = baton(&sort).spawn()?;
                std::thread::sleep(Duration::from_millis(draw.below(60)));
                kill(driver.id());
                let _ = driver.wait();
                report.drivers_killed += 1;
            }
            // A job on the long-lived node: ended, lapsed, or its producer killed mid-put.
            _ => {
                let job = format!("{}", 0x50a0_0000 + round);
                let ttl = format!("{}ms", LAPSE.as_millis());
                let how = draw.below(3);
                let open_ttl = if how == 1 { ttl.as_str() } else { "60s" };
                if !baton(&["job", "open", &job, "--ttl", open_ttl, "--socket", &socket_s]).status()?.success() {
                    bail!("round {round}: cannot open job {job} on the node");
                }
                for part in 0..3 {
                    let key = format!("job-{:x}/edge-1/{part}-0", 0x50a0_0000 + round);
                    let mut put = baton(&["put", &key, &blob_s, "--socket", &socket_s]).spawn()?;
                    if how == 2 && part == 1 {
                        std::thread::sleep(Duration::from_millis(draw.below(20)));
                        kill(put.id());
                        report.producers_killed += 1;
                    }
                    let _ = put.wait();
                }
                if how != 1 {
                    let _ = baton(&["job", "end", &job, "--socket", &socket_s]).status()?;
                }
                report.node_jobs += 1;
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    // One clean job into each output the rounds used: its start sweeps the run directories
    // killed drivers left, and clears what they staged in that output (a killed driver's
    // parts stay in the output's `_temporary/` until the next run into it).
    for out in (0..report.rounds.min(4)).map(|i| format!("out-{i}")) {
        if !baton(&["sort", "in.bin", "-o", &out, "--mappers", "2", "--reducers", "2", "--workers", "2"])
            .status()?
            .success()
        {
            bail!("the final sort into {out} failed");
        }
    }
    // Every lapsed lease reaped.
    std::thread::sleep(LAPSE + Duration::from_millis(500));
    let held = runtime.block_on(client.status())?;
    report.leaked_store_bytes = held.memory_used + held.flash_used;
    report.node_rss_after = rss(node_pid);
    report.leaked_processes = processes_under(work, node_pid);
    report.leaked_segments = dead_entries(&shm, &[&node_shm]).into_iter().chain(dead_entries(&node_shm, &[])).collect();
    report.leaked_files = dead_entries(&jobs_dir.join("baton-data"), &[])
        .into_iter()
        .chain(std::fs::read_dir(&jobs_dir)?.flatten().filter_map(|e| {
            let staging = e.path().join("_temporary");
            staging.exists().then(|| staging.display().to_string())
        }))
        .collect();
    drop(node);
    if report.clean() {
        let _ = std::fs::remove_dir_all(&shm);
    }
    Ok(report)
}

/// A private directory for the soak's shared memory: under /dev/shm where there is one.
fn shm_dir(work: &Path) -> anyhow::Result<PathBuf> {
    let base = Path::new("/dev/shm");
    let dir = if base.is_dir() { base.join(format!("baton-soak-{}", std::process::id())) } else { work.join("shm") };
    baton_fabric::private::ensure_dir(&dir, "soak shm dir")?;
    Ok(dir)
}

fn kill(pid: u32) {
    // SAFETY: a plain kill(2) of a child this process started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// Resident memory of `pid`, in bytes (0 if it is gone).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    processes().into_iter().filter(|p| p.1 == pid).map(|p| p.0).collect()
}

/// (pid, parent) of every process.
fn processes() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The parent is the second field after the command name, which ends at the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        if let Some(parent) = fields.get(1).and_then(|p| p.parse().ok()) {
            out.push((pid, parent));
        }
    }
    out
}

/// Processes running in `dir` (or below), but `except`.
fn processes_under(dir: &Path, except: u32) -> Vec<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    processes()
        .into_iter()
        .filter(|&(pid, _)| pid != except && pid != std::process::id())
        .filter_map(|(pid, _)| {
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
            cwd.starts_with(&dir).then(|| {
                let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!("{pid}: {}", cmd.replace('\0', " ").trim())
            })
        })
        .collect()
}

/// Entries of `dir` named `baton-<pid>-…` whose process is gone (what a sweep should have
/// removed), but `keep`.
fn dead_entries(dir: &Path, keep: &[&Path]) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if keep.contains(&path.as_path()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid =
            name.strip_prefix("baton-").and_then(|rest| rest.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        match pid {
            Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => {}
            _ => out.push(path.display().to_string()),
        }
    }
    out
}

/// The report as Markdown.
pub fn markdown(report: &SoakReport) -> String {
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let list = |items: &[String]| if items.is_empty() { "none".to_string() } else { items.join("<br>") };
    format!(
        "# Soak\n\n{} rounds in {:.1} s: {} sorts finished, {} failed after a worker was killed; \
         {} workers, {} drivers and {} producers SIGKILLed; {} jobs on a long-lived node.\n\n\
         | left behind | |\n| --- | --- |\n| processes | {} |\n| shared-memory entries | {} |\n\
         | files | {} |\n| bytes in the node | {} |\n\n\
         The long-lived node's resident memory: {:.1} MiB before, {:.1} MiB after.\n",
        report.rounds,
        report.seconds,
        report.sorts_ok,
        report.sorts_failed,
        report.workers_killed,
        report.drivers_killed,
        report.producers_killed,
        report.node_jobs,
        list(&report.leaked_processes),
        list(&report.leaked_segments),
        list(&report.leaked_files),
        report.leaked_store_bytes,
        mb(report.node_rss_before),
        mb(report.node_rss_after),
    )
}
