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
use baton_fabric::buffers::Pool;
use baton_fabric::net::token::unix_ms_now;
use baton_fabric::net::{Audience, Limits, NetConfig, NetServer, Scopes, TlsDir};
use baton_fabric::path::direct::DirectPath;
use baton_fabric::store::{StoreConfig, TieredStore};
use baton_fabric::{DataPath, EdgeId, JobId, ObjectKey};
use bytes::Bytes;
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

/// What the benchmark moves, shared by every transport.
struct Payloads {
    large: u64,
    large_batches: Vec<RecordBatch>,
    small_batches: Vec<RecordBatch>,
}

impl Payloads {
    fn large_object(&self) -> anyhow::Result<Bytes> {
        Ok(encode_batches(&data::schema(), &self.large_batches)?)
    }

    fn small_object(&self) -> anyhow::Result<Bytes> {
        Ok(encode_batches(&data::schema(), &self.small_batches)?)
    }
}

/// One way of moving the payloads: each call is one timed transfer.
trait Transport {
    fn name(&self) -> &'static str;
    /// Fetches the large object and decodes it.
    fn get_large(&self) -> impl Future<Output = anyhow::Result<()>>;
    /// Encodes and uploads the large batches as the `n`th new object (and cleans it up).
    fn put_large(&self, n: u32) -> impl Future<Output = anyhow::Result<()>>;
    /// Fetches the small object and decodes it.
    fn get_small(&self) -> impl Future<Output = anyhow::Result<()>>;
}

/// Baton's direct path: a node with its QUIC service, a client holding the job's token.
struct Baton<'a> {
    payloads: &'a Payloads,
    direct: DirectPath,
    store: Arc<TieredStore>,
    _server: NetServer,
    _work: tempfile::TempDir,
}

fn key(edge: u32, n: u32) -> ObjectKey {
    ObjectKey::new(JOB, EdgeId(edge), n, 0)
}

impl<'a> Baton<'a> {
    async fn start(payloads: &'a Payloads, work_dir: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(work_dir)?;
        let work = tempfile::tempdir_in(work_dir)?;
        let tls = TlsDir::new(work.path().join("tls"));
        tls.generate(&[])?;
        let store = Arc::new(TieredStore::open(&StoreConfig::under(work.path(), 4 << 30, 4 << 30))?);
        store.open_job(JOB, Duration::from_secs(3600))?;
        let limits = Limits::default();
        let config = NetConfig { limits, ..NetConfig::new("127.0.0.1:0".parse()?, tls.clone()) };
        let server = NetServer::start(store.clone(), &config).await?;
        let direct = DirectPath::connect_with_limits(server.local_addr()?, &tls, &limits).await?;
        direct.add_token(tls.signer()?.mint(JOB, unix_ms_now() + 3_600_000, Scopes::ALL, Audience::ANY));
        direct.put(&key(0, 0), payloads.large_object()?).await?;
        direct.put(&key(0, 1), payloads.small_object()?).await?;
        Ok(Self { payloads, direct, store, _server: server, _work: work })
    }

    async fn finish(self) -> anyhow::Result<()> {
        if std::env::var_os("BATON_QUIC_STATS").is_some() {
            eprintln!("{:#?}", self.direct.connection_stats());
        }
        self.store.end_job(JOB).await?;
        Ok(())
    }
}

impl Transport for Baton<'_> {
    fn name(&self) -> &'static str {
        "baton direct (QUIC + TLS)"
    }

    async fn get_large(&self) -> anyhow::Result<()> {
        let (_, b) = read_batches("get", self.direct.get(&key(0, 0)).await?)?;
        ensure!(rows_of(&b) == self.payloads.large / ROW_BYTES, "short read");
        Ok(())
    }

    async fn put_large(&self, n: u32) -> anyhow::Result<()> {
        let k = key(1, n);
        self.direct.put(&k, self.payloads.large_object()?).await?;
        self.direct.delete(&k).await?;
        Ok(())
    }

    async fn get_small(&self) -> anyhow::Result<()> {
        read_batches("small", self.direct.get(&key(0, 1)).await?)?;
        Ok(())
    }
}

/// Arrow Flight over gRPC on loopback (no TLS).
struct Flight<'a> {
    payloads: &'a Payloads,
    channel: tonic::transport::Channel,
}

impl<'a> Flight<'a> {
    async fn start(payloads: &'a Payloads) -> anyhow::Result<Self> {
        let addr = crate::flight::start().await?;
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .initial_stream_window_size(crate::flight::STREAM_WINDOW)
            .initial_connection_window_size(crate::flight::CONNECTION_WINDOW)
            .http2_adaptive_window(true)
            .connect()
            .await
            .context("cannot reach the Flight server")?;
        let flight = Self { payloads, channel };
        flight.put("large".into(), payloads.large_batches.clone()).await?;
        flight.put("small".into(), payloads.small_batches.clone()).await?;
        Ok(flight)
    }

    async fn put(&self, name: String, batches: Vec<RecordBatch>) -> anyhow::Result<()> {
        let stream = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![name])))
            .build(futures::stream::iter(batches.into_iter().map(Ok)));
        FlightClient::new(self.channel.clone()).do_put(stream).await?.try_collect::<Vec<_>>().await?;
        Ok(())
    }

    async fn get(&self, name: &'static str) -> anyhow::Result<Vec<RecordBatch>> {
        let stream = FlightClient::new(self.channel.clone()).do_get(Ticket::new(name)).await?;
        Ok(stream.try_collect::<Vec<RecordBatch>>().await?)
    }
}

impl Transport for Flight<'_> {
    fn name(&self) -> &'static str {
        "arrow flight (gRPC, no TLS)"
    }

    async fn get_large(&self) -> anyhow::Result<()> {
        let b = self.get("large").await?;
        ensure!(rows_of(&b) == self.payloads.large / ROW_BYTES, "short read");
        Ok(())
    }

    async fn put_large(&self, n: u32) -> anyhow::Result<()> {
        let name = format!("put-{n}");
        self.put(name.clone(), self.payloads.large_batches.clone()).await?;
        let drop = arrow_flight::Action::new(crate::flight::DROP, name);
        FlightClient::new(self.channel.clone()).do_action(drop).await?.try_collect::<Vec<_>>().await?;
        Ok(())
    }

    async fn get_small(&self) -> anyhow::Result<()> {
        self.get("small").await?;
        Ok(())
    }
}

/// Raw TCP: length-prefixed bytes, no framing, no checks: the floor. It receives into the same
/// pooled buffers as Baton.
struct RawTcp<'a> {
    payloads: &'a Payloads,
    conn: tokio::sync::Mutex<tokio::net::TcpStream>,
}

impl<'a> RawTcp<'a> {
    async fn start(payloads: &'a Payloads) -> anyhow::Result<Self> {
        let addr = raw_tcp_server(payloads.large_object()?, payloads.small_object()?).await?;
        let conn = tokio::net::TcpStream::connect(addr).await?;
        conn.set_nodelay(true)?;
        Ok(Self { payloads, conn: tokio::sync::Mutex::new(conn) })
    }

    async fn fetch(&self, which: u8) -> anyhow::Result<Bytes> {
        let mut c = self.conn.lock().await;
        c.write_all(&[which]).await?;
        let len = c.read_u64_le().await?;
        Ok(read_pooled(&mut c, len).await?)
    }
}

impl Transport for RawTcp<'_> {
    fn name(&self) -> &'static str {
        "raw TCP (no TLS, no framing)"
    }

    async fn get_large(&self) -> anyhow::Result<()> {
        let (_, b) = read_batches("tcp", self.fetch(0).await?)?;
        ensure!(rows_of(&b) == self.payloads.large / ROW_BYTES, "short read");
        Ok(())
    }

    async fn put_large(&self, _n: u32) -> anyhow::Result<()> {
        let object = self.payloads.large_object()?;
        let mut c = self.conn.lock().await;
        c.write_all(&[2]).await?;
        c.write_u64_le(object.len() as u64).await?;
        c.write_all(&object).await?;
        ensure!(c.read_u8().await? == 1, "no acknowledgement");
        Ok(())
    }

    async fn get_small(&self) -> anyhow::Result<()> {
        read_batches("tcp", self.fetch(1).await?)?;
        Ok(())
    }
}

/// Seconds per call of `op` on each transport: one warm-up each, then `n` rounds in which
/// the transports take turns (starting one later each round), so that a slow spell of the
/// machine falls on all of them alike.
async fn rounds<A: Transport, B: Transport, C: Transport>(
    transports: (&A, &B, &C),
    n: u32,
    op: Op,
) -> anyhow::Result<[Vec<f64>; 3]> {
    async fn one<T: Transport>(t: &T, op: Op, i: u32) -> anyhow::Result<f64> {
        let start = Instant::now();
        match op {
            Op::GetLarge => t.get_large().await?,
            Op::PutLarge => t.put_large(i).await?,
            Op::GetSmall => t.get_small().await?,
        }
        Ok(start.elapsed().as_secs_f64())
    }
    let (a, b, c) = transports;
    let mut out: [Vec<f64>; 3] = Default::default();
    for i in 0..=n {
        for turn in 0..3 {
            let which = (turn + i as usize) % 3;
            let seconds = match which {
                0 => one(a, op, i).await?,
                1 => one(b, op, i).await?,
                _ => one(c, op, i).await?,
            };
            if i > 0 {
                out[which].push(seconds);
            }
        }
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Op {
    GetLarge,
    PutLarge,
    GetSmall,
}

/// Runs the benchmark.
pub async fn run(options: &DirectOptions) -> anyhow::Result<DirectReport> {
    let (large, small, repeats, small_rounds) =
        if options.quick { (4u64 << 20, 4u64 << 10, 3, 30) } else { (64 << 20, 4 << 10, 15, 500) };
    let payloads = Payloads { large, large_batches: batches(large), small_batches: batches(small) };
    let baton = Baton::start(&payloads, &options.work_dir).await?;
    let flight = Flight::start(&payloads).await?;
    let tcp = RawTcp::start(&payloads).await?;
    let transports = (&baton, &flight, &tcp);
    let [get_b, get_f, get_t] = rounds(transports, repeats, Op::GetLarge).await?;
    let [put_b, put_f, put_t] = rounds(transports, repeats, Op::PutLarge).await?;
    let [small_b, small_f, small_t] = rounds(transports, small_rounds, Op::GetSmall).await?;
    let rows = vec![
        row(baton.name(), large, small, get_b, put_b, small_b),
        row(flight.name(), large, small, get_f, put_f, small_f),
        row(tcp.name(), large, small, get_t, put_t, small_t),
    ];
    baton.finish().await?;
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

/// A TCP server: byte 0 asks for the large object, 1 for the small one (answered with a u64
/// length and the bytes); 2 sends an object (u64 length and bytes), answered with byte 1.
async fn raw_tcp_server(large: bytes::Bytes, small: Bytes) -> anyhow::Result<std::net::SocketAddr> {
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
                                let len = conn.read_u64_le().await?;
                                read_pooled(&mut conn, len).await?;
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

/// Reads `len` bytes into a buffer from the fabric's pool, as Baton's own receiver does, so
/// that raw TCP pays no more for fresh memory than Baton does.
async fn read_pooled(conn: &mut tokio::net::TcpStream, len: u64) -> std::io::Result<Bytes> {
    let mut buf = Pool::global().take(len as usize);
    let read = conn.take(len).read_to_end(buf.vec()).await?;
    if read as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf.freeze())
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
