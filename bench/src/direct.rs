//! The direct-path benchmark: Baton's QUIC path against Arrow Flight (gRPC DoGet/DoPut) and raw
//! TCP, all on loopback in one run: throughput of 64 MiB Arrow transfers each way, and the round
//! trip of a 4 KiB object.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor, Ticket};
use baton_fabric::arrow::{encode_batches, read_batches};
use baton_fabric::net::token::unix_ms_now;
use baton_fabric::net::{Limits, NetConfig, NetServer, TlsDir};
use baton_fabric::path::direct::DirectPath;
use baton_fabric::store::{StoreConfig, TieredStore};
use baton_fabric::{DataPath, EdgeId, JobId, ObjectKey};
use futures::TryStreamExt;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::data::{self, ROW_BYTES};
use crate::stats::{Summary, summarize};

/// How to run it.
#[derive(Clone, Debug)]
pub struct DirectOptions {
    /// Fewer and smaller transfers (a smoke run).
    pub quick: bool,
    /// Where the node's flash and TLS material live.
    pub work_dir: std::path::PathBuf,
}

/// One transport's figures.
#[derive(Clone, Debug, Serialize)]
pub struct TransportRow {
    /// The transport.
    pub transport: String,
    /// Downloading the large object (fetch + decode to record batches).
    pub get: Summary,
    /// Uploading it (encode + send + stored).
    pub put: Summary,
    /// Round trip of the small object (request, fetch, decode).
    pub small: Summary,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct DirectReport {
    /// Bytes of the large object's data.
    pub large_bytes: u64,
    /// Bytes of the small object's data.
    pub small_bytes: u64,
    /// Each transport.
    pub rows: Vec<TransportRow>,
}

const JOB: JobId = JobId(0xd12ec7);

fn batches(bytes: u64) -> Vec<RecordBatch> {
    data::batches(bytes / ROW_BYTES, 1 << 16)
}

/// Runs the benchmark.
pub async fn run(options: &DirectOptions) -> anyhow::Result<DirectReport> {
    let (large, small, repeats, rounds) =
        if options.quick { (4u64 << 20, 4u64 << 10, 3, 30) } else { (64 << 20, 4 << 10, 10, 500) };
    let large_batches = batches(large);
    let small_batches = batches(small);
    let schema = data::schema();
    let large_object = encode_batches(&schema, &large_batches)?;
    let small_object = encode_batches(&schema, &small_batches)?;

    // Baton: a node with a QUIC service, a client with the job's token.
    std::fs::create_dir_all(&options.work_dir)?;
    let work = tempfile::tempdir_in(&options.work_dir)?;
    std::fs::create_dir_all(work.path().join("shm"))?;
    let tls = TlsDir::new(work.path().join("tls"));
    tls.generate(&[])?;
    let store = Arc::new(TieredStore::open(&StoreConfig {
        memory_bytes: 4 << 30,
        flash_dir: work.path().join("flash"),
        flash_bytes: 4 << 30,
        shm_dir: work.path().join("shm"),
    })?);
    store.open_job(JOB, Duration::from_secs(3600));
    let limits = Limits::default();
    let config =
        NetConfig { listen: "127.0.0.1:0".parse()?, tls: tls.clone(), limits, max_object: 1 << 30, rdma: false };
    let server = NetServer::start(store.clone(), &config).await?;
    let direct = DirectPath::connect_with_limits(server.local_addr()?, &tls, &limits).await?;
    direct.add_token(tls.secret()?.mint(JOB, unix_ms_now() + 3_600_000));

    let mut rows = Vec::new();
    {
        let key = |edge: u32, n: u32| ObjectKey::new(JOB, EdgeId(edge), n, 0);
        direct.put(&key(0, 0), large_object.clone()).await?;
        direct.put(&key(0, 1), small_object.clone()).await?;
        let get = time(repeats, || async {
            let (_, b) = read_batches("get", direct.get(&key(0, 0)).await?)?;
            ensure!(rows_of(&b) == large / ROW_BYTES, "short read");
            Ok(())
        })
        .await?;
        let mut n = 10;
        let put = time(repeats, || {
            n += 1;
            let k = key(1, n);
            let batches = &large_batches;
            let schema = &schema;
            let direct = &direct;
            async move {
                direct.put(&k, encode_batches(schema, batches)?).await?;
                direct.delete(&k).await?;
                Ok(())
            }
        })
        .await?;
        let small_rt = time(rounds, || async {
            read_batches("small", direct.get(&key(0, 1)).await?)?;
            Ok(())
        })
        .await?;
        let stats = direct.connection_stats();
        if std::env::var_os("BATON_QUIC_STATS").is_some() {
            eprintln!("{stats:#?}");
        }
        rows.push(row("baton direct (QUIC + TLS)", large, small, get, put, small_rt));
    }

    // Arrow Flight over gRPC on loopback (no TLS).
    {
        let addr = crate::flight::start().await?;
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .context("cannot reach the Flight server")?;
        let put_flight = |name: String, batches: Vec<RecordBatch>| {
            let mut client = FlightClient::new(channel.clone());
            async move {
                let stream = FlightDataEncoderBuilder::new()
                    .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![name])))
                    .build(futures::stream::iter(batches.into_iter().map(Ok)));
                client.do_put(stream).await?.try_collect::<Vec<_>>().await?;
                anyhow::Ok(())
            }
        };
        let get_flight = |name: &'static str| {
            let mut client = FlightClient::new(channel.clone());
            async move {
                let stream = client.do_get(Ticket::new(name)).await?;
                anyhow::Ok(stream.try_collect::<Vec<RecordBatch>>().await?)
            }
        };
        put_flight("large".into(), large_batches.clone()).await?;
        put_flight("small".into(), small_batches.clone()).await?;
        let get = time(repeats, || async {
            let b = get_flight("large").await?;
            ensure!(rows_of(&b) == large / ROW_BYTES, "short read");
            Ok(())
        })
        .await?;
        let mut n = 0;
        let put = time(repeats, || {
            n += 1;
            put_flight(format!("put-{n}"), large_batches.clone())
        })
        .await?;
        let small_rt = time(rounds, || async {
            get_flight("small").await?;
            Ok(())
        })
        .await?;
        rows.push(row("arrow flight (gRPC, no TLS)", large, small, get, put, small_rt));
    }

    // Raw TCP: length-prefixed bytes, no framing, no checks: the floor.
    {
        let addr = raw_tcp_server(large_object.clone(), small_object.clone()).await?;
        let conn = tokio::net::TcpStream::connect(addr).await?;
        conn.set_nodelay(true)?;
        let conn = tokio::sync::Mutex::new(conn);
        let fetch = |which: u8| {
            let conn = &conn;
            async move {
                let mut c = conn.lock().await;
                c.write_all(&[which]).await?;
                let len = c.read_u64_le().await? as usize;
                let mut buf = vec![0u8; len];
                c.read_exact(&mut buf).await?;
                anyhow::Ok(bytes::Bytes::from(buf))
            }
        };
        let get = time(repeats, || async {
            let (_, b) = read_batches("tcp", fetch(0).await?)?;
            ensure!(rows_of(&b) == large / ROW_BYTES, "short read");
            Ok(())
        })
        .await?;
        let put = time(repeats, || {
            let conn = &conn;
            let batches = &large_batches;
            let schema = &schema;
            async move {
                let object = encode_batches(schema, batches)?;
                let mut c = conn.lock().await;
                c.write_all(&[2]).await?;
                c.write_u64_le(object.len() as u64).await?;
                c.write_all(&object).await?;
                ensure!(c.read_u8().await? == 1, "no acknowledgement");
                Ok(())
            }
        })
        .await?;
        let small_rt = time(rounds, || async {
            read_batches("tcp", fetch(1).await?)?;
            Ok(())
        })
        .await?;
        rows.push(row("raw TCP (no TLS, no framing)", large, small, get, put, small_rt));
    }
    store.end_job(JOB).await?;
    Ok(DirectReport { large_bytes: large, small_bytes: small, rows })
}

fn rows_of(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}

fn row(name: &str, large: u64, small: u64, get: Vec<f64>, put: Vec<f64>, small_rt: Vec<f64>) -> TransportRow {
    TransportRow {
        transport: name.into(),
        get: summarize(large, get),
        put: summarize(large, put),
        small: summarize(small, small_rt),
    }
}

async fn time<F, Fut>(n: usize, mut f: F) -> anyhow::Result<Vec<f64>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    f().await?; // warm up
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await?;
        out.push(t.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// A TCP server: byte 0 asks for the large object, 1 for the small one (answered with a u64
/// length and the bytes); 2 sends an object (u64 length and bytes), answered with byte 1.
async fn raw_tcp_server(large: bytes::Bytes, small: bytes::Bytes) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.set_nodelay(true);
            let (large, small) = (large.clone(), small.clone());
            tokio::spawn(async move {
                loop {
                    let Ok(op) = conn.read_u8().await else { return };
                    let outcome: std::io::Result<()> = async {
                        match op {
                            0 | 1 => {
                                let object = if op == 0 { &large } else { &small };
                                conn.write_u64_le(object.len() as u64).await?;
                                conn.write_all(object).await
                            }
                            _ => {
                                let len = conn.read_u64_le().await? as usize;
                                let mut buf = vec![0u8; len];
                                conn.read_exact(&mut buf).await?;
                                conn.write_u8(1).await
                            }
                        }
                    }
                    .await;
                    if outcome.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// The report as Markdown.
pub fn markdown(r: &DirectReport) -> String {
    let mut out = format!(
        "### Direct path vs Arrow Flight vs raw TCP (loopback; {} MiB Arrow objects, {} KiB round trips)\n\n\
         | transport | get MB/s | put MB/s | small p50 | small p99 |\n|---|---:|---:|---:|---:|\n",
        r.large_bytes >> 20,
        r.small_bytes >> 10
    );
    for row in &r.rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} µs | {:.0} µs |\n",
            row.transport,
            row.get.mb_per_s,
            row.put.mb_per_s,
            row.small.p50_s * 1e6,
            row.small.p99_s * 1e6
        ));
    }
    if let (Some(b), Some(f)) = (r.rows.first(), r.rows.get(1)) {
        out.push_str(&format!(
            "\nBaton direct gets at {:.2}x Flight's throughput (goal ≥ 1) and its 4 KiB round trip takes {:.2}x Flight's (goal < 1).\n",
            b.get.mb_per_s / f.get.mb_per_s,
            b.small.p50_s / f.small.p50_s
        ));
    }
    out
}
