//! `baton bench`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    workload: Workload,
}

/// What every transfer benchmark takes.
#[derive(Debug, Args)]
struct RunArgs {
    /// Small sizes and few repetitions (a smoke run).
    #[arg(long)]
    quick: bool,
    /// Directory for the JSON and Markdown reports.
    #[arg(long, default_value = "baton-data/bench")]
    out: PathBuf,
    /// Directory on local disk for the node's flash tier and the file:// store.
    #[arg(long, default_value = "baton-data/bench-work")]
    work_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Path throughput (4 KiB to 256 MiB) and a 256 MiB Arrow object across processes.
    Paths {
        #[command(flatten)]
        run: RunArgs,
        /// Memory file system for shared-memory segments.
        #[arg(long, default_value = "/dev/shm")]
        shm_dir: PathBuf,
    },
    /// The direct path (QUIC) against Arrow Flight and raw TCP on loopback.
    Direct {
        #[command(flatten)]
        run: RunArgs,
    },
    /// The elastic store on loopback: 1 KiB and 1 MiB puts and gets against Redis 7 (started
    /// by the benchmark), two jobs multiplexed on one store, a node drained under load. Needs
    /// etcd and redis-server (Debian: etcd-server, redis-server).
    Store {
        #[command(flatten)]
        run: RunArgs,
        /// Requests in flight at once, for both systems.
        #[arg(long, default_value_t = 16)]
        clients: usize,
    },
    /// The invokers against each other: the local pool, workers over HTTPS and Lambda
    /// functions under `cargo lambda`'s emulator — the overhead of one invocation (p50, p99)
    /// and a sort end to end through each.
    Invokers {
        #[command(flatten)]
        run: RunArgs,
        /// Bytes to sort (a quick run sorts 64 MiB).
        #[arg(long, default_value = "1GiB")]
        size: baton_planner::ByteSize,
        /// Invocations timed per invoker.
        #[arg(long, default_value_t = 1000)]
        invocations: usize,
    },
    /// Sort of gensort input: the planned job, the object-store-only job and one process.
    Sort {
        /// Sizes to sort.
        #[arg(long, value_delimiter = ',', default_value = "1GiB,4GiB")]
        sizes: Vec<baton_planner::ByteSize>,
        /// Runs of each variant (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Directory for the JSON and Markdown reports.
        #[arg(long, default_value = "baton-data/bench")]
        out: PathBuf,
        /// Directory on local disk for inputs and outputs.
        #[arg(long, default_value = "baton-data/bench-work")]
        work_dir: PathBuf,
        /// Also run the shuffle through an S3 server started on 127.0.0.1 (s3s-fs under the
        /// work directory).
        #[arg(long)]
        local_s3: bool,
    },
    /// The 22 TPC-H queries: Baton on local workers, single-process DataFusion, and Baton with
    /// every exchange through the object store.
    Tpch {
        /// Scale factor.
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        /// Worker processes (and partitions per stage; default: one per core, at least 2).
        #[arg(long)]
        workers: Option<usize>,
        /// Queries to run, by number (default: all 22).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
        /// Runs of each variant of each query (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// The object store for the object-store-only variant (default: a file:// directory of
        /// the run; an s3:// bucket takes the usual AWS_* settings).
        #[arg(long, conflicts_with = "local_s3")]
        objects: Option<String>,
        /// Serve the object-store-only variant's store over the S3 protocol from this process
        /// (s3s-fs on 127.0.0.1, under the work dir).
        #[arg(long)]
        local_s3: bool,
        /// Also run datafusion-distributed and Ballista, their workers beside Baton's, and
        /// check their results equal Baton's (a build with `--features peers`).
        #[arg(long)]
        peers: bool,
        /// datafusion-distributed's scan bytes per task (default: its own, 16 MiB; smaller
        /// spreads small tables over the workers).
        #[arg(long, requires = "peers")]
        peer_scan_bytes: Option<baton_planner::ByteSize>,
        /// Each worker's memory limit (default 2GiB; the peers' workers get as much,
        /// DataFusion alone all of it).
        #[arg(long)]
        worker_memory: Option<baton_planner::ByteSize>,
        /// Directory for the JSON and Markdown reports.
        #[arg(long, default_value = "baton-data/bench")]
        out: PathBuf,
        /// Directory on local disk for the data set and the runs.
        #[arg(long, default_value = "baton-data/bench-work")]
        work_dir: PathBuf,
    },
    /// Jobs in a row with random SIGKILLs of workers, drivers and producers, then a count of
    /// the processes, shared memory, files and store bytes left behind (the goal: none), and a
    /// long-lived node's memory before and after.
    Soak {
        /// Rounds at most.
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        /// Seconds at most: no round starts after this.
        #[arg(long, default_value_t = 3600)]
        seconds: u64,
        /// Seed of the rounds' draw (which round kills what, and when).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Directory for the JSON and Markdown reports.
        #[arg(long, default_value = "baton-data/bench")]
        out: PathBuf,
        /// A directory for the soak's runs (a fresh one is made inside it).
        #[arg(long, default_value = "baton-data/bench-work")]
        work_dir: PathBuf,
    },
    /// Sort and TPC-H across emulated hosts (needs root): the planned job, every edge through
    /// an S3 host with the same link cap, through a remote-store host likewise, and every
    /// cross-host edge on direct; the sort's shuffle predicted and measured; requests as counted.
    Cluster {
        /// Emulated hosts.
        #[arg(long, default_value_t = 4)]
        hosts: usize,
        /// Each host's link, as tc writes rates.
        #[arg(long, default_value = "1gbit")]
        nic: String,
        /// Workers per host.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Each worker's memory limit.
        #[arg(long, default_value = "1GiB")]
        worker_memory: baton_planner::ByteSize,
        /// How much to sort: one sort per size.
        #[arg(long, value_delimiter = ',', default_value = "1GiB")]
        size: Vec<baton_planner::ByteSize>,
        /// Map tasks (and reduce tasks) of every sort (default: 8 a GiB, at least 4 a host).
        #[arg(long)]
        tasks: Option<u32>,
        /// TPC-H's scale factors (0: the sort alone).
        #[arg(long, value_delimiter = ',', default_value = "1")]
        sf: Vec<f64>,
        /// TPC-H queries, by number, comma separated (default: all 22).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
        /// Runs of each variant (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Directory for the JSON and Markdown reports.
        #[arg(long, default_value = "baton-data/bench")]
        out: PathBuf,
        /// Directory on local disk for the run (and the TPC-H data, kept for later runs).
        #[arg(long, default_value = "baton-data/bench-work")]
        work_dir: PathBuf,
    },
    /// A peer's server process (a datafusion-distributed worker, a Ballista scheduler or
    /// executor), started by the TPC-H benchmark: prints `listening ADDR`, serves until its
    /// stdin closes.
    #[cfg(feature = "peers")]
    #[command(hide = true)]
    PeerServe {
        /// What it serves.
        #[arg(value_parser = ["distributed-worker", "ballista-scheduler", "ballista-executor"])]
        role: String,
        /// The address to listen on (the port is chosen).
        #[arg(long)]
        ip: std::net::IpAddr,
        /// Its memory pool.
        #[arg(long, default_value = "2GiB")]
        memory: baton_planner::ByteSize,
        /// Tasks at once (a Ballista executor's vcores).
        #[arg(long, default_value_t = 1)]
        cores: usize,
        /// The Ballista scheduler (an executor's).
        #[arg(long, required_if_eq("role", "ballista-executor"))]
        scheduler: Option<std::net::SocketAddr>,
        /// Where a Ballista executor keeps its shuffle files.
        #[arg(long, required_if_eq("role", "ballista-executor"))]
        work_dir: Option<PathBuf>,
    },
    /// Serve a directory over the S3 protocol (s3s-fs), to clients signing with the benchmark's
    /// test credentials: the S3 host of emulated hosts (`cluster up --s3-host`).
    #[command(hide = true)]
    S3Server {
        /// Address to serve on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The directory served (its bucket is a directory in it).
        #[arg(long)]
        root: PathBuf,
        /// Answer `503 SlowDown` past S3's documented request rates per prefix.
        #[arg(long)]
        s3_rates: bool,
    },
    /// The whole suite on a profile, the variants taking turns: this machine's limits, then
    /// (local) paths, direct, store, sort, wordcount and TPC-H, or (emulated) the sort and
    /// TPC-H across emulated hosts at each host count. Writes report.json, report.md and
    /// plots/ (SVG and PNG) to --out.
    Suite {
        /// local (this machine), emulated (hosts in network namespaces; needs root) or ssh (the
        /// hosts of --inventory, deployed over ssh).
        #[arg(long, default_value = "local", value_parser = ["local", "emulated", "ssh"])]
        profile: String,
        /// The ssh profile's inventory (see `baton cluster deploy`).
        #[arg(long, required_if_eq("profile", "ssh"))]
        inventory: Option<PathBuf>,
        /// The smallest sizes and one run of each: a smoke run.
        #[arg(long)]
        quick: bool,
        /// Sizes to sort.
        #[arg(long, value_delimiter = ',', default_value = "1GiB,4GiB")]
        sort_sizes: Vec<baton_planner::ByteSize>,
        /// Text to count words in.
        #[arg(long, default_value = "1GiB")]
        text: baton_planner::ByteSize,
        /// TPC-H scale factors (0: no TPC-H).
        #[arg(long, value_delimiter = ',', default_value = "1,10")]
        sf: Vec<f64>,
        /// TPC-H queries, by number (default: all 22).
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
        /// Runs of each variant (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Host counts of the emulated profile.
        #[arg(long, value_delimiter = ',', default_value = "4")]
        hosts: Vec<usize>,
        /// The EC2 instance type whose baseline bandwidth caps each emulated host's link.
        #[arg(long, default_value = "c5n.2xlarge")]
        instance: String,
        /// Workers per emulated host.
        #[arg(long, default_value_t = 2)]
        workers_per_host: usize,
        /// Each worker's memory limit (TPC-H at scale factor 10 on 2 workers wanted 8GiB in the
        /// last run: Q18 through the object store).
        #[arg(long, default_value = "2GiB")]
        worker_memory: baton_planner::ByteSize,
        /// Directory for the report.
        #[arg(long, default_value = "baton-data/bench/suite")]
        out: PathBuf,
        /// Directory on local disk for the runs' data (kept between runs: inputs, TPC-H).
        #[arg(long, default_value = "baton-data/bench-work")]
        work_dir: PathBuf,
    },
    /// Draw a suite report's charts again (SVG and PNG) into a directory.
    Plot {
        /// The report.
        report: PathBuf,
        /// Where the charts go.
        #[arg(long, default_value = "plots")]
        out: PathBuf,
    },
    /// The change of every figure from one suite report to another.
    Compare {
        /// The first report (before).
        before: PathBuf,
        /// The second report (after).
        after: PathBuf,
    },
    /// Time to plan a 100-stage DAG with DoP up to 1000, under each objective.
    Plan {
        /// Plans per objective.
        #[arg(long, default_value_t = 20)]
        repeats: usize,
        /// Directory for the JSON and Markdown reports.
        #[arg(long, default_value = "baton-data/bench")]
        out: PathBuf,
    },
}

fn write_reports(out: &std::path::Path, name: &str, json: String, markdown: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join(format!("{name}.json")), json)?;
    std::fs::write(out.join(format!("{name}.md")), markdown)?;
    println!("{markdown}");
    println!("reports: {0}/{name}.json, {0}/{name}.md", out.display());
    Ok(())
}

/// A clear error for a TPC-H query number that does not exist.
fn known_queries(queries: &[usize]) -> anyhow::Result<()> {
    match queries.iter().find(|&&n| !(1..=baton_sql::tpch::QUERIES.len()).contains(&n)) {
        Some(n) => anyhow::bail!("there is no TPC-H query {n} (1 to {})", baton_sql::tpch::QUERIES.len()),
        None => Ok(()),
    }
}

fn warn_if_debug() {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; benchmark with `cargo run --release`");
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.workload {
        Workload::Paths { run: RunArgs { quick, out, work_dir }, shm_dir } => {
            if !quick {
                warn_if_debug();
            }
            let options = baton_bench::paths::PathsOptions {
                quick,
                exe: std::env::current_exe()?,
                work_dir: std::path::absolute(&work_dir)?,
                shm_dir,
            };
            let report = baton_bench::paths::run(&options).await?;
            let markdown = baton_bench::paths::markdown(&report);
            write_reports(&out, "paths", serde_json::to_string_pretty(&report)?, &markdown)
        }
        Workload::Store { run: RunArgs { quick, out, work_dir }, clients } => {
            if !quick {
                warn_if_debug();
            }
            let options = baton_bench::store::StoreOptions {
                quick,
                work_dir: std::path::absolute(&work_dir)?,
                exe: std::env::current_exe()?,
                clients,
            };
            let report = baton_bench::store::run(&options).await?;
            write_reports(&out, "store", serde_json::to_string_pretty(&report)?, &baton_bench::store::markdown(&report))
        }
        Workload::Invokers { run: RunArgs { quick, out, work_dir }, size, invocations } => {
            if !quick {
                warn_if_debug();
            }
            let options = baton_bench::invokers::InvokersOptions {
                quick,
                work_dir: std::path::absolute(&work_dir)?,
                exe: std::env::current_exe()?,
                sort_bytes: if quick { 64 << 20 } else { size.0 },
                invocations: if quick { 50 } else { invocations.max(1) },
            };
            let report = baton_bench::invokers::run(&options).await?;
            let markdown = baton_bench::invokers::markdown(&report);
            write_reports(&out, "invokers", serde_json::to_string_pretty(&report)?, &markdown)
        }
        Workload::Direct { run: RunArgs { quick, out, work_dir } } => {
            if !quick {
                warn_if_debug();
            }
            let options = baton_bench::direct::DirectOptions { quick, work_dir: std::path::absolute(&work_dir)? };
            let report = baton_bench::direct::run(&options).await?;
            write_reports(
                &out,
                "direct",
                serde_json::to_string_pretty(&report)?,
                &baton_bench::direct::markdown(&report),
            )
        }
        Workload::Sort { sizes, repeats, out, work_dir, local_s3 } => {
            warn_if_debug();
            let options = baton_bench::sort::SortOptions {
                exe: std::env::current_exe()?,
                sizes: sizes.iter().map(|s| s.0).collect(),
                repeats,
                work_dir: std::path::absolute(&work_dir)?,
                local_s3,
            };
            let report = tokio::task::spawn_blocking(move || baton_bench::sort::run(&options)).await??;
            write_reports(&out, "sort", serde_json::to_string_pretty(&report)?, &baton_bench::sort::markdown(&report))
        }
        Workload::Tpch {
            sf,
            workers,
            queries,
            repeats,
            objects,
            local_s3,
            peers,
            peer_scan_bytes,
            worker_memory,
            out,
            work_dir,
        } => {
            known_queries(&queries)?;
            warn_if_debug();
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let options = baton_bench::tpch::TpchOptions {
                exe: std::env::current_exe()?,
                sf,
                work_dir: std::path::absolute(&work_dir)?,
                workers: workers.unwrap_or(cores.max(2)),
                queries,
                repeats,
                objects,
                local_s3,
                peers,
                peer_scan_bytes: peer_scan_bytes.map(|b| b.0),
                worker_memory: worker_memory.map(|b| b.0),
            };
            let report = baton_bench::tpch::run(&options).await?;
            write_reports(&out, "tpch", serde_json::to_string_pretty(&report)?, &baton_bench::tpch::markdown(&report))
        }
        Workload::Soak { jobs, seconds, seed, out, work_dir } => {
            std::fs::create_dir_all(&work_dir).with_context(|| format!("cannot create {}", work_dir.display()))?;
            let work = tempfile::Builder::new().prefix("soak-").tempdir_in(std::path::absolute(&work_dir)?)?;
            let options = baton_bench::soak::SoakOptions {
                exe: std::env::current_exe()?,
                jobs,
                seconds,
                seed,
                work_dir: work.path().to_path_buf(),
            };
            let report = tokio::task::spawn_blocking(move || baton_bench::soak::run(&options)).await??;
            write_reports(&out, "soak", serde_json::to_string_pretty(&report)?, &baton_bench::soak::markdown(&report))?;
            if !report.clean() {
                // Kept for a look at what leaked.
                let kept = work.keep();
                anyhow::bail!("the soak left things behind (its directory is kept: {})", kept.display());
            }
            Ok(())
        }
        Workload::Cluster { hosts, nic, workers, worker_memory, size, tasks, sf, queries, repeats, out, work_dir } => {
            known_queries(&queries)?;
            warn_if_debug();
            let options = baton_bench::cluster::ClusterOptions {
                exe: std::env::current_exe()?,
                hosts,
                nic,
                workers,
                worker_memory: worker_memory.0,
                sorts: size
                    .iter()
                    .map(|s| (s.0, tasks.unwrap_or(((s.0 >> 27) as u32).max(4 * hosts as u32))))
                    .collect(),
                sfs: sf.into_iter().filter(|&s| s > 0.0).collect(),
                queries,
                repeats,
                work_dir: std::path::absolute(&work_dir)?,
                s3_rates: false,
                inventory: None,
            };
            let report = tokio::task::spawn_blocking(move || baton_bench::cluster::run(&options)).await??;
            let markdown = baton_bench::cluster::markdown(&report);
            write_reports(&out, "cluster", serde_json::to_string_pretty(&report)?, &markdown)?;
            match report.failed.iter().map(|(what, _)| what.as_str()).collect::<Vec<_>>() {
                failed if failed.is_empty() => Ok(()),
                failed => anyhow::bail!("{} failed (the report says why and has the rest)", failed.join(", ")),
            }
        }
        #[cfg(feature = "peers")]
        Workload::PeerServe { role, ip, memory, cores, scheduler, work_dir } => {
            use baton_bench::peers::serve::{Role, ServeOptions, serve};
            let role = match (role.as_str(), scheduler, work_dir) {
                ("distributed-worker", _, _) => Role::DistributedWorker,
                ("ballista-scheduler", _, _) => Role::BallistaScheduler,
                (_, Some(scheduler), Some(work_dir)) => Role::BallistaExecutor { scheduler, work_dir },
                _ => anyhow::bail!("a Ballista executor needs --scheduler and --work-dir"),
            };
            let options = ServeOptions { role, ip, memory: memory.0, cores };
            tokio::task::spawn_blocking(move || serve(options)).await?
        }
        Workload::S3Server { listen, root, s3_rates } => {
            use baton_connectors::testing::{RateLimits, start_limited_s3_on, start_s3_on};
            baton_fabric::private::ensure_dir(&root, "S3 server root")?;
            if !s3_rates {
                let addr = start_s3_on(&root, listen).await?;
                println!("serving {} over S3 on {addr}", root.display());
                std::future::pending::<()>().await;
            }
            let (addr, limiter) = start_limited_s3_on(&root, listen, RateLimits::S3).await?;
            println!("serving {} over S3 on {addr}, at S3's request rates per prefix", root.display());
            // What the limiter did, every ten seconds that it did something (into the host's log).
            let mut last = (0, 0);
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                let now = (limiter.admitted(), limiter.refused());
                if now != last {
                    println!("requests admitted {}, answered 503 SlowDown {}", now.0, now.1);
                    last = now;
                }
            }
        }
        Workload::Suite {
            profile,
            inventory,
            quick,
            sort_sizes,
            text,
            sf,
            queries,
            repeats,
            hosts,
            instance,
            workers_per_host,
            worker_memory,
            out,
            work_dir,
        } => {
            known_queries(&queries)?;
            if !quick {
                warn_if_debug();
            }
            let instance = baton_planner::prices::instance(&instance).with_context(|| {
                let known: Vec<&str> = baton_planner::prices::INSTANCES.iter().map(|i| i.name).collect();
                format!("unknown instance type {instance:?}: use one of {}", known.join(", "))
            })?;
            anyhow::ensure!(hosts.iter().all(|&h| h >= 1), "--hosts: every count must be at least 1");
            let options = baton_bench::suite::SuiteOptions {
                exe: std::env::current_exe()?,
                profile: match profile.as_str() {
                    "emulated" => baton_bench::suite::Profile::Emulated,
                    "ssh" => baton_bench::suite::Profile::Ssh,
                    _ => baton_bench::suite::Profile::Local,
                },
                inventory: inventory.map(std::path::absolute).transpose()?,
                out: std::path::absolute(&out)?,
                work_dir: std::path::absolute(&work_dir)?,
                quick,
                sort_sizes: if quick { vec![16 << 20] } else { sort_sizes.iter().map(|s| s.0).collect() },
                text_bytes: if quick { 4 << 20 } else { text.0 },
                sfs: if quick { vec![0.01] } else { sf.into_iter().filter(|&s| s > 0.0).collect() },
                queries: if quick && queries.is_empty() { vec![1, 3, 6] } else { queries },
                repeats: if quick { 1 } else { repeats.max(1) },
                hosts,
                instance,
                workers_per_host,
                worker_memory: worker_memory.0,
            };
            let report = baton_bench::suite::run(&options).await?;
            println!("{}", report.markdown());
            // The report has what ran; the run still fails for what did not.
            let failed: Vec<&str> = report.failed.iter().map(|f| f.what.as_str()).collect();
            anyhow::ensure!(
                failed.is_empty(),
                "{} part(s) of the suite failed ({}); the report has the rest",
                failed.len(),
                failed.join(", ")
            );
            Ok(())
        }
        Workload::Plot { report, out } => {
            let report = baton_bench::suite::report::Report::load(&report)?;
            for file in baton_bench::suite::plots::draw_all(&report, &out)? {
                println!("{}", file.display());
            }
            Ok(())
        }
        Workload::Compare { before, after } => {
            let before = baton_bench::suite::report::Report::load(&before)?;
            let after = baton_bench::suite::report::Report::load(&after)?;
            println!("{}", baton_bench::suite::compare::compare(&before, &after).markdown());
            Ok(())
        }
        Workload::Plan { repeats, out } => {
            warn_if_debug();
            let report = baton_bench::plan::run(repeats)?;
            write_reports(&out, "plan", serde_json::to_string_pretty(&report)?, &baton_bench::plan::markdown(&report))
        }
    }
}
