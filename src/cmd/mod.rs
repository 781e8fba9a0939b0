//! The subcommands.

mod bench;
mod calibrate;
mod cluster;
mod demo;
mod hosts;
mod invoke;
mod mapreduce;
mod node;
mod objects;
mod plan;
mod sql;
mod store;
mod tpch;
mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Baton: the data-passing fabric for serverless analytics.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: this host's memory and flash tiers, served to local functions.
    Node(node::NodeArgs),
    /// Hosts: emulate some on this machine (up, down), or see a cluster's nodes (status).
    Cluster(hosts::ClusterArgs),
    /// The elastic store: its storage nodes, as its etcd knows them (status).
    Store(store::StoreArgs),
    /// Measure this machine's paths (VM-local, loopback QUIC, the object store) for the planner
    /// of the embedded default; kept in the data directory's calibration.toml.
    Calibrate(calibrate::CalibrateArgs),
    /// Make a cluster's TLS material: a CA, a node certificate, and the key pair that signs tokens.
    Certs(cluster::CertsArgs),
    /// Mint a job's capability token with the cluster's token key (scopes and audience optional).
    Token(cluster::TokenArgs),
    /// Open, renew or end a job on a node.
    Job(objects::JobArgs),
    /// Write a file (or stdin) as an object of a job.
    Put(objects::PutArgs),
    /// Read an object, check it, and write its contents to a file (or stdout).
    Get(objects::GetArgs),
    /// List a job's objects.
    Ls(objects::LsArgs),
    /// Delete an object.
    Rm(objects::RmArgs),
    /// Show a node's tiers and jobs.
    Status(objects::NodeOpt),
    /// Plan a DAG described in TOML: each edge's path and topology, each stage's parallelism.
    Plan(plan::PlanArgs),
    /// Pass generated Arrow data between two worker processes over each path, and measure it.
    Demo(demo::DemoArgs),
    /// Write sort-benchmark input: gensort 1.5's binary records (100 bytes, 10-byte keys).
    Gensort(mapreduce::GensortArgs),
    /// Sort 100-byte records by key on worker processes, the shuffle on the planned path.
    Sort(mapreduce::SortArgs),
    /// Count the words of text files on worker processes.
    Wordcount(mapreduce::WordCountArgs),
    /// TPC-H data: `baton tpch gen --sf 1 --out DIR` writes the tables as Parquet.
    Tpch(tpch::TpchArgs),
    /// Run a SQL query on worker processes: stages of tasks, exchanges on the planned paths.
    Sql(sql::SqlArgs),
    /// Generate a small TPC-H data set (or reuse it) and run a few queries on local workers.
    Quickstart(sql::QuickstartArgs),
    /// Serve task invocations over HTTP(S), one at a time, like a function instance.
    Worker(worker::WorkerArgs),
    /// Serve task invocations as an AWS Lambda function (from the Lambda runtime API; a
    /// provided.al2023 bootstrap runs this).
    Lambda(worker::LambdaArgs),
    /// Run a benchmark.
    Bench(bench::BenchArgs),
    /// Run one producer or consumer (started by `demo` and `bench`).
    #[command(name = "__worker", hide = true)]
    BenchWorker {
        /// The worker's instructions, as JSON.
        json: String,
    },
}

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Node(args) => {
            keep_metrics();
            node::run(args).await
        }
        Command::Cluster(args) => hosts::run(args).await,
        Command::Store(args) => store::run(args).await,
        Command::Calibrate(args) => calibrate::run(args).await,
        Command::Certs(args) => cluster::certs(args),
        Command::Token(args) => cluster::token(args),
        Command::Job(args) => objects::job(args).await,
        Command::Put(args) => objects::put(args).await,
        Command::Get(args) => objects::get(args).await,
        Command::Ls(args) => objects::ls(args).await,
        Command::Rm(args) => objects::rm(args).await,
        Command::Status(args) => objects::status(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Demo(args) => until_stopped(demo::run(args)).await,
        Command::Bench(args) => until_stopped(bench::run(args)).await,
        Command::Gensort(args) => mapreduce::gensort(args),
        Command::Sort(args) => until_stopped(mapreduce::sort(args)).await,
        Command::Wordcount(args) => until_stopped(mapreduce::wordcount(args)).await,
        Command::Worker(args) => {
            keep_metrics();
            worker::run(args).await
        }
        Command::Lambda(args) => worker::lambda(args).await,
        Command::Sql(args) => until_stopped(sql::sql(args)).await,
        Command::Quickstart(args) => until_stopped(sql::quickstart(args)).await,
        Command::Tpch(args) => tokio::task::spawn_blocking(move || tpch::run(args)).await?,
        Command::BenchWorker { json } => baton_bench::worker::main(&json).await,
    }
}

/// Runs `job` until it ends or the process is told to stop (SIGINT, SIGTERM). A stopped job's
/// future is dropped, and with it its node, workers and data, before the process exits.
async fn until_stopped(job: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::select! {
        result = job => result,
        signal = shutdown_signal() => Err(anyhow::anyhow!("stopped by {signal}; the job's data and workers are gone")),
    }
}

/// Waits for SIGINT or SIGTERM; returns which came.
pub(crate) async fn shutdown_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Keeps this process's metrics for Prometheus (a node and a worker serve them).
pub(crate) fn keep_metrics() {
    match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => baton_fabric::metrics::set_renderer(move || handle.render()),
        Err(e) => tracing::warn!("cannot keep metrics: {e}"),
    }
}

/// Where Baton keeps its data by default.
fn data_dir() -> PathBuf {
    PathBuf::from("baton-data")
}
