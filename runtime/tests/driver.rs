//! The driver, invokers and MapReduce operators in one process, over real paths: the embedded
//! node (VM-local over its Unix socket, the remote store over QUIC on 127.0.0.1) and a file://
//! object store.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use baton_fabric::JobId;
use baton_planner::{Path, Topology};
use baton_runtime::driver::{self, DriverConfig, JobSpec};
use baton_runtime::invoker::{HttpInvoker, InProcess, Invoker};
use baton_runtime::local::{LocalConfig, LocalEnv};
use baton_runtime::mapreduce::input::{self, Source};
use baton_runtime::mapreduce::output::{Output, output_url};
use baton_runtime::mapreduce::records;
use baton_runtime::mapreduce::{registry, sort, wordcount};
use baton_runtime::operator::{Operator, Registry, TaskContext};
use baton_runtime::worker::Worker;
use baton_runtime::{Error, Result};

const RECORDS: u64 = 40_000;

struct Setup {
    dir: tempfile::TempDir,
    env: LocalEnv,
    sources: Vec<Source>,
    expected: bytes::Bytes,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.bin");
    records::write_file(&file, 42, RECORDS).unwrap();
    let mut config = LocalConfig::new(dir.path().join("baton-data"), None);
    config.workers = 3;
    config.node_memory = 64 << 20;
    let env = LocalEnv::start(&config).await.unwrap();
    let sources = input::resolve(&[file.display().to_string()]).await.unwrap();
    let single = output_url(&dir.path().join("single").display().to_string()).unwrap();
    sort::single_process(&sources, &single).await.unwrap();
    let expected = Output::open(&single).unwrap().get("part-r-00000").await.unwrap();
    Setup { dir, env, sources, expected }
}

async fn concatenated(url: &str) -> Vec<u8> {
    let out = Output::open(url).unwrap();
    let mut all = Vec::new();
    for (name, _) in out.parts().await.unwrap() {
        all.extend_from_slice(&out.get(&name).await.unwrap());
    }
    all
}

fn config(env: &LocalEnv, job: u64) -> DriverConfig {
    let mut c = DriverConfig::new(JobId(job));
    c.token = Some(env.token(JobId(job)).unwrap());
    c.memory_budget = 1 << 20;
    c
}

/// Nothing of the job is left on the node or in the object store.
async fn assert_nothing_left(env: &LocalEnv, job: u64) {
    let left = env.leftovers(JobId(job));
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_matches_one_process_on_every_path_and_layout() {
    let s = setup().await;
    let mut job = 100;
    for path in [Path::VmLocal, Path::RemoteStore, Path::ObjectStore] {
        for layout in [Topology::AllToAll, Topology::Coalesced] {
            job += 1;
            let url = output_url(&s.dir.path().join(format!("out-{job}")).display().to_string()).unwrap();
            let spec = s.env.spec(path).unwrap();
            let j = sort::job(s.sources.clone(), 5, 4, spec, layout, url.clone()).await.unwrap();
            let summary = driver::run(&j, s.env.invoker(), &config(&s.env, job)).await.unwrap();
            let got = concatenated(&url).await;
            assert!(got == s.expected[..], "{path:?} {layout:?}: output differs from the single-process sort");
            let edge = &summary.edges[0];
            let expected_writes = if layout == Topology::AllToAll { 5 * 4 } else { 5 };
            assert_eq!((edge.writes, edge.reads), (expected_writes, 20), "{path:?} {layout:?}");
            assert_eq!(edge.bytes, summary.stages[0].bytes_out);
            assert!(summary.freed_bytes >= edge.bytes, "{path:?}: ending the job freed {}", summary.freed_bytes);
            assert_nothing_left(&s.env, job).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_level_exchanges_sort_like_one_process() {
    let s = setup().await;
    let mut job = 200;
    for (path, levels, mappers, reducers) in
        [(Path::VmLocal, 2, 5, 4), (Path::ObjectStore, 2, 9, 7), (Path::RemoteStore, 3, 6, 8)]
    {
        job += 1;
        let url = output_url(&s.dir.path().join(format!("out-{job}")).display().to_string()).unwrap();
        let spec = s.env.spec(path).unwrap();
        let topology = Topology::KLevel { levels };
        let j = sort::job(s.sources.clone(), mappers, reducers, spec, topology, url.clone()).await.unwrap();
        let summary = driver::run(&j, s.env.invoker(), &config(&s.env, job)).await.unwrap();
        assert!(concatenated(&url).await == s.expected[..], "{levels}-level on {path:?}: output differs");
        let k = baton_runtime::shuffle::klevel::KLevel::new(levels, mappers, reducers);
        // map, levels - 1 merge stages, reduce; one edge per round.
        assert_eq!(summary.stages.len() as u32, levels + 1);
        assert_eq!(summary.edges.len() as u32, levels);
        for (round, edge) in summary.edges.iter().enumerate() {
            let receivers = if round as u32 + 1 == levels { reducers } else { k.width() };
            assert!(edge.reads <= u64::from(receivers * k.fanout), "round {round} reads {} objects", edge.reads);
            assert!(edge.writes <= u64::from(k.width()), "round {round}: one coalesced object per sender");
            assert!(edge.bytes >= RECORDS * 100, "every record crosses every round: {}", edge.bytes);
        }
        assert_nothing_left(&s.env, job).await;
    }
}

/// (operator, ended, partition, when).
type Events = Arc<std::sync::Mutex<Vec<(&'static str, bool, u32, std::time::Instant)>>>;

/// Records when it starts and ends; sleeps first when it runs partition `slow`.
#[derive(Debug)]
struct Timed {
    inner: Arc<dyn Operator>,
    slow: Option<u32>,
    clock: Events,
    name: &'static str,
}

#[async_trait]
impl Operator for Timed {
    async fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let p = ctx.task().id.partition;
        self.clock.lock().unwrap().push((self.name, false, p, std::time::Instant::now()));
        if self.slow == Some(p) {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        self.inner.run(ctx).await?;
        self.clock.lock().unwrap().push((self.name, true, p, std::time::Instant::now()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_a_pipelined_edge_start_before_the_producers_end() {
    let s = setup().await;
    for (job, path) in [(301, Path::VmLocal), (302, Path::RemoteStore)] {
        let clock = Arc::new(std::sync::Mutex::new(Vec::new()));
        let base = registry();
        let mut r = registry();
        r.register(
            sort::MAP,
            Timed { inner: base.get(sort::MAP).unwrap(), slow: Some(0), clock: clock.clone(), name: "map" },
        );
        r.register(
            sort::REDUCE,
            Timed { inner: base.get(sort::REDUCE).unwrap(), slow: None, clock: clock.clone(), name: "reduce" },
        );
        let invoker = InProcess::new(r, s.dir.path(), 3);
        let url = output_url(&s.dir.path().join(format!("out-{job}")).display().to_string()).unwrap();
        let mut j = sort::job(s.sources.clone(), 3, 4, s.env.spec(path).unwrap(), Topology::Coalesced, url.clone())
            .await
            .unwrap();
        j.edges[0].pipelined = true;
        let summary = driver::run(&j, &invoker, &config(&s.env, job)).await.unwrap();
        assert!(concatenated(&url).await == s.expected[..], "{path:?}: output differs");
        // Counted: 3 coalesced objects; 12 ranges read, and each of the 3 notes the driver wrote
        // read once by the consumers that started early (their polls before it came are misses).
        let edge = &summary.edges[0];
        assert_eq!((edge.writes, edge.reads, edge.notes), (3, 15, 3), "{edge:?}");
        let events = clock.lock().unwrap().clone();
        let slow_end = events.iter().find(|e| e.0 == "map" && e.1 && e.2 == 0).unwrap().3;
        let first_reduce = events.iter().filter(|e| e.0 == "reduce" && !e.1).map(|e| e.3).min().unwrap();
        assert!(first_reduce < slow_end, "{path:?}: no reducer started while the slow mapper ran");
        assert_nothing_left(&s.env, job).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_edge_survives_a_retry_and_a_failure_does_not_hang() {
    let s = setup().await;
    for (job, retryable) in [(311, true), (312, false)] {
        let invoker = InProcess::new(flaky_registry(retryable), s.dir.path(), 3);
        let url = output_url(&s.dir.path().join(format!("out-{job}")).display().to_string()).unwrap();
        let spec = s.env.spec(Path::VmLocal).unwrap();
        let mut j = sort::job(s.sources.clone(), 4, 3, spec, Topology::AllToAll, url.clone()).await.unwrap();
        j.edges[0].pipelined = true;
        let c = config(&s.env, job);
        let run = driver::run(&j, &invoker, &c);
        let result = tokio::time::timeout(std::time::Duration::from_secs(60), run).await.expect("the job hung");
        if retryable {
            let summary = result.unwrap();
            assert_eq!(summary.stages[0].attempts, 5);
            assert!(concatenated(&url).await == s.expected[..]);
        } else {
            assert!(matches!(result, Err(Error::Exhausted { .. })), "{result:?}");
        }
        assert_nothing_left(&s.env, job).await;
    }
}

#[test]
fn only_node_paths_are_pipelined() {
    let job = JobSpec {
        name: "x".into(),
        stages: vec![
            baton_runtime::driver::StageSpec {
                name: "a".into(),
                op: "a".into(),
                params: serde_json::Value::Null,
                tasks: 1,
                host: None,
            },
            baton_runtime::driver::StageSpec {
                name: "b".into(),
                op: "b".into(),
                params: serde_json::Value::Null,
                tasks: 1,
                host: None,
            },
        ],
        edges: vec![baton_runtime::driver::EdgeSpec {
            from: 0,
            to: 1,
            path: baton_runtime::paths::PathSpec::ObjectStore { url: "memory://".into() },
            topology: Topology::Coalesced,
            pipelined: true,
            partitions: None,
        }],
        collect: None,
    };
    assert!(matches!(job.check(), Err(Error::BadJob { .. })));
}

/// Fails the first attempt of one partition after it has written its objects.
#[derive(Debug)]
struct FailOnce {
    inner: Arc<dyn Operator>,
    partition: u32,
    failed: AtomicBool,
    retryable: bool,
}

#[async_trait]
impl Operator for FailOnce {
    async fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        self.inner.run(ctx).await?;
        if ctx.task().id.partition == self.partition && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(if self.retryable {
                Error::WorkerLost { endpoint: "test".into(), reason: "injected after writing".into() }
            } else {
                Error::BadJob { reason: "injected".into() }
            });
        }
        Ok(())
    }
}

fn flaky_registry(retryable: bool) -> Registry {
    let base = registry();
    let mut r = registry();
    r.register(
        sort::MAP,
        FailOnce { inner: base.get(sort::MAP).unwrap(), partition: 2, failed: AtomicBool::new(false), retryable },
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_retried_and_its_objects_are_never_read() {
    let s = setup().await;
    let invoker = InProcess::new(flaky_registry(true), s.dir.path(), 2);
    let url = output_url(&s.dir.path().join("out").display().to_string()).unwrap();
    let spec = s.env.spec(Path::VmLocal).unwrap();
    let j = sort::job(s.sources.clone(), 4, 3, spec, Topology::AllToAll, url.clone()).await.unwrap();
    let summary = driver::run(&j, &invoker, &config(&s.env, 7)).await.unwrap();
    assert_eq!(summary.stages[0].attempts, 5, "four map tasks and one retry");
    // The failed attempt had written its objects too (counted: 12 and its 3); reducers read
    // only the retry's.
    assert_eq!((summary.edges[0].writes, summary.edges[0].reads), (15, 12));
    assert!(concatenated(&url).await == s.expected[..]);
    assert_nothing_left(&s.env, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_that_cannot_be_retried_fails_the_job_at_once() {
    let s = setup().await;
    let invoker = InProcess::new(flaky_registry(false), s.dir.path(), 2);
    let url = output_url(&s.dir.path().join("out").display().to_string()).unwrap();
    let spec = s.env.spec(Path::ObjectStore).unwrap();
    let j = sort::job(s.sources.clone(), 4, 3, spec, Topology::Coalesced, url).await.unwrap();
    match driver::run(&j, &invoker, &config(&s.env, 8)).await {
        Err(Error::Exhausted { stage, partition, attempts, last }) => {
            assert_eq!((stage.as_str(), partition, attempts), ("map", 2, 1));
            assert!(last.contains("injected"), "{last}");
        }
        other => panic!("expected the job to fail, got {other:?}"),
    }
    assert_nothing_left(&s.env, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_over_http_run_the_job() {
    let s = setup().await;
    let mut urls = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(Worker::new(registry(), s.dir.path()).serve(listener, None));
    }
    let invoker = HttpInvoker::new(&urls, std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(invoker.slots(), 2);
    let url = output_url(&s.dir.path().join("out").display().to_string()).unwrap();
    let spec = s.env.spec(Path::RemoteStore).unwrap();
    let j = sort::job(s.sources.clone(), 3, 2, spec, Topology::Coalesced, url.clone()).await.unwrap();
    let summary = driver::run(&j, &invoker, &config(&s.env, 9)).await.unwrap();
    assert!(concatenated(&url).await == s.expected[..]);
    assert_eq!(summary.reports[0].len(), 3);

    // What is not a task is refused with a reason.
    let endpoint = baton_runtime::http::Endpoint::parse(&urls[0]).unwrap();
    let (status, body) =
        endpoint.post("/invoke", b"{not json".to_vec(), std::time::Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.as_u16(), 400);
    assert!(String::from_utf8_lossy(&body).contains("not a task"));
    let (status, _) = endpoint.get("/health", std::time::Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.as_u16(), 200);

    // Tasks that parse but cannot run are failures with a reason, not a dead worker.
    use baton_runtime::shuffle::klevel::KLevel;
    use baton_runtime::task::{Output as TaskOutput, Route, Task};
    let params = sort::SortParams {
        sources: s.sources.clone(),
        splits: vec![vec![input::Piece { source: 5, range: 0..100 }]],
        boundaries: vec![],
        output: url.clone(),
    };
    let task = |route| Task {
        job: JobId(9),
        token: None,
        id: baton_fabric::TaskId { stage: baton_fabric::StageId(1), partition: 0, attempt: 0 },
        partitions: 1,
        op: sort::MAP.into(),
        params: serde_json::to_value(&params).unwrap(),
        inputs: vec![],
        outputs: vec![TaskOutput {
            edge: baton_fabric::EdgeId(1),
            path: s.env.spec(Path::ObjectStore).unwrap(),
            layout: baton_runtime::shuffle::Layout::Coalesced,
            partitions: 1,
            route,
        }],
        memory_budget: 1 << 20,
    };
    let cases = [
        (task(Route::Tag { klevel: KLevel { levels: 2, fanout: 0 }, reducers: 1 }), "k-level"),
        (task(Route::Direct), "no input file 5"),
    ];
    for (bad, expected) in cases {
        let body = serde_json::to_vec(&bad).unwrap();
        let (status, body) = endpoint.post("/invoke", body, std::time::Duration::from_secs(5)).await.unwrap();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status.as_u16(), 500, "{body}");
        assert!(body.contains(expected), "{body}");
    }
    let (status, _) = endpoint.get("/health", std::time::Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.as_u16(), 200, "the worker lives on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_its_clusters_key_runs_only_invocations_signed_with_it() {
    use baton_fabric::net::TokenKey;
    let s = setup().await;
    let key = std::sync::Arc::new(TokenKey::generate().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Worker::verifying(registry(), s.dir.path(), key.public()).serve(listener, None));
    let endpoint = baton_runtime::http::Endpoint::parse(&url).unwrap();
    let wait = std::time::Duration::from_secs(5);
    // Even what is not a task is refused unsigned: nothing of it is decoded.
    let (status, body) = endpoint.post("/invoke", b"{not json".to_vec(), wait).await.unwrap();
    assert_eq!(status.as_u16(), 401, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not signed"));
    let body = b"{not json".to_vec();
    let later = baton_fabric::net::token::unix_ms_now() + 60_000;
    let signed = |body: &[u8], expires: u64, key: &TokenKey| {
        vec![("x-baton-signature", key.sign_invocation(body, expires)), ("x-baton-expires", expires.to_string())]
    };
    // Another cluster's signature, and a signature over other bytes: 403.
    let stranger = TokenKey::generate().unwrap();
    let (status, _) =
        endpoint.post_with("/invoke", body.clone(), &signed(&body, later, &stranger), wait).await.unwrap();
    assert_eq!(status.as_u16(), 403);
    let (status, _) =
        endpoint.post_with("/invoke", b"{other}".to_vec(), &signed(&body, later, &key), wait).await.unwrap();
    assert_eq!(status.as_u16(), 403);
    // Expired: 401.
    let past = later - 120_000;
    let (status, body2) = endpoint.post_with("/invoke", body.clone(), &signed(&body, past, &key), wait).await.unwrap();
    assert_eq!(status.as_u16(), 401);
    assert!(String::from_utf8_lossy(&body2).contains("expired"));
    // Signed with its cluster's key, it is read (and this body is then not a task).
    let (status, reply) = endpoint.post_with("/invoke", body.clone(), &signed(&body, later, &key), wait).await.unwrap();
    assert_eq!(status.as_u16(), 400);
    assert!(String::from_utf8_lossy(&reply).contains("not a task"));
    // A job through an invoker that signs with the key runs; one that does not sign fails at
    // once, saying why, instead of retrying.
    let invoker = HttpInvoker::new(std::slice::from_ref(&url), std::time::Duration::from_secs(60))
        .unwrap()
        .with_signer(key.clone());
    let out = output_url(&s.dir.path().join("signed").display().to_string()).unwrap();
    let spec = s.env.spec(Path::RemoteStore).unwrap();
    let j = sort::job(s.sources.clone(), 2, 1, spec.clone(), Topology::Coalesced, out.clone()).await.unwrap();
    driver::run(&j, &invoker, &config(&s.env, 21)).await.unwrap();
    assert!(concatenated(&out).await == s.expected[..]);
    let unsigned = HttpInvoker::new(&[url], std::time::Duration::from_secs(60)).unwrap();
    let out = output_url(&s.dir.path().join("unsigned").display().to_string()).unwrap();
    let j = sort::job(s.sources.clone(), 2, 1, spec, Topology::Coalesced, out).await.unwrap();
    let err = driver::run(&j, &unsigned, &config(&s.env, 22)).await.unwrap_err().to_string();
    assert!(err.contains("refused the invocation") && err.contains("not signed"), "{err}");
}

/// Panics on every run, as an operator with a bug would.
#[derive(Debug)]
struct Panics;

#[async_trait]
impl Operator for Panics {
    async fn run(&self, _ctx: &mut TaskContext) -> Result<()> {
        panic!("index out of bounds: the len is 3 but the index is 7")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_operator_fails_its_task_once_and_the_worker_lives_on() {
    let s = setup().await;
    let mut panicky = registry();
    panicky.register("test.panics", Panics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Worker::new(panicky, s.dir.path()).serve(listener, None));
    let http = HttpInvoker::new(&[url], std::time::Duration::from_secs(60)).unwrap();
    let job = JobSpec {
        name: "panics".into(),
        stages: vec![baton_runtime::driver::StageSpec {
            name: "only".into(),
            op: "test.panics".into(),
            params: serde_json::Value::Null,
            tasks: 1,
            host: None,
        }],
        edges: vec![],
        collect: None,
    };
    match driver::run(&job, &http, &config(&s.env, 11)).await {
        Err(Error::Exhausted { attempts, last, .. }) => {
            assert_eq!(attempts, 1, "a deterministic panic is not retried: {last}");
            assert!(last.contains("panicked") && last.contains("index out of bounds"), "{last}");
        }
        other => panic!("expected the job to fail, got {other:?}"),
    }
    // The same worker still runs jobs.
    baton_runtime::invoker::conformance::a_job_runs_on_it(&http, &s.env, s.dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_and_http_invokers_conform() {
    let s = setup().await;
    baton_runtime::invoker::conformance::run_all(s.env.invoker(), &s.env, s.dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Worker::new(registry(), s.dir.path()).serve(listener, None));
    let http = HttpInvoker::new(&[url], std::time::Duration::from_secs(60)).unwrap();
    baton_runtime::invoker::conformance::run_all(&http, &s.env, s.dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_operator_is_named() {
    let s = setup().await;
    let job = JobSpec {
        name: "bad".into(),
        stages: vec![baton_runtime::driver::StageSpec {
            name: "only".into(),
            op: "no.such.op".into(),
            params: serde_json::Value::Null,
            tasks: 1,
            host: None,
        }],
        edges: vec![],
        collect: None,
    };
    let err = driver::run(&job, s.env.invoker(), &config(&s.env, 10)).await.unwrap_err();
    assert!(err.to_string().contains("no.such.op"), "{err}");
    assert!(err.to_string().contains("sort.map"), "the message lists the known operators: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_count_matches_a_count_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..3000 {
        text.push_str(&format!("Line {i}: the quick brown fox {} jumps over the lazy dog {}\n", i % 17, i % 101));
    }
    let (a, b) = text.split_at(text.len() / 3);
    std::fs::write(dir.path().join("a.txt"), a).unwrap();
    std::fs::write(dir.path().join("b.txt"), b).unwrap();
    let mut expected = std::collections::HashMap::new();
    wordcount::count_words(&text, &mut expected);
    // A line cut across the two files is two lines: count it as the job sees it.
    expected.clear();
    wordcount::count_words(a, &mut expected);
    wordcount::count_words(b, &mut expected);

    let mut config_local = LocalConfig::new(dir.path().join("baton-data"), None);
    config_local.workers = 2;
    config_local.node_memory = 64 << 20;
    let env = LocalEnv::start(&config_local).await.unwrap();
    let sources = input::resolve(&[dir.path().display().to_string()]).await.unwrap();
    assert_eq!(sources.len(), 2);
    let url = output_url(&dir.path().join("out").display().to_string()).unwrap();
    let spec = env.spec(Path::VmLocal).unwrap();
    // Seven mappers split lines mid-way; each line still counts once.
    let j = wordcount::job(sources, 7, 3, spec, Topology::Coalesced, url.clone()).unwrap();
    driver::run(&j, env.invoker(), &config(&env, 11)).await.unwrap();
    let mut got = std::collections::HashMap::new();
    let out = Output::open(&url).unwrap();
    let parts = out.parts().await.unwrap();
    assert_eq!(parts.len(), 3);
    for (name, _) in parts {
        let text = out.get(&name).await.unwrap();
        let lines: Vec<_> = std::str::from_utf8(&text).unwrap().lines().map(str::to_owned).collect();
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted, "{name} is sorted by word");
        for line in lines {
            let (word, n) = line.split_once('\t').unwrap();
            assert!(got.insert(word.to_string(), n.parse::<u64>().unwrap()).is_none(), "{word} in two partitions");
        }
    }
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_malformed_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.bin").display().to_string();
    match input::resolve(std::slice::from_ref(&missing)).await {
        Err(Error::Input { file, .. }) => assert_eq!(file, missing),
        other => panic!("{other:?}"),
    }
    let odd = dir.path().join("odd.bin");
    std::fs::write(&odd, vec![0u8; 250]).unwrap();
    let sources = input::resolve(&[odd.display().to_string()]).await.unwrap();
    match sort::check_sources(&sources) {
        Err(Error::Input { file, reason }) => {
            assert!(file.ends_with("odd.bin"));
            assert!(reason.contains("100-byte records"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_jobs_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let invoker = InProcess::new(registry(), dir.path(), 1);
    let stage = |tasks| baton_runtime::driver::StageSpec {
        name: "s".into(),
        op: sort::MAP.into(),
        params: serde_json::Value::Null,
        tasks,
        host: None,
    };
    let backwards = JobSpec {
        name: "backwards".into(),
        stages: vec![stage(1), stage(1)],
        edges: vec![baton_runtime::driver::EdgeSpec {
            from: 1,
            to: 0,
            path: baton_runtime::paths::PathSpec::ObjectStore { url: "memory://".into() },
            topology: Topology::AllToAll,
            pipelined: false,
            partitions: None,
        }],
        collect: None,
    };
    assert!(matches!(driver::run(&backwards, &invoker, &DriverConfig::new(JobId(1))).await, Err(Error::BadJob { .. })));
    let empty = JobSpec { name: "empty".into(), stages: vec![stage(0)], edges: vec![], collect: None };
    assert!(matches!(driver::run(&empty, &invoker, &DriverConfig::new(JobId(2))).await, Err(Error::BadJob { .. })));
}

/// Runs tasks in process and remembers the largest invocation payload of each stage.
#[derive(Debug)]
struct Measuring {
    inner: InProcess,
    largest: std::sync::Mutex<std::collections::BTreeMap<u32, usize>>,
}

#[async_trait]
impl Invoker for Measuring {
    fn slots(&self) -> usize {
        self.inner.slots()
    }

    async fn invoke(&self, task: baton_runtime::task::Task) -> Result<baton_runtime::task::TaskReport> {
        let size = serde_json::to_vec(&task).unwrap().len();
        {
            let mut largest = self.largest.lock().unwrap();
            let entry = largest.entry(task.id.stage.0).or_default();
            *entry = (*entry).max(size);
        }
        self.inner.invoke(task).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducers_invocation_does_not_grow_with_the_number_of_reducers() {
    let s = setup().await;
    let mut sizes = Vec::new();
    for (job, reducers) in [(30u64, 50u32), (31, 400)] {
        let invoker = Measuring { inner: InProcess::new(registry(), s.dir.path(), 2), largest: Default::default() };
        let url = output_url(&s.dir.path().join(format!("out-{job}")).display().to_string()).unwrap();
        let spec = s.env.spec(Path::VmLocal).unwrap();
        let j = sort::job(s.sources.clone(), 3, reducers, spec, Topology::Coalesced, url.clone()).await.unwrap();
        driver::run(&j, &invoker, &config(&s.env, job)).await.unwrap();
        assert!(concatenated(&url).await == s.expected[..]);
        let largest = invoker.largest.lock().unwrap().clone();
        sizes.push(*largest.values().last().unwrap());
    }
    // Each reducer carries its own partition of each mapper's output, not all of them, and no
    // mapper-only parameters (the boundaries): 8x the reducers, about the same payload.
    assert!(sizes[1] < sizes[0] + sizes[0] / 4, "reduce invocations grew from {} to {} bytes", sizes[0], sizes[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_deletes_the_jobs_objects_from_the_object_store_too() {
    use baton_fabric::DataPath;
    let s = setup().await;
    let job = JobId(0x1a5e);
    // A job whose driver died: its lease on the node lapses, nobody ends it.
    s.env.node().store().open_job(job, std::time::Duration::from_millis(200)).unwrap();
    let objects = baton_connectors::object_store_path(s.env.object_store_url()).unwrap();
    let key = baton_fabric::ObjectKey::new(job, baton_fabric::EdgeId(0), 0, 0);
    objects.put(&key, bytes::Bytes::from_static(b"left by a dead driver")).await.unwrap();
    assert!(!s.env.leftovers(job).is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.env.leftovers(job).is_empty() {
        assert!(std::time::Instant::now() < deadline, "still there: {:?}", s.env.leftovers(job));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_a_task_names_are_bounded_before_anything_is_sized_by_them() {
    let s = setup().await;
    let spec = s.env.spec(Path::VmLocal).unwrap();
    let base = baton_runtime::task::Task {
        job: JobId(40),
        token: None,
        id: baton_fabric::TaskId { stage: baton_fabric::StageId(1), partition: 0, attempt: 0 },
        partitions: 1,
        op: sort::REDUCE.into(),
        params: serde_json::Value::Null,
        inputs: vec![],
        outputs: vec![baton_runtime::task::Output {
            edge: baton_fabric::EdgeId(1),
            path: spec,
            layout: baton_runtime::shuffle::Layout::Coalesced,
            partitions: u32::MAX,
            route: baton_runtime::task::Route::Direct,
        }],
        memory_budget: 1 << 20,
    };
    let mut past_the_stage = base.clone();
    past_the_stage.outputs[0].partitions = 4;
    past_the_stage.id.partition = 7;
    for (task, says) in [(base, "4294967295 partitions"), (past_the_stage, "partition 7 of a stage of 1")] {
        match s.env.invoker().invoke(task).await {
            Err(Error::Task { message, retryable: false, .. }) => assert!(message.contains(says), "{message}"),
            other => panic!("expected a refusal naming {says:?}, got {other:?}"),
        }
    }
}

/// Writes the file its parameters name: the mark that a task ran.
#[derive(Debug)]
struct Marks;

#[async_trait]
impl Operator for Marks {
    async fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let path: String = ctx.params()?;
        std::fs::write(&path, b"ran").map_err(|e| Error::io("write", &path, e))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_and_foreign_invocations_run_nothing() {
    use baton_fabric::net::TokenKey;
    use baton_fabric::{StageId, TaskId};
    let dir = tempfile::tempdir().unwrap();
    let key = TokenKey::generate().unwrap();
    let mut marking = registry();
    marking.register("test.marks", Marks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Worker::verifying(marking, dir.path(), key.public()).serve(listener, None));
    let endpoint = baton_runtime::http::Endpoint::parse(&url).unwrap();
    let task = |job: u64, mark: &str| {
        let task = baton_runtime::task::Task {
            job: JobId(job),
            token: None,
            id: TaskId { stage: StageId(0), partition: 0, attempt: 0 },
            partitions: 1,
            op: "test.marks".into(),
            params: serde_json::Value::String(dir.path().join(mark).display().to_string()),
            inputs: Vec::new(),
            outputs: Vec::new(),
            memory_budget: 1 << 20,
        };
        serde_json::to_vec(&task).unwrap()
    };
    let post = |body: Vec<u8>, signed_body: Vec<u8>, expires: u64, key: &TokenKey| {
        let headers = vec![
            ("x-baton-signature", key.sign_invocation(&signed_body, expires)),
            ("x-baton-expires", expires.to_string()),
        ];
        let endpoint = endpoint.clone();
        async move { endpoint.post_with("/invoke", body, &headers, std::time::Duration::from_secs(5)).await.unwrap().0 }
    };
    let later = baton_fabric::net::token::unix_ms_now() + 60_000;
    // Tampered: signed for one mark, sent naming another (or another job): refused, nothing written.
    assert_eq!(post(task(1, "b"), task(1, "a"), later, &key).await.as_u16(), 403);
    assert_eq!(post(task(2, "a"), task(1, "a"), later, &key).await.as_u16(), 403);
    // Expired, and signed by another cluster's key: refused, nothing written.
    assert_eq!(post(task(1, "a"), task(1, "a"), later - 120_000, &key).await.as_u16(), 401);
    assert_eq!(post(task(1, "a"), task(1, "a"), later, &TokenKey::generate().unwrap()).await.as_u16(), 403);
    for mark in ["a", "b"] {
        assert!(!dir.path().join(mark).exists(), "a refused invocation ran and wrote {mark}");
    }
    // The same invocation signed as it is sent runs, and writes its mark.
    assert_eq!(post(task(1, "a"), task(1, "a"), later, &key).await.as_u16(), 200);
    assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"ran");
}
