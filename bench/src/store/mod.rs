//! The elastic store's benchmark, in one run: on loopback, puts and gets of 1 KiB and 1 MiB
//! objects against Redis 7 with the same client concurrency, two jobs with staggered peaks
//! sharing capacity (multiplexing), and a storage node drained while a job reads; then, on
//! emulated hosts, throughput over 1, 2 and 4 storage nodes ([`scaling`]).
//!
//! Fairness: Redis runs as Debian's `redis-server` on 127.0.0.1 with persistence off (`--save
//! ""`, no append-only file), as the store's nodes keep nothing on disk either; each of the
//! `clients` tasks has a Redis connection of its own (plain RESP `SET`/`GET` over loopback TCP,
//! one request in flight per connection), and the store's client the same number of requests
//! in flight: over loopback TCP as a client on the node's host talks to it (`baton`), and over
//! QUIC with TLS as a client on another host does (`baton-quic`). Both servers are separate
//! processes on the same machine; the store
//! has one storage node for the comparison, as Redis is one server. The objects are made once,
//! before the clock starts; each variant runs three times, the variants taking turns, and the
//! run of median throughput is reported.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_fabric::JobId;
use baton_fabric::net::TlsDir;
use baton_store::alloc::{BlockMap, Hints};
use baton_store::client::StoreClient;
use baton_store::controller::{Controller, ControllerConfig};
use baton_store::etcd::Etcd;
use baton_store::member::{DRAINED, drain_key};
use baton_store::testing::EtcdServer;
use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::stats::quantile;

pub mod scaling;

/// How to run it.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Fewer operations (a smoke run).
    pub quick: bool,
    /// Where the nodes' files and the TLS material go.
    pub work_dir: PathBuf,
    /// The `baton` binary (storage nodes run as processes of it).
    pub exe: PathBuf,
    /// Requests in flight at once, for both systems.
    pub clients: usize,
}

/// One system's figures for one operation and size.
#[derive(Clone, Debug, Serialize)]
pub struct OpRow {
    /// `baton` or `redis`.
    pub system: String,
    /// `put` or `get`.
    pub op: String,
    /// Bytes per object.
    pub size: u64,
    /// Operations measured.
    pub ops: usize,
    /// Operations per second, all clients together.
    pub ops_per_s: f64,
    /// Object bytes per second, in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Two jobs whose peaks come one after the other.
#[derive(Clone, Debug, Serialize)]
pub struct Multiplexing {
    /// Bytes of blocks the store lends in all.
    pub capacity: u64,
    /// Each job's peak, in bytes of blocks held.
    pub peaks: Vec<u64>,
    /// The most bytes of blocks held at once, both jobs together.
    pub peak_together: u64,
}

/// A node drained while a job reads.
#[derive(Clone, Debug, Serialize)]
pub struct Drain {
    /// Objects of the job, and bytes each.
    pub objects: usize,
    /// Bytes per object.
    pub size: u64,
    /// Bytes the drained node held.
    pub moved_bytes: u64,
    /// Seconds from the drain's request until the node held nothing.
    pub seconds: f64,
    /// The readers' MB/s before the drain.
    pub read_mb_per_s_before: f64,
    /// The readers' MB/s while it ran.
    pub read_mb_per_s_during: f64,
    /// Reads that failed (must be none).
    pub failed_reads: u64,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct StoreReport {
    /// Requests in flight at once.
    pub clients: usize,
    /// Puts and gets against Redis.
    pub rows: Vec<OpRow>,
    /// Multiplexing.
    pub multiplexing: Multiplexing,
    /// The drain.
    pub drain: Drain,
    /// Throughput over 1, 2 and 4 storage nodes on emulated hosts.
    pub scaling: scaling::Scaling,
}

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 32 * MIB;

/// A child process, stopped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) of a child this benchmark started; SIGTERM lets a node leave.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port(udp: bool) -> anyhow::Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
    })
}

/// Starts storage node `name` lending `memory` bytes, and waits until it is a member.
async fn storage_node(
    options: &StoreOptions,
    etcd: &Etcd,
    tls: &Path,
    name: &str,
    memory: u64,
) -> anyhow::Result<Proc> {
    let home = options.work_dir.join(name);
    baton_fabric::private::create_dirs(&home)?;
    let listen = format!("127.0.0.1:{}", free_port(true)?);
    let child = Command::new(&options.exe)
        .args(["node", "--listen", &listen, "--etcd", etcd.url(), "--store-name", name])
        .args(["--memory", &memory.to_string(), "--flash", "0", "--block-size", &BLOCK.to_string()])
        .arg("--flash-dir")
        .arg(home.join("flash"))
        .arg("--tls-dir")
        .arg(tls)
        .env("BATON_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(baton_fabric::private::create_file(&home.join(format!("node-{}.log", std::process::id())))?)
        .spawn()
        .with_context(|| format!("starting {}", options.exe.display()))?;
    let node = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !BlockMap::read(etcd).await?.is_member(name) {
        if Instant::now() > deadline {
            bail!("storage node {name} did not join the store");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(node)
}

/// Starts Redis on a free port of 127.0.0.1, persistence off.
async fn redis(options: &StoreOptions) -> anyhow::Result<(Proc, u16)> {
    let port = free_port(false)?;
    let dir = options.work_dir.join("redis");
    baton_fabric::private::create_dirs(&dir)?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--maxmemory", "0", "--io-threads", "1"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (Debian: apt-get install redis-server)")?;
    let server = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not start on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((server, port))
}

/// A RESP connection to Redis: `SET` and `GET`, one request at a time.
struct Resp {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Resp {
    async fn connect(port: u16) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (read, writer) = stream.into_split();
        Ok(Self { reader: BufReader::with_capacity(1 << 20, read), writer })
    }

    async fn command(&mut self, parts: &[&[u8]]) -> anyhow::Result<()> {
        let mut head = format!("*{}\r\n", parts.len()).into_bytes();
        for (i, part) in parts.iter().enumerate() {
            head.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            if i + 1 < parts.len() || part.len() < 4096 {
                head.extend_from_slice(part);
                head.extend_from_slice(b"\r\n");
            } else {
                // A large value goes as it is, not copied into the header.
                self.writer.write_all(&head).await?;
                self.writer.write_all(part).await?;
                head = b"\r\n".to_vec();
            }
        }
        self.writer.write_all(&head).await?;
        Ok(())
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        Ok(line.trim_end().to_string())
    }

    async fn set(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.command(&[b"SET", key, value]).await?;
        let line = self.line().await?;
        if line != "+OK" {
            bail!("redis SET answered {line:?}");
        }
        Ok(())
    }

    async fn get(&mut self, key: &[u8]) -> anyhow::Result<Bytes> {
        self.command(&[b"GET", key]).await?;
        let line = self.line().await?;
        let len: usize = line.strip_prefix('$').and_then(|n| n.parse().ok()).context("redis GET: no value")?;
        let mut value = vec![0u8; len + 2];
        self.reader.read_exact(&mut value).await?;
        value.truncate(len);
        Ok(Bytes::from(value))
    }
}

/// Runs `ops` operations over `clients` tasks, `op(i)` each; the row of figures.
async fn measure<F, Fut>(
    system: &str,
    op_name: &str,
    size: u64,
    ops: usize,
    clients: usize,
    op: F,
) -> anyhow::Result<OpRow>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = client;
            while i < ops {
                let t = Instant::now();
                op(client, i).await?;
                latencies.push(t.elapsed().as_secs_f64());
                i += clients;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(OpRow {
        system: system.into(),
        op: op_name.into(),
        size,
        ops: latencies.len(),
        ops_per_s: latencies.len() as f64 / seconds,
        mb_per_s: latencies.len() as f64 * size as f64 / seconds / 1e6,
        p50_ms: quantile(&latencies, 0.5) * 1e3,
        p99_ms: quantile(&latencies, 0.99) * 1e3,
    })
}

/// The store's variants against Redis: its client on the storage node's host (loopback TCP,
/// no TLS), and over QUIC with TLS, as a client on another host talks to it.
const SYSTEMS: [(&str, bool); 2] = [("baton", true), ("baton-quic", false)];

/// Runs of each variant in the comparison with Redis; the median run is reported.
const REPEATS: usize = 3;

/// Of several runs of each (system, op, size), the run of median throughput.
fn medians(mut runs: Vec<OpRow>) -> Vec<OpRow> {
    runs.sort_by(|a, b| {
        (&a.system, &a.op, a.size).cmp(&(&b.system, &b.op, b.size)).then(a.ops_per_s.total_cmp(&b.ops_per_s))
    });
    let mut out: Vec<OpRow> = Vec::new();
    let mut i = 0;
    while i < runs.len() {
        let same = runs[i..]
            .iter()
            .take_while(|r| r.system == runs[i].system && r.op == runs[i].op && r.size == runs[i].size)
            .count();
        out.push(runs[i + same / 2].clone());
        i += same;
    }
    out
}

fn object(size: u64, seed: usize) -> Bytes {
    let mut bytes = vec![(seed % 251) as u8; size as usize];
    if let Some(last) = bytes.last_mut() {
        *last = (seed / 251 % 251) as u8;
    }
    Bytes::from(bytes)
}

/// Runs the benchmark.
pub async fn run(options: &StoreOptions) -> anyhow::Result<StoreReport> {
    baton_fabric::private::create_dirs(&options.work_dir)?;
    // Everything of the run — material, nodes' homes and logs, Redis — in a directory of its
    // own, removed when the run ends.
    let run_dir = tempfile::Builder::new().prefix("store-").tempdir_in(&options.work_dir)?;
    let options = &StoreOptions { work_dir: run_dir.path().to_path_buf(), ..options.clone() };
    let server = EtcdServer::start().await.context("starting etcd (Debian: apt-get install etcd-server)")?;
    let etcd = server.client()?;
    let tls_dir = options.work_dir.join(format!("tls-{}", std::process::id()));
    let tls = TlsDir::new(&tls_dir);
    tls.generate(&["127.0.0.1".into()])?;
    let clients = options.clients.max(1);

    // Against Redis: one storage node, one Redis.
    let (_redis, port) = redis(options).await?;
    let first = storage_node(options, &etcd, &tls_dir, "s1", 2 << 30).await?;
    let mut rows = Vec::new();
    let sizes: [(u64, usize); 2] =
        if options.quick { [(1 << 10, 2_000), (MIB, 200)] } else { [(1 << 10, 100_000), (MIB, 6_000)] };
    let repeats = if options.quick { 1 } else { REPEATS };
    for (n, (size, ops)) in sizes.into_iter().enumerate() {
        let keys = (ops as u64).min(512 * MIB / size) as usize;
        // Made once: the clients copy nothing but what they send.
        let objects: Arc<Vec<Bytes>> = Arc::new((0..keys).map(|k| object(size, k)).collect());
        let hints = Hints { bytes: keys as u64 * size, ..Hints::default() };
        let job = JobId(0x5703e + n as u64);
        let client = Arc::new(StoreClient::open(&etcd, &tls, job, hints, Duration::from_secs(30)).await?);
        let connections = Arc::new(
            futures::future::try_join_all((0..clients).map(|_| Resp::connect(port)))
                .await?
                .into_iter()
                .map(tokio::sync::Mutex::new)
                .collect::<Vec<_>>(),
        );
        let mut runs = Vec::new();
        // The variants take turns, so that what drifts on the machine falls on both.
        for _ in 0..repeats {
            // The store's client on the node's host (loopback TCP), then as from another
            // host (QUIC with TLS).
            for (system, same_host) in SYSTEMS {
                client.set_same_host(same_host);
                let (c, o) = (client.clone(), objects.clone());
                runs.push(
                    measure(system, "put", size, ops, clients, move |_, i| {
                        let (c, o) = (c.clone(), o.clone());
                        async move { Ok(c.put(&format!("k{}", i % keys), o[i % keys].clone()).await.map(drop)?) }
                    })
                    .await?,
                );
                let c = client.clone();
                runs.push(
                    measure(system, "get", size, ops, clients, move |_, i| {
                        let c = c.clone();
                        async move {
                            let bytes = c.get(&format!("k{}", i % keys)).await?;
                            anyhow::ensure!(bytes.len() as u64 == size, "a get of {} bytes", bytes.len());
                            Ok(())
                        }
                    })
                    .await?,
                );
            }
            let (c, o) = (connections.clone(), objects.clone());
            runs.push(
                measure("redis", "put", size, ops, clients, move |client, i| {
                    let (c, o) = (c.clone(), o.clone());
                    async move { c[client].lock().await.set(format!("k{}", i % keys).as_bytes(), &o[i % keys]).await }
                })
                .await?,
            );
            let c = connections.clone();
            runs.push(
                measure("redis", "get", size, ops, clients, move |client, i| {
                    let c = c.clone();
                    async move {
                        let bytes = c[client].lock().await.get(format!("k{}", i % keys).as_bytes()).await?;
                        anyhow::ensure!(bytes.len() as u64 == size, "a get of {} bytes", bytes.len());
                        Ok(())
                    }
                })
                .await?,
            );
        }
        rows.extend(medians(runs));
        if let Ok(client) = Arc::try_unwrap(client) {
            client.close().await?;
        }
    }
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while BlockMap::read(&etcd).await?.is_member("s1") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Three nodes of 256 MiB each (24 blocks), a controller, two jobs and a drain.
    let mut nodes = Vec::new();
    for name in ["m1", "m2", "m3"] {
        nodes.push(storage_node(options, &etcd, &tls_dir, name, 256 * MIB).await?);
    }
    let multiplexing = multiplexing(&etcd, &tls, options.quick).await?;
    let drain = drain(&etcd, &tls, options.quick, clients).await?;
    drop(nodes);
    drop(server);
    let scaling = scaling::run(options).await?;
    Ok(StoreReport { clients, rows, multiplexing, drain, scaling })
}

/// Two jobs, each peaking at two thirds of the store, one after the other.
async fn multiplexing(etcd: &Etcd, tls: &TlsDir, quick: bool) -> anyhow::Result<Multiplexing> {
    let map = BlockMap::read(etcd).await?;
    let capacity: u64 = map.nodes.iter().map(|n| n.memory_blocks * n.block_size).sum();
    let peak_bytes = capacity * 2 / 3;
    let size = if quick { 4 * MIB } else { MIB };
    let objects = (peak_bytes / size) as usize * 9 / 10;
    // Blocks held, sampled while the jobs run.
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let (etcd, stop, most) = (etcd.clone(), stop.clone(), most.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(map) = BlockMap::read(&etcd).await {
                    most.fetch_max(map.held.len() as u64 * BLOCK, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let mut peaks = Vec::new();
    let mut jobs = Vec::new();
    for j in 0..2u64 {
        let job = JobId(0x3a1 + j);
        let client =
            StoreClient::open(etcd, tls, job, Hints { bytes: 3 * BLOCK, ..Hints::default() }, Duration::from_secs(30))
                .await?;
        for i in 0..objects {
            client.put(&format!("part-{i}"), object(size, i)).await?;
        }
        let held = BlockMap::read(etcd).await?.of(job).len() as u64 * BLOCK;
        peaks.push(held);
        // Past its peak: its output is read and deleted, and its blocks go back.
        for i in 0..objects {
            client.delete(&format!("part-{i}")).await?;
        }
        client.give_back_empty().await?;
        jobs.push(client);
    }
    for client in jobs {
        client.close().await?;
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    Ok(Multiplexing { capacity, peaks, peak_together: most.load(Ordering::Relaxed) })
}

/// A job's objects spread over the three nodes; readers read them in a loop while one node is
/// drained.
async fn drain(etcd: &Etcd, tls: &TlsDir, quick: bool, clients: usize) -> anyhow::Result<Drain> {
    let size = MIB;
    let objects = if quick { 64 } else { 192 };
    let job = JobId(0xd7a1);
    let hints = Hints { bytes: objects as u64 * size, ..Hints::default() };
    let client = Arc::new(StoreClient::open(etcd, tls, job, hints, Duration::from_secs(30)).await?);
    for i in 0..objects {
        client.put(&format!("part-{i}"), object(size, i)).await?;
    }
    let usage = client.usage().await?;
    let moved_bytes = usage.get("m2").copied().unwrap_or(0);
    let read = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..clients {
        let (client, read, failed, stop) = (client.clone(), read.clone(), failed.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                match client.get(&format!("part-{}", i % objects)).await {
                    Ok(bytes) if bytes == object(size, i % objects) => {
                        read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += clients;
            }
        }));
    }
    let window = Duration::from_secs(if quick { 1 } else { 3 });
    let before_start = read.load(Ordering::Relaxed);
    tokio::time::sleep(window).await;
    let before = (read.load(Ordering::Relaxed) - before_start) as f64 / window.as_secs_f64() / 1e6;

    let config = ControllerConfig {
        name: "bench".into(),
        tls: tls.clone(),
        every: Duration::from_millis(100),
        provision_below: 0.0,
    };
    let mut controller = Controller::new(etcd, config, None)?;
    let (stop_controller, stopped) = tokio::sync::oneshot::channel::<()>();
    let leading = tokio::spawn(async move {
        controller
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let during_start = read.load(Ordering::Relaxed);
    let start = Instant::now();
    etcd.put(&drain_key("m2"), b"draining", 0).await?;
    loop {
        let done = etcd.get(&drain_key("m2")).await?.is_some_and(|kv| kv.value == DRAINED);
        if done {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("the drain of m2 did not finish in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let during = (read.load(Ordering::Relaxed) - during_start) as f64 / seconds / 1e6;
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await?;
    }
    let _ = stop_controller.send(());
    leading.await??;
    if let Ok(client) = Arc::try_unwrap(client) {
        client.close().await?;
    }
    Ok(Drain {
        objects,
        size,
        moved_bytes,
        seconds,
        read_mb_per_s_before: before,
        read_mb_per_s_during: during,
        failed_reads: failed.load(Ordering::Relaxed),
    })
}

/// The report as Markdown.
pub fn markdown(report: &StoreReport) -> String {
    let mut out = format!(
        "## The elastic store against Redis 7 on loopback ({} requests in flight, median of the runs)\n",
        report.clients
    );
    for (system, said) in [
        ("baton", "The store's client on the storage node's host (loopback TCP, the job's token checked, no TLS)"),
        ("baton-quic", "The same client over QUIC with TLS, as a client on another host talks to the node"),
    ] {
        out.push_str(&format!("\n{said}:\n\n"));
        out.push_str(&against_redis(report, system));
    }
    let m = &report.multiplexing;
    out.push_str(&format!(
        "\n## Multiplexing\n\nTwo jobs, one after the other, on a store of {} MiB: peaks of {} MiB; held at once at most \
         {} MiB (the sum of the peaks: {} MiB).\n",
        m.capacity >> 20,
        m.peaks.iter().map(|p| (p >> 20).to_string()).collect::<Vec<_>>().join(" and "),
        m.peak_together >> 20,
        m.peaks.iter().sum::<u64>() >> 20
    ));
    let d = &report.drain;
    out.push_str(&format!(
        "\n## A drain under load\n\n{} objects of {} read in a loop; draining the node that held {} MiB took {:.2} s; \
         reads: {:.0} MB/s before, {:.0} MB/s during; {} failed.\n",
        d.objects,
        crate::paths::human(d.size),
        d.moved_bytes >> 20,
        d.seconds,
        d.read_mb_per_s_before,
        d.read_mb_per_s_during,
        d.failed_reads
    ));
    out.push_str(&scaling::markdown(&report.scaling, report.clients));
    out
}

/// One variant of the store against Redis, a row per size and operation.
fn against_redis(report: &StoreReport, system: &str) -> String {
    let mut out = String::from(
        "| size | op | Baton ops/s | Baton MB/s | p50 ms | p99 ms | Redis ops/s | Redis MB/s | p50 ms | p99 ms | Baton/Redis |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in report.rows.iter().filter(|r| r.system == system) {
        let Some(redis) = report.rows.iter().find(|r| r.system == "redis" && r.op == row.op && r.size == row.size)
        else {
            continue;
        };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2}x |\n",
            crate::paths::human(row.size),
            row.op,
            row.ops_per_s,
            row.mb_per_s,
            row.p50_ms,
            row.p99_ms,
            redis.ops_per_s,
            redis.mb_per_s,
            redis.p50_ms,
            redis.p99_ms,
            row.ops_per_s / redis.ops_per_s
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, op: &str, ops_per_s: f64) -> OpRow {
        OpRow {
            system: system.into(),
            op: op.into(),
            size: 1,
            ops: 1,
            ops_per_s,
            mb_per_s: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
        }
    }

    #[test]
    fn the_median_run_of_each_variant_is_kept() {
        let runs = vec![
            row("baton", "put", 3.0),
            row("redis", "put", 10.0),
            row("baton", "put", 1.0),
            row("redis", "put", 30.0),
            row("baton", "put", 2.0),
            row("redis", "put", 20.0),
        ];
        let kept: Vec<(String, f64)> = medians(runs).into_iter().map(|r| (r.system, r.ops_per_s)).collect();
        assert_eq!(kept, [("baton".to_string(), 2.0), ("redis".to_string(), 20.0)]);
    }
}
