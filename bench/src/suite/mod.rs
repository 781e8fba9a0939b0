//! `baton bench suite`: one command runs the benchmarks of a profile, the variants taking
//! turns inside each, and writes one report — `report.json` (schema: [`report`]), `report.md`
//! and the charts under `plots/` (SVG and PNG). The run starts by measuring this machine's
//! limits ([`limits`]); throughput figures are also given as a fraction of theirs.
//!
//! Profiles:
//! - `local`: this machine — paths, direct, store, sort, wordcount, TPC-H.
//! - `emulated`: hosts in network namespaces (needs root), each host's link capped at an EC2
//!   instance type's baseline bandwidth ([`baton_planner::prices::INSTANCES`]): the sort and
//!   TPC-H across them, planned against object-store-only, remote-store-only and all-direct,
//!   for each host count asked for.
//! - `ssh`: the hosts of an inventory ([`baton_runtime::cluster::ssh`]), deployed over ssh
//!   (the binary copied, nodes and workers started, logs brought back, all removed after): the
//!   same jobs, their inputs and outputs in the inventory's object store.

pub mod compare;
pub mod limits;
pub mod plots;
pub mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use baton_planner::prices::Instance;

use crate::cost::Cost;
use crate::sort::human_bytes;
use report::{Better, Figure, Machine, Report, SCHEMA, Skipped, Versions};

/// Where the suite runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// This machine.
    Local,
    /// Hosts in network namespaces on this machine.
    Emulated,
    /// The hosts of an ssh inventory.
    Ssh,
}

impl Profile {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Local => "local",
            Profile::Emulated => "emulated",
            Profile::Ssh => "ssh",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// The `baton` binary.
    pub exe: PathBuf,
    /// The profile.
    pub profile: Profile,
    /// Where the report goes.
    pub out: PathBuf,
    /// Where the runs keep their data.
    pub work_dir: PathBuf,
    /// Smallest sizes, fewest repetitions: a smoke run of seconds to minutes.
    pub quick: bool,
    /// Sort sizes in bytes.
    pub sort_sizes: Vec<u64>,
    /// Bytes of text for wordcount.
    pub text_bytes: u64,
    /// TPC-H scale factors.
    pub sfs: Vec<f64>,
    /// TPC-H queries (all 22 when empty).
    pub queries: Vec<usize>,
    /// Runs of each variant.
    pub repeats: usize,
    /// Host counts (emulated).
    pub hosts: Vec<usize>,
    /// The instance type emulated hosts stand for.
    pub instance: Instance,
    /// Workers per emulated host.
    pub workers_per_host: usize,
    /// Each worker's memory limit (TPC-H's peers get as much per worker, DataFusion alone all
    /// of it).
    pub worker_memory: u64,
    /// The ssh profile's inventory.
    pub inventory: Option<PathBuf>,
}

/// Counts the parts as they run and says how far the run has got.
struct Progress {
    started: Instant,
    step: usize,
    steps: usize,
}

impl Progress {
    fn next(&mut self, what: &str) {
        self.step += 1;
        eprintln!("[{}/{}] {what} ({:.0} s so far)", self.step, self.steps, self.started.elapsed().as_secs_f64());
    }
}

/// The suite's state while it runs.
struct Run {
    report: Report,
    progress: Progress,
}

impl Run {
    fn skip(&mut self, what: &str, reason: impl std::fmt::Display) {
        eprintln!("skipped {what}: {reason}");
        self.report.skipped.push(Skipped { what: what.into(), reason: reason.to_string() });
    }

    /// Notes a part that failed; the suite goes on with the next.
    fn settle(&mut self, what: &str, done: anyhow::Result<()>) {
        if let Err(e) = done {
            eprintln!("{what} failed: {e:#}");
            self.report.failed.push(Skipped { what: what.into(), reason: format!("{e:#}") });
        }
    }

    fn part(&mut self, name: &str, value: &impl serde::Serialize) -> anyhow::Result<()> {
        self.report.parts.insert(name.into(), serde_json::to_value(value)?);
        Ok(())
    }

    fn dollars(&mut self, key: &str, label: &str, cost: Option<Cost>, chart_x: Option<(&str, f64)>) {
        if let Some(cost) = cost {
            let mut f = Figure::new(
                &format!("dollars/{key}"),
                &format!("{label}: dollars"),
                "$",
                Better::Lower,
                vec![cost.total()],
            );
            if let Some((series, x)) = chart_x {
                f = f.plotted("dollars", series, x);
            }
            self.report.figures.push(f);
        }
    }
}

/// Runs the suite; writes the report, its summary and its plots into `options.out`.
pub async fn run(options: &SuiteOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    baton_fabric::private::ensure_dir(&options.out, "report directory")?;
    baton_fabric::private::ensure_dir(&options.work_dir, "work directory")?;
    let steps = match options.profile {
        Profile::Local => 6 + options.sfs.len(),
        Profile::Emulated => 1 + options.hosts.len(),
        Profile::Ssh => 2,
    };
    let mut settings = BTreeMap::new();
    settings.insert("repeats".to_string(), options.repeats.to_string());
    settings
        .insert("sort".to_string(), options.sort_sizes.iter().map(|b| human_bytes(*b)).collect::<Vec<_>>().join(", "));
    settings.insert(
        "tpch scale factors".to_string(),
        options.sfs.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
    );
    if let Some(inventory) = &options.inventory {
        settings.insert("inventory".to_string(), inventory.display().to_string());
    }
    if options.profile == Profile::Emulated {
        settings
            .insert("hosts".to_string(), options.hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", "));
        settings.insert(
            "instance".to_string(),
            format!("{} ({} Gbit/s baseline)", options.instance.name, options.instance.baseline_gbit),
        );
    } else {
        settings.insert("wordcount".to_string(), human_bytes(options.text_bytes));
    }
    let mut run = Run {
        report: Report {
            schema: SCHEMA,
            profile: options.profile.name().into(),
            settings,
            started_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            seconds: 0.0,
            machine: Machine::this(),
            versions: Versions {
                baton: env!("CARGO_PKG_VERSION").into(),
                build: if cfg!(debug_assertions) { "debug" } else { "release" }.into(),
                peers: !crate::tpch::PEERS.is_empty(),
            },
            limits: Vec::new(),
            figures: Vec::new(),
            skipped: Vec::new(),
            failed: Vec::new(),
            parts: BTreeMap::new(),
        },
        progress: Progress { started, step: 0, steps },
    };
    if crate::tpch::PEERS.is_empty() {
        run.skip("TPC-H peers (datafusion-distributed, Ballista)", "this baton was built without `--features peers`");
    } else if options.profile == Profile::Ssh {
        run.skip(
            "TPC-H peers (datafusion-distributed, Ballista)",
            "the peers run in the local and emulated profiles (their processes are not deployed over ssh)",
        );
    }
    run.progress.next("this machine's limits");
    let work = options.work_dir.clone();
    let quick = options.quick;
    let (limits, skipped) = tokio::task::spawn_blocking(move || limits::measure(&work, quick)).await?;
    run.report.limits = limits;
    for (what, why) in skipped {
        run.skip(&what, why);
    }
    match options.profile {
        Profile::Local => local(options, &mut run).await?,
        Profile::Emulated | Profile::Ssh => emulated(options, &mut run).await?,
    }
    run.report.relate("paths/", limits::MEMCPY);
    run.report.relate("direct/", limits::LOOPBACK_TCP);
    run.report.seconds = started.elapsed().as_secs_f64();
    let report = run.report;
    report.save(&options.out)?;
    report::write_whole(&options.out.join("report.md"), report.markdown().as_bytes())?;
    let plots = plots::draw_all(&report, &options.out.join("plots"))?;
    eprintln!(
        "suite done in {:.0} s: {}/report.json, report.md and {} plots in {}/plots",
        report.seconds,
        options.out.display(),
        plots.len(),
        options.out.display()
    );
    Ok(report)
}

async fn local(options: &SuiteOptions, run: &mut Run) -> anyhow::Result<()> {
    let exe = options.exe.clone();
    let work_dir = std::path::absolute(&options.work_dir)?;

    run.progress.next("paths");
    let done = async {
        let paths = crate::paths::run(&crate::paths::PathsOptions {
            quick: options.quick,
            exe: exe.clone(),
            work_dir: work_dir.clone(),
            shm_dir: "/dev/shm".into(),
        })
        .await?;
        for row in &paths.throughput {
            let size = human_bytes_small(row.size);
            let samples = row.summary.seconds.iter().map(|s| row.size as f64 / s / 1e6).collect();
            run.report.figures.push(
                Figure::new(
                    &format!("paths/{}/{size}", row.path),
                    &format!("{} {size}", row.path),
                    "MB/s",
                    Better::Higher,
                    samples,
                )
                .plotted("path-throughput", &row.path, row.size as f64),
            );
        }
        run.part("paths", &paths)?;
        Ok(())
    }
    .await;
    run.settle("paths", done);

    run.progress.next("direct path against Arrow Flight and raw TCP");
    let done = async {
        let direct =
            crate::direct::run(&crate::direct::DirectOptions { quick: options.quick, work_dir: work_dir.clone() })
                .await?;
        for row in &direct.rows {
            let samples = row.get.seconds.iter().map(|s| direct.large_bytes as f64 / s / 1e6).collect();
            run.report.figures.push(Figure::new(
                &format!("direct/{}/get", row.transport),
                &format!("{}: get {}", row.transport, human_bytes_small(direct.large_bytes)),
                "MB/s",
                Better::Higher,
                samples,
            ));
            run.report.figures.push(Figure::new(
                &format!("direct-latency/{}/small", row.transport),
                &format!("{}: {} round trip", row.transport, human_bytes_small(direct.small_bytes)),
                "s",
                Better::Lower,
                row.small.seconds.clone(),
            ));
        }
        run.part("direct", &direct)?;
        Ok(())
    }
    .await;
    run.settle("direct", done);

    run.progress.next("elastic store against Redis");
    let done = async {
        match which(&["etcd", "redis-server"]) {
            Err(missing) => {
                run.skip("store", format!("{missing} is not installed (Debian: etcd-server, redis-server)"))
            }
            Ok(()) => {
                let store = crate::store::run(&crate::store::StoreOptions {
                    quick: options.quick,
                    work_dir: work_dir.clone(),
                    exe: exe.clone(),
                    clients: 16,
                })
                .await?;
                for row in &store.rows {
                    let size = human_bytes_small(row.size);
                    run.report.figures.push(Figure::new(
                        &format!("store/{}/{}/{size}", row.system, row.op),
                        &format!("{} {} {size}", row.system, row.op),
                        "MB/s",
                        Better::Higher,
                        vec![row.mb_per_s],
                    ));
                }
                if let Some(why) = &store.scaling.skipped {
                    run.skip("store scaling over emulated hosts", why);
                }
                run.part("store", &store)?;
            }
        }
        Ok(())
    }
    .await;
    run.settle("store", done);

    run.progress.next("sort");
    let done = async {
        let sort_options = crate::sort::SortOptions {
            exe: exe.clone(),
            sizes: options.sort_sizes.clone(),
            repeats: options.repeats,
            work_dir: work_dir.clone(),
            local_s3: false,
        };
        let sort = tokio::task::spawn_blocking(move || crate::sort::run(&sort_options)).await??;
        for size in &sort.sizes {
            let name = human_bytes(size.bytes);
            let gib = size.bytes as f64 / (1u64 << 30) as f64;
            for v in &size.variants {
                run.report.figures.push(
                    Figure::new(
                        &format!("sort/{name}/{}", v.name),
                        &format!("sort {name}, {}", v.name),
                        "s",
                        Better::Lower,
                        v.seconds.clone(),
                    )
                    .plotted("sort-size", &v.name, gib),
                );
                run.dollars(
                    &format!("sort {name}/{}", v.name),
                    &format!("sort {name}, {}", v.name),
                    v.dollars,
                    Some((&v.name, gib)),
                );
            }
        }
        run.part("sort", &sort)?;
        Ok(())
    }
    .await;
    run.settle("sort", done);

    run.progress.next("wordcount");
    let done = async {
        let wc_options = crate::wordcount::WordCountOptions {
            exe: exe.clone(),
            bytes: options.text_bytes,
            repeats: options.repeats,
            work_dir: work_dir.clone(),
        };
        let wc = tokio::task::spawn_blocking(move || crate::wordcount::run(&wc_options)).await??;
        let name = human_bytes(wc.bytes);
        for v in &wc.variants {
            run.report.figures.push(Figure::new(
                &format!("wordcount/{name}/{}", v.name),
                &format!("wordcount {name}, {}", v.name),
                "s",
                Better::Lower,
                v.seconds.clone(),
            ));
            run.dollars(
                &format!("wordcount {name}/{}", v.name),
                &format!("wordcount {name}, {}", v.name),
                v.dollars,
                None,
            );
        }
        run.part("wordcount", &wc)?;
        Ok(())
    }
    .await;
    run.settle("wordcount", done);

    for &sf in &options.sfs {
        run.progress.next(&format!("TPC-H at scale factor {sf}"));
        let done = async {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let tpch = crate::tpch::run(&crate::tpch::TpchOptions {
                exe: exe.clone(),
                sf,
                work_dir: work_dir.clone(),
                workers: cores.max(2),
                queries: options.queries.clone(),
                repeats: options.repeats,
                objects: None,
                local_s3: false,
                peers: !crate::tpch::PEERS.is_empty(),
                peer_scan_bytes: None,
                worker_memory: Some(options.worker_memory),
            })
            .await?;
            let chart = format!("tpch-sf{sf}");
            // Every variant's runs of a query: Baton's, its baselines', the peers'.
            let variants = |q: &crate::tpch::QueryReport| -> Vec<(String, Vec<f64>)> {
                let own = ["single-process DataFusion", "baton planned", "baton object-store only"];
                let own = own.iter().zip(&q.runs).map(|(v, runs)| (v.to_string(), runs.clone()));
                own.chain(q.peers.iter().map(|p| (p.name.clone(), p.runs.clone()))).collect()
            };
            for q in &tpch.queries {
                let number: f64 = q.name.trim_start_matches('q').parse().unwrap_or(0.0);
                for (variant, samples) in &variants(q) {
                    run.report.figures.push(
                        Figure::new(
                            &format!("tpch-sf{sf}/{}/{variant}", q.name),
                            &format!("TPC-H sf{sf} {} {variant}", q.name),
                            "s",
                            Better::Lower,
                            samples.clone(),
                        )
                        .plotted(&chart, variant, number),
                    );
                }
            }
            // Each variant's total over the queries, run by run.
            let mut totals: Vec<(String, Vec<f64>)> = Vec::new();
            for q in &tpch.queries {
                for (variant, runs) in variants(q) {
                    let sum = match totals.iter_mut().find(|(v, _)| *v == variant) {
                        Some((_, sum)) => sum,
                        None => {
                            totals.push((variant, vec![0.0; options.repeats.max(1)]));
                            &mut totals.last_mut().context("just pushed")?.1
                        }
                    };
                    for (a, b) in sum.iter_mut().zip(&runs) {
                        *a += b;
                    }
                }
            }
            for (variant, samples) in totals {
                run.report.figures.push(Figure::new(
                    &format!("tpch-sf{sf}/total/{variant}"),
                    &format!("TPC-H sf{sf} all queries, {variant}"),
                    "s",
                    Better::Lower,
                    samples,
                ));
            }
            for (i, variant) in ["baton planned", "baton object-store only"].iter().enumerate() {
                let mut cost = Cost::default();
                for q in &tpch.queries {
                    cost.add(q.dollars[i]);
                }
                run.dollars(
                    &format!("tpch-sf{sf}/{variant}"),
                    &format!("TPC-H sf{sf} all queries, {variant}"),
                    Some(cost),
                    None,
                );
            }
            run.part(&format!("tpch-sf{sf}"), &tpch)?;
            Ok(())
        }
        .await;
        run.settle(&format!("TPC-H at scale factor {sf}"), done);
    }
    Ok(())
}

async fn emulated(options: &SuiteOptions, run: &mut Run) -> anyhow::Result<()> {
    // A whole number of Mbit/s, as tc writes rates.
    let nic = format!("{}mbit", (options.instance.baseline_gbit * 1000.0).round() as u64);
    let ssh = options.profile == Profile::Ssh;
    let counts = if ssh {
        let inventory = options.inventory.as_deref().context("the ssh profile needs --inventory FILE")?;
        vec![baton_runtime::cluster::ssh::Inventory::load(inventory)?.hosts.len()]
    } else {
        options.hosts.clone()
    };
    for hosts in counts {
        if ssh {
            run.progress.next(&format!("{hosts} hosts over ssh"));
        } else {
            run.progress.next(&format!("{hosts} emulated {} hosts ({nic} links)", options.instance.name));
        }
        let done = async {
            let cluster_options = crate::cluster::ClusterOptions {
                exe: options.exe.clone(),
                hosts,
                nic: nic.clone(),
                workers: options.workers_per_host,
                worker_memory: options.worker_memory,
                // 8 map and 8 reduce tasks a GiB, at least 4 a host.
                sorts: options.sort_sizes.iter().map(|&b| (b, ((b >> 27) as u32).max(4 * hosts as u32))).collect(),
                sfs: options.sfs.clone(),
                queries: options.queries.clone(),
                repeats: options.repeats,
                work_dir: std::path::absolute(&options.work_dir)?,
                s3_rates: true,
                inventory: if ssh { options.inventory.clone() } else { None },
            };
            let report = tokio::task::spawn_blocking(move || crate::cluster::run(&cluster_options)).await??;
            for (what, reason) in &report.failed {
                eprintln!("{hosts} hosts: {what} failed: {reason}");
                run.report.failed.push(Skipped { what: format!("{hosts} hosts: {what}"), reason: reason.clone() });
            }
            for sort in &report.sorts {
                let name = human_bytes(sort.bytes);
                for v in &sort.variants {
                    run.report.figures.push(
                        Figure::new(
                            &format!("cluster-sort/{name}/{hosts} hosts/{}", v.name),
                            &format!("sort {name} on {hosts} hosts, {}", v.name),
                            "s",
                            Better::Lower,
                            v.seconds.clone(),
                        )
                        .plotted("sort-hosts", &format!("{}, {name}", v.name), hosts as f64),
                    );
                    for (i, (p, m)) in v.predicted.iter().zip(&v.measured).enumerate() {
                        run.report.figures.push(
                            Figure::new(
                                &format!("edges/{name}/{hosts} hosts/{}/run {i}", v.name),
                                &format!("sort {name} shuffle on {hosts} hosts, {}: measured s (run {i})", v.name),
                                "s",
                                Better::Lower,
                                vec![*m],
                            )
                            .plotted(
                                "edges",
                                &format!("{}, {name} ({hosts} hosts)", v.name),
                                *p,
                            ),
                        );
                    }
                }
            }
            for tpch in &report.tpch {
                let chart = format!("tpch-sf{}-{hosts}-hosts", tpch.sf);
                for q in &tpch.queries {
                    let number: f64 = q.name.trim_start_matches('q').parse().unwrap_or(0.0);
                    for (variant, s) in
                        tpch.variants.iter().zip(&q.seconds).chain(tpch.peers.iter().zip(&q.peer_seconds))
                    {
                        run.report.figures.push(
                            Figure::new(
                                &format!("cluster-tpch-sf{}/{hosts} hosts/{}/{variant}", tpch.sf, q.name),
                                &format!("TPC-H sf{} {} on {hosts} hosts, {variant}", tpch.sf, q.name),
                                "s",
                                Better::Lower,
                                vec![*s],
                            )
                            .plotted(&chart, variant, number),
                        );
                    }
                }
                for (variant, total) in
                    tpch.variants.iter().zip(&tpch.totals).chain(tpch.peers.iter().zip(&tpch.peer_totals))
                {
                    run.report.figures.push(Figure::new(
                        &format!("cluster-tpch-sf{}/{hosts} hosts/total/{variant}", tpch.sf),
                        &format!("TPC-H sf{} all queries on {hosts} hosts, {variant}", tpch.sf),
                        "s",
                        Better::Lower,
                        vec![*total],
                    ));
                }
            }
            run.part(&format!("cluster-{hosts}-hosts"), &report)?;
            Ok(())
        }
        .await;
        run.settle(&format!("{hosts} hosts"), done);
    }
    Ok(())
}

/// `4 KiB`, `1 MiB`, `1 GiB`.
fn human_bytes_small(bytes: u64) -> String {
    if bytes >= 1 << 30 { human_bytes(bytes) } else { crate::paths::human(bytes) }
}

/// Whether each program is on the PATH; the first missing one if not.
fn which(programs: &[&str]) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for p in programs {
        if !std::env::split_paths(&path).any(|d| d.join(p).is_file()) {
            return Err(p.to_string());
        }
    }
    Ok(())
}
