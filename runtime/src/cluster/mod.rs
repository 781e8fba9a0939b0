//! A cluster of hosts, as a cluster file (TOML) describes it, and emulated hosts on one machine
//! ([`emulate`]).
//!
//! ```toml
//! tls_dir = "/etc/baton/tls"          # the cluster's material (CA, token key) for drivers,
//!                                     # at the same path on every host (workers trust its CA)
//! objects = "s3://bucket/baton"       # the object store every host reaches (optional)
//!
//! [store]                             # the remote-store path (optional): a node every host
//! node = "10.0.0.9:7070"              # reaches, lending its tiers to jobs — or the elastic
//! # etcd = "http://10.0.0.2:2379"     # store whose state is in this etcd (one of the two)
//! memory = "64GiB"                    # what it lends in all
//! flash = "512GiB"                    # (default 16 GiB: `baton node`'s default)
//! nic_gbps = 25.0                     # its links' bandwidth in all
//!
//! [[host]]
//! name = "h0"
//! node = "10.0.0.5:7070"             # its node's QUIC address
//! socket = "/run/baton/node.sock"     # its node's socket, as workers on the host see it
//! workers = ["http://10.0.0.5:7100", "http://10.0.0.5:7101"]
//! worker_memory = "2GiB"             # each worker's memory limit
//! memory = 8589934592                 # what the node lends, in bytes (or "8GiB")
//! flash = 214748364800
//! cores = 16
//! nic_gbps = 10.0
//! rdma = false
//! ```
//!
//! [`ClusterEnv`] runs jobs on such a cluster: each task on a worker of the host the plan
//! places it on.

pub mod calibrate;
pub mod emulate;
mod env;
pub mod ssh;

pub use env::ClusterEnv;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use baton_fabric::node::ByteSize;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A cluster file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The cluster's TLS material as a driver uses it (its CA, and the token key that mints
    /// jobs' tokens); relative paths are relative to the file.
    pub tls_dir: PathBuf,
    /// The object store every host reaches, for the object-store path (none: the path is not
    /// offered).
    #[serde(default)]
    pub objects: Option<String>,
    /// The object store's own link, in Gbit/s, when that bounds it (an S3 server on one host):
    /// every byte through the store crosses it twice.
    #[serde(default)]
    pub objects_gbps: Option<f64>,
    /// The remote store: a node every host reaches (none: the path is not offered).
    #[serde(default)]
    pub store: Option<Store>,
    /// The hosts.
    #[serde(rename = "host", default)]
    pub hosts: Vec<Host>,
}

/// The remote store of a cluster: a node of its own that jobs on every host write to and read
/// from, or the elastic store of many nodes whose state is in an etcd.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// Its node's QUIC address (one node).
    #[serde(default)]
    pub node: Option<SocketAddr>,
    /// The elastic store's etcd (`http://host:2379`).
    #[serde(default)]
    pub etcd: Option<String>,
    /// A private file with that etcd's `user:password`, when its authentication is on, at the
    /// same path on every host (relative paths are relative to the cluster file).
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// What it lends of memory.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// What it lends of flash (objects past its memory go there).
    #[serde(default = "default_flash")]
    pub flash: ByteSize,
    /// Its network link, in Gbit/s: every byte through the store crosses it twice.
    #[serde(default = "default_nic")]
    pub nic_gbps: f64,
    /// The network namespace it lives in, when it is an emulated host.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl Store {
    /// The path jobs reach it by.
    pub fn spec(&self, tls_dir: &std::path::Path) -> crate::paths::PathSpec {
        match (&self.node, &self.etcd) {
            (_, Some(etcd)) => crate::paths::PathSpec::Elastic {
                etcd: etcd.clone(),
                tls_dir: tls_dir.to_path_buf(),
                credentials: self.credentials.clone(),
            },
            (Some(addr), None) => crate::paths::PathSpec::Remote { addr: *addr, tls_dir: tls_dir.to_path_buf() },
            (None, None) => crate::paths::PathSpec::Elastic {
                etcd: String::new(),
                tls_dir: tls_dir.to_path_buf(),
                credentials: None,
            },
        }
    }

    /// A client of the elastic store's etcd, with its credentials when the file names them;
    /// `None` for a store of one node.
    pub fn etcd_client(&self) -> Result<Option<baton_store::etcd::Etcd>> {
        let Some(url) = &self.etcd else { return Ok(None) };
        crate::paths::elastic_etcd(url, &self.credentials).map(Some)
    }

    /// What it is, for messages.
    pub fn describe(&self) -> String {
        match (&self.node, &self.etcd) {
            (_, Some(etcd)) => format!("the elastic store in {etcd}"),
            (Some(node), None) => format!("the remote store's node {node}"),
            (None, None) => "a store with neither node nor etcd".into(),
        }
    }
}

/// One host of a cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Its name, unique in the cluster.
    pub name: String,
    /// Its node's QUIC address.
    pub node: SocketAddr,
    /// Its node's Unix socket as workers on the host see it: tasks there pass data through
    /// shared memory. Without it they reach their own node over QUIC.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Its workers' URLs (`baton worker`, or a FaaS gateway's functions on the host).
    #[serde(default)]
    pub workers: Vec<String>,
    /// Each worker's memory limit.
    #[serde(default = "default_worker_memory")]
    pub worker_memory: ByteSize,
    /// What its node lends of memory.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// What its node lends of flash.
    #[serde(default = "default_flash")]
    pub flash: ByteSize,
    /// Its cores.
    #[serde(default = "default_cores")]
    pub cores: u32,
    /// Its network link, in Gbit/s.
    #[serde(default = "default_nic")]
    pub nic_gbps: f64,
    /// Whether it has an RDMA device.
    #[serde(default)]
    pub rdma: bool,
    /// The network namespace it lives in, when it is an emulated host.
    #[serde(default)]
    pub namespace: Option<String>,
}

fn default_memory() -> ByteSize {
    ByteSize(2 << 30)
}

fn default_worker_memory() -> ByteSize {
    ByteSize(2 << 30)
}

fn default_flash() -> ByteSize {
    ByteSize(16 << 30)
}

fn default_cores() -> u32 {
    2
}

fn default_nic() -> f64 {
    10.0
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadJob { reason: format!("cluster file {}: {}", path.display(), reason.into()) }
}

impl ClusterFile {
    /// Reads and checks the cluster file at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        let mut file: ClusterFile = toml::from_str(&text).map_err(|e| bad(path, e.to_string()))?;
        let beside = |p: &Path| path.parent().unwrap_or(Path::new(".")).join(p);
        if file.tls_dir.is_relative() {
            file.tls_dir = beside(&file.tls_dir);
        }
        if let Some(credentials) = file.store.as_mut().and_then(|s| s.credentials.as_mut())
            && credentials.is_relative()
        {
            *credentials = beside(credentials);
        }
        file.check().map_err(|reason| bad(path, reason))?;
        Ok(file)
    }

    /// Whether the hosts make sense together: at least one, names and addresses unique, sizes
    /// and links positive.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.hosts.is_empty() {
            return Err("names no host ([[host]] sections)".into());
        }
        let (mut names, mut nodes) = (HashSet::new(), HashSet::new());
        for host in &self.hosts {
            if host.name.is_empty() || !host.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("host name {:?}: use letters, digits, - and _", host.name));
            }
            if !names.insert(host.name.as_str()) {
                return Err(format!("host {} is named twice", host.name));
            }
            if !nodes.insert(host.node) {
                return Err(format!("host {}: node {} is another host's too", host.name, host.node));
            }
            if host.node.ip().is_unspecified() || host.node.port() == 0 {
                return Err(format!("host {}: node {} is not an address to reach", host.name, host.node));
            }
            for url in &host.workers {
                crate::http::Endpoint::parse(url).map_err(|e| format!("host {}: {e}", host.name))?;
            }
            if host.cores == 0 || !host.nic_gbps.is_finite() || host.nic_gbps <= 0.0 {
                return Err(format!("host {}: cores and nic_gbps must be positive", host.name));
            }
        }
        if let Some(store) = &self.store {
            match (&store.node, &store.etcd) {
                (Some(node), None) => {
                    if node.ip().is_unspecified() || node.port() == 0 {
                        return Err(format!("store: node {node} is not an address to reach"));
                    }
                    if nodes.contains(node) {
                        return Err(format!("store: node {node} is a host's node too"));
                    }
                }
                (None, Some(etcd)) => {
                    baton_store::etcd::Etcd::new(etcd).map_err(|e| format!("store: {e}"))?;
                }
                _ => return Err("store: give either node (one node) or etcd (the elastic store)".into()),
            }
            if !store.nic_gbps.is_finite() || store.nic_gbps <= 0.0 {
                return Err("store: nic_gbps must be positive".into());
            }
        }
        Ok(())
    }

    /// The file's text (what [`ClusterFile::read`] reads back).
    pub fn to_toml(&self) -> String {
        let mut out = format!("tls_dir = {:?}\n", self.tls_dir.display().to_string());
        if let Some(objects) = &self.objects {
            out.push_str(&format!("objects = {objects:?}\n"));
        }
        if let Some(gbps) = self.objects_gbps {
            out.push_str(&format!("objects_gbps = {gbps:?}\n"));
        }
        if let Some(store) = &self.store {
            out.push_str("\n[store]\n");
            if let Some(node) = &store.node {
                out.push_str(&format!("node = \"{node}\"\n"));
            }
            if let Some(etcd) = &store.etcd {
                out.push_str(&format!("etcd = {etcd:?}\n"));
            }
            if let Some(credentials) = &store.credentials {
                out.push_str(&format!("credentials = {:?}\n", credentials.display().to_string()));
            }
            out.push_str(&format!(
                "memory = {}\nflash = {}\nnic_gbps = {:?}\n",
                store.memory.0, store.flash.0, store.nic_gbps
            ));
            if let Some(ns) = &store.namespace {
                out.push_str(&format!("namespace = {ns:?}\n"));
            }
        }
        for h in &self.hosts {
            out.push_str(&format!(
                "\n[[host]]\nname = {:?}\nnode = \"{}\"\nmemory = {}\nflash = {}\ncores = {}\nnic_gbps = {:?}\nrdma = {}\n",
                h.name, h.node, h.memory.0, h.flash.0, h.cores, h.nic_gbps, h.rdma
            ));
            if let Some(socket) = &h.socket {
                out.push_str(&format!("socket = {:?}\n", socket.display().to_string()));
            }
            if !h.workers.is_empty() {
                let urls: Vec<String> = h.workers.iter().map(|u| format!("{u:?}")).collect();
                out.push_str(&format!("workers = [{}]\nworker_memory = {}\n", urls.join(", "), h.worker_memory.0));
            }
            if let Some(ns) = &h.namespace {
                out.push_str(&format!("namespace = {ns:?}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_cluster_file_round_trips_and_its_mistakes_are_named() {
        let text = "tls_dir = \"tls\"\n[store]\nnode = \"10.0.0.9:7070\"\nnic_gbps = 2.5\n[[host]]\nname = \"a\"\nnode = \"10.0.0.5:7070\"\n[[host]]\nname = \"b\"\nnode = \"10.0.0.6:7070\"\nnic_gbps = 1.0\nsocket = \"/run/b.sock\"\nworkers = [\"http://10.0.0.6:7100\"]\n";
        let (dir, path) = write(text);
        let file = ClusterFile::read(&path).unwrap();
        assert_eq!(file.hosts.len(), 2);
        assert_eq!(file.tls_dir, dir.path().join("tls"));
        std::fs::write(&path, file.to_toml()).unwrap();
        let again = ClusterFile::read(&path).unwrap();
        assert_eq!(again.hosts[1].nic_gbps, 1.0);
        assert_eq!(again.hosts[1].workers, vec!["http://10.0.0.6:7100".to_string()]);
        assert_eq!(again.hosts[1].socket.as_deref(), Some(Path::new("/run/b.sock")));
        let store = again.store.as_ref().unwrap();
        assert_eq!((store.node.map(|n| n.port()), store.nic_gbps), (Some(7070), 2.5));
        assert!(matches!(store.spec(Path::new("t")), crate::paths::PathSpec::Remote { .. }));
        // The elastic store, by its etcd.
        let elastic = text.replace("node = \"10.0.0.9:7070\"", "etcd = \"http://10.0.0.2:2379\"");
        std::fs::write(&path, &elastic).unwrap();
        let file = ClusterFile::read(&path).unwrap();
        let store = file.store.as_ref().unwrap();
        assert!(
            matches!(store.spec(Path::new("t")), crate::paths::PathSpec::Elastic { etcd, .. } if etcd == "http://10.0.0.2:2379")
        );
        std::fs::write(&path, file.to_toml()).unwrap();
        assert_eq!(ClusterFile::read(&path).unwrap().store.unwrap().etcd.as_deref(), Some("http://10.0.0.2:2379"));
        for (text, says) in [
            (
                "tls_dir = \"t\"\n[[host]]\nname = \"a\"\nnode = \"10.0.0.5:7070\"\n[[host]]\nname = \"a\"\nnode = \"10.0.0.6:7070\"\n",
                "named twice",
            ),
            (
                "tls_dir = \"t\"\n[[host]]\nname = \"a\"\nnode = \"10.0.0.5:7070\"\n[[host]]\nname = \"b\"\nnode = \"10.0.0.5:7070\"\n",
                "another host's",
            ),
            ("tls_dir = \"t\"\n[[host]]\nname = \"a\"\nnode = \"10.0.0.500:7070\"\n", "10.0.0.500"),
            ("tls_dir = \"t\"\n", "no host"),
            (
                "tls_dir = \"t\"\n[store]\nnode = \"10.0.0.5:7070\"\n[[host]]\nname = \"a\"\nnode = \"10.0.0.5:7070\"\n",
                "store: node 10.0.0.5:7070 is a host's node too",
            ),
            (
                "tls_dir = \"t\"\n[[host]]\nname = \"a\"\nnode = \"10.0.0.5:7070\"\nworkers = [\"gopher://x\"]\n",
                "gopher",
            ),
            (
                "tls_dir = \"t\"\n[store]\nnode = \"10.0.0.9:7070\"\netcd = \"http://e:2379\"\n[[host]]\nname = \"a\"\nnode = \"10.0.0.5:7070\"\n",
                "either node",
            ),
            (
                "tls_dir = \"t\"\n[store]\netcd = \"e:2379\"\n[[host]]\nname = \"a\"\nnode = \"10.0.0.5:7070\"\n",
                "http://",
            ),
        ] {
            let (_dir, path) = write(text);
            let err = ClusterFile::read(&path).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("cluster.toml"), "{says}: {err}");
        }
    }
}
