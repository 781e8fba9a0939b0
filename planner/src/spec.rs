//! Plan files: a DAG, a cluster and an objective described in TOML, for `baton plan`.
//!
//! ```toml
//! objective = "least-time"          # or "least-cost", or "least-cost-within" with deadline_s
//!
//! [cluster]
//! hosts = 4
//! cores = 16
//! memory = "64GiB"
//! paths = ["vm-local", "direct", "remote-store", "object-store"]
//!
//! [[stage]]
//! id = 1
//! name = "scan lineitem"
//! dop = [1, 64]                     # or a fixed number
//! row_ns = 50                       # compute per input row, nanoseconds of one core
//! source_rows = 6000000
//! source_bytes = "700MiB"
//!
//! [[edge]]
//! id = 1
//! from = 1
//! to = 2
//! kind = "shuffle"                  # one-to-one, shuffle, broadcast, gather
//! bytes = "300MiB"
//! rows = 6000000
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Path;
use crate::cluster::{ClusterModel, FunctionModel, Host, NIC_10G, PathModel};
use crate::dag::{Compute, Dag, DopBounds, Edge, EdgeKind, Stage};
use crate::error::{Error, Result};
use crate::ids::{EdgeId, HostId, StageId};
use crate::plan::Objective;
use crate::units::ByteSize;

/// A parsed plan file.
#[derive(Clone, Debug)]
pub struct PlanSpec {
    /// The job.
    pub dag: Dag,
    /// The cluster.
    pub cluster: ClusterModel,
    /// The objective.
    pub objective: Objective,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "least_time")]
    objective: String,
    deadline_s: Option<f64>,
    cluster: ClusterFile,
    #[serde(default)]
    stage: Vec<StageFile>,
    #[serde(default)]
    edge: Vec<EdgeFile>,
}

fn least_time() -> String {
    "least-time".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    hosts: u32,
    cores: u32,
    memory: ByteSize,
    nic_gbit: Option<f64>,
    #[serde(default)]
    rdma: bool,
    #[serde(default = "yes")]
    nodes_reachable: bool,
    paths: Option<Vec<String>>,
    #[serde(default)]
    function: FunctionFile,
    #[serde(default)]
    path: BTreeMap<String, PathFile>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FunctionFile {
    memory: Option<ByteSize>,
    startup_ms: Option<f64>,
    duration_cap_s: Option<f64>,
    price_per_gb_s: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PathFile {
    task_mb_per_s: Option<f64>,
    aggregate_mb_per_s: Option<f64>,
    latency_ms: Option<f64>,
    concurrency: Option<u32>,
    prefixes: Option<u32>,
    capacity: Option<ByteSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, untagged)]
enum DopFile {
    Fixed(u32),
    Range([u32; 2]),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    id: u32,
    #[serde(default)]
    name: String,
    dop: DopFile,
    #[serde(default)]
    row_ns: f64,
    #[serde(default)]
    byte_ns: f64,
    #[serde(default)]
    source_rows: u64,
    #[serde(default)]
    source_bytes: Option<ByteSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeFile {
    id: u32,
    from: u32,
    to: u32,
    kind: String,
    bytes: ByteSize,
    #[serde(default)]
    rows: u64,
    #[serde(default)]
    pipelined: bool,
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Invalid { what: what.into(), reason: reason.into() }
}

/// The path named `name` in files.
pub fn parse_path(name: &str) -> Result<Path> {
    Path::ALL.into_iter().find(|p| p.name() == name).ok_or_else(|| {
        let known: Vec<_> = Path::ALL.iter().map(|p| p.name()).collect();
        invalid(format!("path {name:?}"), format!("unknown; use one of {}", known.join(", ")))
    })
}

fn parse_kind(name: &str) -> Result<EdgeKind> {
    [EdgeKind::OneToOne, EdgeKind::Shuffle, EdgeKind::Broadcast, EdgeKind::Gather]
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| invalid(format!("edge kind {name:?}"), "use one-to-one, shuffle, broadcast or gather"))
}

impl PlanSpec {
    /// Parses a plan file's text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| invalid("plan file", e.to_string().trim().to_string()))?;
        let objective = match (file.objective.as_str(), file.deadline_s) {
            ("least-time", None) => Objective::LeastTime,
            ("least-cost", None) => Objective::LeastCost,
            ("least-cost-within", Some(deadline_s)) if deadline_s > 0.0 => Objective::LeastCostWithin { deadline_s },
            ("least-cost-within", _) => return Err(invalid("objective", "least-cost-within needs deadline_s > 0")),
            (_, Some(_)) => return Err(invalid("deadline_s", "only goes with objective = \"least-cost-within\"")),
            (other, None) => {
                return Err(invalid(format!("objective {other:?}"), "use least-time, least-cost or least-cost-within"));
            }
        };
        let c = file.cluster;
        let names = c.paths.unwrap_or_else(|| {
            let mut all = vec!["vm-local", "direct", "remote-store", "object-store"];
            if c.rdma {
                all.push("rdma-map");
            }
            all.into_iter().map(String::from).collect()
        });
        let mut paths = Vec::new();
        for name in &names {
            paths.push(PathModel::default_for(parse_path(name)?));
        }
        for (name, o) in &c.path {
            let path = parse_path(name)?;
            let model = paths
                .iter_mut()
                .find(|m| m.path == path)
                .ok_or_else(|| invalid(format!("[cluster.path.{name}]"), "is not in cluster.paths"))?;
            let mb = |v: f64| v * 1e6;
            model.task_bandwidth = o.task_mb_per_s.map_or(model.task_bandwidth, mb);
            model.aggregate_bandwidth = o.aggregate_mb_per_s.map_or(model.aggregate_bandwidth, mb);
            model.latency_s = o.latency_ms.map_or(model.latency_s, |v| v / 1e3);
            model.concurrency = o.concurrency.unwrap_or(model.concurrency);
            model.prefixes = o.prefixes.unwrap_or(model.prefixes);
            model.capacity = o.capacity.map(|b| b.0).or(model.capacity);
        }
        let defaults = FunctionModel::default();
        let function = FunctionModel {
            memory: c.function.memory.map_or(defaults.memory, |b| b.0),
            startup_s: c.function.startup_ms.map_or(defaults.startup_s, |v| v / 1e3),
            duration_cap_s: c.function.duration_cap_s.unwrap_or(defaults.duration_cap_s),
            price_per_gb_s: c.function.price_per_gb_s.unwrap_or(defaults.price_per_gb_s),
            ..defaults
        };
        let cluster = ClusterModel {
            hosts: (0..c.hosts)
                .map(|i| Host {
                    id: HostId(i),
                    cores: c.cores,
                    memory: c.memory.0,
                    nic_bandwidth: c.nic_gbit.map_or(NIC_10G, |g| g * 1e9 / 8.0),
                    rdma: c.rdma,
                })
                .collect(),
            paths,
            function,
            nodes_reachable: c.nodes_reachable,
        };
        let stages = file
            .stage
            .into_iter()
            .map(|s| Stage {
                id: StageId(s.id),
                name: if s.name.is_empty() { format!("stage {}", s.id) } else { s.name },
                dop: match s.dop {
                    DopFile::Fixed(n) => DopBounds::fixed(n),
                    DopFile::Range([a, b]) => DopBounds::range(a, b),
                },
                compute: Compute { per_row_s: s.row_ns * 1e-9, per_byte_s: s.byte_ns * 1e-9 },
                source_rows: s.source_rows,
                source_bytes: s.source_bytes.map_or(0, |b| b.0),
            })
            .collect();
        let edges = file
            .edge
            .into_iter()
            .map(|e| {
                Ok(Edge {
                    id: EdgeId(e.id),
                    from: StageId(e.from),
                    to: StageId(e.to),
                    kind: parse_kind(&e.kind)?,
                    bytes: e.bytes.0,
                    rows: e.rows,
                    pipelined: e.pipelined,
                })
            })
            .collect::<Result<_>>()?;
        Ok(PlanSpec { dag: Dag { stages, edges }, cluster, objective })
    }
}
