//! Which path an edge travels, as a task names it, and opening it in a worker.
//!
//! A [`PathSpec`] is the concrete form of the planner's [`Path`] choice: the node socket for
//! VM-local, the node's QUIC address for the remote store, the URL of an object store. Workers
//! keep what they opened in a [`PathCache`], so a warm worker reuses its connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baton_fabric::net::{TlsDir, Token};
use baton_fabric::path::direct::DirectPath;
use baton_fabric::path::vm_local::VmLocalPath;
use baton_fabric::{DataPath, JobId};
use baton_planner::Path;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// A path, concretely.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathSpec {
    /// Shared memory through the node on this host, at `socket`.
    VmLocal {
        /// The node's Unix socket.
        socket: PathBuf,
    },
    /// A node's memory and flash tiers over QUIC (the remote store, or a producer's node for
    /// direct passing).
    Remote {
        /// The node's QUIC address.
        addr: SocketAddr,
        /// The cluster's TLS material (its CA is trusted).
        tls_dir: PathBuf,
    },
    /// A node's objects read one-sidedly by RDMA (the node maps each, this host's device READs
    /// it), written over QUIC as to [`PathSpec::Remote`]. Opening it needs the `rdma` build and
    /// a device.
    RdmaMap {
        /// The node's QUIC address.
        addr: SocketAddr,
        /// The cluster's TLS material (its CA is trusted).
        tls_dir: PathBuf,
    },
    /// The elastic store whose state is in the etcd at `etcd`: the job's namespace there, its
    /// storage nodes reached over QUIC (the remote store of many nodes).
    Elastic {
        /// The store's etcd (`http://host:2379`).
        etcd: String,
        /// The cluster's TLS material (its CA is trusted).
        tls_dir: PathBuf,
        /// A private file with etcd's `user:password`, when its authentication is on (without
        /// it: `BATON_ETCD_USER` and `BATON_ETCD_PASSWORD`, or none).
        #[serde(default)]
        credentials: Option<PathBuf>,
    },
    /// An object store by URL (file://, s3://).
    ObjectStore {
        /// The store's URL.
        url: String,
    },
    /// Direct passing between hosts: each producer writes into the node of the host it runs
    /// on, and each consumer pulls from that node — through the node's socket on the same host
    /// (VM-local), over QUIC from another. The driver resolves it per task into the concrete
    /// paths above ([`crate::hosts::Hosts`]); a worker never opens it.
    HostNode,
    /// [`PathSpec::HostNode`], with consumers on other hosts reading by RDMA
    /// ([`PathSpec::RdmaMap`]) rather than over QUIC: the planner's RDMA map path between hosts
    /// that all have RDMA devices.
    HostRdma,
}

impl PathSpec {
    /// The planner's name for this path.
    pub fn kind(&self) -> Path {
        match self {
            PathSpec::VmLocal { .. } => Path::VmLocal,
            PathSpec::Remote { .. } | PathSpec::Elastic { .. } => Path::RemoteStore,
            PathSpec::ObjectStore { .. } => Path::ObjectStore,
            PathSpec::HostNode => Path::Direct,
            PathSpec::RdmaMap { .. } | PathSpec::HostRdma => Path::RdmaMap,
        }
    }

    /// Whether the driver resolves it per task from its hosts (each producer's own node).
    pub fn on_hosts(&self) -> bool {
        matches!(self, PathSpec::HostNode | PathSpec::HostRdma)
    }

    /// A short name for reports: the planner's name, and the scheme of an object store.
    pub fn name(&self) -> String {
        match self {
            PathSpec::ObjectStore { url } => {
                format!("object-store ({}://)", url.split("://").next().unwrap_or("?"))
            }
            PathSpec::Elastic { .. } => "remote-store (elastic)".into(),
            other => other.kind().name().to_string(),
        }
    }

    /// Opens the path for `job`, presenting `token` where the path checks one.
    pub async fn open(&self, token: Option<&str>) -> Result<Arc<dyn DataPath>> {
        Ok(match self {
            PathSpec::VmLocal { socket } => Arc::new(connect_local(socket, token).await?),
            PathSpec::Remote { addr, tls_dir } => {
                let path = connect_remote(*addr, tls_dir, token).await?;
                Arc::new(path)
            }
            PathSpec::ObjectStore { url } => Arc::new(baton_connectors::object_store_path(url)?),
            PathSpec::Elastic { etcd, tls_dir, credentials } => {
                elastic::open(&elastic::etcd(etcd, credentials)?, tls_dir, token).await?
            }
            PathSpec::RdmaMap { addr, tls_dir } => rdma::open(*addr, tls_dir, token).await?,
            PathSpec::HostNode | PathSpec::HostRdma => return Err(unresolved()),
        })
    }

    /// Opens `job` on the path for `ttl` (the node paths hold objects only of open jobs).
    pub async fn open_job(&self, job: JobId, token: Option<&str>, ttl: Duration) -> Result<()> {
        match self {
            PathSpec::VmLocal { socket } => connect_local(socket, token).await?.open_job(job, ttl).await?,
            PathSpec::Remote { addr, tls_dir } | PathSpec::RdmaMap { addr, tls_dir } => {
                let path = connect_remote(*addr, tls_dir, token).await?;
                path.open_job(job, ttl).await?;
            }
            PathSpec::ObjectStore { .. } => {}
            PathSpec::Elastic { etcd, credentials, .. } => {
                elastic::open_job(&elastic::etcd(etcd, credentials)?, job, ttl).await?
            }
            PathSpec::HostNode | PathSpec::HostRdma => return Err(unresolved()),
        }
        Ok(())
    }

    /// Ends `job` on the path: every object of it is deleted. Returns the bytes freed.
    pub async fn end_job(&self, job: JobId, token: Option<&str>) -> Result<u64> {
        Ok(match self {
            PathSpec::VmLocal { socket } => connect_local(socket, token).await?.end_job(job).await?,
            PathSpec::Remote { addr, tls_dir } | PathSpec::RdmaMap { addr, tls_dir } => {
                let path = connect_remote(*addr, tls_dir, token).await?;
                path.end_job(job).await?
            }
            PathSpec::ObjectStore { url } => baton_connectors::object_store_path(url)?.purge_job(job).await?,
            PathSpec::Elastic { etcd, tls_dir, credentials } => {
                elastic::end_job(&elastic::etcd(etcd, credentials)?, tls_dir, job, token).await?
            }
            PathSpec::HostNode | PathSpec::HostRdma => return Err(unresolved()),
        })
    }
}

pub(crate) use elastic::etcd as elastic_etcd;

/// The elastic store's path: the job's namespace as an object store, under the object-store
/// path's keys.
mod elastic {
    use std::sync::Arc;
    use std::time::Duration;

    use baton_fabric::net::TlsDir;
    use baton_fabric::path::object_store::ObjectStorePath;
    use baton_fabric::{DataPath, JobId};
    use baton_store::alloc::{Hints, JobSpace};
    use baton_store::client::StoreClient;
    use baton_store::etcd::Etcd;
    use baton_store::objects::BatonObjectStore;

    use crate::error::{Error, Result};

    fn store_error(e: baton_store::Error) -> Error {
        Error::BadJob { reason: format!("the elastic store: {e}") }
    }

    /// A client of the store's etcd at `url`, with the credentials in the file if there is one.
    pub(crate) fn etcd(url: &str, credentials: &Option<std::path::PathBuf>) -> Result<Etcd> {
        let etcd = Etcd::new(url).map_err(store_error)?;
        match credentials {
            Some(file) => etcd.with_credentials_file(file).map_err(store_error),
            None => Ok(etcd),
        }
    }

    /// The job's namespace, for the job `token` is for.
    pub(super) async fn open(etcd: &Etcd, tls_dir: &std::path::Path, token: Option<&str>) -> Result<Arc<dyn DataPath>> {
        let token = super::parse_token(
            token.ok_or_else(|| Error::BadJob { reason: "the elastic store's path needs the job's token".into() })?,
        )?;
        let client = StoreClient::attach(etcd, &TlsDir::new(tls_dir), token.job, token).await.map_err(store_error)?;
        let store = BatonObjectStore::new(Arc::new(client));
        Ok(Arc::new(ObjectStorePath::new(Arc::new(store), object_store::path::Path::default())))
    }

    /// Opens the job's namespace, or renews its lease.
    pub(super) async fn open_job(etcd: &Etcd, job: JobId, ttl: Duration) -> Result<()> {
        if !JobSpace::renew(etcd, job).await.map_err(store_error)? {
            JobSpace::open_renewed(etcd, job, Hints::default(), ttl).await.map_err(store_error)?;
        }
        Ok(())
    }

    /// Ends the job: every block it holds is given back. The bytes it held.
    pub(super) async fn end_job(
        etcd: &Etcd,
        tls_dir: &std::path::Path,
        job: JobId,
        token: Option<&str>,
    ) -> Result<u64> {
        let mut held = 0;
        if let Some(token) = token {
            let token = super::parse_token(token)?;
            if let Ok(store) = StoreClient::attach(etcd, &TlsDir::new(tls_dir), job, token).await {
                held = store.usage().await.map(|u| u.values().sum()).unwrap_or(0);
            }
        }
        if !JobSpace::end(etcd, job).await.map_err(store_error)? {
            return Err(Error::Fabric(baton_fabric::Error::UnknownJob { job }));
        }
        Ok(held)
    }
}

/// The RDMA map path, opened with this host's first RDMA device.
#[cfg(feature = "rdma")]
mod rdma {
    use std::sync::{Arc, OnceLock};

    use baton_fabric::path::rdma_map::RdmaMapPath;
    use baton_fabric::rdma::Device;

    use super::*;

    /// The host's device, opened once for every path of the process.
    fn device() -> Result<Arc<Device>> {
        static DEVICE: OnceLock<std::result::Result<Arc<Device>, String>> = OnceLock::new();
        DEVICE
            .get_or_init(|| Device::open_first().map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(|reason| Error::BadJob { reason: format!("the RDMA map path: {reason}") })
    }

    /// Reads the node at `addr` by RDMA, for the job of `token` (the queue pair is granted by
    /// it); later jobs' tokens go to [`RdmaMapPath::node`].
    pub(super) async fn connect(
        addr: SocketAddr,
        tls_dir: &std::path::Path,
        token: Option<&str>,
    ) -> Result<Arc<RdmaMapPath>> {
        let Some(token) = token.map(parse_token).transpose()? else {
            return Err(Error::BadJob { reason: "the RDMA map path is opened with a job's token".into() });
        };
        let job = token.job;
        let node = connect_remote(addr, tls_dir, None).await?;
        node.add_token(token);
        Ok(Arc::new(RdmaMapPath::new(node, job, &device()?).await?))
    }

    pub(super) async fn open(
        addr: SocketAddr,
        tls_dir: &std::path::Path,
        token: Option<&str>,
    ) -> Result<Arc<dyn DataPath>> {
        Ok(connect(addr, tls_dir, token).await?)
    }
}

/// The RDMA map path, in a build without it: a clear refusal.
#[cfg(not(feature = "rdma"))]
mod rdma {
    use super::*;

    pub(super) async fn open(
        addr: SocketAddr,
        _tls_dir: &std::path::Path,
        _token: Option<&str>,
    ) -> Result<Arc<dyn DataPath>> {
        Err(Error::BadJob {
            reason: format!(
                "the RDMA map path to {addr}: this baton was built without RDMA (cargo build --features rdma)"
            ),
        })
    }
}

/// The error of opening [`PathSpec::HostNode`], which only a driver with hosts resolves.
fn unresolved() -> Error {
    Error::BadJob { reason: "a host-node edge names no node: the driver resolves it per task from its hosts".into() }
}

/// Connects to the node serving `socket`, presenting `token` for its job.
async fn connect_local(socket: &std::path::Path, token: Option<&str>) -> Result<VmLocalPath> {
    let path = VmLocalPath::connect(socket).await?;
    if let Some(token) = token {
        path.add_token(parse_token(token)?);
    }
    Ok(path)
}

/// Connects to the node at `addr`, presenting `token` for its job.
async fn connect_remote(addr: SocketAddr, tls_dir: &std::path::Path, token: Option<&str>) -> Result<DirectPath> {
    let path = DirectPath::connect(addr, &TlsDir::new(tls_dir)).await?;
    if let Some(token) = token {
        path.add_token(parse_token(token)?);
    }
    Ok(path)
}

fn parse_token(text: &str) -> Result<Token> {
    text.parse().map_err(|e| Error::BadJob { reason: format!("the job token does not parse: {e}") })
}

/// Paths a worker has opened, reused across invocations.
#[derive(Debug, Default)]
pub struct PathCache {
    open: Mutex<HashMap<PathSpec, Opened>>,
    /// Paths that serve one job each (the elastic store's namespaces), by job.
    per_job: Mutex<HashMap<(PathSpec, JobId), Arc<dyn DataPath>>>,
}

#[derive(Debug, Clone)]
struct Opened {
    path: Arc<dyn DataPath>,
    /// The same connection when it is a node (over QUIC or its socket), to hand it more jobs'
    /// tokens.
    node: Option<NodeConnection>,
}

#[derive(Debug, Clone)]
enum NodeConnection {
    Remote(Arc<DirectPath>),
    Local(Arc<VmLocalPath>),
    #[cfg(feature = "rdma")]
    Rdma(Arc<baton_fabric::path::rdma_map::RdmaMapPath>),
}

impl PathCache {
    /// The opened path for `spec`, opening it on first use; `token` is added to a node's
    /// connection (tokens are per job, a connection serves many jobs).
    pub async fn get(&self, spec: &PathSpec, token: Option<&str>) -> Result<Arc<dyn DataPath>> {
        if let PathSpec::Elastic { .. } = spec {
            let job = match token {
                Some(token) => parse_token(token)?.job,
                None => return spec.open(None).await,
            };
            let mut per_job = self.per_job.lock().await;
            if let Some(path) = per_job.get(&(spec.clone(), job)) {
                return Ok(path.clone());
            }
            let path = spec.open(token).await?;
            // A warm worker serves job after job: it keeps the namespaces of a few.
            if per_job.len() >= 16 {
                let old: Vec<_> = per_job.keys().filter(|(_, j)| *j != job).take(8).cloned().collect();
                for key in old {
                    per_job.remove(&key);
                }
            }
            per_job.insert((spec.clone(), job), path.clone());
            return Ok(path);
        }
        let mut open = self.open.lock().await;
        let opened = match open.get(spec) {
            Some(opened) => opened.clone(),
            None => {
                let opened = match spec {
                    PathSpec::Remote { addr, tls_dir } => {
                        let direct = Arc::new(connect_remote(*addr, tls_dir, None).await?);
                        Opened { path: direct.clone(), node: Some(NodeConnection::Remote(direct)) }
                    }
                    PathSpec::VmLocal { socket } => {
                        let local = Arc::new(connect_local(socket, None).await?);
                        Opened { path: local.clone(), node: Some(NodeConnection::Local(local)) }
                    }
                    // Its queue pair is made for the job of the first token it is opened with.
                    #[cfg(feature = "rdma")]
                    PathSpec::RdmaMap { addr, tls_dir } => {
                        let rdma = rdma::connect(*addr, tls_dir, token).await?;
                        Opened { path: rdma.clone(), node: Some(NodeConnection::Rdma(rdma)) }
                    }
                    other => Opened { path: other.open(None).await?, node: None },
                };
                open.insert(spec.clone(), opened.clone());
                opened
            }
        };
        if let Some(token) = token {
            match &opened.node {
                Some(NodeConnection::Remote(direct)) => direct.add_token(parse_token(token)?),
                Some(NodeConnection::Local(local)) => local.add_token(parse_token(token)?),
                #[cfg(feature = "rdma")]
                Some(NodeConnection::Rdma(rdma)) => rdma.node().add_token(parse_token(token)?),
                None => {}
            }
        }
        Ok(opened.path)
    }

    /// Forgets every opened path (after a fault, to reconnect).
    pub async fn clear(&self) {
        self.open.lock().await.clear();
        self.per_job.lock().await.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_rdma_map_path_is_read_on_hosts_it_was_built_for_or_refused_by_name() {
        let spec =
            PathSpec::RdmaMap { addr: "127.0.0.1:9".parse().unwrap_or_else(|e| panic!("{e}")), tls_dir: "t".into() };
        assert_eq!(spec.kind(), Path::RdmaMap);
        assert!(PathSpec::HostRdma.on_hosts() && PathSpec::HostNode.on_hosts() && !spec.on_hosts());
        let error = PathCache::default().get(&spec, None).await.err().map(|e| e.to_string()).unwrap_or_default();
        if cfg!(feature = "rdma") {
            assert!(error.contains("token"), "{error}");
        } else {
            assert!(error.contains("built without RDMA") && error.contains("127.0.0.1:9"), "{error}");
        }
        let unresolved = PathSpec::HostRdma.open(None).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(unresolved.contains("the driver resolves it"), "{unresolved}");
    }
}
