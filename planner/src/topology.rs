//! Shuffle topologies and their exact request counts (MinFlow, Lambada).

use crate::dag::EdgeKind;

/// How an edge's objects are laid out between producer and consumer tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Topology {
    /// One object per producer task (one-to-one, broadcast and gather edges).
    PerTask,
    /// One object per (producer, consumer) pair: M×R writes, M×R reads.
    AllToAll,
    /// One object per producer holding every consumer's partition contiguously, its offsets
    /// reported to the driver; consumers read byte ranges: M writes, M×R reads.
    Coalesced,
    /// `levels` rounds of coalesced exchange among P = max(M, R) tasks with fan-out
    /// f = ⌈P^(1/levels)⌉: levels·P writes, levels·P·f reads, and the bytes cross `levels` times.
    KLevel {
        /// Rounds of exchange (2 or more).
        levels: u32,
    },
}

/// What a topology costs in requests and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Write requests (PUTs).
    pub writes: u64,
    /// Read requests (GETs, ranged or whole).
    pub reads: u64,
    /// Bytes written, summed over requests.
    pub bytes_written: u64,
    /// Bytes read, summed over requests.
    pub bytes_read: u64,
    /// Tasks writing at once.
    pub writers: u64,
    /// Tasks reading at once.
    pub readers: u64,
}

impl Topology {
    /// The name used in plans and explanations.
    pub fn name(self) -> String {
        match self {
            Topology::PerTask => "per-task".into(),
            Topology::AllToAll => "all-to-all".into(),
            Topology::Coalesced => "coalesced".into(),
            Topology::KLevel { levels } => format!("{levels}-level"),
        }
    }

    /// The topologies an edge of `kind` can use.
    pub fn candidates(kind: EdgeKind) -> &'static [Topology] {
        match kind {
            EdgeKind::Shuffle => &[
                Topology::AllToAll,
                Topology::Coalesced,
                Topology::KLevel { levels: 2 },
                Topology::KLevel { levels: 3 },
            ],
            EdgeKind::OneToOne | EdgeKind::Broadcast | EdgeKind::Gather => &[Topology::PerTask],
        }
    }

    /// Exact requests for an edge of `kind` carrying `bytes` from `m` producer tasks to `r`
    /// consumer tasks.
    pub fn requests(self, kind: EdgeKind, m: u32, r: u32, bytes: u64) -> Requests {
        let (m, r) = (u64::from(m.max(1)), u64::from(r.max(1)));
        match (kind, self) {
            (EdgeKind::Broadcast, _) => Requests {
                writes: m,
                reads: m * r,
                bytes_written: bytes,
                bytes_read: bytes * r,
                writers: m,
                readers: r,
            },
            (EdgeKind::OneToOne | EdgeKind::Gather, _) | (EdgeKind::Shuffle, Topology::PerTask) => {
                Requests { writes: m, reads: m, bytes_written: bytes, bytes_read: bytes, writers: m, readers: r }
            }
            (EdgeKind::Shuffle, Topology::AllToAll) => Requests {
                writes: m * r,
                reads: m * r,
                bytes_written: bytes,
                bytes_read: bytes,
                writers: m,
                readers: r,
            },
            (EdgeKind::Shuffle, Topology::Coalesced) => {
                Requests { writes: m, reads: m * r, bytes_written: bytes, bytes_read: bytes, writers: m, readers: r }
            }
            (EdgeKind::Shuffle, Topology::KLevel { levels }) => {
                let k = u64::from(levels.max(1));
                let p = m.max(r);
                let f = fanout(p, levels);
                // Each round's senders write an object each (the producers, then the merge
                // tasks); its receivers read from `f` senders each (the merge tasks, then the
                // consumers).
                Requests {
                    writes: m + (k - 1) * p,
                    reads: ((k - 1) * p + r) * f,
                    bytes_written: k * bytes,
                    bytes_read: k * bytes,
                    writers: p,
                    readers: p,
                }
            }
        }
    }
}

/// The smallest f with f^levels ≥ p.
pub fn fanout(p: u64, levels: u32) -> u64 {
    let mut f = (p as f64).powf(1.0 / f64::from(levels.max(1))).floor().max(1.0) as u64;
    while f.checked_pow(levels).is_none_or(|v| v < p) {
        f += 1;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counts_are_exact() {
        let b = 1_000_000;
        let cases = [
            (EdgeKind::Shuffle, Topology::AllToAll, 100, 50, 5000, 5000, b),
            (EdgeKind::Shuffle, Topology::Coalesced, 100, 50, 100, 5000, b),
            // P = 100, f = 10: 2·100 writes, 2·100·10 reads, bytes twice.
            (EdgeKind::Shuffle, Topology::KLevel { levels: 2 }, 100, 50, 200, 1500, 2 * b),
            // P = 1000, f = 10.
            (EdgeKind::Shuffle, Topology::KLevel { levels: 3 }, 1000, 1000, 3000, 30_000, 3 * b),
            (EdgeKind::OneToOne, Topology::PerTask, 8, 8, 8, 8, b),
            (EdgeKind::Gather, Topology::PerTask, 8, 1, 8, 8, b),
            (EdgeKind::Broadcast, Topology::PerTask, 4, 10, 4, 40, b),
        ];
        for (kind, topology, m, r, writes, reads, bytes_written) in cases {
            let req = topology.requests(kind, m, r, b);
            assert_eq!(
                (req.writes, req.reads, req.bytes_written),
                (writes, reads, bytes_written),
                "{kind:?} {topology:?}"
            );
        }
    }

    #[test]
    fn fanout_is_the_smallest_root() {
        assert_eq!(fanout(100, 2), 10);
        assert_eq!(fanout(101, 2), 11);
        assert_eq!(fanout(1000, 3), 10);
        assert_eq!(fanout(1, 3), 1);
        assert_eq!(fanout(1000, 2), 32);
    }
}
