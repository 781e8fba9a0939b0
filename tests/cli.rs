//! End-to-end tests that drive the `baton` binary: a node process, and functions in other
//! processes that write and read through it.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use baton_bench::worker::{PathSpec, Role, WorkerArgs, WorkerReport, spawn};
use baton_fabric::{EdgeId, JobId, ObjectKey};

const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// A `baton node` process, killed when dropped.
struct NodeProcess {
    child: Child,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl NodeProcess {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("node.sock");
        let shm = dir.path().join("shm");
        std::fs::create_dir_all(&shm).unwrap();
        let mut args = vec![
            "node".to_string(),
            "--socket".into(),
            socket.display().to_string(),
            "--flash-dir".into(),
            dir.path().join("flash").display().to_string(),
            "--shm-dir".into(),
            shm.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(BATON).args(&args).stderr(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "node did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, socket, dir }
    }

    fn baton(&self, args: &[&str]) -> Output {
        Command::new(BATON).args(args).env("BATON_SOCKET", &self.socket).output().unwrap()
    }

    fn files(&self, sub: &str) -> Vec<PathBuf> {
        walk(&self.dir.path().join(sub))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn fails(output: Output) -> String {
    assert!(!output.status.success(), "should have failed: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn put_get_list_remove_and_end_through_a_node() {
    let node = NodeProcess::start(&["--memory", "1MiB"]);
    ok(node.baton(&["job", "open", "42"]));
    let input = node.dir.path().join("input.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    ok(node.baton(&["put", "job-2a/edge-0/0-1", input.to_str().unwrap()]));
    ok(node.baton(&["put", "job-2a/edge-0/1-1", input.to_str().unwrap()]));
    let listing = ok(node.baton(&["ls", "42"]));
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(listing.contains("job-000000000000002a/edge-0/0-1"), "{listing}");
    let copy = node.dir.path().join("copy.bin");
    ok(node.baton(&["get", "job-2a/edge-0/1-1", "--out", copy.to_str().unwrap()]));
    assert!(std::fs::read(&copy).unwrap() == data, "object came back different");
    // Larger than memory: the objects sit on flash.
    assert_eq!(node.files("flash").iter().filter(|p| p.to_string_lossy().contains("job-")).count(), 2);
    ok(node.baton(&["rm", "job-2a/edge-0/0-1"]));
    assert_eq!(ok(node.baton(&["ls", "42"])).lines().count(), 1);
    let end = ok(node.baton(&["job", "end", "42"]));
    assert!(end.contains("freed"), "{end}");
    assert!(node.files("flash").iter().all(|p| !p.to_string_lossy().contains("job-")), "flash not emptied");
    let err = fails(node.baton(&["ls", "42"]));
    assert!(err.contains("unknown job"), "{err}");
}

#[test]
fn arrow_data_crosses_processes_zero_copy_and_survives_a_crashed_consumer() {
    let node = NodeProcess::start(&["--memory", "256MiB"]);
    ok(node.baton(&["job", "open", "7"]));
    let key = ObjectKey::new(JobId(7), EdgeId(0), 0, 0);
    let path = PathSpec::VmLocal { socket: node.socket.clone() };
    let produce = WorkerArgs { role: Role::Produce, path, key, rows: 1 << 20 };
    let producer = spawn(Path::new(BATON), &produce, Duration::from_secs(60)).unwrap();
    let consumer =
        spawn(Path::new(BATON), &WorkerArgs { role: Role::Consume, ..produce.clone() }, Duration::from_secs(60))
            .unwrap();
    let me = std::process::id();
    assert!(producer.pid != consumer.pid && producer.pid != me && consumer.pid != me, "not separate processes");
    assert_eq!(consumer.checksum, producer.checksum);
    assert_eq!(consumer.rows, 1 << 20);
    assert_eq!(consumer.zero_copy, Some(true), "the consumer's arrays must point into the mapping");

    // A consumer killed while it holds the object mapped leaves it intact.
    let mut holder = Command::new(BATON)
        .arg("__worker")
        .arg(serde_json::to_string(&WorkerArgs { role: Role::Hold, ..produce.clone() }).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let held: WorkerReport = serde_json::from_str(&line).unwrap();
    assert_eq!(held.checksum, producer.checksum);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let after =
        spawn(Path::new(BATON), &WorkerArgs { role: Role::Consume, ..produce }, Duration::from_secs(60)).unwrap();
    assert_eq!(after.checksum, producer.checksum, "data changed after a consumer crashed");
}

#[test]
fn a_lapsed_lease_deletes_the_jobs_objects() {
    let node = NodeProcess::start(&["--memory", "1MiB", "--reap-interval-ms", "20"]);
    ok(node.baton(&["job", "open", "9", "--ttl", "300ms"]));
    let input = node.dir.path().join("input.bin");
    std::fs::write(&input, vec![1u8; 2 << 20]).unwrap();
    ok(node.baton(&["put", "job-9/edge-0/0-0", input.to_str().unwrap()]));
    assert!(node.files("flash").iter().any(|p| p.to_string_lossy().contains("job-")));
    std::thread::sleep(Duration::from_millis(600));
    let err = fails(node.baton(&["get", "job-9/edge-0/0-0"]));
    assert!(err.contains("lease") && err.contains("expired"), "{err}");
    assert!(node.files("flash").iter().all(|p| !p.to_string_lossy().contains("job-")), "flash not emptied");
}

#[test]
fn bad_input_gets_clear_errors() {
    let node = NodeProcess::start(&["--memory", "1MiB", "--flash", "2MiB"]);
    // An object of a job never opened.
    let input = node.dir.path().join("input.bin");
    std::fs::write(&input, vec![1u8; 3 << 20]).unwrap();
    let err = fails(node.baton(&["put", "job-5/edge-0/0-0", input.to_str().unwrap()]));
    assert!(err.contains("unknown job job-0000000000000005"), "{err}");
    // More than memory and flash together.
    ok(node.baton(&["job", "open", "5"]));
    let err = fails(node.baton(&["put", "job-5/edge-0/0-0", input.to_str().unwrap()]));
    assert!(err.contains("flash tier full"), "{err}");
    // An object that is not there.
    let err = fails(node.baton(&["get", "job-5/edge-0/3-3"]));
    assert!(err.contains("not found"), "{err}");
    // A key that is not a key.
    let err = fails(node.baton(&["get", "job-5/edge-x"]));
    assert!(err.contains("bad object key"), "{err}");
    // The node is still serving after all that.
    ok(node.baton(&["status"]));
}

#[test]
fn an_unreachable_node_and_a_bad_config_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let out = Command::new(BATON).args(["ls", "1", "--socket", socket.to_str().unwrap()]).output().unwrap();
    let err = fails(out);
    assert!(err.contains("cannot reach node at") && err.contains("nobody.sock"), "{err}");

    let config = dir.path().join("node.toml");
    std::fs::write(&config, "memory = \"a lot\"\n").unwrap();
    let err = fails(Command::new(BATON).args(["node", "--config", config.to_str().unwrap()]).output().unwrap());
    assert!(err.contains("node.toml") && err.contains("a lot"), "{err}");
    std::fs::write(&config, "memroy = \"1GiB\"\n").unwrap();
    let err = fails(Command::new(BATON).args(["node", "--config", config.to_str().unwrap()]).output().unwrap());
    assert!(err.contains("memroy"), "{err}");
}

#[test]
fn the_demo_runs_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BATON)
        .args(["demo", "--rows", "100000", "--sort-size", "8MiB"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = ok(out);
    assert!(text.contains("vm-local") && text.contains("file://") && text.contains("zero-copy"), "{text}");
    assert_eq!(text.matches("checksum ok").count(), 2, "{text}");
    assert!(text.contains("mappers read what reducers wrote") && text.contains("globally sorted"), "{text}");
    let left: Vec<_> =
        walk(&dir.path().join("baton-data")).into_iter().filter(|p| p.to_string_lossy().contains("job-")).collect();
    assert!(left.is_empty(), "the demo left objects: {left:?}");
}

#[test]
fn plan_explains_every_edge_and_names_mistakes_in_the_file() {
    let golden = Path::new(&manifest_dir()).join("planner/tests/golden/tpch_join.toml");
    let out = ok(Command::new(BATON).args(["plan", "--explain", golden.to_str().unwrap()]).output().unwrap());
    for needle in ["objective: least time", "edge-1", "edge-2", "edge-3", "chosen", "why:"] {
        assert!(out.contains(needle), "{needle} missing from:\n{out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("cycle.toml");
    std::fs::write(
        &bad,
        "[cluster]\nhosts = 1\ncores = 4\nmemory = \"8GiB\"\n\
         [[stage]]\nid = 1\ndop = 1\n[[stage]]\nid = 2\ndop = 1\n\
         [[edge]]\nid = 1\nfrom = 1\nto = 2\nkind = \"shuffle\"\nbytes = 1\n\
         [[edge]]\nid = 2\nfrom = 2\nto = 1\nkind = \"shuffle\"\nbytes = 1\n",
    )
    .unwrap();
    let err = fails(Command::new(BATON).args(["plan", bad.to_str().unwrap()]).output().unwrap());
    assert!(err.contains("cycle") && err.contains("stage-"), "{err}");
}

#[test]
fn the_benchmarks_run_in_smoke_mode_and_write_their_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let out_s = out.to_str().unwrap();
    let work = dir.path().join("work");
    let work_s = work.to_str().unwrap();
    let shm = dir.path().join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    ok(Command::new(BATON)
        .args(["bench", "paths", "--quick", "--out", out_s, "--work-dir", work_s, "--shm-dir", shm.to_str().unwrap()])
        .output()
        .unwrap());
    ok(Command::new(BATON)
        .args(["bench", "direct", "--quick", "--out", out_s, "--work-dir", work_s])
        .output()
        .unwrap());
    ok(Command::new(BATON).args(["bench", "plan", "--repeats", "1", "--out", out_s]).output().unwrap());
    ok(Command::new(BATON)
        .args(["bench", "invokers", "--quick", "--out", out_s, "--work-dir", work_s])
        .output()
        .unwrap());
    let invokers: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("invokers.json")).unwrap()).unwrap();
    let rows = invokers["rows"].as_array().unwrap();
    // The pool and HTTPS always; Lambda's emulator where `cargo lambda` is (the report says if not).
    assert_eq!(rows.len() + invokers["skipped"].as_array().unwrap().len(), 3, "{invokers}");
    assert!(rows.iter().all(|r| r["p50_ms"].as_f64().unwrap() > 0.0 && r["sort_seconds"].as_f64().unwrap() > 0.0));
    ok(Command::new(BATON)
        .args(["bench", "soak", "--jobs", "25", "--seconds", "300", "--out", out_s, "--work-dir", work_s])
        .current_dir(dir.path())
        .output()
        .unwrap());
    let soak: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("soak.json")).unwrap()).unwrap();
    assert_eq!(soak["rounds"], 25, "{soak}");
    for leak in ["leaked_processes", "leaked_segments", "leaked_files"] {
        assert_eq!(soak[leak].as_array().map(Vec::len), Some(0), "{leak}: {soak}");
    }
    assert_eq!(soak["leaked_store_bytes"], 0, "{soak}");
    assert!(soak["drivers_killed"].as_u64().unwrap() + soak["workers_killed"].as_u64().unwrap() > 0, "{soak}");
    let paths: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("paths.json")).unwrap()).unwrap();
    assert_eq!(paths["cross_process"]["transfers"].as_array().unwrap().len(), 2);
    assert_eq!(paths["cross_process"]["transfers"][0]["zero_copy"], serde_json::Value::Bool(true));
    let direct: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("direct.json")).unwrap()).unwrap();
    assert_eq!(direct["rows"].as_array().unwrap().len(), 3);
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["stages"], 100);
    for name in ["paths.md", "direct.md", "plan.md", "soak.md", "invokers.md"] {
        assert!(std::fs::read_to_string(out.join(name)).unwrap().contains('|'), "{name} has no table");
    }
}

/// The package's directory: as the test runner says when it runs the test (a test binary
/// reused from a build of another checkout, as a shared target directory allows, would carry
/// that checkout's path), else as it was when compiled.
fn manifest_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

#[test]
fn a_worker_beyond_loopback_needs_its_clusters_key() {
    let out = Command::new(BATON).args(["worker", "--listen", "0.0.0.0:0"]).output().unwrap();
    let stderr = fails(out);
    assert!(stderr.contains("--tls-dir") && stderr.contains("0.0.0.0"), "{stderr}");
    let out = Command::new(BATON).args(["worker", "--listen", "0.0.0.0:0", "--verify-key", "abc"]).output().unwrap();
    assert!(fails(out).contains("--verify-key"));
    // With the key but over plain HTTP: its tasks and tokens would cross the network in clear.
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    ok(Command::new(BATON).args(["certs", "--out"]).arg(&tls).output().unwrap());
    let out = Command::new(BATON).args(["worker", "--listen", "0.0.0.0:0", "--tls-dir"]).arg(&tls).output().unwrap();
    let stderr = fails(out);
    assert!(stderr.contains("--https") && stderr.contains("--insecure-plain-http"), "{stderr}");
}
