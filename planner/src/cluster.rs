//! The cluster as the planner sees it: hosts, the paths between them and what each costs.

use crate::Path;
use crate::ids::HostId;
use crate::prices;

/// A machine that runs functions (and a Baton node).
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    /// Its id.
    pub id: HostId,
    /// Cores available to functions.
    pub cores: u32,
    /// Bytes of memory available to functions and the node's memory tier.
    pub memory: u64,
    /// Bytes per second its network interface moves each way (10 Gbit/s: 1.25e9).
    pub nic_bandwidth: f64,
    /// Whether it has an RDMA NIC.
    pub rdma: bool,
}

/// A 10 Gbit/s NIC, in bytes per second.
pub const NIC_10G: f64 = 1.25e9;

/// How much faster an RDMA NIC is than the host's ordinary one (100 vs 10 Gbit/s).
pub const RDMA_NIC_FACTOR: f64 = 10.0;

/// What one path can do and what it costs.
#[derive(Clone, Debug, PartialEq)]
pub struct PathModel {
    /// Which path.
    pub path: Path,
    /// Bytes per second one task can move over it.
    pub task_bandwidth: f64,
    /// Bytes per second the whole path can move (store nodes' NICs, a host's memory bus).
    pub aggregate_bandwidth: f64,
    /// Seconds per request (first byte).
    pub latency_s: f64,
    /// Requests one task keeps in flight.
    pub concurrency: u32,
    /// Writes per second per key prefix, if limited (S3: about 3,500).
    pub write_rate_per_prefix: Option<f64>,
    /// Reads per second per key prefix, if limited (S3: about 5,500).
    pub read_rate_per_prefix: Option<f64>,
    /// Key prefixes writes are spread over.
    pub prefixes: u32,
    /// Dollars per write request.
    pub price_per_write: f64,
    /// Dollars per read request.
    pub price_per_read: f64,
    /// Dollars per byte-second held (a memory store's rent).
    pub price_per_byte_s: f64,
    /// Bytes it can hold for one job, if bounded.
    pub capacity: Option<u64>,
}

/// The limits and price of one function instance.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionModel {
    /// Memory of one instance, in bytes.
    pub memory: u64,
    /// The largest payload an invocation can carry in or out, in bytes.
    pub payload_cap: u64,
    /// The longest an invocation may run, in seconds.
    pub duration_cap_s: f64,
    /// Dollars per GB-second (10^9 bytes) of instance memory.
    pub price_per_gb_s: f64,
    /// Seconds to start a task (invocation and warm start).
    pub startup_s: f64,
}

/// Hosts, paths and functions.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterModel {
    /// The hosts functions run on.
    pub hosts: Vec<Host>,
    /// The paths that exist, each at most once.
    pub paths: Vec<PathModel>,
    /// Function limits and price.
    pub function: FunctionModel,
    /// Whether a producer's node stays reachable after the producer ends (Baton nodes on the
    /// hosts), which lets a later consumer pull directly from it.
    pub nodes_reachable: bool,
}

const GB: f64 = 1e9;
const MB: f64 = 1e6;

impl PathModel {
    /// Defaults for a path, from public figures for a cloud region (AWS-like prices).
    pub fn default_for(path: Path) -> Self {
        let base = PathModel {
            path,
            task_bandwidth: 0.0,
            aggregate_bandwidth: f64::INFINITY,
            latency_s: 0.0,
            concurrency: 8,
            write_rate_per_prefix: None,
            read_rate_per_prefix: None,
            prefixes: 1,
            price_per_write: 0.0,
            price_per_read: 0.0,
            price_per_byte_s: 0.0,
            capacity: None,
        };
        match path {
            // Shared memory on one host: memory bandwidth, a socket round trip per request.
            Path::VmLocal => {
                PathModel { task_bandwidth: 4.0 * GB, aggregate_bandwidth: 12.0 * GB, latency_s: 50e-6, ..base }
            }
            // QUIC between hosts: a 10 Gbit/s NIC shared by a host's tasks.
            Path::Direct => PathModel { task_bandwidth: 600.0 * MB, latency_s: 300e-6, ..base },
            // Memory/flash store nodes: fast requests, rent for held bytes (~$0.0125/GB-hour).
            Path::RemoteStore => PathModel {
                task_bandwidth: 300.0 * MB,
                aggregate_bandwidth: 4.0 * 1.25 * GB,
                latency_s: 200e-6,
                price_per_byte_s: prices::MEMORY_STORE_PER_GB_HOUR / GB / 3600.0,
                capacity: Some(64 * (1 << 30)),
                ..base
            },
            // S3: per-request latency and prices, per-prefix rate limits.
            Path::ObjectStore => PathModel {
                task_bandwidth: 90.0 * MB,
                latency_s: 20e-3,
                concurrency: 16,
                write_rate_per_prefix: Some(prices::S3_WRITES_PER_PREFIX_S),
                read_rate_per_prefix: Some(prices::S3_READS_PER_PREFIX_S),
                prefixes: 16,
                price_per_write: prices::S3_PER_WRITE,
                price_per_read: prices::S3_PER_READ,
                price_per_byte_s: prices::S3_PER_GB_MONTH / GB / (30.0 * 86400.0),
                ..base
            },
            // One-sided reads of registered memory over a 100 Gbit/s NIC.
            Path::RdmaMap => PathModel { task_bandwidth: 5.0 * GB, latency_s: 5e-6, ..base },
        }
    }
}

impl Default for FunctionModel {
    fn default() -> Self {
        FunctionModel {
            memory: 2 << 30,
            payload_cap: 6 << 20,
            duration_cap_s: 900.0,
            price_per_gb_s: prices::LAMBDA_PER_GB_S,
            startup_s: 0.05,
        }
    }
}

impl ClusterModel {
    /// `hosts` identical hosts with every path but RDMA, at default figures.
    pub fn uniform(hosts: u32, cores: u32, memory: u64) -> Self {
        ClusterModel {
            hosts: (0..hosts)
                .map(|i| Host { id: HostId(i), cores, memory, nic_bandwidth: NIC_10G, rdma: false })
                .collect(),
            paths: [Path::VmLocal, Path::Direct, Path::RemoteStore, Path::ObjectStore]
                .into_iter()
                .map(PathModel::default_for)
                .collect(),
            function: FunctionModel::default(),
            nodes_reachable: true,
        }
    }

    /// The model of `path`, if the cluster has it.
    pub fn path(&self, path: Path) -> Option<&PathModel> {
        self.paths.iter().find(|p| p.path == path)
    }

    /// Total cores of all hosts.
    pub fn total_cores(&self) -> u64 {
        self.hosts.iter().map(|h| u64::from(h.cores)).sum()
    }

    /// A copy with only the object store left (the baseline every plan is compared with).
    pub fn object_store_only(&self) -> Self {
        let mut only = self.clone();
        only.paths.retain(|p| p.path == Path::ObjectStore);
        only
    }
}
