//! `baton gensort`, `baton sort`, `baton wordcount`: MapReduce jobs on the embedded runtime.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use baton_planner::{ByteSize, Path};
use baton_runtime::cluster::calibrate::{Sample, Stored};
use baton_runtime::cluster::{ClusterEnv, ClusterFile};
use baton_runtime::driver::{self, JobSummary, Progress};
use baton_runtime::env::Environment;
use baton_runtime::local::{LocalConfig, LocalEnv};
use baton_runtime::mapreduce::input::{self, Source};
use baton_runtime::mapreduce::output::{Output, check_disjoint, output_url};
use baton_runtime::mapreduce::plan::{Shape, choose, parse_topology};
use baton_runtime::mapreduce::records::{self, Checksum, RECORD};
use baton_runtime::mapreduce::{sort, wordcount};
use clap::Args;

#[derive(Debug, Args)]
pub struct GensortArgs {
    /// The file to write.
    output: PathBuf,
    /// How much to generate (100-byte records), e.g. 1GiB.
    #[arg(long, conflicts_with = "records")]
    size: Option<ByteSize>,
    /// How many records to generate.
    #[arg(long)]
    records: Option<u64>,
    /// Which stream of records: seed 0 is gensort's own (`gensort N FILE`), seed S the
    /// records from number S·2^64 on; the same seed gives the same file.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The first record to generate (gensort's `-bN`): files made from consecutive ranges
    /// concatenate into the file of the whole range.
    #[arg(long, default_value_t = 0)]
    begin: u64,
}

/// What every MapReduce command takes.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Input files, directories of files, or file:// and s3:// URLs.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Directory (or URL) for the output files, part-r-NNNNN.
    #[arg(short, long)]
    output: String,
    /// Map tasks (default: one per 128 MiB of input, at least one per worker).
    #[arg(long)]
    mappers: Option<u32>,
    /// Reduce tasks (default: as many as mappers).
    #[arg(long)]
    reducers: Option<u32>,
    /// The shuffle's path: auto (the planner's choice), vm-local, remote-store, object-store, or
    /// direct (the node over QUIC, with reducers started as soon as slots free up, reading each
    /// mapper's output once it is committed).
    #[arg(long, default_value = "auto")]
    path: String,
    /// The shuffle's topology: auto (the planner's choice), all-to-all, coalesced, 2-level,
    /// 3-level or 4-level.
    #[arg(long, default_value = "auto")]
    topology: String,
    /// What the planner minimizes: least-time, least-cost (predicted dollars: requests,
    /// function GB-seconds, store rent), or least-cost-within:SECONDS.
    #[arg(long, default_value = "least-time", value_parser = parse_objective)]
    objective: baton_planner::Objective,
    /// Worker processes (default: one per core, at least 2).
    #[arg(long)]
    workers: Option<usize>,
    /// Memory limit of each worker process (a task buffers up to a quarter of it before
    /// spilling).
    #[arg(long, default_value = "2GiB")]
    worker_memory: ByteSize,
    /// Memory the embedded node lends for VM-local and remote-store objects.
    #[arg(long, default_value = "4GiB")]
    node_memory: ByteSize,
    /// Where the embedded node keeps VM-local objects (default: /dev/shm; a tmpfs mounted with
    /// huge=within_size is faster for large objects).
    #[arg(long, env = "BATON_SHM_DIR")]
    shm_dir: Option<PathBuf>,
    /// Run tasks in this process instead of worker processes.
    #[arg(long, conflicts_with_all = ["endpoints", "lambda"])]
    in_process: bool,
    /// Run on the hosts of this cluster file (its nodes and workers; `baton cluster up
    /// --emulate N` writes one) instead of the embedded single host.
    #[arg(long, conflicts_with_all = ["in_process", "endpoints", "lambda", "workers", "objects", "shm_dir"])]
    cluster: Option<PathBuf>,
    /// After the job, keep its edges' measured transfers with the cluster's calibration, so
    /// later plans start from them.
    #[arg(long, requires = "cluster")]
    calibrate: bool,
    #[command(flatten)]
    invoke: super::invoke::InvokeArgs,
    /// The object store the object-store path uses (default: a file:// directory of the run).
    #[arg(long)]
    objects: Option<String>,
    /// How long one task may run before its worker counts as lost and the task is retried.
    #[arg(long, default_value = "600")]
    task_timeout_s: u64,
    /// Print the planner's explanation of the job.
    #[arg(long)]
    explain: bool,
    /// Attempts per task before the job fails.
    #[arg(long, default_value_t = 4)]
    max_attempts: u32,
    /// Write the job's summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SortArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Sort in this one process instead (the baseline), into part-r-00000.
    #[arg(long)]
    single_process: bool,
    /// Read the output back and check that it is globally sorted.
    #[arg(long)]
    validate: bool,
}

#[derive(Debug, Args)]
pub struct WordCountArgs {
    #[command(flatten)]
    job: JobArgs,
}

pub fn gensort(args: GensortArgs) -> anyhow::Result<()> {
    let records = match (args.records, args.size) {
        (Some(n), _) => n,
        (None, Some(size)) => size.0 / RECORD as u64,
        (None, None) => bail!("say how much to generate: --size 1GiB or --records N"),
    };
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let start = Instant::now();
    if args.begin.checked_add(records).is_none() {
        bail!("--begin {} plus {records} records runs past the last record number", args.begin);
    }
    records::write_file_from(&args.output, args.seed, args.begin, records)?;
    println!(
        "wrote {records} records ({}) to {} in {:.2} s",
        ByteSize(records * RECORD as u64),
        args.output.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Which of the two jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sort,
    WordCount,
}

/// Everything a job's flags say, checked before anything is created or read.
struct Checked {
    path: Option<Path>,
    topology: Option<baton_planner::Topology>,
}

fn check_flags(args: &JobArgs) -> anyhow::Result<Checked> {
    let path = parse_path(&args.path)?;
    let topology = match args.topology.as_str() {
        "auto" => None,
        other => Some(parse_topology(other).with_context(|| {
            format!("unknown topology {other:?}: use auto, all-to-all, coalesced, 2-level, 3-level or 4-level")
        })?),
    };
    if args.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    if args.max_attempts == 0 {
        bail!("--max-attempts must be at least 1 (1 means no retries)");
    }
    if args.mappers == Some(0) || args.reducers == Some(0) {
        bail!("--mappers and --reducers must be at least 1");
    }
    const MANY_TASKS: u32 = 10_000;
    for (flag, n) in [("--mappers", args.mappers), ("--reducers", args.reducers)] {
        if let Some(n) = n.filter(|&n| n > MANY_TASKS) {
            eprintln!(
                "warning: {flag} {n}: every task is an invocation and every reducer a file; past {MANY_TASKS} \
                 their overhead (and the output directory's) outweighs what smaller tasks gain"
            );
        }
    }
    Ok(Checked { path, topology })
}

/// The checks every MapReduce job makes before it touches anything: its flags, its inputs, and
/// that its output does not overlap them. Returns the inputs and the output's URL.
async fn prepare(args: &JobArgs) -> anyhow::Result<(Checked, Vec<Source>, String)> {
    let checked = check_flags(args)?;
    let sources = input::resolve(&args.inputs).await?;
    let url = output_url(&args.output)?;
    check_disjoint(&sources, &url)?;
    Ok((checked, sources, url))
}

pub async fn sort(args: SortArgs) -> anyhow::Result<()> {
    let (checked, sources, url) = prepare(&args.job).await?;
    sort::check_sources(&sources)?;
    if args.single_process {
        let start = Instant::now();
        let job = format!("single-{}", std::process::id());
        let staging = Output::staging_url(&url, &job);
        let sum = committed(&url, &job, sort::single_process(&sources, &staging)).await?;
        println!(
            "sorted {} records in one process in {:.2} s into {}",
            sum.records,
            start.elapsed().as_secs_f64(),
            args.job.output
        );
        return finish_sort(&url, None, Some(sum), args.validate).await;
    }
    let summary = run_job(Kind::Sort, &args.job, checked, sources, &url).await?;
    let read = summed(&summary.reports[0]);
    finish_sort(&url, Some(&summary), read, args.validate).await
}

/// Clears the output at `url`, checks that it takes writes, runs `job` (whose tasks write into
/// `staged`'s staging place, [`Output::staging_url`]) and commits what it staged; a job that
/// fails leaves nothing in the output.
async fn committed<T>(
    url: &str,
    staged: &str,
    job: impl std::future::Future<Output = baton_runtime::Result<T>>,
) -> anyhow::Result<T> {
    let out = Output::open(url)?;
    let ready = async {
        out.clear().await?;
        out.probe().await
    };
    ready.await.with_context(|| format!("cannot write the output {url}"))?;
    match job.await {
        Ok(value) => {
            out.commit(staged).await?;
            Ok(value)
        }
        Err(e) => {
            if let Err(cleanup) = out.staging(staged).discard().await {
                tracing::warn!("cannot remove the failed job's staged parts: {cleanup}");
            }
            Err(e.into())
        }
    }
}

pub async fn wordcount(args: WordCountArgs) -> anyhow::Result<()> {
    let (checked, sources, url) = prepare(&args.job).await?;
    let summary = run_job(Kind::WordCount, &args.job, checked, sources, &url).await?;
    let (words, total) = summary.reports.last().into_iter().flatten().fold((0, 0), |(w, t), r| {
        (w + r.extra["words"].as_u64().unwrap_or(0), t + r.extra["total"].as_u64().unwrap_or(0))
    });
    println!("{words} distinct words, {total} in all, in {}", args.job.output);
    Ok(())
}

/// The checksums tasks reported, added up.
fn summed(reports: &[baton_runtime::task::TaskReport]) -> Option<Checksum> {
    let mut sum = Checksum::default();
    for r in reports {
        sum.merge(serde_json::from_value(r.extra.get("checksum")?.clone()).ok()?);
    }
    Some(sum)
}

async fn finish_sort(
    url: &str,
    summary: Option<&JobSummary>,
    read: Option<Checksum>,
    validate: bool,
) -> anyhow::Result<()> {
    if let Some(summary) = summary {
        let written = summed(summary.reports.last().map_or(&[][..], |r| r.as_slice()));
        match (read, written) {
            (Some(r), Some(w)) if r == w => {
                println!("checksum: {} records, sum {:016x}: mappers read what reducers wrote", r.records, r.sum)
            }
            (r, w) => bail!("records lost or changed: mappers read {r:?}, reducers wrote {w:?}"),
        }
    }
    if validate {
        let v = sort::validate(url).await?;
        if !v.sorted {
            bail!("the output in {url} is not globally sorted");
        }
        if read.is_some_and(|r| r != v.checksum) {
            bail!("the output's records differ from the input's: {:?} vs {read:?}", v.checksum);
        }
        println!("validated: {} files, {} records, globally sorted", v.files, v.checksum.records);
    }
    Ok(())
}

pub(super) fn parse_path(name: &str) -> anyhow::Result<Option<Path>> {
    Ok(match name {
        "auto" => None,
        "vm-local" => Some(Path::VmLocal),
        "remote-store" | "remote" => Some(Path::RemoteStore),
        "direct" => Some(Path::Direct),
        "object-store" => Some(Path::ObjectStore),
        other => bail!("unknown path {other:?}: use auto, vm-local, remote-store, direct or object-store"),
    })
}

async fn run_job(
    kind: Kind,
    args: &JobArgs,
    checked: Checked,
    sources: Vec<Source>,
    url: &str,
) -> anyhow::Result<JobSummary> {
    let Checked { path: forced_path, topology: forced_topology } = checked;
    let bytes: u64 = sources.iter().map(|s| s.size).sum();
    let exe = if args.in_process { None } else { Some(std::env::current_exe()?) };
    let mut local = LocalConfig::new(super::data_dir(), exe);
    if let Some(workers) = args.workers {
        local.workers = workers;
    }
    local.worker_memory = args.worker_memory.0;
    local.node_memory = args.node_memory.0;
    local.shm_dir = args.shm_dir.clone();
    local.timeout = std::time::Duration::from_secs(args.task_timeout_s.max(1));
    local.objects = args.objects.clone();
    args.invoke.apply(&mut local)?;
    let env: Box<dyn Environment> = match &args.cluster {
        Some(file) => Box::new(
            ClusterEnv::connect(&ClusterFile::read(file)?, local.timeout).await?.calibrated(&Stored::load(file)?),
        ),
        None => Box::new(LocalEnv::start(&local).await?),
    };
    let slots = env.invoker().slots() as u32;
    let mappers = args.mappers.unwrap_or_else(|| (bytes.div_ceil(128 << 20) as u32).max(slots));
    let reducers = args.reducers.unwrap_or(mappers);
    let (name, map_cost, reduce_cost, rows) = match kind {
        Kind::Sort => ("sort", 2e-9, 8e-9, bytes / RECORD as u64),
        Kind::WordCount => ("wordcount", 20e-9, 5e-9, bytes / 8),
    };
    let shape = Shape {
        name: name.into(),
        bytes,
        rows,
        mappers,
        reducers,
        map_per_byte_s: map_cost,
        reduce_per_byte_s: reduce_cost,
        pipelined: args.cluster.is_some(),
    };
    // On one machine direct passing is the node over QUIC, as the remote store is; what makes
    // it direct is that consumers start before the producers end. On a cluster it is each
    // producer's own host's node.
    let direct = forced_path == Some(Path::Direct);
    let plan_path = if direct && args.cluster.is_none() { Some(Path::RemoteStore) } else { forced_path };
    let choice = choose(&env.cluster_model(), &shape, args.objective, plan_path, forced_topology)?;
    // On a cluster a host's node keeps what its producers wrote, so wherever the plan puts an
    // edge on the nodes (VM-local, direct) its consumers start early and pull as producers end.
    let on_nodes = args.cluster.is_some() && matches!(choice.path, Path::Direct | Path::VmLocal);
    let pipelined = (direct || on_nodes) && !matches!(choice.topology, baton_planner::Topology::KLevel { .. });
    if direct && !pipelined {
        eprintln!(
            "note: --path direct on a {} topology runs its rounds one after another: reducers start \
             early only on all-to-all and coalesced shuffles",
            choice.topology.name()
        );
    }
    if args.explain {
        println!("{}", baton_planner::explain(&choice.plan));
    }
    let spec =
        env.spec(choice.path).with_context(|| format!("the {} path is not available here", choice.path.name()))?;
    let how = if forced_path.is_some() || forced_topology.is_some() { "as asked" } else { "planned" };
    println!(
        "{name}: {} in {} files · {mappers} mappers, {reducers} reducers on {} · shuffle via {}, {} ({how}){}",
        ByteSize(bytes),
        sources.len(),
        env.describe(),
        // On one host, direct passing rides the same QUIC connection to the node as the store.
        if direct && args.cluster.is_none() { "direct (QUIC)".to_string() } else { choice.path.name().to_string() },
        choice.topology.name(),
        if pipelined { " · reducers start as mappers end" } else { "" },
    );
    let mut config = env.job_config()?;
    config.max_attempts = args.max_attempts;
    config.progress = Progress::auto();
    let staged = config.job.to_string();
    let staging = Output::staging_url(url, &staged);
    let mut job = match kind {
        Kind::Sort => sort::job(sources, mappers, reducers, spec, choice.topology, staging.clone()).await?,
        Kind::WordCount => wordcount::job(sources, mappers, reducers, spec, choice.topology, staging.clone())?,
    };
    for edge in &mut job.edges {
        edge.pipelined = pipelined;
    }
    // Where the plan put each stage (on a cluster: one host, or spread over all).
    for (stage, planned) in job.stages.iter_mut().zip(&choice.plan.stages) {
        if let baton_planner::Placement::Host(h) = planned.placement {
            stage.host = Some(h.0);
        }
    }
    let mut summary = committed(url, &staged, driver::run(&job, env.invoker(), &config)).await?;
    // One shuffle edge: the planner's prediction of it beside what it measured.
    if let ([edge], [planned]) = (summary.edges.as_mut_slice(), choice.plan.edges.as_slice()) {
        edge.predicted_s = Some(planned.chosen.time_s);
        edge.measured_s = Some(baton_planner::transfer_s(choice.path, pipelined, edge.write_s, edge.read_s));
    }
    println!("{summary}");
    if let (true, Some(file)) = (args.calibrate, &args.cluster) {
        let mut stored = Stored::load(file)?;
        let samples = transfers(&summary, &config.job.to_string());
        println!("calibration: {} transfers kept in {}", samples.len(), Stored::location(file).display());
        stored.add(samples);
        stored.save(file)?;
    }
    if let Some(file) = &args.summary_json {
        std::fs::write(file, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(summary)
}

/// What a job's edges measured, as calibration samples: each edge's reads by its slowest
/// consumer (a host-node edge counts as direct when any of its bytes crossed hosts).
fn transfers(summary: &JobSummary, job: &str) -> Vec<Sample> {
    summary
        .edges
        .iter()
        .zip(1..)
        .filter(|(e, _)| e.read_s > 0.0 && e.requests.gets > 0)
        .map(|(e, i)| {
            let consumers = summary.stages.get(i).map_or(1, |s| s.tasks);
            let path = if e.path.contains("direct") {
                "direct"
            } else if e.path.starts_with("object-store") {
                "object-store"
            } else {
                e.path.split(' ').next().unwrap_or("vm-local")
            };
            Sample {
                path: path.to_string(),
                bytes: e.requests.bytes_got,
                requests: e.requests.gets,
                tasks: consumers,
                seconds: e.read_s,
                source: format!("job {job}"),
            }
        })
        .collect()
}

fn parse_objective(text: &str) -> Result<baton_planner::Objective, String> {
    baton_planner::Objective::parse(text)
        .ok_or_else(|| format!("{text:?}: use least-time, least-cost or least-cost-within:SECONDS"))
}
