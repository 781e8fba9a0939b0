//! Running jobs on a cluster file's hosts: each host's workers, its node, the planner's model
//! of them, and jobs' tokens minted with the cluster's key.

use std::sync::Arc;
use std::time::Duration;

use baton_fabric::net::token::unix_ms_now;
use baton_fabric::net::{Audience, Scopes, TlsDir, TokenKey};
use baton_fabric::path::direct::DirectPath;
use baton_planner::{Calibration, ClusterModel, Host as ModelHost, HostId, Path};

use super::ClusterFile;
use crate::driver::DriverConfig;
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::hosts::{HostPaths, Hosts};
use crate::invoker::{HttpInvoker, Invoker, OnHosts};
use crate::paths::PathSpec;

/// How long a host's node may take to answer when a cluster is opened.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

/// A cluster's hosts, ready to run jobs.
#[derive(Debug)]
pub struct ClusterEnv {
    file: ClusterFile,
    key: Arc<TokenKey>,
    hosts: Arc<Hosts>,
    invoker: OnHosts,
    workers: usize,
    calibration: Calibration,
}

impl ClusterEnv {
    /// Opens the cluster `file` describes: checks that every host's node answers and names
    /// workers; an invocation that takes longer than `timeout` counts as a lost worker.
    pub async fn connect(file: &ClusterFile, timeout: Duration) -> Result<Self> {
        let tls = TlsDir::new(&file.tls_dir);
        let key = Arc::new(tls.signer().map_err(|e| Error::BadJob {
            reason: format!(
                "the cluster's token key in {}: {e} (a driver signs tasks and mints tokens with it)",
                file.tls_dir.display()
            ),
        })?);
        // Workers on the hosts serve HTTPS with certificates of the cluster's CA.
        let client = crate::http::HttpClient::new(Some(&file.tls_dir))?;
        let mut paths = Vec::new();
        let mut invokers: Vec<(String, Box<dyn Invoker>)> = Vec::new();
        for host in &file.hosts {
            if host.workers.is_empty() {
                return Err(Error::BadJob {
                    reason: format!("host {} names no workers (workers = [\"http://...\"] in its section)", host.name),
                });
            }
            reach(host.node, &tls).await.map_err(|reason| Error::BadJob {
                reason: format!("host {}: its node {} does not answer: {reason}", host.name, host.node),
            })?;
            let remote = PathSpec::Remote { addr: host.node, tls_dir: file.tls_dir.clone() };
            let local = host.socket.clone().map_or_else(|| remote.clone(), |socket| PathSpec::VmLocal { socket });
            paths.push(HostPaths { name: host.name.clone(), local, remote });
            let http = HttpInvoker::new(&host.workers, timeout)?.with_client(client.clone()).with_signer(key.clone());
            invokers.push((host.name.clone(), Box::new(http)));
        }
        if let Some(store) = &file.store {
            let answer = match (&store.node, &store.etcd) {
                (_, Some(_)) => match store.etcd_client() {
                    Ok(Some(etcd)) => etcd.revision().await.map(drop).map_err(|e| e.to_string()),
                    Ok(None) => Err("it names no etcd".into()),
                    Err(e) => Err(e.to_string()),
                },
                (Some(node), None) => reach(*node, &tls).await,
                (None, None) => Err("it names neither a node nor an etcd".into()),
            };
            answer.map_err(|reason| Error::BadJob {
                reason: format!("{} does not answer: {reason}", store.describe()),
            })?;
        }
        let workers = file.hosts.iter().map(|h| h.workers.len()).sum();
        Ok(Self {
            file: file.clone(),
            key,
            hosts: Arc::new(Hosts::new(paths)?),
            invoker: OnHosts::new(invokers)?,
            workers,
            calibration: Calibration::default(),
        })
    }

    /// Plans with the cluster's paths refitted to what was measured on them.
    pub fn calibrated(mut self, stored: &super::calibrate::Stored) -> Self {
        self.calibration = stored.calibration();
        self
    }

    /// The hosts.
    pub fn hosts(&self) -> &Arc<Hosts> {
        &self.hosts
    }

    /// Whether jobs may read between hosts by RDMA: every host has a device (as the file says)
    /// and this build reads RDMA.
    fn rdma(&self) -> bool {
        cfg!(feature = "rdma") && self.file.hosts.iter().all(|h| h.rdma)
    }

    /// A token for `job`, valid for a day.
    pub fn token(&self, job: baton_fabric::JobId) -> String {
        self.key.mint(job, unix_ms_now() + 86_400_000, Scopes::ALL, Audience::ANY).to_string()
    }
}

/// Whether the node at `addr` answers a hello within [`REACH_TIMEOUT`].
async fn reach(addr: std::net::SocketAddr, tls: &TlsDir) -> std::result::Result<(), String> {
    let hello = async { DirectPath::connect(addr, tls).await?.hello().await };
    match tokio::time::timeout(REACH_TIMEOUT, hello).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {} s", REACH_TIMEOUT.as_secs())),
    }
}

impl Environment for ClusterEnv {
    fn invoker(&self) -> &dyn Invoker {
        &self.invoker
    }

    /// Within a host VM-local and between hosts direct are the same edge: each producer writes
    /// into its own host's node, each consumer reads from there (see [`Hosts`]).
    fn spec(&self, path: Path) -> Option<PathSpec> {
        match path {
            Path::VmLocal | Path::Direct => Some(PathSpec::HostNode),
            Path::ObjectStore => self.file.objects.clone().map(|url| PathSpec::ObjectStore { url }),
            Path::RemoteStore => self.file.store.as_ref().map(|store| store.spec(&self.file.tls_dir)),
            // Between hosts that all have RDMA, in a build that reads it.
            Path::RdmaMap if self.rdma() => Some(PathSpec::HostRdma),
            Path::RdmaMap => None,
        }
    }

    /// The hosts as the file describes them: a function slot per worker, the node's memory,
    /// the NIC; VM-local and direct between the nodes, and the remote store and the object
    /// store if the file names them.
    fn cluster_model(&self) -> ClusterModel {
        let mut model = ClusterModel::uniform(1, 1, 1);
        model.hosts = self
            .file
            .hosts
            .iter()
            .zip(0..)
            .map(|(h, i)| ModelHost {
                id: HostId(i),
                cores: (h.workers.len() as u32).clamp(1, h.cores.max(1)),
                memory: h.memory.0 + h.workers.len() as u64 * h.worker_memory.0,
                nic_bandwidth: h.nic_gbps * 1e9 / 8.0,
                rdma: h.rdma && cfg!(feature = "rdma"),
            })
            .collect();
        let least_memory = self.file.hosts.iter().map(|h| h.memory.0).min();
        model.function.memory = self.file.hosts.iter().map(|h| h.worker_memory.0).min().unwrap_or(2 << 30);
        model.paths.retain(|p| match p.path {
            Path::VmLocal | Path::Direct => true,
            Path::ObjectStore => self.file.objects.is_some(),
            Path::RemoteStore => self.file.store.is_some(),
            Path::RdmaMap => false,
        });
        if self.rdma() {
            model.paths.push(baton_planner::PathModel::default_for(Path::RdmaMap));
        }
        for p in &mut model.paths {
            match p.path {
                Path::VmLocal => p.capacity = least_memory,
                // A file:// store is a directory every host shares: the page cache's figures.
                Path::ObjectStore if self.file.objects.as_deref().is_some_and(|u| u.starts_with("file://")) => {
                    *p = crate::env::directory_store(p);
                }
                // An S3 server behind one link: all the store's bytes share it.
                Path::ObjectStore => {
                    if let Some(gbps) = self.file.objects_gbps.filter(|g| g.is_finite() && *g > 0.0) {
                        p.aggregate_bandwidth = gbps * 1e9 / 8.0;
                    }
                }
                // One node behind one link: all the store's bytes share it, and it holds what
                // it lends, memory and flash.
                Path::RemoteStore => {
                    if let Some(store) = &self.file.store {
                        p.aggregate_bandwidth = store.nic_gbps * 1e9 / 8.0;
                        p.capacity = Some(store.memory.0.saturating_add(store.flash.0));
                    }
                }
                _ => {}
            }
        }
        self.calibration.apply(&model)
    }

    fn job_config(&self) -> Result<DriverConfig> {
        let id = crate::env::fresh_job_id();
        let mut config = DriverConfig::new(id);
        config.token = Some(self.token(id));
        config.hosts = Some(self.hosts.clone());
        // A task may run on any host: its budget is its share of the smallest worker's memory.
        let smallest = self.file.hosts.iter().map(|h| h.worker_memory.0).min().unwrap_or(2 << 30);
        config.memory_budget = DriverConfig::task_budget(smallest);
        Ok(config)
    }

    fn describe(&self) -> String {
        format!("{} hosts, {} workers", self.hosts.len(), self.workers)
    }
}
