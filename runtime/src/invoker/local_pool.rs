//! Warm worker processes on this host: the embedded default.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use baton_planner::ByteSize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::http::Endpoint;
use crate::invoker::Invoker;
use crate::invoker::http::{Slots, invoke_endpoint};
use crate::task::{Task, TaskReport};

/// How to start a pool's workers.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The `baton` binary (it runs `baton worker`).
    pub exe: PathBuf,
    /// Worker processes.
    pub workers: usize,
    /// Memory limit of each worker, in bytes (its data segment, as a function's memory size).
    pub memory_limit: u64,
    /// Where workers spill.
    pub scratch: PathBuf,
    /// How long an invocation may take before the worker counts as lost.
    pub timeout: Duration,
    /// Signs every invocation; the workers are started to run only invocations it signed.
    pub signer: Option<Arc<baton_fabric::net::TokenKey>>,
}

#[derive(Debug)]
struct LocalWorker {
    child: Child,
    endpoint: Endpoint,
    _stdout: BufReader<ChildStdout>,
    /// The worker exits when this closes: with the pool, or with this process however it dies.
    _lifeline: ChildStdin,
    /// The largest allocation the worker reported failing (its standard error is passed on
    /// line by line, and read for that).
    failed_allocation: Arc<AtomicU64>,
}

/// The bytes in Rust's "memory allocation of N bytes failed", if `line` is that message.
fn failed_allocation(line: &str) -> Option<u64> {
    line.trim().strip_prefix("memory allocation of ")?.strip_suffix(" bytes failed")?.parse().ok()
}

/// A pool of `baton worker` processes on 127.0.0.1, each serving one invocation at a time. A
/// worker that dies is replaced, and the invocation it was running fails as
/// [`Error::WorkerLost`], which the driver retries.
#[derive(Debug)]
pub struct LocalPool {
    config: PoolConfig,
    workers: Vec<Mutex<LocalWorker>>,
    slots: Slots,
}

impl LocalPool {
    /// Starts `config.workers` workers and waits until each listens.
    pub async fn start(config: PoolConfig) -> Result<Self> {
        if config.workers == 0 {
            return Err(Error::BadJob { reason: "a worker pool needs at least one worker".into() });
        }
        std::fs::create_dir_all(&config.scratch).map_err(|e| Error::io("create", &config.scratch, e))?;
        let spawns = (0..config.workers).map(|_| spawn_retrying(&config));
        let workers = futures::future::try_join_all(spawns).await?.into_iter().map(Mutex::new).collect();
        let slots = Slots::new(config.workers);
        Ok(Self { config, workers, slots })
    }
}

/// Times a worker that dies while it starts (killed, say) is started again before the pool
/// gives up on it.
const START_ATTEMPTS: u32 = 3;

/// Starts a worker; one lost before it listened is started again, up to [`START_ATTEMPTS`].
async fn spawn_retrying(config: &PoolConfig) -> Result<LocalWorker> {
    let mut attempt = 1;
    loop {
        match spawn(config).await {
            Err(Error::WorkerLost { reason, .. }) if attempt < START_ATTEMPTS => {
                tracing::warn!("a worker was lost while it started ({reason}); starting another");
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn spawn(config: &PoolConfig) -> Result<LocalWorker> {
    let mut child = Command::new(&config.exe)
        .arg("worker")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--scratch")
        .arg(&config.scratch)
        .arg("--memory-limit")
        .arg(config.memory_limit.to_string())
        .arg("--exit-with-stdin")
        .args(config.signer.iter().flat_map(|key| ["--verify-key".to_string(), key.public().to_string()]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io("start a worker from", &config.exe, e))?;
    let lost = |reason: String| Error::WorkerLost { endpoint: format!("{} worker", config.exe.display()), reason };
    let stdout = child.stdout.take().ok_or_else(|| lost("no stdout".into()))?;
    let lifeline = child.stdin.take().ok_or_else(|| lost("no stdin".into()))?;
    let stderr = child.stderr.take().ok_or_else(|| lost("no stderr".into()))?;
    let failed = Arc::new(AtomicU64::new(0));
    let noted = failed.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(bytes) = failed_allocation(&line) {
                // The largest: the one that failed first; any after it are the abort's own.
                noted.fetch_max(bytes, Ordering::Relaxed);
            }
            eprintln!("{line}");
        }
    });
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Ok(_)) => return Err(lost(format!("exited before listening ({:?})", child.try_wait().ok().flatten()))),
        Ok(Err(e)) => return Err(lost(e.to_string())),
        Err(_) => return Err(lost("did not listen within 20 s".into())),
    }
    let url = line.trim().strip_prefix("listening on ").ok_or_else(|| lost(format!("printed {line:?}")))?;
    Ok(LocalWorker {
        child,
        endpoint: Endpoint::parse(url)?,
        _stdout: stdout,
        _lifeline: lifeline,
        failed_allocation: failed,
    })
}

impl LocalPool {
    /// The allocation that failed, if `worker` died of one: Rust aborts (SIGABRT) after
    /// printing what it could not allocate, which the stderr reader may take a moment to see.
    async fn out_of_memory(&self, worker: &LocalWorker, status: std::process::ExitStatus) -> Option<u64> {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() != Some(libc::SIGABRT) {
            return None;
        }
        for _ in 0..20 {
            match worker.failed_allocation.load(Ordering::Relaxed) {
                0 => tokio::time::sleep(Duration::from_millis(25)).await,
                bytes => return Some(bytes),
            }
        }
        None
    }
}

#[async_trait]
impl Invoker for LocalPool {
    fn slots(&self) -> usize {
        self.workers.len()
    }

    async fn invoke(&self, task: Task) -> Result<TaskReport> {
        let slot = self.slots.checkout().await;
        let endpoint = self.workers[slot.index].lock().await.endpoint.clone();
        let id = task.id;
        let mut result = invoke_endpoint(&endpoint, &task, self.config.timeout, self.config.signer.as_deref()).await;
        if let Err(Error::WorkerLost { .. }) = &result {
            // Did the process die? Then say how, and start a fresh one in its place.
            let mut worker = self.workers[slot.index].lock().await;
            let exited = tokio::time::timeout(Duration::from_secs(2), worker.child.wait()).await;
            if let Ok(Ok(status)) = exited {
                result = Err(match self.out_of_memory(&worker, status).await {
                    // The same task on a worker of the same size would fail the same way.
                    Some(needed) => Error::Task {
                        task: id,
                        message: format!(
                            "the task ran out of memory: its worker could not allocate {} within its limit \
                             of {} (--worker-memory); raise the limit, or split the work into more tasks",
                            ByteSize(needed),
                            ByteSize(self.config.memory_limit)
                        ),
                        retryable: false,
                        requests: Default::default(),
                    },
                    None => Error::WorkerLost {
                        endpoint: endpoint.to_string(),
                        reason: format!("the worker process exited ({status}) during the task"),
                    },
                });
                match spawn_retrying(&self.config).await {
                    Ok(fresh) => *worker = fresh,
                    Err(e) => tracing::warn!("cannot replace a lost worker: {e}"),
                }
            } else {
                // Alive but unresponsive (the invocation timed out): replace it too.
                let _ = worker.child.kill().await;
                if let Ok(fresh) = spawn_retrying(&self.config).await {
                    *worker = fresh;
                }
            }
        }
        self.slots.checkin(slot).await;
        result
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rusts_allocation_failure_message_is_read() {
        assert_eq!(super::failed_allocation("memory allocation of 150021440 bytes failed"), Some(150_021_440));
        assert_eq!(super::failed_allocation("some other line"), None);
    }
}
