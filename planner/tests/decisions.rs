//! Table-driven cases for each decision the planner makes, and the errors it gives.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use baton_planner::*;

const GIB: u64 = 1 << 30;

fn stage(id: u32, dop: DopBounds, per_row_s: f64, source_rows: u64) -> Stage {
    Stage {
        id: StageId(id),
        name: format!("s{id}"),
        dop,
        compute: Compute { per_row_s, per_byte_s: 0.0 },
        source_rows,
        source_bytes: 0,
    }
}

fn edge(id: u32, from: u32, to: u32, kind: EdgeKind, bytes: u64) -> Edge {
    Edge { id: EdgeId(id), from: StageId(from), to: StageId(to), kind, bytes, rows: bytes / 100, pipelined: false }
}

/// A map stage feeding a reduce stage.
fn two_stage(kind: EdgeKind, bytes: u64, dop: DopBounds) -> Dag {
    Dag {
        stages: vec![stage(1, dop, 1e-8, 10_000_000), stage(2, dop, 1e-8, 0)],
        edges: vec![edge(1, 1, 2, kind, bytes)],
    }
}

fn cluster_with(paths: &[Path]) -> ClusterModel {
    let mut c = ClusterModel::uniform(4, 32, 256 * GIB);
    c.paths = paths.iter().map(|&p| PathModel::default_for(p)).collect();
    c
}

#[test]
fn path_choice_follows_placement_and_reachability() {
    struct Case {
        name: &'static str,
        paths: &'static [Path],
        nodes_reachable: bool,
        pipelined: bool,
        rdma: bool,
        expect: Path,
    }
    let all = &[Path::VmLocal, Path::Direct, Path::RemoteStore, Path::ObjectStore];
    let faas = &[Path::Direct, Path::RemoteStore, Path::ObjectStore];
    let with_rdma = &[Path::Direct, Path::RemoteStore, Path::ObjectStore, Path::RdmaMap];
    let cases = [
        Case {
            name: "co-locatable edge",
            paths: all,
            nodes_reachable: true,
            pipelined: false,
            rdma: false,
            expect: Path::VmLocal,
        },
        Case {
            name: "nodes keep outputs",
            paths: faas,
            nodes_reachable: true,
            pipelined: false,
            rdma: false,
            expect: Path::Direct,
        },
        Case {
            name: "pure FaaS, staged",
            paths: faas,
            nodes_reachable: false,
            pipelined: false,
            rdma: false,
            expect: Path::RemoteStore,
        },
        Case {
            name: "pure FaaS, pipelined",
            paths: faas,
            nodes_reachable: false,
            pipelined: true,
            rdma: false,
            expect: Path::Direct,
        },
        Case {
            name: "RDMA hosts",
            paths: with_rdma,
            nodes_reachable: true,
            pipelined: false,
            rdma: true,
            expect: Path::RdmaMap,
        },
        Case {
            name: "no RDMA NICs",
            paths: with_rdma,
            nodes_reachable: true,
            pipelined: false,
            rdma: false,
            expect: Path::Direct,
        },
        Case {
            name: "object store only",
            paths: &[Path::ObjectStore],
            nodes_reachable: true,
            pipelined: false,
            rdma: false,
            expect: Path::ObjectStore,
        },
    ];
    for case in cases {
        let mut dag = two_stage(EdgeKind::Shuffle, 8 * GIB, DopBounds::range(1, 32));
        dag.edges[0].pipelined = case.pipelined;
        let mut cluster = cluster_with(case.paths);
        cluster.nodes_reachable = case.nodes_reachable;
        cluster.hosts.iter_mut().for_each(|h| h.rdma = case.rdma);
        let plan = plan(&dag, &cluster, Objective::LeastTime).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let chosen = plan.edges[0].chosen;
        assert_eq!(chosen.path, case.expect, "{}:\n{}", case.name, explain(&plan));
        if chosen.path == Path::VmLocal {
            let (a, b) = (plan.stage(StageId(1)).unwrap(), plan.stage(StageId(2)).unwrap());
            assert!(matches!(a.placement, Placement::Host(_)) && a.placement == b.placement, "{}", case.name);
        }
    }
}

#[test]
fn many_tasks_on_the_object_store_take_a_request_frugal_topology() {
    let dag = two_stage(EdgeKind::Shuffle, 64 * GIB, DopBounds::fixed(1000));
    let mut cluster = cluster_with(&[Path::ObjectStore]);
    cluster.hosts = (0..32)
        .map(|i| Host { id: HostId(i), cores: 32, memory: 256 * GIB, nic_bandwidth: NIC_10G, rdma: false })
        .collect();
    let plan = plan(&dag, &cluster, Objective::LeastTime).unwrap();
    let chosen = plan.edges[0].chosen;
    assert_ne!(chosen.topology, Topology::AllToAll, "{}", explain(&plan));
    let all_to_all = plan.edges[0].alternatives.iter().find(|a| a.topology == Topology::AllToAll).unwrap();
    assert_eq!(all_to_all.requests.writes, 1_000_000);
    assert!(chosen.requests.writes + chosen.requests.reads < all_to_all.requests.reads);
}

#[test]
fn an_edge_bigger_than_the_store_spills_to_the_object_store() {
    let dag = two_stage(EdgeKind::Shuffle, 40 * GIB, DopBounds::fixed(64));
    let mut cluster = cluster_with(&[Path::RemoteStore, Path::ObjectStore]);
    cluster.paths[0].capacity = Some(10 * GIB);
    let plan = plan(&dag, &cluster, Objective::LeastTime).unwrap();
    let chosen = plan.edges[0].chosen;
    assert_eq!(chosen.path, Path::RemoteStore, "{}", explain(&plan));
    assert_eq!(chosen.spilled, 30 * GIB);
    assert!(plan.edges[0].reasons.iter().any(|r| r.contains("go to the object store")), "{:?}", plan.edges[0].reasons);
}

#[test]
fn least_cost_uses_fewer_tasks_than_least_time() {
    let dag = two_stage(EdgeKind::Shuffle, 4 * GIB, DopBounds::range(1, 512));
    let cluster = cluster_with(&[Path::Direct, Path::RemoteStore, Path::ObjectStore]);
    let fast = plan(&dag, &cluster, Objective::LeastTime).unwrap();
    let cheap = plan(&dag, &cluster, Objective::LeastCost).unwrap();
    assert!(fast.time_s < cheap.time_s && cheap.dollars < fast.dollars);
    assert!(cheap.stages[0].dop < fast.stages[0].dop);
    // A deadline between the two lands between them.
    let deadline_s = (fast.time_s + cheap.time_s) / 2.0;
    let within = plan(&dag, &cluster, Objective::LeastCostWithin { deadline_s }).unwrap();
    assert!(within.time_s <= deadline_s, "{} > {deadline_s}", within.time_s);
    assert!(within.dollars <= fast.dollars);
}

#[test]
fn calibration_changes_the_plan_when_measurements_contradict_the_defaults() {
    let dag = two_stage(EdgeKind::Shuffle, 8 * GIB, DopBounds::fixed(32));
    let mut cluster = cluster_with(&[Path::RemoteStore, Path::ObjectStore]);
    cluster.nodes_reachable = false;
    let before = plan(&dag, &cluster, Objective::LeastTime).unwrap();
    assert_eq!(before.edges[0].chosen.path, Path::RemoteStore);
    // The remote store turns out to move 2 MB/s per task with 50 ms per request.
    let mut calibration = Calibration::default();
    for (bytes, requests) in [(100_000_000u64, 32u64), (1_000_000_000, 320), (10_000_000, 3200)] {
        let rounds = (requests as f64 / 32.0 / 8.0).ceil();
        let seconds = rounds * 0.05 + bytes as f64 / 32.0 / 2e6;
        calibration.record(Measurement { path: Path::RemoteStore, bytes, requests, tasks: 32, seconds });
    }
    let after = plan(&dag, &calibration.apply(&cluster), Objective::LeastTime).unwrap();
    assert_eq!(after.edges[0].chosen.path, Path::ObjectStore, "{}", explain(&after));
}

#[test]
fn dags_that_cannot_be_planned_say_which_stage_or_edge() {
    let cluster = cluster_with(&[Path::Direct, Path::ObjectStore]);
    // A cycle.
    let mut dag = two_stage(EdgeKind::Shuffle, GIB, DopBounds::fixed(4));
    dag.edges.push(edge(2, 2, 1, EdgeKind::Shuffle, GIB));
    let err = plan(&dag, &cluster, Objective::LeastTime).unwrap_err();
    assert!(matches!(err, Error::Cycle { .. }), "{err}");
    assert!(err.to_string().contains("stage-"), "{err}");
    // An edge to a stage that does not exist.
    let mut dag = two_stage(EdgeKind::Shuffle, GIB, DopBounds::fixed(4));
    dag.edges[0].to = StageId(9);
    let err = plan(&dag, &cluster, Objective::LeastTime).unwrap_err().to_string();
    assert!(err.contains("edge-1") && err.contains("stage-9"), "{err}");
    // A broadcast no function can hold.
    let dag = two_stage(EdgeKind::Broadcast, 64 * GIB, DopBounds::fixed(4));
    let err = plan(&dag, &cluster, Objective::LeastTime).unwrap_err();
    assert!(matches!(err, Error::NoPath { edge: EdgeId(1), .. }), "{err}");
    // A stage that runs past the duration cap even at its largest DoP.
    let mut dag = two_stage(EdgeKind::Shuffle, GIB, DopBounds::range(1, 2));
    dag.stages[0].source_rows = 1 << 40;
    let err = plan(&dag, &cluster, Objective::LeastTime).unwrap_err();
    assert!(matches!(err, Error::StageDoesNotFit { stage: StageId(1), .. }), "{err}");
    // A cluster with no paths.
    let err = plan(&two_stage(EdgeKind::Shuffle, GIB, DopBounds::fixed(4)), &cluster_with(&[]), Objective::LeastTime)
        .unwrap_err();
    assert!(err.to_string().contains("no path"), "{err}");
    // Empty DoP bounds.
    let err = plan(&two_stage(EdgeKind::Shuffle, GIB, DopBounds::range(4, 2)), &cluster, Objective::LeastTime)
        .unwrap_err()
        .to_string();
    assert!(err.contains("stage-1"), "{err}");
}

#[test]
fn plan_files_report_their_mistakes() {
    use baton_planner::spec::PlanSpec;
    let base = "[cluster]\nhosts = 1\ncores = 4\nmemory = \"8GiB\"\n";
    for (text, needle) in [
        (format!("{base}[[stage]]\nid = 1\ndop = 2\nspeed = 3\n"), "speed"),
        (format!("objective = \"fastest\"\n{base}"), "fastest"),
        (format!("{base}paths = [\"carrier-pigeon\"]\n"), "carrier-pigeon"),
        (format!("{base}[[edge]]\nid = 1\nfrom = 1\nto = 2\nkind = \"scatter\"\nbytes = 1\n"), "scatter"),
        (format!("objective = \"least-cost-within\"\n{base}"), "deadline_s"),
    ] {
        let err = PlanSpec::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}
