//! MapReduce through the `baton` binary: `gensort`, then `sort` of 1 GiB across 8 mappers and 8
//! reducers on worker processes, compared with a single-process sort of the same input, for
//! every topology (all-to-all, coalesced, 2-level) on every path; a worker killed mid-task; inputs that are missing or
//! malformed.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;
use support::{BATON, baton, children, ok};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// 1 GiB of 100-byte records.
const RECORDS: u64 = (1 << 30) / 100;

/// The 1 GiB input and its single-process sort, made once and shared by the tests (and by
/// later runs): `(input, sorted)`.
fn shared_input() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sort-1gib");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    let input = dir.join("input.bin");
    let sorted = dir.join("sorted").join("part-r-00000");
    let size = RECORDS * 100;
    if std::fs::metadata(&input).map(|m| m.len()).ok() != Some(size) {
        let records = RECORDS.to_string();
        ok(&baton(&dir, &["gensort", "input.bin", "--records", &records, "--seed", "7"]));
    }
    if std::fs::metadata(&sorted).map(|m| m.len()).ok() != Some(size) {
        let out = baton(&dir, &["sort", "input.bin", "--output", "sorted", "--single-process", "--validate"]);
        assert!(ok(&out).contains("globally sorted"));
    }
    lock.unlock().unwrap();
    (input, sorted)
}

/// Whether the `part-r-*` files of `dir`, in name order, are byte for byte `expected`.
fn same_as(dir: &Path, expected: &Path) -> Result<(), String> {
    let mut parts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-r-"))
        .collect();
    parts.sort();
    let mut want = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(expected).unwrap());
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    for part in &parts {
        let mut got = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(part).unwrap());
        loop {
            let n = got.read(&mut a).unwrap();
            if n == 0 {
                break;
            }
            want.read_exact(&mut b[..n]).map_err(|_| format!("{} runs past the expected output", part.display()))?;
            if a[..n] != b[..n] {
                return Err(format!("bytes differ near offset {offset} (in {})", part.display()));
            }
            offset += n as u64;
        }
    }
    if want.read(&mut b).unwrap() != 0 {
        return Err(format!("the output stops at {offset} bytes, short of the expected"));
    }
    Ok(())
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn sort_on(path: &str, topology: &str) {
    let (input, sorted) = shared_input();
    let dir = tempfile::tempdir().unwrap();
    let out = baton(
        dir.path(),
        &[
            "sort",
            input.to_str().unwrap(),
            "--output",
            "out",
            "--mappers",
            "8",
            "--reducers",
            "8",
            "--workers",
            "2",
            "--path",
            path,
            "--topology",
            topology,
            "--summary-json",
            "summary.json",
        ],
    );
    let stdout = ok(&out);
    assert!(stdout.contains("mappers read what reducers wrote"), "{stdout}");
    same_as(&dir.path().join("out"), &sorted).unwrap_or_else(|e| panic!("{path} {topology}: {e}"));
    let s = summary(&dir.path().join("summary.json"));
    let edge = &s["edges"][0];
    assert!(edge["path"].as_str().unwrap().starts_with(path), "{edge}");
    assert!(edge["bytes"].as_u64().unwrap() > RECORDS * 100, "Arrow framing adds a little: {edge}");
    if let Some(levels) = topology.strip_suffix("-level") {
        // 8 → 8 in two rounds of fan-out 3 through 9 merge tasks: each task reads at most 3.
        assert_eq!(levels, "2");
        let edges = s["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 2, "{edges:?}");
        assert_eq!(edges[0]["layout"], "2-level 1/2");
        assert!(edges[0]["reads"].as_u64().unwrap() <= 9 * 3 && edges[1]["reads"].as_u64().unwrap() <= 8 * 3);
        assert_eq!(s["stages"][1]["tasks"], 9);
    } else {
        assert_eq!(edge["layout"], topology);
        let writes = if topology == "all-to-all" { 64 } else { 8 };
        assert_eq!((edge["writes"].as_u64(), edge["reads"].as_u64()), (Some(writes), Some(64)));
        assert_eq!(s["stages"][1]["tasks"], 8);
    }
    assert_eq!(s["stages"][0]["tasks"], 8);
    // Ending the job left nothing in the run's directories.
    assert!(s["freed_bytes"].as_u64().unwrap() >= edge["bytes"].as_u64().unwrap());
}

#[test]
fn sort_vm_local_all_to_all() {
    sort_on("vm-local", "all-to-all");
}

#[test]
fn sort_vm_local_coalesced() {
    sort_on("vm-local", "coalesced");
}

#[test]
fn sort_remote_store_all_to_all() {
    sort_on("remote-store", "all-to-all");
}

#[test]
fn sort_remote_store_coalesced() {
    sort_on("remote-store", "coalesced");
}

#[test]
fn sort_object_store_all_to_all() {
    sort_on("object-store", "all-to-all");
}

#[test]
fn sort_object_store_coalesced() {
    sort_on("object-store", "coalesced");
}

#[test]
fn sort_vm_local_2_level() {
    sort_on("vm-local", "2-level");
}

#[test]
fn sort_remote_store_2_level() {
    sort_on("remote-store", "2-level");
}

#[test]
fn sort_object_store_2_level() {
    sort_on("object-store", "2-level");
}

/// User + system CPU ticks `pid` has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

#[test]
fn a_worker_killed_mid_task_still_gives_the_whole_sorted_output() {
    let (input, sorted) = shared_input();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BATON)
        .args([
            "sort",
            input.to_str().unwrap(),
            "--output",
            "out",
            "--mappers",
            "8",
            "--reducers",
            "8",
            "--workers",
            "2",
            "--path",
            "vm-local",
            "--summary-json",
            "summary.json",
        ])
        .current_dir(dir.path())
        .env("BATON_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for a worker that is busy with a task (it has used CPU), then SIGKILL it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let victim = loop {
        assert!(Instant::now() < deadline, "no worker got busy");
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the job ended before a worker could be killed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(&busy) = children(child.id()).iter().find(|&&w| cpu_ticks(w) > 30) {
            break busy;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(unsafe_kill(victim), 0, "kill {victim}");
    let out = child.wait_with_output().unwrap();
    let stdout = ok(&out);
    same_as(&dir.path().join("out"), &sorted).unwrap();
    let s = summary(&dir.path().join("summary.json"));
    let attempts: u64 = s["stages"].as_array().unwrap().iter().map(|st| st["attempts"].as_u64().unwrap()).sum();
    assert!(attempts > 16, "the killed task was retried: {attempts} attempts\n{stdout}");
}

fn unsafe_kill(pid: u32) -> i32 {
    Command::new("kill").arg("-KILL").arg(pid.to_string()).status().unwrap().code().unwrap_or(-1)
}

#[test]
fn a_missing_input_fails_fast_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = baton(dir.path(), &["sort", "no-such-file.bin", "--output", "out"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-file.bin"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(10), "it should fail before starting workers");
}

#[test]
fn a_malformed_input_fails_fast_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.bin"), vec![1u8; 1000]).unwrap();
    std::fs::write(dir.path().join("torn.bin"), vec![1u8; 1234]).unwrap();
    let out = baton(dir.path(), &["sort", "good.bin", "torn.bin", "--output", "out"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("torn.bin") && stderr.contains("100-byte records"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_embedded_node_keeps_vm_local_objects_where_it_is_told() {
    let dir = tempfile::tempdir().unwrap();
    ok(&baton(dir.path(), &["gensort", "in.bin", "--records", "100000", "--seed", "5"]));
    ok(&baton(dir.path(), &["sort", "in.bin", "--output", "single", "--single-process"]));
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let shm_dir = shm.path().to_str().unwrap();
    let args = ["sort", "in.bin", "--output", "out", "--mappers", "3", "--reducers", "2", "--path", "vm-local"];
    let stdout = ok(&baton(dir.path(), &[&args[..], &["--shm-dir", shm_dir]].concat()));
    assert!(stdout.contains("shuffle via vm-local"), "{stdout}");
    same_as(&dir.path().join("out"), &dir.path().join("single").join("part-r-00000")).unwrap();
    assert_eq!(std::fs::read_dir(shm.path()).unwrap().count(), 0, "the node leaves nothing in its shm_dir");
    // A directory that is not there is named, not a panic or a silent fallback.
    let out = baton(dir.path(), &[&args[..], &["--shm-dir", "/nonexistent-baton-shm"]].concat());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shm_dir") && stderr.contains("/nonexistent-baton-shm"), "{stderr}");
}

#[test]
fn wordcount_counts_every_word_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("text")).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for f in 0..3 {
        let mut text = String::new();
        for i in 0..2000 {
            let line = format!("file {f} line {i} alpha beta{} gamma{}\n", i % 7, (i * f) % 13);
            for w in line.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
                *expected.entry(w.to_lowercase()).or_insert(0u64) += 1;
            }
            text.push_str(&line);
        }
        std::fs::write(dir.path().join("text").join(format!("{f}.txt")), text).unwrap();
    }
    let out = baton(dir.path(), &["wordcount", "text", "--output", "counts", "--mappers", "5", "--reducers", "3"]);
    ok(&out);
    let mut got = std::collections::BTreeMap::new();
    for r in 0..3 {
        let text = std::fs::read_to_string(dir.path().join("counts").join(format!("part-r-{r:05}"))).unwrap();
        for line in text.lines() {
            let (w, n) = line.split_once('\t').unwrap();
            got.insert(w.to_string(), n.parse::<u64>().unwrap());
        }
    }
    assert_eq!(got, expected);
}

/// A `baton worker` process, killed when dropped.
struct WorkerProcess {
    child: std::process::Child,
    url: String,
}

impl WorkerProcess {
    fn start(scratch: &Path) -> Self {
        Self::start_with(scratch, &[])
    }

    fn start_with(scratch: &Path, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(BATON)
            .args(["worker", "--listen", "127.0.0.1:0", "--scratch", scratch.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("listening on ").unwrap().to_string();
        Self { child, url }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn workers_started_by_hand_run_the_job_over_http() {
    let dir = tempfile::tempdir().unwrap();
    ok(&baton(dir.path(), &["gensort", "in.bin", "--records", "200000", "--seed", "3"]));
    ok(&baton(dir.path(), &["sort", "in.bin", "--output", "single", "--single-process"]));
    let workers = [WorkerProcess::start(dir.path()), WorkerProcess::start(dir.path())];
    let endpoints = format!("{},{}", workers[0].url, workers[1].url);
    let stdout = ok(&baton(
        dir.path(),
        &[
            "sort",
            "in.bin",
            "--output",
            "out",
            "--mappers",
            "4",
            "--reducers",
            "3",
            "--endpoints",
            &endpoints,
            "--summary-json",
            "summary.json",
        ],
    ));
    assert!(stdout.contains("workers over HTTP"), "{stdout}");
    // Every task ran in one of the two worker processes.
    let pids = [workers[0].child.id(), workers[1].child.id()];
    let s = summary(&dir.path().join("summary.json"));
    for stage in s["reports"].as_array().unwrap() {
        for report in stage.as_array().unwrap() {
            let pid = report["pid"].as_u64().unwrap() as u32;
            assert!(pids.contains(&pid), "a task ran in process {pid}, not a worker {pids:?}");
        }
    }
    same_as(&dir.path().join("out"), &dir.path().join("single").join("part-r-00000")).unwrap();
}

#[test]
fn workers_behind_https_run_a_signed_job_and_a_driver_that_does_not_trust_them_gets_nothing_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A cluster's CA and key, and a host's certificate for 127.0.0.1 from it.
    ok(&baton(d, &["certs", "--out", "cluster"]));
    ok(&baton(d, &["certs", "--from", "cluster", "--name", "127.0.0.1", "--out", "host"]));
    ok(&baton(d, &["gensort", "in.bin", "--records", "100000", "--seed", "5"]));
    ok(&baton(d, &["sort", "in.bin", "--output", "single", "--single-process"]));
    let host = d.join("host");
    let workers = [0, 1].map(|_| WorkerProcess::start_with(d, &["--https", "--tls-dir", host.to_str().unwrap()]));
    assert!(workers.iter().all(|w| w.url.starts_with("https://127.0.0.1:")), "{}", workers[0].url);
    let endpoints = format!("{},{}", workers[0].url, workers[1].url);
    let sort = |out: &str, extra: &[&str]| {
        let mut args = vec!["sort", "in.bin", "--output", out, "--mappers", "3", "--reducers", "2"];
        args.extend_from_slice(&["--endpoints", &endpoints, "--max-attempts", "1", "--summary-json"]);
        args.push(if out == "out" { "summary.json" } else { "other.json" });
        args.extend_from_slice(extra);
        baton(d, &args)
    };
    // Signed with the cluster's key, over TLS checked against its CA: the job runs.
    ok(&sort("out", &["--endpoints-tls-dir", "cluster"]));
    same_as(&d.join("out"), &d.join("single").join("part-r-00000")).unwrap();
    let pids = [workers[0].child.id(), workers[1].child.id()];
    let s = summary(&d.join("summary.json"));
    let ran: usize = s["reports"].as_array().unwrap().iter().map(|stage| stage.as_array().unwrap().len()).sum();
    assert_eq!(ran, 5);
    for stage in s["reports"].as_array().unwrap() {
        for report in stage.as_array().unwrap() {
            assert!(pids.contains(&(report["pid"].as_u64().unwrap() as u32)));
        }
    }
    // A driver without the CA does not trust the workers' certificate, and says so.
    let refused = sort("untrusted", &[]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
    // A driver that trusts the CA but signs with another key gets the invocations refused.
    ok(&baton(d, &["certs", "--out", "other"]));
    std::fs::copy(d.join("cluster/ca.pem"), d.join("other/ca.pem")).unwrap();
    let refused = sort("forged", &["--endpoints-tls-dir", "other"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("refused the invocation"), "{err}");
    assert!(!d.join("forged").exists() || std::fs::read_dir(d.join("forged")).unwrap().next().is_none());
}

#[test]
fn a_worker_with_roots_runs_tasks_inside_them_and_refuses_every_name_outside() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let elsewhere = tempfile::tempdir().unwrap();
    let e = elsewhere.path();
    ok(&baton(d, &["gensort", "in.bin", "--records", "20000", "--seed", "4"]));
    ok(&baton(e, &["gensort", "in.bin", "--records", "20000", "--seed", "4"]));
    let worker = WorkerProcess::start_with(d, &["--root", d.to_str().unwrap()]);
    let sort = |input: &str, output: &str, extra: &[&str]| {
        let mut args = vec!["sort", input, "--output", output, "--endpoints", &worker.url, "--max-attempts", "1"];
        args.extend_from_slice(extra);
        baton(d, &args)
    };
    // Inside: it runs.
    ok(&sort("in.bin", "out", &["--validate"]));
    // An input, an output or an object store outside: refused, naming it, and nothing written there.
    let outside_in = e.join("in.bin").display().to_string();
    let err = String::from_utf8_lossy(&sort(&outside_in, "out2", &[]).stderr).into_owned();
    assert!(err.contains(&outside_in) && err.contains("outside the roots"), "{err}");
    let outside_out = e.join("out").display().to_string();
    let err = String::from_utf8_lossy(&sort("in.bin", &outside_out, &[]).stderr).into_owned();
    assert!(err.contains("outside the roots") && err.contains(e.to_str().unwrap()), "{err}");
    assert!(std::fs::read_dir(e.join("out")).map_or(true, |mut d| d.all(|f| f.unwrap().file_name() != "part-r-00000")));
    let objects = format!("file://{}", e.join("objects").display());
    let refused = sort("in.bin", "out3", &["--path", "object-store", "--objects", &objects]);
    let err = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success() && err.contains("outside the roots"), "{err}");
    assert!(!e.join("objects").exists() || walk_files(&e.join("objects")) == 0, "a task wrote outside its roots");
    // A query's tables too: one inside reads, one outside is refused naming its file.
    for at in [d, e] {
        std::fs::write(at.join("t.csv"), "a,b\n1,2\n3,4\n").unwrap();
    }
    let query = |table: &Path| {
        let t = format!("t={}", table.display());
        baton(d, &["sql", "SELECT sum(a) AS s FROM t", "--table", &t, "--endpoints", &worker.url, "--format", "csv"])
    };
    assert!(ok(&query(&d.join("t.csv"))).contains('4'));
    let err = String::from_utf8_lossy(&query(&e.join("t.csv")).stderr).into_owned();
    assert!(err.contains("outside the roots") && err.contains(e.join("t.csv").to_str().unwrap()), "{err}");
}

fn walk_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| if e.path().is_dir() { walk_files(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_https_and_lambda_invokers_conform() {
    use baton_runtime::invoker::{Credentials, HttpInvoker, LambdaConfig, LambdaInvoker};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut config = baton_runtime::local::LocalConfig::new(d.join("baton-data"), Some(BATON.into()));
    config.workers = 1;
    config.node_memory = 64 << 20;
    let env = baton_runtime::local::LocalEnv::start(&config).await.unwrap();
    let tls = baton_fabric::net::TlsDir::new(d.join("tls"));
    tls.generate(&[]).unwrap();
    tls.issue_node(&baton_fabric::net::TlsDir::new(d.join("host")), &["127.0.0.1".into()]).unwrap();
    let key = std::sync::Arc::new(tls.signer().unwrap());
    // Workers over HTTPS, trusted through the cluster's CA.
    let host = d.join("host").display().to_string();
    let workers = [0, 1].map(|_| WorkerProcess::start_with(d, &["--https", "--tls-dir", &host]));
    let urls: Vec<String> = workers.iter().map(|w| w.url.clone()).collect();
    let https = HttpInvoker::new(&urls, std::time::Duration::from_secs(60))
        .unwrap()
        .with_client(baton_runtime::http::HttpClient::new(Some(&d.join("tls"))).unwrap())
        .with_signer(key.clone());
    baton_runtime::invoker::conformance::run_all(&https, &env, d).await;
    // Lambda functions under the emulator, where it is installed (SKIPPED said, otherwise).
    match baton_bench::invokers::lambda_functions(Path::new(BATON), &d.join("tls"), d, 1).unwrap() {
        Ok(functions) => {
            let config = LambdaConfig {
                function: "_".into(),
                endpoint: Some(functions.endpoint.clone()),
                region: None,
                concurrency: 1,
                timeout: std::time::Duration::from_secs(60),
            };
            let credentials = Credentials::new("baton-test", "baton-test", None, None, "test");
            let lambda = LambdaInvoker::with_credentials(&config, credentials).unwrap().with_signer(key);
            std::fs::create_dir_all(d.join("lambda-run")).unwrap();
            baton_runtime::invoker::conformance::run_all(&lambda, &env, &d.join("lambda-run")).await;
        }
        Err(why) => {
            assert!(std::env::var_os("BATON_REQUIRE_LAMBDA").is_none(), "{why}");
            eprintln!("{why}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_pool_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = baton_runtime::local::LocalConfig::new(dir.path().join("baton-data"), Some(BATON.into()));
    config.workers = 2;
    config.node_memory = 64 << 20;
    let env = baton_runtime::local::LocalEnv::start(&config).await.unwrap();
    assert!(env.uses_processes());
    baton_runtime::invoker::conformance::run_all(env.invoker(), &env, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_it_starts_is_started_again() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // A "binary" whose first start dies by SIGKILL before it listens, as the soak's kills do.
    let exe = dir.path().join("flaky-baton");
    let mark = dir.path().join("started-once");
    std::fs::write(
        &exe,
        format!(
            "#!/bin/sh\nif [ ! -e {m} ]; then touch {m}; kill -9 $$; fi\nexec {BATON} \"$@\"\n",
            m = mark.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = baton_runtime::invoker::PoolConfig {
        exe,
        workers: 1,
        memory_limit: 1 << 30,
        scratch: dir.path().join("scratch"),
        timeout: std::time::Duration::from_secs(60),
        signer: None,
    };
    let pool = baton_runtime::invoker::LocalPool::start(config).await.unwrap();
    assert!(mark.exists(), "the first start did not run");
    drop(pool);
}

/// Spilled bytes of a stage, from the job summary's table (`stage tasks attempts seconds wrote
/// spilled`).
fn spilled(summary: &str, stage: &str) -> String {
    let row =
        summary.lines().find(|l| l.split_whitespace().next() == Some(stage) && l.contains("iB")).unwrap_or_default();
    // stage, tasks, attempts, seconds, wrote (2 words), spilled (2 words), cold starts.
    row.split_whitespace().skip(6).take(2).collect::<Vec<_>>().join(" ")
}

#[test]
fn a_map_output_and_a_partition_far_over_the_workers_memory_are_sorted_through_disk() {
    // 305 MiB through one mapper and two reducers on workers of 256 MiB each (budget 64 MiB):
    // the mapper streams its spilled runs into its coalesced object, and each reducer sorts
    // runs out to disk and merges them, rather than holding what it sorts.
    let dir = tempfile::tempdir().unwrap();
    ok(&baton(dir.path(), &["gensort", "in.bin", "--records", "3200000", "--seed", "8"]));
    let args = [
        "sort",
        "in.bin",
        "-o",
        "out",
        "--mappers",
        "1",
        "--reducers",
        "2",
        "--workers",
        "2",
        "--worker-memory",
        "256MiB",
        "--topology",
        "coalesced",
        "--path",
        "vm-local",
        "--validate",
    ];
    let stdout = ok(&baton(dir.path(), &args));
    assert!(stdout.contains("validated: 2 files, 3200000 records, globally sorted"), "{stdout}");
    assert_eq!(spilled(&stdout, "map"), "305.2 MiB", "{stdout}");
    // Each reducer ran all but its last few MiB out to disk.
    let reduce: f64 = spilled(&stdout, "reduce").trim_end_matches(" MiB").parse().unwrap();
    assert!(reduce > 180.0, "{stdout}");
}
