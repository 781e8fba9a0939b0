//! The search: parallelism per stage, placement of stage groups, and a path and topology per
//! edge, under one objective.
//!
//! - Edges (SONIC): each edge takes the best (path, topology) its ends allow, scored as
//!   dollars + λ·seconds; λ is "time first" for least time, "cost first" for least cost, and for
//!   a deadline it is bisected (log scale) for the cheapest plan that still meets it.
//! - Parallelism: coordinate descent over a ladder of DoPs per stage (bounds, powers of two,
//!   core counts), each move scored on the whole plan's critical path and dollars.
//! - Placement (Ditto): the heaviest edges first, a producer's and consumer's stage groups are
//!   put on one host when cores and memory allow — clamping their DoP to the host's cores if
//!   that is what it takes — and kept there only if the whole plan improves.

use std::collections::BTreeSet;

use crate::Path;
use crate::cluster::ClusterModel;
use crate::dag::{Checked, EdgeKind};
use crate::error::{Error, Result};
use crate::estimate::{Estimate, Limits, estimate};
use crate::ids::HostId;
use crate::plan::{Objective, Placement};
use crate::topology::Topology;

/// How edges weigh seconds against dollars.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Weigh {
    TimeFirst,
    CostFirst,
    /// Dollars per second.
    Weighted(f64),
}

impl Weigh {
    /// Smaller is better; fewer requests break ties.
    fn key(self, e: &Estimate) -> (f64, f64, u64) {
        let requests = e.requests.writes + e.requests.reads;
        match self {
            Weigh::TimeFirst => (e.time_s, e.dollars, requests),
            Weigh::CostFirst => (e.dollars, e.time_s, requests),
            Weigh::Weighted(lambda) => (e.dollars + lambda * e.time_s, e.time_s, requests),
        }
    }
}

/// One candidate plan's state.
#[derive(Clone, Debug)]
pub(crate) struct State {
    pub dop: Vec<u32>,
    pub place: Vec<Placement>,
    pub choice: Vec<Estimate>,
    pub stage_time: Vec<f64>,
    pub stage_dollars: Vec<f64>,
    pub time_s: f64,
    pub dollars: f64,
    pub weigh: Weigh,
    /// Scratch space for the critical path.
    finish: Vec<f64>,
}

pub(crate) struct Search<'a> {
    pub c: &'a Checked<'a>,
    pub cluster: &'a ClusterModel,
    pub objective: Objective,
    adjacent: Vec<Vec<usize>>,
    ladder: Vec<Vec<u32>>,
}

fn dop_ladder(min: u32, max: u32, cores: &[u32]) -> Vec<u32> {
    let mut set = BTreeSet::from([min, max]);
    let mut p = 1u32;
    while p < max {
        if p > min {
            set.insert(p);
        }
        p = p.saturating_mul(2);
    }
    for &c in cores {
        if (min..=max).contains(&c) {
            set.insert(c);
        }
    }
    set.into_iter().collect()
}

impl<'a> Search<'a> {
    pub fn new(c: &'a Checked<'a>, cluster: &'a ClusterModel, objective: Objective) -> Self {
        let mut adjacent = vec![Vec::new(); c.dag.stages.len()];
        for (e, &(from, to)) in c.ends.iter().enumerate() {
            adjacent[from].push(e);
            adjacent[to].push(e);
        }
        let mut cores: Vec<u32> = cluster.hosts.iter().map(|h| h.cores).collect();
        cores.push(u32::try_from(cluster.total_cores()).unwrap_or(u32::MAX));
        let ladder = c.dag.stages.iter().map(|s| dop_ladder(s.dop.min, s.dop.max, &cores)).collect();
        Search { c, cluster, objective, adjacent, ladder }
    }

    fn key(&self, st: &State) -> (u8, f64, f64) {
        self.objective.key(st.time_s, st.dollars)
    }

    /// Why `path` cannot carry edge `e` in state `st`, or `None` if it can.
    pub fn ruled_out(&self, st: &State, e: usize, path: Path) -> Option<&'static str> {
        let edge = &self.c.dag.edges[e];
        let (from, to) = self.c.ends[e];
        let rdma = |p: Placement| match p {
            Placement::Spread => self.cluster.hosts.iter().all(|h| h.rdma),
            Placement::Host(h) => self.cluster.hosts.iter().any(|x| x.id == h && x.rdma),
        };
        if self.cluster.path(path).is_none() {
            return Some("the cluster does not have it");
        }
        match path {
            Path::VmLocal => match (st.place[from], st.place[to]) {
                (Placement::Host(a), Placement::Host(b)) if a == b => None,
                _ => Some("producer and consumer are not placed on one host"),
            },
            Path::Direct if !(self.cluster.nodes_reachable || edge.pipelined) => {
                Some("the consumer starts after the producer ends and no node keeps its output")
            }
            Path::RdmaMap if !(rdma(st.place[from]) && rdma(st.place[to])) => {
                Some("the hosts of producer and consumer lack RDMA NICs")
            }
            _ => None,
        }
    }

    fn nic(&self, place: Placement) -> f64 {
        match place {
            Placement::Spread => self.cluster.hosts.iter().map(|h| h.nic_bandwidth).sum(),
            Placement::Host(h) => self.cluster.hosts.iter().find(|x| x.id == h).map_or(0.0, |x| x.nic_bandwidth),
        }
    }

    fn limits(&self, st: &State, e: usize, path: Path) -> Limits {
        let (from, to) = self.c.ends[e];
        let room = match (path, st.place[from]) {
            (Path::VmLocal, Placement::Host(h)) => self.cluster.hosts.iter().find(|x| x.id == h).map(|host| {
                // Tasks beyond the host's cores run in waves: at most `cores` hold memory at once.
                let at_once = st.dop[from].max(st.dop[to]).min(host.cores.max(1));
                let functions = u64::from(at_once) * self.cluster.function.memory;
                host.memory.saturating_sub(functions)
            }),
            _ => self.cluster.path(path).and_then(|m| m.capacity),
        };
        Limits { room, send_bandwidth: self.nic(st.place[from]), receive_bandwidth: self.nic(st.place[to]) }
    }

    /// Every option edge `e` has in state `st`.
    pub fn options(&self, st: &State, e: usize) -> Vec<Estimate> {
        let mut out = Vec::new();
        self.each_option(st, e, |est| out.push(est));
        out
    }

    fn each_option(&self, st: &State, e: usize, mut f: impl FnMut(Estimate)) {
        let edge = &self.c.dag.edges[e];
        let (from, to) = self.c.ends[e];
        for model in &self.cluster.paths {
            if self.ruled_out(st, e, model.path).is_some() {
                continue;
            }
            let limits = self.limits(st, e, model.path);
            for &topology in Topology::candidates(edge.kind) {
                if let Some(est) = estimate(self.cluster, model.path, topology, edge, st.dop[from], st.dop[to], limits)
                {
                    f(est);
                }
            }
        }
    }

    fn choose(&self, st: &State, e: usize) -> Result<Estimate> {
        let edge = &self.c.dag.edges[e];
        if edge.kind == EdgeKind::Broadcast && edge.bytes > self.cluster.function.memory {
            return Err(Error::NoPath {
                edge: edge.id,
                reason: format!(
                    "every consumer task must hold all {} bytes of a broadcast, and a function has {}",
                    edge.bytes, self.cluster.function.memory
                ),
            });
        }
        let mut best: Option<(Estimate, (f64, f64, u64))> = None;
        self.each_option(st, e, |est| {
            let key = st.weigh.key(&est);
            if best.as_ref().is_none_or(|(_, k)| key < *k) {
                best = Some((est, key));
            }
        });
        best.map(|(est, _)| est).ok_or_else(|| {
            let reasons: Vec<String> = crate::Path::ALL
                .iter()
                .map(|&p| match self.ruled_out(st, e, p) {
                    Some(why) => format!("{}: {why}", p.name()),
                    None => format!("{}: cannot carry it", p.name()),
                })
                .collect();
            Error::NoPath { edge: edge.id, reason: reasons.join("; ") }
        })
    }

    /// Seconds and dollars of stage `s` at its DoP and placement; `None` if a task would run
    /// past the function duration cap.
    fn stage_cost(&self, st: &State, s: usize) -> Option<(f64, f64)> {
        let stage = &self.c.dag.stages[s];
        let (mut rows, mut bytes, mut bc_rows, mut bc_bytes) = (stage.source_rows, stage.source_bytes, 0u64, 0u64);
        for &e in &self.c.incoming[s] {
            let edge = &self.c.dag.edges[e];
            if edge.kind == EdgeKind::Broadcast {
                bc_rows += edge.rows;
                bc_bytes += edge.bytes;
            } else {
                rows += edge.rows;
                bytes += edge.bytes;
            }
        }
        let c = stage.compute;
        let divisible = rows as f64 * c.per_row_s + bytes as f64 * c.per_byte_s;
        let each = bc_rows as f64 * c.per_row_s + bc_bytes as f64 * c.per_byte_s;
        let d = st.dop[s].max(1);
        let f = &self.cluster.function;
        let task_s = f.startup_s + divisible / f64::from(d) + each;
        if task_s > f.duration_cap_s {
            return None;
        }
        let cores = match st.place[s] {
            Placement::Spread => self.cluster.total_cores(),
            Placement::Host(h) => self.cluster.hosts.iter().find(|x| x.id == h).map_or(1, |x| u64::from(x.cores)),
        }
        .max(1);
        let waves = u64::from(d).div_ceil(cores) as f64;
        let dollars = f64::from(d) * task_s * (f.memory as f64 / 1e9) * f.price_per_gb_s;
        Some((waves * task_s, dollars))
    }

    /// Recomputes the costs of `stages`; `false` if one is infeasible.
    fn restage(&self, st: &mut State, stages: &[usize]) -> bool {
        for &s in stages {
            let Some((time, cost)) = self.stage_cost(st, s) else { return false };
            st.stage_time[s] = time;
            st.stage_dollars[s] = cost;
        }
        true
    }

    /// Recomputes the critical path and the dollars from the cached stage costs and choices.
    fn critical_path(&self, st: &mut State) {
        let mut finish = std::mem::take(&mut st.finish);
        finish.clear();
        finish.resize(self.c.dag.stages.len(), 0.0);
        for &s in &self.c.order {
            let start =
                self.c.incoming[s].iter().map(|&e| finish[self.c.ends[e].0] + st.choice[e].time_s).fold(0.0, f64::max);
            finish[s] = start + st.stage_time[s];
        }
        st.time_s = finish.iter().copied().fold(0.0, f64::max);
        st.dollars = st.stage_dollars.iter().sum::<f64>() + st.choice.iter().map(|e| e.dollars).sum::<f64>();
        st.finish = finish;
    }

    /// Recomputes every stage's cost and the critical path; `false` if a stage is infeasible.
    fn totals(&self, st: &mut State) -> bool {
        let all: Vec<usize> = (0..self.c.dag.stages.len()).collect();
        if !self.restage(st, &all) {
            return false;
        }
        self.critical_path(st);
        true
    }

    fn rechoose(&self, st: &mut State, edges: &[usize]) -> Result<()> {
        for &e in edges {
            st.choice[e] = self.choose(st, e)?;
        }
        Ok(())
    }

    /// A starting state: each stage at the DoP best for it alone, spread (on a cluster of
    /// one host, spread is on that host).
    fn initial(&self, weigh: Weigh) -> Result<State> {
        let n = self.c.dag.stages.len();
        let start = match self.cluster.hosts.as_slice() {
            [only] => Placement::Host(only.id),
            _ => Placement::Spread,
        };
        let mut st = State {
            dop: self.c.dag.stages.iter().map(|s| s.dop.min).collect(),
            place: vec![start; n],
            choice: Vec::new(),
            stage_time: vec![0.0; n],
            stage_dollars: vec![0.0; n],
            time_s: 0.0,
            dollars: 0.0,
            weigh,
            finish: Vec::new(),
        };
        for s in 0..n {
            let mut best: Option<(u32, (u8, f64, f64))> = None;
            for &d in &self.ladder[s] {
                st.dop[s] = d;
                if let Some((t, c)) = self.stage_cost(&st, s) {
                    let key = self.objective.key(t, c);
                    if best.is_none_or(|(_, k)| key < k) {
                        best = Some((d, key));
                    }
                }
            }
            let Some((d, _)) = best else {
                let stage = &self.c.dag.stages[s];
                return Err(Error::StageDoesNotFit {
                    stage: stage.id,
                    reason: format!(
                        "even at {} tasks a task runs past the function duration cap of {} s",
                        stage.dop.max, self.cluster.function.duration_cap_s
                    ),
                });
            };
            st.dop[s] = d;
        }
        st.choice = (0..self.c.dag.edges.len()).map(|e| self.choose(&st, e)).collect::<Result<_>>()?;
        if !self.totals(&mut st) {
            return Err(Error::Invalid { what: "plan".into(), reason: "no feasible starting point".into() });
        }
        Ok(st)
    }

    /// Applies `dop` and `place` to `stages` (in that order); keeps the change if the whole
    /// plan is better under the objective, and undoes it otherwise.
    fn try_change(&self, st: &mut State, stages: &[usize], dop: &[u32], place: &[Placement]) -> bool {
        let mut edges: Vec<usize> = stages.iter().flat_map(|&s| self.adjacent[s].iter().copied()).collect();
        edges.sort_unstable();
        edges.dedup();
        let saved_stages: Vec<(u32, Placement, f64, f64)> =
            stages.iter().map(|&s| (st.dop[s], st.place[s], st.stage_time[s], st.stage_dollars[s])).collect();
        let saved_edges: Vec<Estimate> = edges.iter().map(|&e| st.choice[e]).collect();
        let (time_s, dollars) = (st.time_s, st.dollars);
        let before = self.key(st);
        for (i, &s) in stages.iter().enumerate() {
            st.dop[s] = dop[i];
            st.place[s] = place[i];
        }
        let ok = self.rechoose(st, &edges).is_ok() && self.restage(st, stages);
        if ok {
            self.critical_path(st);
            if self.key(st) < before {
                return true;
            }
        }
        for (i, &s) in stages.iter().enumerate() {
            (st.dop[s], st.place[s], st.stage_time[s], st.stage_dollars[s]) = saved_stages[i];
        }
        for (i, &e) in edges.iter().enumerate() {
            st.choice[e] = saved_edges[i];
        }
        (st.time_s, st.dollars) = (time_s, dollars);
        false
    }

    fn descend(&self, st: &mut State, rounds: usize) {
        for _ in 0..rounds {
            let mut moved = false;
            for &s in &self.c.order {
                for &d in &self.ladder[s] {
                    if d != st.dop[s] {
                        let place = st.place[s];
                        moved |= self.try_change(st, &[s], &[d], &[place]);
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn group_of(uf: &mut [usize], s: usize) -> usize {
        let mut r = s;
        while uf[r] != r {
            r = uf[r];
        }
        let mut x = s;
        while uf[x] != r {
            let next = uf[x];
            uf[x] = r;
            x = next;
        }
        r
    }

    /// Whether every host holds what is placed on it: the largest DoP of each group (up to
    /// the host's cores; more run in waves) in cores, and that many functions plus the group's
    /// internal edges in memory.
    fn fits(&self, dop: &[u32], place: &[Placement], uf: &mut [usize]) -> bool {
        let n = self.c.dag.stages.len();
        let mut groups: std::collections::BTreeMap<usize, (HostId, u32, u64)> = Default::default();
        for s in 0..n {
            if let Placement::Host(h) = place[s] {
                let g = Self::group_of(uf, s);
                let entry = groups.entry(g).or_insert((h, 0, 0));
                entry.1 = entry.1.max(dop[s]);
            }
        }
        for (e, &(from, to)) in self.c.ends.iter().enumerate() {
            if let (Placement::Host(a), Placement::Host(b)) = (place[from], place[to])
                && a == b
            {
                let g = Self::group_of(uf, from);
                if let Some(entry) = groups.get_mut(&g) {
                    entry.2 += self.c.dag.edges[e].bytes;
                }
            }
        }
        self.cluster.hosts.iter().all(|host| {
            // A group with more tasks than cores runs them in waves: it holds the cores, and
            // the memory of that many functions, at once.
            let (cores, memory) = groups.values().filter(|(h, _, _)| *h == host.id).fold((0u64, 0u64), |acc, g| {
                let at_once = u64::from(g.1.min(host.cores.max(1)));
                (acc.0 + at_once, acc.1 + at_once * self.cluster.function.memory + g.2)
            });
            cores <= u64::from(host.cores) && memory <= host.memory
        })
    }

    fn place(&self, st: &mut State) {
        if self.cluster.path(Path::VmLocal).is_none() {
            return;
        }
        let n = self.c.dag.stages.len();
        let mut uf: Vec<usize> = (0..n).collect();
        let mut edges: Vec<usize> = (0..self.c.dag.edges.len()).collect();
        edges.sort_by_key(|&e| (std::cmp::Reverse(self.c.dag.edges[e].bytes), e));
        for e in edges {
            let (from, to) = self.c.ends[e];
            let (ga, gb) = (Self::group_of(&mut uf, from), Self::group_of(&mut uf, to));
            if ga == gb {
                continue;
            }
            let members: Vec<usize> = (0..n).filter(|&s| [ga, gb].contains(&Self::group_of(&mut uf, s))).collect();
            let placed: BTreeSet<HostId> = members
                .iter()
                .filter_map(|&s| match st.place[s] {
                    Placement::Host(h) => Some(h),
                    Placement::Spread => None,
                })
                .collect();
            let hosts: Vec<HostId> = match placed.len() {
                0 => self.distinct_hosts(st),
                1 => placed.into_iter().collect(),
                _ => continue,
            };
            'hosts: for h in hosts {
                let cores = self.cluster.hosts.iter().find(|x| x.id == h).map_or(0, |x| x.cores);
                for clamp in [false, true] {
                    let mut trial_uf = uf.clone();
                    trial_uf[gb] = ga;
                    let dop: Vec<u32> = members
                        .iter()
                        .map(|&s| {
                            let bounds = self.c.dag.stages[s].dop;
                            if clamp { st.dop[s].min(cores).max(bounds.min) } else { st.dop[s] }
                        })
                        .collect();
                    let place = vec![Placement::Host(h); members.len()];
                    let (mut all_dop, mut all_place) = (st.dop.clone(), st.place.clone());
                    for (i, &s) in members.iter().enumerate() {
                        all_dop[s] = dop[i];
                        all_place[s] = place[i];
                    }
                    if !self.fits(&all_dop, &all_place, &mut trial_uf) {
                        continue;
                    }
                    if self.try_change(st, &members, &dop, &place) {
                        uf = trial_uf;
                        break 'hosts;
                    }
                }
            }
        }
    }

    /// One host of each shape (cores, memory, NIC, RDMA), the least loaded of its shape first.
    fn distinct_hosts(&self, st: &State) -> Vec<HostId> {
        let mut load: std::collections::BTreeMap<HostId, u64> = Default::default();
        for (s, p) in st.place.iter().enumerate() {
            if let Placement::Host(h) = p {
                *load.entry(*h).or_default() += u64::from(st.dop[s]);
            }
        }
        let mut hosts: Vec<&crate::cluster::Host> = self.cluster.hosts.iter().collect();
        hosts.sort_by_key(|h| (load.get(&h.id).copied().unwrap_or(0), h.id));
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for h in hosts {
            let shape = (h.cores, h.memory, h.nic_bandwidth.to_bits(), h.rdma);
            if !seen.contains(&shape) {
                seen.push(shape);
                out.push(h.id);
            }
        }
        out
    }

    /// The best state found under the objective.
    pub fn run(&self) -> Result<State> {
        match self.objective {
            Objective::LeastTime => self.run_with(Weigh::TimeFirst, None),
            Objective::LeastCost => self.run_with(Weigh::CostFirst, None),
            Objective::LeastCostWithin { deadline_s } => {
                let cheap = self.run_with(Weigh::CostFirst, None)?;
                if cheap.time_s <= deadline_s {
                    return Ok(cheap);
                }
                let fast = self.run_with(Weigh::TimeFirst, Some(&cheap))?;
                if fast.time_s > deadline_s {
                    return Ok(fast);
                }
                // Bisect the price of a second (log scale) for the cheapest plan that still
                // meets the deadline, each search starting where the last one ended.
                let (mut lo, mut hi) = (-9.0f64, 0.0f64);
                let mut best = fast;
                for _ in 0..4 {
                    let mid = (lo + hi) / 2.0;
                    let st = self.run_with(Weigh::Weighted(10f64.powf(mid)), Some(&best))?;
                    if st.time_s <= deadline_s {
                        hi = mid;
                        if self.key(&st) < self.key(&best) {
                            best = st;
                        }
                    } else {
                        lo = mid;
                    }
                }
                Ok(best)
            }
        }
    }

    /// Searches with edges weighed by `weigh`, from scratch or from `start`'s parallelism and
    /// placement.
    fn run_with(&self, weigh: Weigh, start: Option<&State>) -> Result<State> {
        let mut st = match start {
            None => self.initial(weigh)?,
            Some(from) => {
                let mut st = from.clone();
                st.weigh = weigh;
                let all: Vec<usize> = (0..self.c.dag.edges.len()).collect();
                self.rechoose(&mut st, &all)?;
                self.critical_path(&mut st);
                st
            }
        };
        self.descend(&mut st, 3);
        self.place(&mut st);
        self.descend(&mut st, 1);
        Ok(st)
    }
}
