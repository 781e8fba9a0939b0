//! Properties over many generated DAGs and clusters (a seeded generator, so failures replay):
//! the plan never predicts worse than every edge through the object store, request counts are
//! exact, and the same inputs give the same plan.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use baton_planner::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A layered DAG: every stage after the first reads from one or two earlier stages.
fn dag(rng: &mut Rng) -> Dag {
    let n = 2 + rng.below(9) as u32;
    let mut stages = Vec::new();
    let mut edges = Vec::new();
    for id in 1..=n {
        let max = rng.pick(&[1, 4, 16, 64, 256, 1024]);
        stages.push(Stage {
            id: StageId(id),
            name: format!("s{id}"),
            dop: DopBounds::range(1 + rng.below(u64::from(max)) as u32 / 4, max.max(1)),
            compute: Compute { per_row_s: rng.pick(&[1e-8, 5e-8, 2e-7]), per_byte_s: rng.pick(&[0.0, 1e-9]) },
            source_rows: if id == 1 || rng.below(3) == 0 { rng.pick(&[1_000_000, 50_000_000]) } else { 0 },
            source_bytes: 0,
        });
        if id > 1 {
            let inputs = 1 + rng.below(2.min(u64::from(id - 1)));
            for k in 0..inputs {
                let from = 1 + rng.below(u64::from(id - 1)) as u32;
                if edges.iter().any(|e: &Edge| e.from == StageId(from) && e.to == StageId(id)) {
                    continue;
                }
                let kind = rng.pick(&[
                    EdgeKind::Shuffle,
                    EdgeKind::Shuffle,
                    EdgeKind::OneToOne,
                    EdgeKind::Gather,
                    EdgeKind::Broadcast,
                ]);
                let bytes = match kind {
                    EdgeKind::Broadcast => rng.pick(&[1 << 20, 64 << 20]),
                    _ => rng.pick(&[1 << 20, 256 << 20, 8 << 30, 100 << 30]),
                };
                edges.push(Edge {
                    id: EdgeId(id * 10 + k as u32),
                    from: StageId(from),
                    to: StageId(id),
                    kind,
                    bytes,
                    rows: bytes / 64,
                    pipelined: rng.below(4) == 0,
                });
            }
        }
    }
    Dag { stages, edges }
}

fn cluster(rng: &mut Rng) -> ClusterModel {
    let mut c =
        ClusterModel::uniform(1 + rng.below(16) as u32, rng.pick(&[4, 16, 64]), rng.pick(&[16u64, 64, 256]) << 30);
    c.nodes_reachable = rng.below(2) == 0;
    if rng.below(3) == 0 {
        c.paths.retain(|p| p.path != Path::VmLocal);
    }
    if rng.below(4) == 0 {
        c.hosts.iter_mut().for_each(|h| h.rdma = true);
        c.paths.push(PathModel::default_for(Path::RdmaMap));
    }
    if let Some(store) = c.paths.iter_mut().find(|p| p.path == Path::RemoteStore) {
        store.capacity = Some(rng.pick(&[1u64, 16, 1024]) << 30);
    }
    c
}

const CASES: u64 = 150;

#[test]
fn plans_never_predict_worse_than_the_object_store_alone() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for case in 0..CASES {
        let (dag, cluster) = (dag(&mut rng), cluster(&mut rng));
        for objective in [Objective::LeastTime, Objective::LeastCost] {
            let p = plan(&dag, &cluster, objective).unwrap_or_else(|e| panic!("case {case}: {e}"));
            let (t, d) = p.object_store_only.expect("the cluster has an object store");
            match objective {
                Objective::LeastTime => assert!(p.time_s <= t * (1.0 + 1e-9), "case {case}: {} > {t}", p.time_s),
                _ => assert!(p.dollars <= d * (1.0 + 1e-9), "case {case}: {} > {d}", p.dollars),
            }
        }
    }
}

#[test]
fn request_counts_match_the_topology_at_the_planned_parallelism() {
    let mut rng = Rng(0x51ed);
    for case in 0..CASES {
        let (dag, cluster) = (dag(&mut rng), cluster(&mut rng));
        let p = plan(&dag, &cluster, Objective::LeastTime).unwrap();
        for (edge, ep) in dag.edges.iter().zip(&p.edges) {
            let m = p.stage(edge.from).unwrap().dop;
            let r = p.stage(edge.to).unwrap().dop;
            let expected = ep.chosen.topology.requests(edge.kind, m, r, edge.bytes);
            let got = ep.chosen.requests;
            let factor = if ep.chosen.spilled > 0 { 2 } else { 1 };
            assert_eq!(
                (got.writes, got.reads),
                (expected.writes * factor, expected.reads * factor),
                "case {case} {}",
                edge.id
            );
            if let Topology::KLevel { levels } = ep.chosen.topology {
                // The producers write once, each merge round's tasks once; the merge tasks and
                // then the consumers read from `fanout` senders each.
                let (parts, rounds) = (u64::from(m.max(r)), u64::from(levels) - 1);
                assert_eq!(expected.writes, u64::from(m) + rounds * parts);
                assert_eq!(expected.reads, (rounds * parts + u64::from(r)) * fanout(parts, levels));
            }
        }
    }
}

#[test]
fn the_same_inputs_give_the_same_plan() {
    let mut rng = Rng(0xdec1de);
    for _ in 0..30 {
        let (dag, cluster) = (dag(&mut rng), cluster(&mut rng));
        let objective = Objective::LeastCostWithin { deadline_s: 5.0 };
        let a = plan(&dag, &cluster, objective).unwrap();
        let b = plan(&dag, &cluster, objective).unwrap();
        assert_eq!(a, b);
        assert_eq!(explain(&a), explain(&b));
    }
}
