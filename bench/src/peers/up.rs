//! The peers' processes up, and a session on each ([`super::Peers`] in a build with them).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use baton_sql::session::{self, Table};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{NAMES, PeersOptions, Place};

/// The peers, up: a session for each, over the same tables. Dropping it kills their processes.
pub struct Peers {
    sessions: Vec<(&'static str, SessionContext)>,
    /// Each process, with the index of its peer in [`NAMES`].
    children: Vec<(usize, Child)>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").field("processes", &self.children.len()).finish_non_exhaustive()
    }
}

impl Peers {
    /// Each peer's session, in [`NAMES`]' order.
    pub fn sessions(&self) -> &[(&'static str, SessionContext)] {
        &self.sessions
    }

    /// The CPU seconds each peer's processes have used so far, in [`NAMES`]' order: what its
    /// workers (and scheduler) did, as against its coordinator in this process.
    pub fn cpu_seconds(&self) -> Vec<f64> {
        let mut seconds = vec![0.0; NAMES.len()];
        for (peer, child) in &self.children {
            if let Some(pid) = child.id() {
                seconds[*peer] += cpu_seconds(pid);
            }
        }
        seconds
    }

    /// Starts every peer process, waits for them to listen, and registers `tables` in a session
    /// of each.
    pub async fn start(options: &PeersOptions, tables: &[Table]) -> anyhow::Result<Peers> {
        anyhow::ensure!(!options.workers.is_empty(), "the peers need at least one worker");
        let dir = tempfile::Builder::new().prefix("peers-").tempdir_in(&options.work_dir)?;
        let mut children = Vec::new();
        let memory = options.worker_memory.to_string();
        // datafusion-distributed's workers.
        let mut urls = Vec::new();
        for place in &options.workers {
            let (child, addr) = spawn(options, place, &["distributed-worker", "--memory", &memory]).await?;
            children.push((0, child));
            urls.push(url::Url::parse(&format!("http://{addr}"))?);
        }
        // Ballista's scheduler, then its executors.
        let (child, scheduler) = spawn(options, &options.scheduler, &["ballista-scheduler"]).await?;
        children.push((1, child));
        for (i, place) in options.workers.iter().enumerate() {
            let work = dir.path().join(format!("executor-{i}"));
            baton_fabric::private::create_dirs(&work)?;
            let args = [
                "ballista-executor",
                "--scheduler",
                &scheduler.to_string(),
                "--work-dir",
                &work.to_string_lossy(),
                "--memory",
                &memory,
                "--cores",
                "1",
            ];
            let (child, _) = spawn(options, place, &args).await?;
            children.push((1, child));
        }
        let distributed = distributed_session(options, urls)?;
        session::register(&distributed, tables).await?;
        let ballista = ballista_session(options, scheduler).await?;
        session::register(&ballista, tables).await?;
        Ok(Peers { sessions: vec![(NAMES[0], distributed), (NAMES[1], ballista)], children, _dir: dir })
    }
}

/// The coordinator's session: DataFusion's defaults with the distributed planner, the workers
/// resolved from their list, Baton's partitions, and a pool of one worker's memory for the
/// head stage it runs.
fn distributed_session(options: &PeersOptions, urls: Vec<url::Url>) -> anyhow::Result<SessionContext> {
    use datafusion_distributed::{DistributedExt, SessionStateBuilderExt};
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(std::sync::Arc::new(FairSpillPool::new(options.worker_memory as usize)))
        .build_arc()?;
    let mut builder = SessionStateBuilder::new()
        .with_default_features()
        .with_config(SessionConfig::new().with_target_partitions(options.partitions.max(1)))
        .with_runtime_env(runtime)
        .with_distributed_worker_resolver(Workers(urls))
        .with_distributed_planner();
    if let Some(bytes) = options.scan_bytes_per_task {
        builder = builder.with_distributed_file_scan_config_bytes_per_partition(bytes as usize)?;
    }
    Ok(SessionContext::new_with_state(builder.build()))
}

/// Ballista's client: a remote session on the scheduler with Baton's partitions.
async fn ballista_session(options: &PeersOptions, scheduler: SocketAddr) -> anyhow::Result<SessionContext> {
    use ballista::prelude::SessionContextExt;
    use ballista_core::extension::SessionConfigExt;
    let config = SessionConfig::new_with_ballista()
        .with_target_partitions(options.partitions.max(1))
        .set_usize("ballista.client.grpc_max_message_size", super::GRPC_MAX_MESSAGE as usize);
    let state = SessionStateBuilder::new().with_default_features().with_config(config).build();
    SessionContext::remote_with_state(&format!("df://{scheduler}"), state)
        .await
        .with_context(|| format!("cannot reach the Ballista scheduler at {scheduler}"))
}

/// datafusion-distributed's view of the workers: a fixed list.
#[derive(Clone, Debug)]
struct Workers(Vec<url::Url>);

impl datafusion_distributed::WorkerResolver for Workers {
    fn get_urls(&self) -> Result<Vec<url::Url>, datafusion::error::DataFusionError> {
        Ok(self.0.clone())
    }
}

/// The user and system CPU seconds of process `pid` (0 when it is gone). `ip netns exec`
/// execs the peer in its own process, so the pid is the peer's.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / per_second as f64
}

/// Starts `baton bench peer-serve ROLE …` at `place`; the child and the address it printed.
async fn spawn(options: &PeersOptions, place: &Place, args: &[&str]) -> anyhow::Result<(Child, SocketAddr)> {
    let mut command = match &place.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&options.exe);
            c
        }
        None => Command::new(&options.exe),
    };
    let mut child = command
        .args(["bench", "peer-serve"])
        .args(args)
        .args(["--ip", &place.ip.to_string()])
        .env("BATON_LOG", std::env::var("BATON_LOG").unwrap_or_else(|_| "warn".into()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {} bench peer-serve", options.exe.display()))?;
    let stdout = child.stdout.take().context("the peer process has no stdout")?;
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).read_line(&mut line)).await;
    let what = args[0];
    match read {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => bail!("the {what} peer exited before listening ({:?})", child.try_wait().ok().flatten()),
        Err(_) => bail!("the {what} peer did not listen within 30 s"),
    }
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("the {what} peer printed {line:?}"))?;
    wait_listening(addr, what).await?;
    Ok((child, addr))
}

/// Waits until `addr` takes connections (a peer prints its port just before it binds).
async fn wait_listening(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => bail!("{what} at {addr} never listened: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
