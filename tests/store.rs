//! The elastic store's storage nodes: `baton node --etcd` joins a real etcd on 127.0.0.1 as a
//! member, `baton store status` lists it and what it lends, a node killed with SIGKILL leaves
//! the membership when its lease lapses, jobs' objects live in node processes (two copies
//! survive a SIGKILL, one copy names the node lost), and an etcd that does not answer stops a
//! node from starting with an error that names it.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use baton_fabric::JobId;
use baton_fabric::net::TlsDir;
use baton_store::alloc::{Hints, JobSpace};
use baton_store::client::StoreClient;
use baton_store::testing::EtcdServer;
use support::{BATON, ok};

fn baton(args: &[&str]) -> Output {
    Command::new(BATON).args(args).env("BATON_LOG", "warn").output().unwrap()
}

/// A child process, killed when dropped (a failing test leaves nothing running).
struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `command` started quietly (warnings only, no output), killed when dropped.
fn quiet(command: &mut Command) -> Proc {
    command.env("BATON_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null()).spawn().map(Proc).unwrap()
}

/// A storage node named `name` on 127.0.0.1 joining the store in `etcd`.
fn storage_node(dir: &Path, name: &str, etcd: &str, tls: &Path) -> Proc {
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    quiet(
        support::node_command(&dir.join(name), tls)
            .args(["--memory", "64MiB", "--flash", "128MiB", "--block-size", "16MiB"])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--etcd", etcd, "--store-name", name]),
    )
}

/// Waits until `baton store status` says what `done` wants; its last answer.
fn status_until(etcd: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = ok(&baton(&["store", "status", "--etcd", etcd]));
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}; status says:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real etcd, its URL, a directory, and the cluster's TLS material in it.
async fn setup() -> (EtcdServer, String, tempfile::TempDir, std::path::PathBuf) {
    let server = EtcdServer::start().await.unwrap();
    let etcd = server.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    ok(&baton(&["certs", "--out", tls.to_str().unwrap()]));
    (server, etcd, dir, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_nodes_join_the_store_in_etcd_and_a_killed_one_leaves_it() {
    let (server, etcd, dir, tls) = setup().await;
    let empty = ok(&baton(&["store", "status", "--etcd", &etcd]));
    assert!(empty.contains("no storage nodes"), "{empty}");
    let mut s1 = storage_node(dir.path(), "s1", &etcd, &tls);
    let mut s2 = storage_node(dir.path(), "s2", &etcd, &tls);
    let both = status_until(&etcd, "two nodes should join", |t| t.contains("s1") && t.contains("s2"));
    // 64 MiB of memory and 128 MiB of flash in blocks of 16 MiB: 4 and 8 blocks each.
    let s1_line = both.lines().find(|l| l.starts_with("s1")).unwrap();
    assert!(s1_line.contains("0 of 4") && s1_line.ends_with("0 of 8"), "{s1_line}");
    assert!(both.contains("2 storage nodes lend 128.0 MiB of memory and 256.0 MiB of flash"), "{both}");
    // A job's blocks: reserved across both nodes' memory, and shown (three blocks' worth, and
    // one more of headroom for its keys' uneven spread over its homes).
    let hints = Hints { bytes: 48 << 20, ..Hints::default() };
    let space = JobSpace::open(&server.client().unwrap(), JobId(0x42), hints, Duration::from_secs(10)).await.unwrap();
    let with_job = ok(&baton(&["store", "status", "--etcd", &etcd]));
    assert!(with_job.contains("job-0000000000000042: 4 blocks in 4 groups (64.0 MiB reserved)"), "{with_job}");
    assert!(with_job.contains("free: 4 memory and 16 flash blocks"), "{with_job}");
    space.close().await.unwrap();
    // A second node by a live node's name is refused, naming it.
    let mut twin = storage_node(dir.path(), "s1", &etcd, &tls);
    let status = twin.wait().unwrap();
    assert!(!status.success(), "a second s1 joined");
    // SIGKILL: no goodbye; the lease lapses.
    s1.kill().unwrap();
    s1.wait().unwrap();
    let one = status_until(&etcd, "the killed node should lapse", |t| !t.contains("s1"));
    assert!(one.contains("s2"), "{one}");
    // SIGTERM: it leaves at once.
    // SAFETY: plain kill(2) of a child this test started.
    unsafe { libc::kill(s2.id() as i32, libc::SIGTERM) };
    assert!(s2.wait().unwrap().success());
    let none = ok(&baton(&["store", "status", "--etcd", &etcd]));
    assert!(none.contains("no storage nodes"), "a node that stopped is still listed:\n{none}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_in_node_processes_survive_a_sigkill_with_two_copies_and_name_the_node_with_one() {
    let (server, etcd, dir, tls) = setup().await;
    let mut nodes: Vec<Proc> = ["s1", "s2", "s3"].iter().map(|n| storage_node(dir.path(), n, &etcd, &tls)).collect();
    status_until(&etcd, "three nodes should join", |t| t.contains("3 storage nodes"));
    let client = server.client().unwrap();
    let tls = TlsDir::new(&tls);
    let ttl = Duration::from_secs(10);
    let two = Hints { bytes: 48 << 20, replicas: 2, latency_sensitive: true };
    let safe = StoreClient::open(&client, &tls, JobId(1), two, ttl).await.unwrap();
    let single = StoreClient::open(&client, &tls, JobId(2), Hints { replicas: 1, ..two }, ttl).await.unwrap();
    let object = |i: usize| bytes::Bytes::from(vec![i as u8; 100_000 + i]);
    for i in 0..30 {
        safe.put(&format!("part-{i}"), object(i)).await.unwrap();
        single.put(&format!("part-{i}"), object(i)).await.unwrap();
    }
    let usage = single.usage().await.unwrap();
    assert!(usage.len() == 3 && usage.values().all(|b| *b > 0), "one copy spread over the three nodes: {usage:?}");
    nodes[1].kill().unwrap();
    nodes[1].wait().unwrap();
    for i in 0..30 {
        assert_eq!(safe.get(&format!("part-{i}")).await.unwrap(), object(i), "part-{i}");
    }
    let mut lost = 0;
    for i in 0..30 {
        match single.get(&format!("part-{i}")).await {
            Ok(bytes) => assert_eq!(bytes, object(i)),
            Err(baton_store::Error::Lost { node, keys, .. }) => {
                assert!(node.starts_with("s2"), "{node}");
                assert_eq!(keys, [format!("part-{i}")]);
                lost += 1;
            }
            Err(e) => panic!("part-{i}: {e}"),
        }
    }
    assert!(lost > 0 && lost < 30, "{lost} of 30 lost");
    safe.close().await.unwrap();
    single.close().await.unwrap();
    for mut node in nodes {
        let _ = node.kill();
        let _ = node.wait();
    }
}

/// A `baton store controller` process.
fn controller(etcd: &str, tls: &Path, name: &str, extra: &[&str]) -> Proc {
    quiet(
        Command::new(BATON)
            .args(["store", "controller", "--etcd", etcd, "--name", name, "--every-ms", "100", "--tls-dir"])
            .arg(tls)
            .args(extra),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_job_is_followed_by_another_which_drains_and_provisions() {
    let (server, etcd, dir, tls_path) = setup().await;
    let mut nodes: Vec<Proc> =
        ["s1", "s2", "s3"].iter().map(|n| storage_node(dir.path(), n, &etcd, &tls_path)).collect();
    status_until(&etcd, "three nodes should join", |t| t.contains("3 storage nodes"));
    let mut first = controller(&etcd, &tls_path, "first", &[]);
    status_until(&etcd, "the first controller should lead", |t| t.contains("first leads"));
    // SIGKILL: its lead lapses, and the next controller takes over.
    first.kill().unwrap();
    first.wait().unwrap();
    let provision = dir.path().join("provisioned");
    let extra = [
        "--provision-below",
        "0.9",
        "--provision-max",
        "1",
        "--provision-memory",
        "64MiB",
        "--provision-block-size",
        "16MiB",
    ];
    let mut second = controller(
        &etcd,
        &tls_path,
        "second",
        &[&extra[..], &["--provision-dir", provision.to_str().unwrap()]].concat(),
    );
    status_until(&etcd, "the second controller should lead", |t| t.contains("second leads"));

    // A job takes a quarter of the three nodes' blocks: the controller asks for a fourth node.
    let client = server.client().unwrap();
    let tls = TlsDir::new(&tls_path);
    let hints = Hints { bytes: 128 << 20, ..Hints::default() };
    let job = StoreClient::open(&client, &tls, JobId(1), hints, Duration::from_secs(10)).await.unwrap();
    let object = |i: usize| bytes::Bytes::from(vec![(i % 251) as u8; 300_000 + i]);
    for i in 0..40 {
        job.put(&format!("part-{i}"), object(i)).await.unwrap();
    }
    status_until(&etcd, "a node should be provisioned", |t| t.contains("4 storage nodes") && t.contains("auto-"));

    // Draining s2 moves its blocks while the job reads; then s2 leaves and its process exits.
    let drain = Command::new(BATON).args(["store", "drain", "s2", "--etcd", &etcd]).output().unwrap();
    let said = String::from_utf8_lossy(&drain.stderr);
    assert!(drain.status.success() && said.contains("has left the store"), "{said}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[1].try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the drained node did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    job.refresh().await.unwrap();
    for i in 0..40 {
        assert_eq!(job.get(&format!("part-{i}")).await.unwrap(), object(i), "part-{i}");
    }
    let status = ok(&baton(&["store", "status", "--etcd", &etcd]));
    assert!(!status.contains("s2 "), "{status}");
    job.close().await.unwrap();
    // The controller stops; the node it started stops with it.
    // SAFETY: plain kill(2) of a child this test started.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    assert!(second.wait().unwrap().success());
    status_until(&etcd, "the provisioned node should stop", |t| !t.contains("auto-"));
    for mut node in nodes {
        let _ = node.kill();
        let _ = node.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_node_that_loses_etcd_past_its_lease_stops() {
    let (mut server, etcd, dir, tls) = setup().await;
    let mut node = storage_node(dir.path(), "s1", &etcd, &tls);
    status_until(&etcd, "the node should join", |t| t.contains("s1"));
    server.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "a node without etcd kept running");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_on_a_cluster_passes_its_shuffle_through_the_elastic_store() {
    let (_server, etcd, dir, tls) = setup().await;
    let d = dir.path();
    let _stores: Vec<Proc> = ["s1", "s2"].iter().map(|n| storage_node(d, n, &etcd, &tls)).collect();
    status_until(&etcd, "two storage nodes should join", |t| t.contains("2 storage nodes"));
    // One host on 127.0.0.1: its node and a worker.
    let free = |kind: &str| match kind {
        "udp" => std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(),
        _ => std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(),
    };
    let node_addr = format!("127.0.0.1:{}", free("udp"));
    let home = d.join("host");
    let _node = quiet(support::node_command(&home, &tls).args(["--memory", "64MiB", "--listen", &node_addr]));
    let worker_addr = format!("127.0.0.1:{}", free("tcp"));
    let _worker = quiet(
        Command::new(BATON)
            .args(["worker", "--listen", &worker_addr, "--tls-dir", tls.to_str().unwrap(), "--scratch"])
            .arg(d),
    );
    let cluster = d.join("cluster.toml");
    std::fs::write(
        &cluster,
        format!(
            "tls_dir = {:?}\n[store]\netcd = {etcd:?}\nmemory = \"128MiB\"\n[[host]]\nname = \"h\"\nnode = \"{node_addr}\"\nsocket = {:?}\nworkers = [\"http://{worker_addr}\"]\n",
            tls.to_str().unwrap(),
            home.join("node.sock").to_str().unwrap()
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Command::new(BATON).args(["cluster", "status", "--cluster"]).arg(&cluster).output().unwrap().status.success()
    {
        assert!(Instant::now() < deadline, "the host did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = ok(&Command::new(BATON).args(["cluster", "status", "--cluster"]).arg(&cluster).output().unwrap());
    assert!(status.contains("2 storage nodes") && status.contains("elastic store"), "{status}");
    ok(&baton(&["gensort", d.join("in.dat").to_str().unwrap(), "--records", "200000"]));
    let sorted = Command::new(BATON)
        .current_dir(d)
        .args(["sort", "in.dat", "-o", "out", "--cluster", "cluster.toml", "--path", "remote-store", "--validate"])
        .args(["--mappers", "4", "--reducers", "4"])
        .env("BATON_LOG", "warn")
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&sorted.stdout), String::from_utf8_lossy(&sorted.stderr));
    assert!(sorted.status.success(), "{said}");
    assert!(said.contains("remote-store"), "{said}");
    // The job ended: the store holds none of its blocks.
    let after = ok(&baton(&["store", "status", "--etcd", &etcd]));
    assert!(!after.contains("job-"), "{after}");
}

#[test]
fn a_node_whose_etcd_does_not_answer_does_not_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    ok(&baton(&["certs", "--out", tls.to_str().unwrap()]));
    let out = Command::new(BATON)
        .args(["node", "--etcd", "http://127.0.0.1:1", "--store-name", "s1", "--listen", "127.0.0.1:7999"])
        .arg("--tls-dir")
        .arg(&tls)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("etcd at http://127.0.0.1:1"), "{stderr}");
    let status = baton(&["store", "status", "--etcd", "http://127.0.0.1:1"]);
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(!status.status.success() && stderr.contains("etcd at http://127.0.0.1:1"), "{stderr}");
}
