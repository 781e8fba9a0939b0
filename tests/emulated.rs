//! Emulated hosts: `baton cluster up --emulate N` makes network namespaces on a bridge with a
//! node in each; data crosses between them over QUIC; `baton cluster down` leaves nothing.
//! Needs root (network namespaces): elsewhere each test prints SKIPPED and returns.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::path::Path;
use std::process::Command;

use support::{BATON, ok};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: emulated hosts need root (network namespaces)");
    }
    root
}

fn baton(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BATON).args(args).current_dir(dir).env("BATON_LOG", "warn").output().unwrap()
}

/// What is left of emulation `id` on the machine: namespaces, links, shared memory.
fn remains(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("baton-{id}-")) {
            left.push(format!("namespace {name}"));
        }
    }
    for entry in std::fs::read_dir("/sys/class/net").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == format!("bt{id}")
            || name.starts_with(&format!("bv{id}h"))
            || name.starts_with(&format!("bv{id}s3"))
            || name.starts_with(&format!("bv{id}st"))
            || name.starts_with(&format!("bv{id}e"))
            || name.starts_with(&format!("bv{id}n"))
        {
            left.push(format!("link {name}"));
        }
    }
    for entry in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("baton-emu-{id}-")) {
            left.push(format!("/dev/shm/{name}"));
        }
    }
    left
}

#[test]
fn two_emulated_hosts_pass_data_over_quic_and_go_without_a_trace() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _down = DownOnPanic(d);
    let up = ok(&baton(
        d,
        &["cluster", "up", "--emulate", "2", "--nic", "1gbit", "--memory", "256MiB", "--workers", "0", "--dir", "c"],
    ));
    assert!(up.contains("h0") && up.contains("h1"), "{up}");
    let id = emulation_id(d);
    let addr = |i: u8| format!("10.77.{id}.{}:7070", 10 + i);
    // Every node answers.
    let status = ok(&baton(d, &["cluster", "status", "--cluster", "c/cluster.toml"]));
    assert_eq!(status.matches("up, protocol").count(), 2, "{status}");
    // Each host's link is capped.
    let qdisc = Command::new("tc").args(["qdisc", "show", "dev", &format!("bv{id}h0")]).output().unwrap();
    assert!(String::from_utf8_lossy(&qdisc.stdout).contains("tbf"), "{qdisc:?}");
    // At EC2's MTU between instances (jumbo frames), inside and out.
    let link = Command::new("ip").args(["-o", "link", "show", &format!("bv{id}h0")]).output().unwrap();
    assert!(String::from_utf8_lossy(&link.stdout).contains("mtu 9001"), "{link:?}");
    let inside = Command::new("ip")
        .args(["netns", "exec", &format!("baton-{id}-h1"), "ip", "-o", "link", "show", "eth0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&inside.stdout).contains("mtu 9001"), "{inside:?}");
    // A producer outside pushes into host 0's node; a consumer on host 1 pulls it from there.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(d.join("data.bin"), &data).unwrap();
    ok(&baton(d, &["job", "open", "9", "--remote", &addr(0), "--tls-dir", "c/tls"]));
    ok(&baton(d, &["put", "job-9/edge-1/0-0", "data.bin", "--remote", &addr(0), "--tls-dir", "c/tls"]));
    let pulled = Command::new("ip")
        .args(["netns", "exec", &format!("baton-{id}-h1"), BATON])
        .args(["get", "job-9/edge-1/0-0", "--out", "pulled.bin", "--remote", &addr(0), "--tls-dir", "c/tls"])
        .current_dir(d)
        .output()
        .unwrap();
    ok(&pulled);
    assert!(std::fs::read(d.join("pulled.bin")).unwrap() == data, "the bytes differ after crossing hosts");
    // The object went through host 0's capped link, both ways.
    let stats = Command::new("tc").args(["-s", "qdisc", "show", "dev", &format!("bv{id}h0")]).output().unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    let sent: u64 = stats.split("Sent ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(sent >= data.len() as u64, "host 0's tbf passed only {sent} bytes: {stats}");
    // The probe measures each host's node from here (figures in the closing note, not here).
    let probe = ok(&baton(d, &["cluster", "probe", "--cluster", "c/cluster.toml", "--size", "1MiB"]));
    assert_eq!(probe.matches("MB/s").count(), 6, "{probe}");
    let calibration = std::fs::read_to_string(d.join("c/calibration.toml")).unwrap();
    assert!(calibration.contains("path = \"direct\"") && calibration.contains("path = \"vm-local\""), "{calibration}");
    // A host's own material checks tokens and cannot mint one.
    let minted = baton(d, &["token", "9", "--tls-dir", "c/h1/tls"]);
    assert!(!minted.status.success(), "{minted:?}");
    // Down: no namespace, link, node or shared memory of it is left.
    assert_eq!(pids(d).len(), 2);
    down_leaves_nothing(d, &id);
}

/// The processes emulation `c` in `d` started.
fn pids(d: &Path) -> Vec<u32> {
    std::fs::read_to_string(d.join("c/emulation.toml"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("pids = "))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap()
}

/// Runs `cluster down` of emulation `c` in its directory when a test fails halfway, so that a
/// failure leaves no namespace, link or process behind (before the directory goes).
struct DownOnPanic<'a>(&'a Path);

impl Drop for DownOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && self.0.join("c").exists() {
            let _ = baton(self.0, &["cluster", "down", "--dir", "c"]);
        }
    }
}

/// `cluster down` of emulation `c` in `d` (id `id`): no namespace, link, process, shared memory
/// or file of it is left.
fn down_leaves_nothing(d: &Path, id: &str) {
    let started = pids(d);
    ok(&baton(d, &["cluster", "down", "--dir", "c"]));
    assert_eq!(remains(id), Vec::<String>::new());
    for pid in started {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "process {pid} still runs: {stat}");
    }
    for made in ["cluster.toml", "calibration.toml", "tls", "objects", "store", "elastic"] {
        assert!(!d.join("c").join(made).exists(), "{made} is left");
    }
}

/// The emulation id in the cluster file of `c` in `d`.
fn emulation_id(d: &Path) -> String {
    let file = std::fs::read_to_string(d.join("c/cluster.toml")).unwrap();
    let ns0 = file.lines().find_map(|l| l.strip_prefix("namespace = ")).unwrap().trim_matches('"').to_string();
    ns0.trim_start_matches("baton-").split('-').next().unwrap().to_string()
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Bytes of an edge's host pairs on `path` (`vm-local`, `direct`).
fn pair_bytes(edge: &serde_json::Value, path: &str) -> u64 {
    edge["pairs"].as_array().unwrap().iter().filter(|p| p["path"] == path).map(|p| p["bytes"].as_u64().unwrap()).sum()
}

fn concat_parts(dir: &Path) -> Vec<u8> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-"))
        .collect();
    names.sort();
    names.iter().flat_map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn jobs_run_across_three_emulated_hosts_where_the_plan_places_them() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _down = DownOnPanic(d);
    let up = ok(&baton(
        d,
        &[
            "cluster",
            "up",
            "--emulate",
            "3",
            "--memory",
            "512MiB",
            "--workers",
            "2",
            "--worker-memory",
            "1GiB",
            "--dir",
            "c",
        ],
    ));
    assert_eq!(up.matches("2 workers").count(), 3, "{up}");
    let id = emulation_id(d);
    let status = ok(&baton(d, &["cluster", "status", "--cluster", "c/cluster.toml"]));
    assert_eq!(status.matches("workers: 2 of 2 answer").count(), 3, "{status}");
    assert_eq!(status.matches("tiers: memory 0 B of 512.0 MiB").count(), 3, "{status}");
    ok(&baton(d, &["gensort", "in.dat", "--size", "48MiB"]));
    ok(&baton(d, &["sort", "in.dat", "-o", "single", "--single-process"]));
    let reference = std::fs::read(d.join("single/part-r-00000")).unwrap();

    // The planner spreads the sort over the hosts: each edge between tasks of one host is
    // VM-local, between two it is direct.
    let sent = |d: &Path| -> Vec<String> {
        let status = ok(&baton(d, &["cluster", "status", "--cluster", "c/cluster.toml"]));
        status.lines().filter_map(|l| l.split(", sent ").nth(1).map(String::from)).collect()
    };
    let before_spread = sent(d);
    let args = ["sort", "in.dat", "--cluster", "c/cluster.toml", "--mappers", "6", "--reducers", "6"];
    let out = ok(&baton(d, &[&args[..], &["-o", "spread", "--validate", "--summary-json", "spread.json"]].concat()));
    assert!(out.contains("3 hosts, 6 workers"), "{out}");
    assert!(concat_parts(&d.join("spread")) == reference, "the sort across hosts differs from the single-process sort");
    let s = summary(&d.join("spread.json"));
    for stage in s["stages"].as_array().unwrap() {
        let hosts = stage["hosts"].as_object().unwrap();
        assert_eq!(hosts.len(), 3, "{} ran on {hosts:?}", stage["name"]);
    }
    let edge = &s["edges"][0];
    let (local, direct) = (pair_bytes(edge, "vm-local"), pair_bytes(edge, "direct"));
    assert!(local > 0 && direct > 0, "vm-local {local}, direct {direct}: {edge}");
    assert_eq!(local + direct, edge["bytes"].as_u64().unwrap(), "every byte is in a host pair");

    // What each host's node sent to other hosts, as it counted: the spread job pulled from all.
    let after_spread = sent(d);
    assert_eq!(after_spread.len(), 3, "{after_spread:?}");
    for (before, after) in before_spread.iter().zip(&after_spread) {
        assert_ne!(before, after, "a node sent nothing to the other hosts: {before_spread:?} {after_spread:?}");
    }
    // Forced VM-local: the job runs on one host and nothing crosses a link.
    ok(&baton(d, &[&args[..], &["-o", "local", "--path", "vm-local", "--summary-json", "local.json"]].concat()));
    assert_eq!(sent(d), after_spread, "a VM-local job's bytes crossed a link");
    assert!(concat_parts(&d.join("local")) == reference);
    let s = summary(&d.join("local.json"));
    assert_eq!(s["stages"][0]["hosts"], serde_json::json!({"h0": 6}));
    assert_eq!(pair_bytes(&s["edges"][0], "direct"), 0);

    // Through the object store the hosts share, and direct with reducers pulling as mappers end.
    for path in ["object-store", "direct"] {
        ok(&baton(d, &[&args[..], &["-o", path, "--path", path]].concat()));
        assert!(concat_parts(&d.join(path)) == reference, "{path}: differs from the single-process sort");
    }

    // Word count across the hosts counts what one host counts.
    let text: String = (0..40_000).map(|i| format!("w{} ", i % 997)).collect();
    std::fs::write(d.join("words.txt"), text).unwrap();
    ok(&baton(d, &["wordcount", "words.txt", "-o", "wc-hosts", "--cluster", "c/cluster.toml", "--mappers", "3"]));
    ok(&baton(d, &["wordcount", "words.txt", "-o", "wc-one", "--mappers", "3", "--in-process"]));
    let lines = |dir: &str| {
        let mut l: Vec<String> =
            String::from_utf8(concat_parts(&d.join(dir))).unwrap().lines().map(String::from).collect();
        l.sort();
        l
    };
    assert_eq!(lines("wc-hosts"), lines("wc-one"));
    assert_eq!(lines("wc-one").len(), 997);

    // Every node and worker counted what it did; a worker shows it only to the cluster's key.
    let status = ok(&baton(d, &["cluster", "status", "--cluster", "c/cluster.toml"]));
    assert_eq!(status.matches("workers: 2 of 2 answer;").count(), 3, "{status}");
    assert!(!status.contains("; 0 path requests made") && !status.contains("served: 0 requests"), "{status}");
    // Workers serve HTTPS with their host's certificate: a client that trusts the cluster's CA
    // gets in, and is refused the metrics without the key.
    let client = baton_runtime::http::HttpClient::new(Some(&d.join("c/tls"))).unwrap();
    let endpoint =
        baton_runtime::http::Endpoint::parse(&format!("https://10.77.{id}.10:7100")).unwrap().with_client(client);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, _) = runtime.block_on(endpoint.get("/metrics", std::time::Duration::from_secs(5))).unwrap();
    assert_eq!(status.as_u16(), 401);
    // Plain HTTP gets no answer.
    let mut worker = std::net::TcpStream::connect(format!("10.77.{id}.10:7100")).unwrap();
    std::io::Write::write_all(&mut worker, b"GET /metrics HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut worker, &mut answer);
    assert!(!answer.starts_with(b"HTTP/1.1"), "{}", String::from_utf8_lossy(&answer));

    // Nodes and workers (3 + 6 processes) all go with the emulation.
    assert_eq!(pids(d).len(), 9);
    down_leaves_nothing(d, &id);
}

#[test]
fn an_up_that_fails_halfway_removes_what_it_made() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _down = DownOnPanic(d);
    // A "baton" whose nodes exit at once: up fails waiting for them, after making the bridge,
    // the namespaces and the links.
    let out = Command::new(BATON)
        .args(["cluster", "up", "--emulate", "2", "--dir", "c"])
        .current_dir(d)
        .env("BATON_LOG", "warn")
        .env("BATON_EMULATE_EXE", "/bin/false")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not come up"), "{stderr}");
    let id = stderr.split("namespace baton-").nth(1).and_then(|s| s.split('-').next()).unwrap();
    assert_eq!(remains(id), Vec::<String>::new());
    assert!(!d.join("c/emulation.toml").exists(), "the record of a removed emulation stays");
    // A directory holding what `down` would remove is refused, and keeps it.
    std::fs::create_dir_all(d.join("mine/objects")).unwrap();
    std::fs::write(d.join("mine/objects/keep.txt"), b"mine").unwrap();
    let out = baton(d, &["cluster", "up", "--emulate", "1", "--dir", "mine"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not Baton's to make or remove"), "{out:?}");
    assert!(d.join("mine/objects/keep.txt").exists() && !d.join("mine/emulation.toml").exists());
    // A bad rate is refused before anything is made.
    let out = baton(d, &["cluster", "up", "--emulate", "2", "--nic", "fast", "--dir", "c2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"fast\""), "{out:?}");
    assert!(!d.join("c2/emulation.toml").exists());
    // So is an MTU no link takes.
    let out = baton(d, &["cluster", "up", "--emulate", "2", "--mtu", "576", "--dir", "c3"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("576 is not an MTU a link takes"), "{out:?}");
    assert!(!d.join("c3/emulation.toml").exists());
}

#[test]
fn a_sort_survives_the_loss_of_a_hosts_node_mid_job() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _down = DownOnPanic(d);
    ok(&baton(d, &["cluster", "up", "--emulate", "3", "--memory", "512MiB", "--workers", "2", "--dir", "c"]));
    let id = emulation_id(d);
    ok(&baton(d, &["gensort", "in.dat", "--size", "96MiB"]));
    ok(&baton(d, &["sort", "in.dat", "-o", "single", "--single-process"]));
    let sort = Command::new(BATON)
        .args(["sort", "in.dat", "--cluster", "c/cluster.toml", "--mappers", "6", "--reducers", "12"])
        .args(["-o", "out", "--summary-json", "out.json"])
        .current_dir(d)
        .env("BATON_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first reducer has written its part, the mappers are done and the second wave of
    // reducers still needs every mapper's output: host 1's node dies then.
    let staging = d.join("out/_temporary");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let reduced = || {
        std::fs::read_dir(&staging).into_iter().flatten().flatten().any(|job| {
            std::fs::read_dir(job.path())
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| f.file_name().to_string_lossy().starts_with("part-"))
        })
    };
    while !reduced() {
        assert!(std::time::Instant::now() < deadline, "no reducer finished");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The processes: per host its node, then its workers.
    let node1 = pids(d)[3];
    // SAFETY: kill(2) of the node process the emulation started.
    unsafe { libc::kill(node1 as i32, libc::SIGKILL) };
    let out = sort.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the node of h1 does not answer"), "the loss went unnoticed: {stderr}");
    assert!(
        concat_parts(&d.join("out")) == std::fs::read(d.join("single/part-r-00000")).unwrap(),
        "the sort that lost a host differs from the single-process sort"
    );
    let s = summary(&d.join("out.json"));
    let map = &s["stages"][0];
    assert!(map["attempts"].as_u64().unwrap() > 6, "host 1's mappers were not run again: {map}");
    down_leaves_nothing(d, &id);
}

/// Bytes the tbf qdisc on link `dev` passed.
fn tbf_sent(dev: &str) -> u64 {
    let stats = Command::new("tc").args(["-s", "qdisc", "show", "dev", dev]).output().unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    stats.split("Sent ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap()
}

#[test]
fn the_object_store_and_the_remote_store_can_be_hosts_of_their_own_behind_capped_links() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _down = DownOnPanic(d);
    let up =
        baton(d, &["cluster", "up", "--emulate", "2", "--workers", "1", "--s3-host", "--store-host", "--dir", "c"]);
    let up = ok(&up);
    assert!(up.contains("export AWS_ACCESS_KEY_ID="), "{up}");
    let id = emulation_id(d);
    let file = std::fs::read_to_string(d.join("c/cluster.toml")).unwrap();
    assert!(file.contains(&format!("aws_endpoint=http://10.77.{id}.9:9000")), "{file}");
    // The probe at up measured the S3 host too.
    let calibration = std::fs::read_to_string(d.join("c/calibration.toml")).unwrap();
    assert!(calibration.contains("path = \"object-store\""), "{calibration}");
    ok(&baton(d, &["gensort", "in.dat", "--size", "8MiB"]));
    let credentials = [("AWS_ACCESS_KEY_ID", "baton-test-key"), ("AWS_SECRET_ACCESS_KEY", "baton-test-secret")];
    let sort = Command::new(BATON)
        .args(["sort", "in.dat", "-o", "out", "--cluster", "c/cluster.toml", "--path", "object-store", "--validate"])
        .args(["--mappers", "2", "--reducers", "2"])
        .current_dir(d)
        .env("BATON_LOG", "warn")
        .envs(credentials)
        .output()
        .unwrap();
    let out = ok(&sort);
    assert!(out.contains("object-store (s3://)"), "{out}");
    // The shuffle crossed the S3 host's capped link.
    let sent = tbf_sent(&format!("bv{id}s3"));
    assert!(sent >= 8 << 20, "the S3 host's tbf passed only {sent} bytes");
    // The remote store: a node of its own, probed at up, that a sort's shuffle crosses to.
    assert!(up.contains(&format!("store  node 10.77.{id}.8:7070")), "{up}");
    assert!(calibration.contains("path = \"remote-store\""), "{calibration}");
    let status = ok(&baton(d, &["cluster", "status", "--cluster", "c/cluster.toml"]));
    assert!(status.contains("(remote store)"), "{status}");
    let before = tbf_sent(&format!("bv{id}st"));
    let sort = baton(
        d,
        &["sort", "in.dat", "-o", "out2", "--cluster", "c/cluster.toml", "--path", "remote-store", "--validate"],
    );
    let out = ok(&sort);
    assert!(out.contains("via remote-store") || out.contains(" remote-store"), "{out}");
    assert_eq!(concat_parts(&d.join("out")), concat_parts(&d.join("out2")), "the two sorts differ");
    // Every byte of the shuffle went out of the store again (the reads), past its cap.
    let sent = tbf_sent(&format!("bv{id}st")) - before;
    assert!(sent >= 8 << 20, "the store host's tbf passed only {sent} bytes");
    down_leaves_nothing(d, &id);
}

#[test]
fn the_elastic_store_runs_in_hosts_of_its_own_behind_an_etcd_that_asks_who_is_there() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _down = DownOnPanic(d);
    let up = ok(&baton(
        d,
        &["cluster", "up", "--emulate", "1", "--workers", "2", "--elastic-store", "2"]
            .into_iter()
            .chain(["--memory", "128MiB", "--store-block", "8MiB", "--dir", "c"])
            .collect::<Vec<_>>(),
    ));
    let id = emulation_id(d);
    let etcd = format!("http://10.77.{id}.7:2379");
    assert!(up.contains(&format!("store  etcd {etcd}")), "{up}");
    // etcd is reachable beyond loopback, so it lets in only who has the credentials.
    let credentials = d.join("c/elastic/etcd.credentials");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&credentials).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let refused = baton(d, &["store", "status", "--etcd", &etcd]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("authentication"), "{refused:?}");
    let text = std::fs::read_to_string(&credentials).unwrap();
    let (user, password) = text.split_once(':').unwrap();
    let status = Command::new(BATON)
        .args(["store", "status", "--etcd", &etcd])
        .env("BATON_ETCD_USER", user)
        .env("BATON_ETCD_PASSWORD", password)
        .output()
        .unwrap();
    let status = ok(&status);
    assert!(
        status.contains(&format!("10.77.{id}.240:7070")) && status.contains(&format!("10.77.{id}.241:7070")),
        "{status}"
    );
    // A sort's shuffle goes through the storage hosts, across their capped links.
    let cluster = ok(&baton(d, &["cluster", "status", "--cluster", "c/cluster.toml"]));
    assert!(cluster.contains("up: 2 storage nodes"), "{cluster}");
    ok(&baton(d, &["gensort", "in.dat", "--size", "16MiB"]));
    let sent = |d: &str| tbf_sent(&format!("bv{id}{d}"));
    let before = [sent("n0"), sent("n1")];
    let sort = baton(
        d,
        &["sort", "in.dat", "-o", "out", "--cluster", "c/cluster.toml", "--path", "remote-store", "--validate"],
    );
    let out = ok(&sort);
    assert!(out.contains("remote-store (elastic)"), "{out}");
    assert!(out.contains("globally sorted"), "{out}");
    // Both storage hosts sent their part of the shuffle back out, all of it together.
    let out_of = [sent("n0") - before[0], sent("n1") - before[1]];
    assert!(out_of.iter().all(|&b| b >= 1 << 20), "each storage host's part: {out_of:?}");
    assert!(out_of.iter().sum::<u64>() >= 16 << 20, "the storage hosts' tbf passed only {out_of:?} bytes");
    down_leaves_nothing(d, &id);
}
