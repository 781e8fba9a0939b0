//! The cost model: predicted time, requests and dollars of moving an edge one way (SONIC).

use crate::Path;
use crate::cluster::{ClusterModel, PathModel, RDMA_NIC_FACTOR};
use crate::dag::Edge;
use crate::topology::{Requests, Topology};

/// What moving an edge one way is predicted to cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The path.
    pub path: Path,
    /// The topology.
    pub topology: Topology,
    /// Seconds from the producers' first write to the consumers' last read.
    pub time_s: f64,
    /// Requests and bytes.
    pub requests: Requests,
    /// Dollars: requests, bytes held, and the functions' time spent moving them.
    pub dollars: f64,
    /// Bytes that did not fit the path and went to the object store instead (Locus).
    pub spilled: u64,
}

impl Estimate {
    /// Compares by time, then dollars, then requests.
    pub fn faster_than(&self, other: &Estimate) -> bool {
        (self.time_s, self.dollars, self.requests.writes + self.requests.reads)
            < (other.time_s, other.dollars, other.requests.writes + other.requests.reads)
    }
}

/// What the placement of an edge's ends allows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Bytes the path can hold for this edge, if bounded (memory of a host, a store's room).
    pub room: Option<u64>,
    /// Bytes per second the producers' hosts can send, for paths that cross the network.
    pub send_bandwidth: f64,
    /// Bytes per second the consumers' hosts can receive, for paths that cross the network.
    pub receive_bandwidth: f64,
}

impl Limits {
    /// No limit but the paths' own.
    pub const NONE: Limits = Limits { room: None, send_bandwidth: f64::INFINITY, receive_bandwidth: f64::INFINITY };
}

fn phase_s(
    model: &PathModel,
    tasks: u64,
    requests: u64,
    bytes: u64,
    rate_per_prefix: Option<f64>,
    network: f64,
) -> f64 {
    if requests == 0 {
        return 0.0;
    }
    let tasks = tasks.max(1) as f64;
    let per_task_bytes = bytes as f64 / tasks;
    let per_task_requests = (requests as f64 / tasks).ceil();
    let in_flight = f64::from(model.concurrency.max(1));
    let task_s = per_task_bytes / model.task_bandwidth + (per_task_requests / in_flight).ceil() * model.latency_s;
    let rate_s = rate_per_prefix.map_or(0.0, |rate| requests as f64 / (rate * f64::from(model.prefixes.max(1))));
    let aggregate_s = bytes as f64 / model.aggregate_bandwidth.min(network);
    task_s.max(rate_s).max(aggregate_s)
}

/// An edge's time on `path` from its writing and its reading phases (each from its slowest
/// task's first request to its last): what the model predicts, and what a job's measured
/// phases are compared with.
pub fn transfer_s(path: Path, pipelined: bool, write_s: f64, read_s: f64) -> f64 {
    match path {
        // Streams between live tasks: writing and reading overlap.
        Path::Direct | Path::RdmaMap if pipelined => write_s.max(read_s),
        // Pulled from the producer's node after it ends: the read is the transfer.
        Path::Direct | Path::RdmaMap => read_s,
        _ => write_s + read_s,
    }
}

/// Time and dollars of `requests` over `model`, ignoring capacity.
fn carry(cluster: &ClusterModel, model: &PathModel, edge: &Edge, requests: Requests, limits: Limits) -> (f64, f64) {
    let (send, receive) = match model.path {
        Path::VmLocal => (f64::INFINITY, f64::INFINITY),
        Path::RdmaMap => (limits.send_bandwidth * RDMA_NIC_FACTOR, limits.receive_bandwidth * RDMA_NIC_FACTOR),
        _ => (limits.send_bandwidth, limits.receive_bandwidth),
    };
    let write_s =
        phase_s(model, requests.writers, requests.writes, requests.bytes_written, model.write_rate_per_prefix, send);
    let read_s =
        phase_s(model, requests.readers, requests.reads, requests.bytes_read, model.read_rate_per_prefix, receive);
    let time_s = transfer_s(model.path, edge.pipelined, write_s, read_s);
    let f = &cluster.function;
    let gb = f.memory as f64 / 1e9;
    let function_s = requests.writers as f64 * write_s + requests.readers as f64 * read_s;
    let dollars = requests.writes as f64 * model.price_per_write
        + requests.reads as f64 * model.price_per_read
        + requests.bytes_written as f64 * time_s * model.price_per_byte_s
        + function_s * gb * f.price_per_gb_s;
    (time_s, dollars)
}

/// Time and dollars of a k-level exchange's `levels` rounds, one after another: each moves the
/// edge's bytes once, written by the round's senders (the `m` producers, then the merge tasks)
/// as an object each, and read by its receivers (the merge tasks, then the `r` consumers, which
/// take every byte in the last round) from `fanout` senders each.
fn rounds(
    cluster: &ClusterModel,
    model: &PathModel,
    edge: &Edge,
    levels: u32,
    m: u32,
    r: u32,
    limits: Limits,
) -> (f64, f64) {
    let (m, r) = (u64::from(m.max(1)), u64::from(r.max(1)));
    let p = m.max(r);
    let f = crate::topology::fanout(p, levels);
    (0..levels).fold((0.0, 0.0), |(time, dollars), round| {
        let writers = if round == 0 { m } else { p };
        let readers = if round + 1 == levels { r } else { p };
        let requests = Requests {
            writes: writers,
            reads: readers * f,
            bytes_written: edge.bytes,
            bytes_read: edge.bytes,
            writers,
            readers,
        };
        let (t, d) = carry(cluster, model, edge, requests, limits);
        (time + t, dollars + d)
    })
}

/// `estimate` with the start of the merge stages a k-level exchange runs between its rounds:
/// each round waits for its tasks to start, and pays for them.
fn with_rounds(cluster: &ClusterModel, mut estimate: Estimate) -> Estimate {
    if let Topology::KLevel { levels } = estimate.topology {
        let rounds = f64::from(levels.saturating_sub(1));
        let f = &cluster.function;
        estimate.time_s += rounds * f.startup_s;
        estimate.dollars +=
            rounds * estimate.requests.writers as f64 * f.startup_s * (f.memory as f64 / 1e9) * f.price_per_gb_s;
    }
    estimate
}

fn scale(r: Requests, share: f64) -> Requests {
    let part = |n: u64| (n as f64 * share).round() as u64;
    Requests { bytes_written: part(r.bytes_written), bytes_read: part(r.bytes_read), ..r }
}

/// Predicts moving `edge` over `path` with `topology` from `m` to `r` tasks within `limits`:
/// bytes beyond the path's room go to the object store (if the cluster has one) in parallel.
/// `None` when the cluster lacks the path.
pub fn estimate(
    cluster: &ClusterModel,
    path: Path,
    topology: Topology,
    edge: &Edge,
    m: u32,
    r: u32,
    limits: Limits,
) -> Option<Estimate> {
    let model = cluster.path(path)?;
    let requests = topology.requests(edge.kind, m, r, edge.bytes);
    let held = requests.bytes_written;
    let room = limits.room.unwrap_or(u64::MAX);
    if held <= room || path == Path::ObjectStore {
        let (time_s, dollars) = match topology {
            Topology::KLevel { levels } => rounds(cluster, model, edge, levels, m, r, limits),
            _ => carry(cluster, model, edge, requests, limits),
        };
        return Some(with_rounds(cluster, Estimate { path, topology, time_s, requests, dollars, spilled: 0 }));
    }
    // Locus: what does not fit goes to the slow, cheap tier, at the same time.
    let slow = cluster.path(Path::ObjectStore)?;
    let share = room as f64 / held as f64;
    let (fast_s, fast_d) = carry(cluster, model, edge, scale(requests, share), limits);
    let (slow_s, slow_d) = carry(cluster, slow, edge, scale(requests, 1.0 - share), limits);
    let both = Requests { writes: requests.writes * 2, reads: requests.reads * 2, ..requests };
    Some(with_rounds(
        cluster,
        Estimate {
            path,
            topology,
            time_s: fast_s.max(slow_s),
            requests: both,
            dollars: fast_d + slow_d,
            spilled: held - room,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::EdgeKind;
    use crate::ids::{EdgeId, StageId};

    fn shuffle(bytes: u64) -> Edge {
        Edge {
            id: EdgeId(1),
            from: StageId(1),
            to: StageId(2),
            kind: EdgeKind::Shuffle,
            bytes,
            rows: 0,
            pipelined: false,
        }
    }

    #[test]
    fn many_small_requests_favour_fewer_objects_on_the_object_store() {
        let cluster = ClusterModel::uniform(4, 16, 64 << 30);
        let edge = shuffle(1 << 30);
        let all = estimate(&cluster, Path::ObjectStore, Topology::AllToAll, &edge, 1000, 1000, Limits::NONE).unwrap();
        let two =
            estimate(&cluster, Path::ObjectStore, Topology::KLevel { levels: 2 }, &edge, 1000, 1000, Limits::NONE)
                .unwrap();
        assert_eq!(all.requests.writes, 1_000_000);
        assert!(two.time_s < all.time_s && two.dollars < all.dollars, "{two:?} vs {all:?}");
    }

    #[test]
    fn a_small_shuffle_is_not_worth_the_merge_rounds_of_a_k_level_exchange() {
        let cluster = ClusterModel::uniform(1, 16, 64 << 30);
        let edge = shuffle(300 << 10);
        let coalesced = estimate(&cluster, Path::VmLocal, Topology::Coalesced, &edge, 16, 2, Limits::NONE).unwrap();
        let two =
            estimate(&cluster, Path::VmLocal, Topology::KLevel { levels: 2 }, &edge, 16, 2, Limits::NONE).unwrap();
        assert!(two.time_s > coalesced.time_s, "{two:?} vs {coalesced:?}");
        assert!(two.dollars > coalesced.dollars, "{two:?} vs {coalesced:?}");
    }

    #[test]
    fn what_does_not_fit_spills_to_the_object_store() {
        let cluster = ClusterModel::uniform(4, 16, 64 << 30);
        let edge = shuffle(10 << 30);
        let fits = estimate(&cluster, Path::RemoteStore, Topology::Coalesced, &edge, 10, 10, Limits::NONE).unwrap();
        let split = estimate(
            &cluster,
            Path::RemoteStore,
            Topology::Coalesced,
            &edge,
            10,
            10,
            Limits { room: Some(4 << 30), ..Limits::NONE },
        )
        .unwrap();
        assert_eq!(fits.spilled, 0);
        assert_eq!(split.spilled, 6 << 30);
        assert!(split.time_s > fits.time_s);
    }

    #[test]
    fn missing_paths_are_none() {
        let cluster = ClusterModel::uniform(1, 4, 8 << 30).object_store_only();
        assert!(estimate(&cluster, Path::Direct, Topology::PerTask, &shuffle(1), 1, 1, Limits::NONE).is_none());
    }
}
