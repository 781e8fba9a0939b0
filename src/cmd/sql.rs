//! `baton sql` and `baton quickstart`: SQL queries run as stages of function tasks.

use std::io::Write as _;
use std::path::{Path as FsPath, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use baton_planner::{ByteSize, Path};
use baton_runtime::cluster::{ClusterEnv, ClusterFile};
use baton_runtime::driver::{JobSummary, Progress};
use baton_runtime::env::Environment;
use baton_runtime::local::{LocalConfig, LocalEnv};
use baton_runtime::mapreduce::plan::parse_topology;
use baton_sql::query::{self, QueryOptions, QueryRun};
use baton_sql::session::{self, Table};
use clap::{Args, ValueEnum};
use datafusion::execution::context::SessionContext;

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query.
    query: String,
    /// A table: NAME=LOCATION (a local path, file:// or s3:// URL; Parquet, or CSV if it ends
    /// in .csv). Repeat for more tables.
    #[arg(long = "table", value_name = "NAME=LOCATION")]
    tables: Vec<String>,
    /// A catalog file (TOML) with a [tables] section of NAME = LOCATION entries.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// A directory written by `baton tpch gen`: registers its eight tables.
    #[arg(long)]
    tpch: Option<PathBuf>,
    /// Print the stages and each edge's path and topology, and run nothing.
    #[arg(long)]
    explain: bool,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Write the result to this file instead of stdout (needed for parquet).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Run the query in this process with DataFusion alone (the baseline).
    #[arg(long)]
    single_process: bool,
    /// Write the job's summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

/// How queries run: workers, partitions, forced paths.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Worker processes (default: one per core, at least 2).
    #[arg(long)]
    workers: Option<usize>,
    /// Partitions per stage (DataFusion's target partitions; default: the workers).
    #[arg(long)]
    partitions: Option<usize>,
    /// Memory limit of each worker process (a task buffers up to a quarter of it before
    /// spilling).
    #[arg(long, default_value = "2GiB")]
    worker_memory: ByteSize,
    /// Where the embedded node keeps VM-local objects (default: /dev/shm; a tmpfs mounted with
    /// huge=within_size is faster for large objects).
    #[arg(long, env = "BATON_SHM_DIR")]
    shm_dir: Option<std::path::PathBuf>,
    /// Carry every exchange on this path: auto (the planner's choice), vm-local, remote-store
    /// or object-store; on a cluster also direct (each consumer pulls from the producer's host).
    #[arg(long, default_value = "auto")]
    path: String,
    /// Lay out every hash exchange this way: auto (the planner's choice), all-to-all,
    /// coalesced, or a k-level exchange (2-level, 3-level, 4-level).
    #[arg(long, default_value = "auto")]
    topology: String,
    /// Run tasks in this process instead of worker processes.
    #[arg(long, conflicts_with_all = ["endpoints", "lambda"])]
    in_process: bool,
    /// The object store for the object-store path (default: a directory of the run).
    #[arg(long)]
    objects: Option<String>,
    /// Run on the hosts of this cluster file (its nodes and workers; `baton cluster up
    /// --emulate N` writes one) instead of the embedded single host. Tables must be where
    /// every host reaches them (a shared directory, or an object store).
    #[arg(long, conflicts_with_all = ["in_process", "endpoints", "lambda", "workers", "objects", "shm_dir"])]
    cluster: Option<std::path::PathBuf>,
    #[command(flatten)]
    invoke: super::invoke::InvokeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Parquet,
}

impl RunArgs {
    fn options(&self) -> anyhow::Result<QueryOptions> {
        let path = super::mapreduce::parse_path(&self.path)?;
        // On one host the node is the driver's own: without a cluster's nodes keeping each
        // host's outputs, a query's stages, which do not overlap, have nothing to pull from.
        if path == Some(Path::Direct) && self.cluster.is_none() {
            bail!(
                "--path direct: a query's stages do not overlap, and on one host no node of the producers' keeps                  their outputs; use vm-local, remote-store or object-store (or --cluster)"
            );
        }
        let topology = match self.topology.as_str() {
            "auto" => None,
            name => match parse_topology(name) {
                Some(baton_planner::Topology::PerTask) | None => {
                    bail!("--topology {name}: use auto, all-to-all, coalesced, 2-level, 3-level or 4-level")
                }
                Some(t) => Some(t),
            },
        };
        Ok(QueryOptions { path, topology })
    }

    async fn start(&self) -> anyhow::Result<(Box<dyn Environment>, usize)> {
        if let Some(file) = &self.cluster {
            let env = ClusterEnv::connect(&ClusterFile::read(file)?, std::time::Duration::from_secs(600))
                .await?
                .calibrated(&baton_runtime::cluster::calibrate::Stored::load(file)?);
            let partitions = self.partitions.unwrap_or(env.invoker().slots()).max(1);
            return Ok((Box::new(env), partitions));
        }
        let exe = if self.in_process { None } else { Some(std::env::current_exe()?) };
        let mut local = LocalConfig::new(super::data_dir(), exe);
        local.registry = baton_sql::registry();
        if let Some(w) = self.workers {
            local.workers = w.max(1);
        }
        local.worker_memory = self.worker_memory.0;
        local.objects = self.objects.clone();
        local.shm_dir = self.shm_dir.clone();
        self.invoke.apply(&mut local)?;
        let partitions = self.partitions.unwrap_or(local.workers).max(1);
        Ok((Box::new(LocalEnv::start(&local).await?), partitions))
    }
}

/// The tables the flags name.
fn tables(args: &SqlArgs) -> anyhow::Result<Vec<Table>> {
    let mut tables = Vec::new();
    if let Some(dir) = &args.tpch {
        tables.extend(session::tpch_tables(dir)?);
    }
    if let Some(catalog) = &args.catalog {
        tables.extend(session::read_catalog(catalog)?);
    }
    for flag in &args.tables {
        tables.push(Table::parse(flag)?);
    }
    Ok(tables)
}

/// A session with `tables`, planned for `partitions`.
async fn session(tables: &[Table], partitions: usize) -> anyhow::Result<(SessionContext, Vec<String>)> {
    let ctx = SessionContext::new_with_config(session::config(partitions));
    session::register(&ctx, tables).await?;
    let stores = tables.iter().filter(|t| !t.url.starts_with("file://")).map(|t| t.url.clone()).collect();
    Ok((ctx, stores))
}

pub async fn sql(args: SqlArgs) -> anyhow::Result<()> {
    if args.format == OutputFormat::Parquet && args.output.is_none() {
        bail!("--format parquet needs --output FILE");
    }
    let tables = tables(&args)?;
    let options = args.run.options()?;
    if args.single_process {
        let partitions = args.run.partitions.unwrap_or(2);
        let (ctx, _) = session(&tables, partitions).await?;
        let start = Instant::now();
        let (schema, batches) = query::run_single_with_schema(&ctx, &args.query).await?;
        eprintln!("single process: {:.3} s", start.elapsed().as_secs_f64());
        return print(&schema, &batches, args.format, args.output.as_deref());
    }
    let (env, partitions) = args.run.start().await?;
    let (ctx, stores) = session(&tables, partitions).await?;
    if args.explain {
        let physical = query::physical_plan(&ctx, &args.query).await?;
        print!("{}", query::explain(physical, &env.cluster_model(), &options, partitions)?);
        return Ok(());
    }
    let mut config = env.job_config()?;
    config.progress = Progress::auto();
    let run = query::run(&ctx, &args.query, env.as_ref(), &options, stores, &config).await?;
    print(&run.schema, &run.batches, args.format, args.output.as_deref())?;
    eprintln!("{}", run.summary);
    if let Some(file) = &args.summary_json {
        std::fs::write(file, serde_json::to_vec_pretty(&run.summary)?)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// Writes `batches` (of `schema`) as `format` to `output` or stdout. An empty result keeps its
/// header (table, CSV) or its schema (a valid Parquet file of no rows). A file appears whole:
/// it is written beside its name and renamed into place when complete.
fn print(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
    output: Option<&FsPath>,
) -> anyhow::Result<()> {
    let empty;
    let batches = if batches.is_empty() {
        empty = [RecordBatch::new_empty(schema.clone())];
        &empty[..]
    } else {
        batches
    };
    let Some(path) = output else {
        if format == OutputFormat::Parquet {
            bail!("--format parquet needs --output FILE");
        }
        return write_result(schema, batches, format, std::io::stdout());
    };
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    let partial = path.with_file_name(format!(".{}.{}.partial", name.to_string_lossy(), std::process::id()));
    let file = std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let written = write_result(schema, batches, format, file)
        .and_then(|()| std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display())));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

fn write_result<W: std::io::Write + Send>(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
    mut sink: W,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => {
            writeln!(sink, "{}", datafusion::arrow::util::pretty::pretty_format_batches(batches)?)?;
        }
        OutputFormat::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(sink);
            for b in batches {
                writer.write(b)?;
            }
        }
        OutputFormat::Parquet => {
            let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(sink, schema.clone(), None)?;
            for b in batches {
                writer.write(b)?;
            }
            writer.close()?;
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// TPC-H scale factor of the data set (generated once, then reused).
    #[arg(long, default_value_t = 0.1)]
    sf: f64,
    /// Queries to run, by TPC-H number.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5,6")]
    queries: Vec<usize>,
    #[command(flatten)]
    run: RunArgs,
}

/// The quickstart's TPC-H data, generated unless every table is already there.
fn tpch_data(sf: f64) -> anyhow::Result<PathBuf> {
    let dir = super::data_dir().join(format!("tpch-sf{sf}"));
    let start = Instant::now();
    let generated = baton_sql::tpch::ensure(sf, &dir)?;
    println!(
        "TPC-H sf {sf} -> {} ... {} ({:.1} s)",
        dir.display(),
        if generated { "generated" } else { "reused" },
        start.elapsed().as_secs_f64()
    );
    Ok(dir)
}

pub async fn quickstart(args: QuickstartArgs) -> anyhow::Result<()> {
    let run_args = args.run;
    let dir = tokio::task::spawn_blocking(move || tpch_data(args.sf)).await??;
    let options = run_args.options()?;
    let (env, partitions) = run_args.start().await?;
    let (ctx, stores) = session(&session::tpch_tables(&dir)?, partitions).await?;
    println!("{} · {partitions} partitions per stage", env.describe());
    for &n in &args.queries {
        let Some((_, sql)) = n.checked_sub(1).and_then(|i| baton_sql::tpch::QUERIES.get(i)) else {
            bail!("there is no TPC-H query {n} (1 to 22)");
        };
        let config = env.job_config()?;
        let start = Instant::now();
        let run = query::run(&ctx, sql, env.as_ref(), &options, stores.clone(), &config).await?;
        report(n, &run, start.elapsed().as_secs_f64())?;
    }
    Ok(())
}

/// A query's first rows, and each stage and edge as it ran.
fn report(n: usize, run: &QueryRun, seconds: f64) -> anyhow::Result<()> {
    let rows: usize = run.batches.iter().map(|b| b.num_rows()).sum();
    println!("\nQ{n}  {rows} rows  {seconds:.2} s");
    let mut shown = Vec::new();
    let mut left = 5;
    for b in &run.batches {
        if left == 0 {
            break;
        }
        let take = b.num_rows().min(left);
        shown.push(b.slice(0, take));
        left -= take;
    }
    println!("{}", datafusion::arrow::util::pretty::pretty_format_batches(&shown)?);
    if rows > 5 {
        println!("  ... {} more rows", rows - 5);
    }
    print_edges(&run.summary, run);
    Ok(())
}

fn print_edges(summary: &JobSummary, run: &QueryRun) {
    for stage in &summary.stages {
        println!("  {:<12} {:>3} tasks {:>7.3} s", stage.name, stage.tasks, stage.seconds);
    }
    // A k-level exchange runs as rounds through merge stages: edges of its own.
    let planned = &run.planned.stages;
    let kinds = (summary.edges.len() == planned.edges.len()).then(|| (0..planned.edges.len()).map(|i| planned.kind(i)));
    let mut kinds = kinds.into_iter().flatten();
    for edge in &summary.edges {
        let kind = kinds.next().map_or("", |k| k.name());
        println!(
            "  {:<24} {:<9} {:>10} via {}, {} · {} writes, {} reads",
            edge.name,
            kind,
            ByteSize(edge.bytes).to_string(),
            edge.path,
            edge.layout,
            edge.writes,
            edge.reads
        );
    }
    let moved: u64 = summary.edges.iter().map(|e| e.bytes).sum();
    let requests: u64 = summary.edges.iter().map(|e| e.writes + e.reads).sum();
    let _ = std::io::stdout().flush();
    println!("  moved {} in {requests} requests", ByteSize(moved));
}
