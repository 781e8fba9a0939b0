//! The hosts a job runs on, as its driver sees them: which host each task runs on, and the
//! concrete path each task writes and reads a [`PathSpec::HostNode`] edge through.
//!
//! A producer writes into the node of its own host through the node's socket (VM-local: the
//! bytes go into shared memory, no network). A consumer on the same host reads them the same
//! way; a consumer on another host pulls them from the producer's node over QUIC. The driver,
//! on no host, reaches every node over QUIC.

use crate::error::{Error, Result};
use crate::paths::PathSpec;

/// One host's node, as the paths that reach it.
#[derive(Clone, Debug, PartialEq)]
pub struct HostPaths {
    /// The host's name (in summaries).
    pub name: String,
    /// Its node as tasks on the host reach it (its socket; its QUIC address if it has none).
    pub local: PathSpec,
    /// Its node as everyone else reaches it (QUIC).
    pub remote: PathSpec,
}

/// The hosts of a cluster, in the cluster file's order.
#[derive(Clone, Debug, PartialEq)]
pub struct Hosts {
    hosts: Vec<HostPaths>,
}

impl Hosts {
    /// The hosts, at least one and at most 65,535.
    pub fn new(hosts: Vec<HostPaths>) -> Result<Self> {
        if hosts.is_empty() || hosts.len() > usize::from(u16::MAX) {
            return Err(Error::BadJob { reason: format!("a cluster of {} hosts: give 1 to 65535", hosts.len()) });
        }
        Ok(Self { hosts })
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there are none (never: [`Hosts::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Host `host`'s name.
    pub fn name(&self, host: usize) -> &str {
        self.hosts.get(host).map_or("?", |h| h.name.as_str())
    }

    /// The host task `partition` of a stage runs on: the stage's own host when the plan put the
    /// whole stage on one, else round robin over the hosts.
    pub fn place(&self, stage_host: Option<u32>, partition: u32) -> usize {
        match stage_host {
            Some(h) => (h as usize).min(self.hosts.len() - 1),
            None => partition as usize % self.hosts.len(),
        }
    }

    /// The path a task on `host` writes an edge on `spec` through.
    pub fn write_path(&self, spec: &PathSpec, host: usize) -> PathSpec {
        match spec {
            PathSpec::HostNode | PathSpec::HostRdma => self.hosts[host.min(self.hosts.len() - 1)].local.clone(),
            other => other.clone(),
        }
    }

    /// The path a reader on `reader` (`None`: the driver, on no host) reads an output that a
    /// producer on `holder` wrote on `spec` through.
    pub fn read_path(&self, spec: &PathSpec, holder: usize, reader: Option<usize>) -> PathSpec {
        match spec {
            PathSpec::HostNode => {
                let node = &self.hosts[holder.min(self.hosts.len() - 1)];
                if reader == Some(holder) { node.local.clone() } else { node.remote.clone() }
            }
            // A task on another host reads by RDMA; the driver, on no host, over QUIC.
            PathSpec::HostRdma => {
                let node = &self.hosts[holder.min(self.hosts.len() - 1)];
                match (&node.remote, reader) {
                    (_, Some(r)) if r == holder => node.local.clone(),
                    (PathSpec::Remote { addr, tls_dir }, Some(_)) => {
                        PathSpec::RdmaMap { addr: *addr, tls_dir: tls_dir.clone() }
                    }
                    (remote, _) => remote.clone(),
                }
            }
            other => other.clone(),
        }
    }

    /// The paths the driver opens, renews and ends a job on for edges on `spec`: every node for
    /// a host-node edge.
    pub fn driver_paths(&self, spec: &PathSpec) -> Vec<PathSpec> {
        match spec {
            PathSpec::HostNode | PathSpec::HostRdma => self.hosts.iter().map(|h| h.remote.clone()).collect(),
            other => vec![other.clone()],
        }
    }

    /// Whether host `host`'s node answers a hello within `timeout`.
    pub async fn answers(&self, host: usize, timeout: std::time::Duration) -> bool {
        let Some(PathSpec::Remote { addr, tls_dir }) = self.hosts.get(host).map(|h| &h.remote) else { return true };
        let tls = baton_fabric::net::TlsDir::new(tls_dir);
        let hello = async { baton_fabric::path::direct::DirectPath::connect(*addr, &tls).await?.hello().await };
        matches!(tokio::time::timeout(timeout, hello).await, Ok(Ok(_)))
    }

    /// The name of the path between `from` and `to` on `spec`, for summaries.
    pub fn pair_path(&self, spec: &PathSpec, from: usize, to: usize) -> String {
        match spec {
            PathSpec::HostNode | PathSpec::HostRdma if from == to => "vm-local".into(),
            PathSpec::HostNode => "direct".into(),
            PathSpec::HostRdma => "rdma-map".into(),
            other => other.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: usize) -> Hosts {
        Hosts::new(
            (0..n)
                .map(|i| HostPaths {
                    name: format!("h{i}"),
                    local: PathSpec::VmLocal { socket: format!("/h{i}/node.sock").into() },
                    remote: PathSpec::Remote {
                        addr: format!("10.0.0.{}:7070", 10 + i).parse().unwrap_or_else(|_| unreachable!()),
                        tls_dir: "/tls".into(),
                    },
                })
                .collect(),
        )
        .unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn a_host_node_edge_is_local_on_one_host_and_quic_between_two() {
        let h = hosts(3);
        assert_eq!(h.place(None, 4), 1);
        assert_eq!(h.place(Some(2), 4), 2);
        let local = h.write_path(&PathSpec::HostNode, 2);
        assert!(matches!(local, PathSpec::VmLocal { ref socket } if socket.starts_with("/h2")));
        assert_eq!(h.read_path(&PathSpec::HostNode, 2, Some(2)), local);
        assert!(
            matches!(h.read_path(&PathSpec::HostNode, 2, Some(0)), PathSpec::Remote { addr, .. } if addr.port() == 7070 && addr.ip().to_string() == "10.0.0.12")
        );
        assert!(matches!(h.read_path(&PathSpec::HostNode, 0, None), PathSpec::Remote { .. }));
        assert_eq!(h.driver_paths(&PathSpec::HostNode).len(), 3);
        let objects = PathSpec::ObjectStore { url: "file:///x".into() };
        assert_eq!(h.read_path(&objects, 1, Some(2)), objects);
        assert_eq!(h.pair_path(&PathSpec::HostNode, 1, 1), "vm-local");
        assert_eq!(h.pair_path(&PathSpec::HostNode, 1, 0), "direct");
        // Between hosts with RDMA: tasks on another host read by RDMA, the driver over QUIC.
        assert_eq!(h.write_path(&PathSpec::HostRdma, 2), local);
        assert_eq!(h.read_path(&PathSpec::HostRdma, 2, Some(2)), local);
        assert!(matches!(
            h.read_path(&PathSpec::HostRdma, 2, Some(0)),
            PathSpec::RdmaMap { addr, .. } if addr.ip().to_string() == "10.0.0.12"
        ));
        assert!(matches!(h.read_path(&PathSpec::HostRdma, 2, None), PathSpec::Remote { .. }));
        assert_eq!(h.pair_path(&PathSpec::HostRdma, 1, 0), "rdma-map");
        assert_eq!(h.driver_paths(&PathSpec::HostRdma).len(), 3);
        assert!(Hosts::new(Vec::new()).is_err());
    }
}
