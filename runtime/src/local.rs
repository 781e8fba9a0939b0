//! The embedded environment: everything a job needs on one machine, with no cluster and no
//! cloud account. A node in this process (memory and flash tiers, served to workers over its
//! Unix socket for VM-local passing and over QUIC on 127.0.0.1 as the remote store), a scratch
//! object store (`file://`), and an invoker — a pool of `baton worker` processes, or the
//! operators in this process.

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baton_fabric::net::{Audience, Scopes, TlsDir, token::unix_ms_now};
use baton_fabric::node::{ByteSize, Node, NodeConfig};
use baton_fabric::private::OwnedDir;
use baton_fabric::{DataPath, JobId, KeyPrefix};
use baton_planner::{ClusterModel, Path, PathModel};

use crate::driver::DriverConfig;
use crate::error::{Error, Result};
use crate::invoker::{HttpInvoker, InProcess, Invoker, LocalPool, PoolConfig};
use crate::mapreduce;
use crate::operator::Registry;
use crate::paths::PathSpec;

/// How to set up the embedded environment.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Where Baton keeps its data (`baton-data`); each run uses a directory of its own in it.
    pub root: PathBuf,
    /// Memory the node lends.
    pub node_memory: u64,
    /// Worker processes (or in-process slots).
    pub workers: usize,
    /// Memory limit of each worker process.
    pub worker_memory: u64,
    /// The `baton` binary to start workers from; `None` runs operators in this process.
    pub exe: Option<PathBuf>,
    /// How long one invocation may take.
    pub timeout: Duration,
    /// Workers already running, by URL: when given, tasks go to them over HTTP instead of to
    /// a pool this environment starts (they must reach this host's node and scratch store).
    pub endpoints: Vec<String>,
    /// The TLS directory of the cluster the endpoints' workers belong to: invocations are
    /// signed with its token key, and `https://` endpoints' certificates checked against its
    /// CA (besides the system's roots).
    pub endpoint_tls: Option<PathBuf>,
    /// Invocations sent at once to each endpoint (more than one for a gateway that scales
    /// its functions out).
    pub endpoint_concurrency: usize,
    /// An AWS Lambda function to run tasks on instead (signed with `endpoint_tls`'s key).
    pub lambda: Option<crate::invoker::LambdaConfig>,
    /// The object store for the object-store path (default: a `file://` directory of the run).
    pub objects: Option<String>,
    /// Where the node keeps VM-local objects (default: `/dev/shm`). A tmpfs mounted with
    /// `huge=within_size` takes large objects with far fewer page faults.
    pub shm_dir: Option<PathBuf>,
    /// The operators tasks run in this process when `exe` is `None` (worker processes have
    /// the `baton` binary's own).
    pub registry: Registry,
}

impl LocalConfig {
    /// Defaults: a worker per core (at least 2), 2 GiB each, a node with 4 GiB.
    pub fn new(root: impl Into<PathBuf>, exe: Option<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            root: root.into(),
            node_memory: 4 << 30,
            workers: cores.max(2),
            worker_memory: 2 << 30,
            exe,
            timeout: Duration::from_secs(600),
            endpoints: Vec::new(),
            endpoint_tls: None,
            endpoint_concurrency: 1,
            lambda: None,
            objects: None,
            shm_dir: None,
            registry: mapreduce::registry(),
        }
    }
}

/// A running embedded environment.
#[derive(Debug)]
pub struct LocalEnv {
    node: Node,
    quic: SocketAddr,
    tls: TlsDir,
    objects: String,
    invoker: Box<dyn Invoker>,
    pool: bool,
    how: String,
    cores: u32,
    node_memory: u64,
    worker_memory: u64,
    run_dir: OwnedDir,
    /// What `baton calibrate` measured on this machine, if it ran (`calibration.toml` in the
    /// data directory).
    calibration: baton_planner::Calibration,
}

impl LocalEnv {
    /// Starts the node and the workers.
    pub async fn start(config: &LocalConfig) -> Result<Self> {
        baton_fabric::private::ensure_dir(&config.root, "data directory")?;
        let root = config.root.canonicalize().map_err(|e| Error::io("resolve", &config.root, e))?;
        // A private directory of this run's own, swept by a later run if this process is killed.
        let run_dir = OwnedDir::create(&root, "data directory")?;
        // The embedded node's cluster is this run alone: its CA, certificate and token key
        // live in the run's private directory and go with it.
        let tls = TlsDir::new(run_dir.path().join("tls"));
        tls.generate(&["127.0.0.1".to_string()])?;
        let defaults = NodeConfig::default();
        let node_config = NodeConfig {
            shm_dir: config.shm_dir.clone().unwrap_or(defaults.shm_dir.clone()),
            socket: run_dir.path().join("node.sock"),
            flash_dir: run_dir.path().join("flash"),
            memory: ByteSize(config.node_memory),
            listen: Some(([127, 0, 0, 1], 0).into()),
            tls_dir: tls.dir().to_path_buf(),
            ..defaults
        };
        let objects =
            config.objects.clone().unwrap_or_else(|| format!("file://{}", run_dir.path().join("objects").display()));
        // A job whose lease lapses (its driver died) loses its objects in the object store too.
        let purged: Arc<dyn DataPath> = Arc::new(baton_connectors::object_store_path(&objects)?);
        let node = Node::start_purging(&node_config, vec![purged]).await?;
        let quic = node
            .net()
            .map(|n| n.local_addr())
            .transpose()?
            .ok_or_else(|| Error::BadJob { reason: "the embedded node does not listen on QUIC".into() })?;
        let scratch = run_dir.path().join("scratch");
        let invoker: Box<dyn Invoker> = match &config.exe {
            _ if config.lambda.is_some() => {
                let lambda = config.lambda.as_ref().map(crate::invoker::LambdaInvoker::new).transpose()?;
                let mut lambda = lambda.ok_or_else(|| Error::BadJob { reason: "no Lambda function".into() })?;
                if let Some(dir) = &config.endpoint_tls {
                    lambda = lambda.with_signer(Arc::new(TlsDir::new(dir).signer()?));
                }
                Box::new(lambda)
            }
            _ if !config.endpoints.is_empty() => {
                let mut http =
                    HttpInvoker::new(&config.endpoints, config.timeout)?.with_concurrency(config.endpoint_concurrency);
                if let Some(dir) = &config.endpoint_tls {
                    http = http
                        .with_client(crate::http::HttpClient::new(Some(dir))?)
                        .with_signer(Arc::new(TlsDir::new(dir).signer()?));
                }
                Box::new(http)
            }
            Some(exe) => Box::new(
                LocalPool::start(PoolConfig {
                    exe: exe.clone(),
                    workers: config.workers,
                    memory_limit: config.worker_memory,
                    scratch,
                    timeout: config.timeout,
                    // Workers run only what this run's driver signed.
                    signer: Some(Arc::new(tls.signer()?)),
                })
                .await?,
            ),
            None => {
                std::fs::create_dir_all(&scratch).map_err(|e| Error::io("create", &scratch, e))?;
                Box::new(InProcess::new(config.registry.clone(), scratch, config.workers))
            }
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        let how = match (config.endpoints.len(), &config.exe) {
            _ if config.lambda.is_some() => format!(
                "Lambda function {} ({} at once)",
                config.lambda.as_ref().map_or("?", |l| l.function.as_str()),
                invoker.slots()
            ),
            (0, Some(_)) => format!("{} worker processes", config.workers),
            (0, None) => format!("{} in-process slots", config.workers),
            (n, _) => format!("{n} workers over HTTP"),
        };
        let calibration = crate::cluster::calibrate::Stored::load(&Self::calibration_anchor(&root))?.calibration();
        Ok(Self {
            calibration,
            how,
            node,
            quic,
            tls,
            objects,
            invoker,
            pool: config.exe.is_some() || !config.endpoints.is_empty() || config.lambda.is_some(),
            cores,
            node_memory: config.node_memory,
            worker_memory: config.worker_memory,
            run_dir,
        })
    }

    /// The invoker.
    pub fn invoker(&self) -> &dyn Invoker {
        self.invoker.as_ref()
    }

    /// Whether tasks run in worker processes (not in this process).
    pub fn uses_processes(&self) -> bool {
        self.pool
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// This run's directory (removed when the environment is dropped).
    pub fn run_dir(&self) -> &FsPath {
        self.run_dir.path()
    }

    /// The concrete path for the planner's `path`, if this environment has it.
    pub fn spec(&self, path: Path) -> Option<PathSpec> {
        match path {
            Path::VmLocal => Some(PathSpec::VmLocal { socket: self.node.socket().to_path_buf() }),
            // On one machine, pushing to the consumer's node and using the store are the same
            // QUIC connection to the one node.
            Path::Direct | Path::RemoteStore => {
                Some(PathSpec::Remote { addr: self.quic, tls_dir: self.tls.dir().to_path_buf() })
            }
            Path::ObjectStore => Some(PathSpec::ObjectStore { url: self.objects.clone() }),
            Path::RdmaMap => None,
        }
    }

    /// The URL of the object store behind the object-store path.
    pub fn object_store_url(&self) -> &str {
        &self.objects
    }

    /// A driver configuration for a new job: a fresh id and its token, each task's budget its
    /// share of a worker's memory.
    pub fn job_config(&self) -> Result<DriverConfig> {
        let id = crate::env::fresh_job_id();
        let mut config = DriverConfig::new(id);
        config.token = Some(self.token(id)?);
        config.memory_budget = DriverConfig::task_budget(self.worker_memory);
        Ok(config)
    }

    /// What of `job` is still here — objects on the node, its lease, files in the scratch
    /// object store — as lines to show; empty once the job has ended.
    pub fn leftovers(&self, job: JobId) -> Vec<String> {
        let store = self.node.store();
        let mut left: Vec<String> = store
            .list_objects(&KeyPrefix::job(job))
            .unwrap_or_default()
            .into_iter()
            .map(|o| format!("on the node: {}", o.key))
            .collect();
        if store.jobs().iter().any(|(j, _)| *j == job) {
            left.push(format!("{job} is still open on the node"));
        }
        let mut dirs = vec![self.run_dir.path().join("objects").join(job.to_string())];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                match entry.file_type() {
                    Ok(t) if t.is_dir() => dirs.push(entry.path()),
                    _ => left.push(format!("in the object store: {}", entry.path().display())),
                }
            }
        }
        left
    }

    /// A token for `job`, valid for a day.
    pub fn token(&self, job: JobId) -> Result<String> {
        let key = self.tls.signer()?;
        Ok(key.mint(job, unix_ms_now() + 86_400_000, Scopes::ALL, Audience::ANY).to_string())
    }

    /// The file beside which this machine's calibration is kept (`calibration.toml` in the data
    /// directory `root`).
    pub fn calibration_anchor(root: &FsPath) -> PathBuf {
        root.join("machine")
    }

    /// Measures this environment's paths — the node through its socket (VM-local) and over
    /// loopback QUIC (remote store), and the object store — with objects of `size` bytes, and
    /// returns the samples (what `baton calibrate` keeps for later runs).
    pub async fn probe(&self, size: u64) -> Result<Vec<crate::cluster::calibrate::Sample>> {
        use crate::cluster::calibrate::time_path;
        let job = crate::env::fresh_job_id();
        let token: baton_fabric::net::Token = self
            .token(job)?
            .parse()
            .map_err(|e| Error::BadJob { reason: format!("the probe's token does not parse: {e}") })?;
        let mut samples = Vec::new();
        for (path, spec) in [
            (Path::VmLocal, self.spec(Path::VmLocal)),
            (Path::RemoteStore, self.spec(Path::RemoteStore)),
            (Path::ObjectStore, self.spec(Path::ObjectStore)),
        ] {
            let Some(spec) = spec else { continue };
            let token_text = token.to_string();
            spec.open_job(job, Some(&token_text), Duration::from_secs(600)).await?;
            let opened = spec.open(Some(&token_text)).await?;
            let timing = time_path(opened.as_ref(), job, size).await;
            let _ = spec.end_job(job, Some(&token_text)).await;
            samples.extend(timing?.samples(path, size, "probe of this machine"));
        }
        Ok(samples)
    }

    /// The planner's view of this machine: one host, the node's paths, the scratch store
    /// (refitted to `baton calibrate`'s measurements when there are some).
    pub fn cluster_model(&self) -> ClusterModel {
        self.calibration.apply(&self.default_model())
    }

    /// The model before calibration: defaults measured on a 2-core VM.
    fn default_model(&self) -> ClusterModel {
        let workers = self.invoker.slots() as u32;
        let memory = self.node_memory + u64::from(workers) * self.worker_memory;
        let mut model = ClusterModel::uniform(1, workers.min(self.cores).max(1), memory);
        model.function.memory = self.worker_memory;
        model.paths.retain(|p| matches!(p.path, Path::VmLocal | Path::RemoteStore | Path::ObjectStore));
        for p in &mut model.paths {
            match p.path {
                // Loopback QUIC, measured by `baton bench direct`: ~350 MB/s per connection.
                Path::RemoteStore => {
                    *p = PathModel {
                        task_bandwidth: 350e6,
                        aggregate_bandwidth: 700e6,
                        capacity: Some(self.node_memory),
                        ..p.clone()
                    }
                }
                // A local directory: file creation per request, the page cache's bandwidth.
                Path::ObjectStore => *p = crate::env::directory_store(p),
                Path::VmLocal => p.capacity = Some(self.node_memory),
                _ => {}
            }
        }
        model
    }
}

impl crate::env::Environment for LocalEnv {
    fn invoker(&self) -> &dyn Invoker {
        LocalEnv::invoker(self)
    }

    fn spec(&self, path: Path) -> Option<PathSpec> {
        LocalEnv::spec(self, path)
    }

    fn cluster_model(&self) -> ClusterModel {
        LocalEnv::cluster_model(self)
    }

    fn job_config(&self) -> Result<DriverConfig> {
        LocalEnv::job_config(self)
    }

    fn describe(&self) -> String {
        self.how.clone()
    }
}
