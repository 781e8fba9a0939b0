//! The invokers against each other in one run: the local pool of worker processes (the
//! embedded default), workers over HTTPS, and Lambda functions under `cargo lambda`'s emulator
//! of the runtime and Invoke APIs — two workers each, on this machine.
//!
//! - The overhead of one invocation: the time from the driver's sending an invocation to its
//!   answer, for an invocation whose task does nothing (it names an operator the worker does
//!   not have: it is decoded after its signature is checked, refused and answered — the whole
//!   path of an invocation and none of a task's work). One invocation at a time, the invokers
//!   taking turns; p50 and p99.
//! - A sort end to end (`baton sort`, timed from start to exit), through each invoker, the
//!   shuffle VM-local through the driver's node.
//!
//! Fairness: the same binary, worker count and memory limit for all three; every invocation is
//! signed and checked in all three; the HTTPS workers and the Lambda functions are started
//! before the clock, as the pool's are.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_fabric::net::TlsDir;
use baton_fabric::{JobId, StageId, TaskId};
use baton_runtime::http::HttpClient;
use baton_runtime::invoker::{Credentials, HttpInvoker, Invoker, LambdaConfig, LambdaInvoker, LocalPool, PoolConfig};
use baton_runtime::task::Task;
use serde::Serialize;

use crate::stats::quantile;

/// How to run it.
#[derive(Clone, Debug)]
pub struct InvokersOptions {
    /// A smaller sort and fewer invocations.
    pub quick: bool,
    /// Where the input, outputs and the workers' files go.
    pub work_dir: PathBuf,
    /// The `baton` binary.
    pub exe: PathBuf,
    /// Bytes to sort.
    pub sort_bytes: u64,
    /// Invocations timed per invoker.
    pub invocations: usize,
}

/// One invoker's figures.
#[derive(Clone, Debug, Serialize)]
pub struct InvokerRow {
    /// `local pool`, `https`, `lambda (emulator)`.
    pub invoker: String,
    /// Invocations timed.
    pub invocations: usize,
    /// Median overhead of one invocation, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// The sort, start to exit, seconds.
    pub sort_seconds: f64,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct InvokersReport {
    /// Bytes sorted.
    pub sort_bytes: u64,
    /// Workers behind each invoker.
    pub workers: usize,
    /// The rows.
    pub rows: Vec<InvokerRow>,
    /// Invokers not measured, and why.
    pub skipped: Vec<String>,
}

const WORKERS: usize = 2;
const WORKER_MEMORY: &str = "2GiB";

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Test credentials for the emulator (it checks none; the invoker signs with them all the same).
const AWS: [(&str, &str); 2] = [("AWS_ACCESS_KEY_ID", "baton-bench"), ("AWS_SECRET_ACCESS_KEY", "baton-bench")];

/// A `baton worker` over HTTPS on 127.0.0.1; its URL.
fn https_worker(options: &InvokersOptions, host: &Path, scratch: &Path) -> anyhow::Result<(Proc, String)> {
    use std::io::BufRead;
    baton_fabric::private::create_dirs(scratch)?;
    let mut child = Command::new(&options.exe)
        .args(["worker", "--listen", "127.0.0.1:0", "--https", "--memory-limit", WORKER_MEMORY, "--tls-dir"])
        .arg(host)
        .arg("--scratch")
        .arg(scratch)
        .env("BATON_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting an HTTPS worker")?;
    let stdout = child.stdout.take().context("the worker's stdout")?;
    let proc = Proc(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let url = line.trim().strip_prefix("listening on ").context("the worker printed no address")?.to_string();
    Ok((proc, url))
}

/// `functions` `baton lambda` processes of `exe` taking invocations from `cargo lambda`'s
/// emulator (its one function is `_`) on a free port of 127.0.0.1, trusting the cluster key in
/// `tls`, spilling under `scratch`; stopped (the functions first) when dropped.
#[derive(Debug)]
pub struct LambdaFunctions {
    procs: Vec<Proc>,
    /// The Invoke API's URL.
    pub endpoint: String,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process {}", self.0.id())
    }
}

impl Drop for LambdaFunctions {
    fn drop(&mut self) {
        // The functions first, so that none sees its emulator go.
        while self.procs.pop().is_some() {}
    }
}

/// Starts [`LambdaFunctions`]; why not (`Err` inside) where `cargo lambda` is missing.
pub fn lambda_functions(
    exe: &Path,
    tls: &Path,
    scratch: &Path,
    functions: usize,
) -> anyhow::Result<Result<LambdaFunctions, String>> {
    if !Command::new("cargo").args(["lambda", "--version"]).output().is_ok_and(|o| o.status.success()) {
        return Ok(
            Err("lambda (emulator): SKIPPED, `cargo lambda` is not installed (pip install cargo-lambda)".into()),
        );
    }
    // The emulator reads a Cargo manifest (it builds nothing): the source tree this was built
    // from, or the one it runs in.
    let built_in = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let Some(manifest) = [built_in, std::env::current_dir()?].into_iter().find(|d| d.join("Cargo.toml").exists())
    else {
        return Ok(Err(
            "lambda (emulator): SKIPPED, `cargo lambda watch` needs Baton's source tree: run from it".into()
        ));
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut procs = vec![Proc(
        Command::new("cargo")
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
            .current_dir(&manifest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    )];
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the Lambda emulator did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..functions {
        let scratch = scratch.join(format!("lambda-{i}"));
        baton_fabric::private::create_dirs(&scratch)?;
        procs.push(Proc(
            Command::new(exe)
                .args(["lambda", "--tls-dir"])
                .arg(tls)
                .arg("--scratch")
                .arg(&scratch)
                // What Lambda (here, the emulator) gives a function.
                .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{port}/.rt"))
                .env("AWS_LAMBDA_FUNCTION_NAME", "_")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("BATON_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?,
        ));
    }
    Ok(Ok(LambdaFunctions { procs, endpoint: format!("http://127.0.0.1:{port}") }))
}

/// An invocation that does no work: an operator the worker does not have.
fn nothing(i: usize) -> Task {
    Task {
        job: JobId(0x1a7e),
        token: None,
        id: TaskId { stage: StageId(1), partition: 0, attempt: i as u32 },
        partitions: 1,
        op: "bench.nothing".into(),
        params: serde_json::Value::Null,
        inputs: Vec::new(),
        outputs: Vec::new(),
        memory_budget: 1 << 20,
    }
}

/// Runs `baton sort` with `extra` flags; its seconds from start to exit.
fn sort(options: &InvokersOptions, dir: &Path, input: &Path, out: &str, extra: &[String]) -> anyhow::Result<f64> {
    let mappers = (options.sort_bytes / (128 << 20)).max(2).to_string();
    let start = Instant::now();
    let done = Command::new(&options.exe)
        .arg("sort")
        .arg(input)
        .args(["--output", out, "--mappers", &mappers, "--reducers", &mappers, "--path", "vm-local"])
        .args(["--worker-memory", WORKER_MEMORY, "--workers", &WORKERS.to_string()])
        .args(extra)
        .current_dir(dir)
        .envs(AWS)
        .env("BATON_LOG", "warn")
        .output()?;
    let seconds = start.elapsed().as_secs_f64();
    if !done.status.success() {
        bail!("sort {}: {}", extra.join(" "), String::from_utf8_lossy(&done.stderr));
    }
    // The output this run made, in its own directory.
    let _ = std::fs::remove_dir_all(dir.join(out));
    Ok(seconds)
}

/// Runs the benchmark.
pub async fn run(options: &InvokersOptions) -> anyhow::Result<InvokersReport> {
    baton_fabric::private::ensure_dir(&options.work_dir, "work directory")?;
    let run = tempfile::Builder::new().prefix("invokers-").tempdir_in(&options.work_dir)?;
    let tls_dir = run.path().join("tls");
    let tls = TlsDir::new(&tls_dir);
    tls.generate(&[])?;
    let host = run.path().join("host");
    tls.issue_node(&TlsDir::new(&host), &["127.0.0.1".into()])?;
    let key = Arc::new(tls.signer()?);
    let timeout = Duration::from_secs(600);
    let mut skipped = Vec::new();

    // The three invokers, their workers started before any clock.
    let pool = LocalPool::start(PoolConfig {
        exe: options.exe.clone(),
        workers: WORKERS,
        memory_limit: 2 << 30,
        scratch: run.path().join("pool"),
        timeout,
        signer: Some(key.clone()),
    })
    .await?;
    let mut https_procs = Vec::new();
    let mut urls = Vec::new();
    for i in 0..WORKERS {
        let (proc, url) = https_worker(options, &host, &run.path().join(format!("https-{i}")))?;
        https_procs.push(proc);
        urls.push(url);
    }
    let https =
        HttpInvoker::new(&urls, timeout)?.with_client(HttpClient::new(Some(&tls_dir))?).with_signer(key.clone());
    let lambda = lambda_functions(&options.exe, &tls_dir, run.path(), WORKERS)?;
    let mut invokers: Vec<(String, Box<dyn Invoker>, Vec<String>)> = vec![
        ("local pool".into(), Box::new(pool), Vec::new()),
        (
            "https".into(),
            Box::new(https),
            vec!["--endpoints".into(), urls.join(","), "--endpoints-tls-dir".into(), tls_dir.display().to_string()],
        ),
    ];
    let _lambda = match lambda {
        Ok(functions) => {
            let endpoint = functions.endpoint.clone();
            let config = LambdaConfig {
                function: "_".into(),
                endpoint: Some(endpoint.clone()),
                region: None,
                concurrency: WORKERS,
                timeout,
            };
            let credentials = Credentials::new(AWS[0].1, AWS[1].1, None, None, "bench");
            let invoker = LambdaInvoker::with_credentials(&config, credentials)?.with_signer(key.clone());
            let flags = ["--lambda", "_", "--lambda-endpoint", &endpoint, "--lambda-concurrency"]
                .iter()
                .map(|s| s.to_string())
                .chain([WORKERS.to_string(), "--endpoints-tls-dir".into(), tls_dir.display().to_string()])
                .collect();
            invokers.push(("lambda (emulator)".into(), Box::new(invoker), flags));
            Some(functions)
        }
        Err(why) => {
            eprintln!("{why}");
            skipped.push(why);
            None
        }
    };

    // One invocation at a time, the invokers taking turns; the first of each (a connection
    // made, a cold worker) is not counted.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); invokers.len()];
    for i in 0..=options.invocations {
        for (k, (name, invoker, _)) in invokers.iter().enumerate() {
            let start = Instant::now();
            match invoker.invoke(nothing(i)).await {
                Err(baton_runtime::Error::Task { message, .. }) if message.contains("bench.nothing") => {}
                other => bail!("{name}: a no-op invocation answered {other:?}"),
            }
            if i > 0 {
                samples[k].push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }

    // The sort through each, end to end.
    let input = run.path().join("input.dat");
    let made = Command::new(&options.exe)
        .arg("gensort")
        .arg(&input)
        .args(["--size", &options.sort_bytes.to_string()])
        .output()?;
    if !made.status.success() {
        bail!("gensort: {}", String::from_utf8_lossy(&made.stderr));
    }
    let mut rows = Vec::new();
    for ((name, _, flags), mut ms) in invokers.iter().zip(samples) {
        ms.sort_by(f64::total_cmp);
        let out = format!("sorted-{}", name.split_whitespace().next().unwrap_or("x"));
        let sort_seconds = sort(options, run.path(), &input, &out, flags)?;
        rows.push(InvokerRow {
            invoker: name.clone(),
            invocations: ms.len(),
            p50_ms: quantile(&ms, 0.5),
            p99_ms: quantile(&ms, 0.99),
            sort_seconds,
        });
    }
    drop(https_procs);
    Ok(InvokersReport { sort_bytes: options.sort_bytes, workers: WORKERS, rows, skipped })
}

/// The report as Markdown.
pub fn markdown(report: &InvokersReport) -> String {
    let mut out = format!(
        "## Invokers: overhead per invocation and a sort end to end\n\n{} workers behind each; a no-op invocation \
         (signed, checked, refused as an unknown operator) one at a time; the sort of {} start to exit, shuffle \
         VM-local.\n\n| invoker | invocations | p50 ms | p99 ms | sort s | sort vs local pool |\n|---|---|---|---|---|---|\n",
        report.workers,
        crate::paths::human(report.sort_bytes)
    );
    let base = report.rows.first().map_or(1.0, |r| r.sort_seconds);
    for r in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2}x |\n",
            r.invoker,
            r.invocations,
            r.p50_ms,
            r.p99_ms,
            r.sort_seconds,
            r.sort_seconds / base
        ));
    }
    for why in &report.skipped {
        out.push_str(&format!("\n{why}\n"));
    }
    out
}
