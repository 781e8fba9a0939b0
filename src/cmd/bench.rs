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
        /// Sizes to sort, in GiB.
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        sizes: Vec<u64>,
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
        /// How much to sort.
        #[arg(long, default_value = "1GiB")]
        size: baton_planner::ByteSize,
        /// Map tasks (and reduce tasks).
        #[arg(long, default_value_t = 16)]
        tasks: u32,
        /// TPC-H's scale factor (0: the sort alone).
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
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
                sizes_gib: sizes,
                repeats,
                work_dir: std::path::absolute(&work_dir)?,
                local_s3,
            };
            let report = tokio::task::spawn_blocking(move || baton_bench::sort::run(&options)).await??;
            write_reports(&out, "sort", serde_json::to_string_pretty(&report)?, &baton_bench::sort::markdown(&report))
        }
        Workload::Tpch { sf, workers, queries, repeats, objects, local_s3, out, work_dir } => {
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
        Workload::Cluster { hosts, nic, workers, size, tasks, sf, queries, repeats, out, work_dir } => {
            warn_if_debug();
            let options = baton_bench::cluster::ClusterOptions {
                exe: std::env::current_exe()?,
                hosts,
                nic,
                workers,
                bytes: size.0,
                tasks,
                sf,
                queries,
                repeats,
                work_dir: std::path::absolute(&work_dir)?,
            };
            let report = tokio::task::spawn_blocking(move || baton_bench::cluster::run(&options)).await??;
            let markdown = baton_bench::cluster::markdown(&report);
            write_reports(&out, "cluster", serde_json::to_string_pretty(&report)?, &markdown)
        }
        Workload::S3Server { listen, root } => {
            baton_fabric::private::ensure_dir(&root, "S3 server root")?;
            let addr = baton_connectors::testing::start_s3_on(&root, listen).await?;
            println!("serving {} over S3 on {addr}", root.display());
            std::future::pending::<()>().await;
            Ok(())
        }
        Workload::Plan { repeats, out } => {
            warn_if_debug();
            let report = baton_bench::plan::run(repeats)?;
            write_reports(&out, "plan", serde_json::to_string_pretty(&report)?, &baton_bench::plan::markdown(&report))
        }
    }
}
