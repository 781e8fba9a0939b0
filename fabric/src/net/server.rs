//! A node's QUIC service: other nodes and remote functions put, get, list and delete a job's
//! objects with that job's token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::buffers::Pool;
use crate::error::{Error, Result};
use crate::ids::{JobId, KeyPrefix, ObjectKey};
use crate::net::protocol::{NetOp, NetRequest, NetResponse};
use crate::net::tls::TlsDir;
use crate::net::token::{Audience, Scopes, Token, TokenPublicKey, unix_ms_now};
use crate::net::transport::Limits;
use crate::node::wire::{self, Response, VERSION};
use crate::rdma::Service;
use crate::rdma::service::not_served;
use crate::store::{Opened, TieredStore};

/// Bytes sent per write, so that progress is visible and a stalled reader stops the sender. An
/// object in shared memory is read a piece at a time into pooled buffers of this size
/// ([`crate::buffers::MIN_POOLED`]: the smallest the pool keeps).
const SEND_CHUNK: usize = crate::buffers::MIN_POOLED;
/// The largest request header a node reads from a stream (object bytes follow it, and are read
/// only once the request's token checks): a key, a token, an op.
pub const MAX_REQUEST: usize = 4 << 10;
/// QUIC connections one address may hold open at once, and all addresses together.
const MAX_CONNECTIONS_PER_PEER: u32 = 64;
const MAX_CONNECTIONS: u32 = 4096;

/// What a node's QUIC service has moved.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Object bytes handed to QUIC for sending (flow control admits them only as the reader
    /// reads).
    pub bytes_sent: AtomicU64,
    /// Object bytes received and stored.
    pub bytes_received: AtomicU64,
    /// Requests refused for a bad or missing token.
    pub refused: AtomicU64,
}

/// Settings of a node's QUIC service.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The cluster's TLS material and secret.
    pub tls: TlsDir,
    /// Flow-control windows and stream limits.
    pub limits: Limits,
    /// The largest object a put may carry.
    pub max_object: u64,
    /// Whether this node serves the RDMA map path: it then needs the `rdma` build and a
    /// device, or it does not start.
    pub rdma: bool,
}

impl NetConfig {
    /// Listens on `listen` with the cluster material in `tls`, default windows, objects of up
    /// to 1 GiB, and no RDMA.
    pub fn new(listen: SocketAddr, tls: TlsDir) -> Self {
        Self { listen, tls, limits: Limits::default(), max_object: 1 << 30, rdma: false }
    }
}

/// A running QUIC service.
#[derive(Debug)]
pub struct NetServer {
    endpoint: quinn::Endpoint,
    stats: Arc<NetStats>,
    task: JoinHandle<()>,
}

struct Shared {
    store: Arc<TieredStore>,
    /// Checks tokens; the node holds no key that mints them.
    verifier: TokenPublicKey,
    /// This node's names as token audiences.
    audiences: Vec<Audience>,
    stats: Arc<NetStats>,
    max_object: u64,
    rdma: Option<Service>,
}

impl NetServer {
    /// Serves `store` on `config.listen`.
    pub async fn start(store: Arc<TieredStore>, config: &NetConfig) -> Result<Self> {
        let server = config.tls.server_config(&config.limits)?;
        let verifier = config.tls.verifier()?;
        let audiences = config.tls.names()?.iter().map(|n| Audience::node(n)).collect();
        let endpoint = crate::net::transport::endpoint(config.listen, Some(server), &config.limits)
            .map_err(|e| Error::io("listen on", config.listen.to_string(), e))?;
        let rdma = if config.rdma { Some(Service::start()?) } else { None };
        let stats = Arc::new(NetStats::default());
        let shared =
            Arc::new(Shared { store, verifier, audiences, stats: stats.clone(), max_object: config.max_object, rdma });
        let task = tokio::spawn(accept(endpoint.clone(), shared));
        Ok(Self { endpoint, stats, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint.local_addr().map_err(|e| Error::io("local address", "quic endpoint", e))
    }

    /// What it has moved.
    pub fn stats(&self) -> &Arc<NetStats> {
        &self.stats
    }
}

impl Drop for NetServer {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"node stopping");
        self.task.abort();
    }
}

/// Open connections, by peer address and in all.
#[derive(Default)]
struct Connections {
    by_peer: std::collections::HashMap<std::net::IpAddr, u32>,
    total: u32,
}

/// A slot in [`Connections`], given back when the connection ends.
struct Slot {
    connections: Arc<std::sync::Mutex<Connections>>,
    ip: std::net::IpAddr,
}

impl Slot {
    fn take(connections: &Arc<std::sync::Mutex<Connections>>, ip: std::net::IpAddr) -> Option<Slot> {
        let mut c = connections.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.by_peer.get(&ip).copied().unwrap_or(0);
        if mine >= MAX_CONNECTIONS_PER_PEER || c.total >= MAX_CONNECTIONS {
            return None;
        }
        c.by_peer.insert(ip, mine + 1);
        c.total += 1;
        Some(Slot { connections: connections.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.by_peer.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_peer.remove(&self.ip);
            }
        }
    }
}

async fn accept(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let connections = Arc::new(std::sync::Mutex::new(Connections::default()));
    while let Some(incoming) = endpoint.accept().await {
        let Some(slot) = Slot::take(&connections, incoming.remote_address().ip()) else {
            tracing::warn!(peer = %incoming.remote_address(), "refused a connection: too many open from there");
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(connection) = incoming.await else { return };
            let peer =
                Peer { name: connection.remote_address().to_string(), connection: connection.stable_id() as u64 };
            while let Ok((send, recv)) = connection.accept_bi().await {
                tokio::spawn(serve_stream(shared.clone(), peer.clone(), send, recv));
            }
            if let Some(rdma) = &shared.rdma {
                rdma.disconnect(peer.connection);
            }
        });
    }
}

/// Who sent a request: the remote address (for messages) and the QUIC connection.
#[derive(Clone, Debug)]
struct Peer {
    name: String,
    connection: u64,
}

async fn serve_stream(shared: Arc<Shared>, peer: Peer, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let request = match wire::recv_within::<NetRequest>(&mut recv, &peer.name, MAX_REQUEST).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(e) => {
            let _ = reply(&mut send, &peer.name, &failed(&e)).await;
            return;
        }
    };
    let op = op_name(&request.op);
    let received = match &request.op {
        NetOp::Put { len, .. } => *len,
        _ => 0,
    };
    let start = std::time::Instant::now();
    let outcome = handle(&shared, &peer, request, &mut send, &mut recv).await;
    let counted = match &outcome {
        Ok(()) => "ok",
        Err(Error::NotFound { .. }) => "miss",
        Err(_) => "error",
    };
    metrics::counter!("baton_node_requests_total", "op" => op, "outcome" => counted, "via" => "quic").increment(1);
    metrics::histogram!("baton_node_request_seconds", "op" => op, "via" => "quic")
        .record(start.elapsed().as_secs_f64());
    if outcome.is_ok() && received > 0 {
        metrics::counter!("baton_node_bytes_received_total", "via" => "quic").increment(received);
    }
    if let Err(e) = outcome {
        if matches!(e, Error::Unauthorized { .. }) {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        let _ = reply(&mut send, &peer.name, &failed(&e)).await;
    }
}

/// An operation's name in the node's metrics.
fn op_name(op: &NetOp) -> &'static str {
    match op {
        NetOp::Hello => "hello",
        NetOp::OpenJob { .. } => "open_job",
        NetOp::RenewJob => "renew_job",
        NetOp::EndJob => "end_job",
        NetOp::Put { .. } => "put",
        NetOp::Get { .. } => "get",
        NetOp::Delete { .. } => "delete",
        NetOp::List { .. } => "list",
        NetOp::RdmaConnect { .. } => "rdma_connect",
        NetOp::Map { .. } => "map",
        NetOp::Unmap { .. } => "unmap",
    }
}

fn failed(e: &Error) -> NetResponse {
    match Response::failed(e) {
        Response::Failed(w) => NetResponse::Failed(w),
        _ => NetResponse::Failed(crate::node::wire::WireError::Other { message: e.to_string() }),
    }
}

async fn reply(send: &mut quinn::SendStream, peer: &str, response: &NetResponse) -> Result<()> {
    wire::send(send, peer, response).await?;
    let _ = send.finish();
    Ok(())
}

/// Checks that `token` grants `needed` on `job` at this node, and that `key` (if any) belongs
/// to `job`.
fn authorize(
    shared: &Shared,
    token: Option<Token>,
    needed: Scopes,
    job: JobId,
    key: Option<&ObjectKey>,
) -> Result<JobId> {
    let Some(token) = token else {
        return Err(Error::Unauthorized { job, reason: format!("the request carried no token for {job}") });
    };
    if let Some(key) = key.filter(|k| k.job != job) {
        return Err(Error::Unauthorized { job: key.job, reason: format!("the request is for {job}") });
    }
    shared
        .verifier
        .verify(&token, job, needed, &shared.audiences, unix_ms_now())
        .map_err(|e| Error::Unauthorized { job, reason: e.to_string() })?;
    Ok(job)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Remote { message: format!("handler failed: {e}") })?
}

async fn handle(
    shared: &Arc<Shared>,
    from: &Peer,
    request: NetRequest,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Result<()> {
    let token = request
        .token
        .map(Token::try_from)
        .transpose()
        .map_err(|e| Error::Unauthorized { job: JobId(request.job), reason: e.to_string() })?;
    let job = JobId(request.job);
    let store = &shared.store;
    let peer = from.name.as_str();
    let response = match request.op {
        NetOp::Hello => NetResponse::Hello { version: VERSION, rdma: shared.rdma.is_some() },
        NetOp::OpenJob { ttl_ms } => {
            authorize(shared, token, Scopes::END, job, None)?;
            let lease = store.open_job(job, Duration::from_millis(ttl_ms))?;
            NetResponse::Lease { ttl_ms: lease.ttl.as_millis() as u64 }
        }
        NetOp::RenewJob => {
            authorize(shared, token, Scopes::END, job, None)?;
            NetResponse::Lease { ttl_ms: store.renew_job(job)?.ttl.as_millis() as u64 }
        }
        NetOp::EndJob => {
            authorize(shared, token, Scopes::END, job, None)?;
            if let Some(rdma) = &shared.rdma {
                rdma.unmap_job(job);
            }
            NetResponse::Freed { bytes: store.end_job(job).await? }
        }
        NetOp::List { edge } => {
            authorize(shared, token, Scopes::READ, job, None)?;
            let prefix = KeyPrefix { job, edge: edge.map(crate::ids::EdgeId) };
            let store = store.clone();
            match Response::objects(&blocking(move || store.list_objects(&prefix)).await?) {
                Response::Objects { objects } => NetResponse::Objects { objects },
                _ => NetResponse::Done,
            }
        }
        NetOp::Delete { key } => {
            let key = ObjectKey::from(key);
            authorize(shared, token, Scopes::WRITE, job, Some(&key))?;
            if let Some(rdma) = &shared.rdma {
                rdma.unmap_everywhere(&key);
            }
            let store = store.clone();
            blocking(move || store.remove(&key)).await?;
            NetResponse::Done
        }
        NetOp::Put { key, len } => {
            let key = ObjectKey::from(key);
            authorize(shared, token, Scopes::WRITE, job, Some(&key))?;
            if len > shared.max_object {
                return Err(Error::NoCapacity { tier: crate::Tier::Memory, needed: len, available: shared.max_object });
            }
            // Admitted on the announced length: bytes the tiers could not hold are refused
            // before they are read, not buffered first.
            let available = store.room();
            if len > available {
                return Err(Error::NoCapacity { tier: crate::Tier::Flash, needed: len, available });
            }
            let bytes = receive_exactly(recv, peer, len).await?;
            shared.stats.bytes_received.fetch_add(len, Ordering::Relaxed);
            let store = store.clone();
            blocking(move || store.insert(&key, bytes)).await?;
            NetResponse::Done
        }
        NetOp::Get { key, range } => {
            let key = ObjectKey::from(key);
            authorize(shared, token, Scopes::READ, job, Some(&key))?;
            let object = open(store, key).await?;
            let len = object.len();
            let (start, end) = range.unwrap_or((0, len));
            crate::path::check_range(&key, &(start..end), len)?;
            wire::send(send, peer, &NetResponse::Object { len: end - start }).await?;
            let mut offset = start;
            while offset < end {
                let n = SEND_CHUNK.min((end - offset) as usize);
                let chunk = match object.read_at(offset, n) {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        // The header is out: a reset, not an error frame the reader would take
                        // for object bytes, ends the stream short of its length.
                        let _ = send.reset(0u32.into());
                        return Err(e);
                    }
                };
                send.write_chunk(chunk).await.map_err(|e| gone(peer, e))?;
                shared.stats.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                metrics::counter!("baton_node_bytes_sent_total", "via" => "quic").increment(n as u64);
                offset += n as u64;
            }
            let _ = send.finish();
            return Ok(());
        }
        NetOp::RdmaConnect { qp } => {
            authorize(shared, token, Scopes::READ, job, None)?;
            let rdma = shared.rdma.as_ref().ok_or_else(not_served)?;
            NetResponse::RdmaConnected { qp: rdma.accept(from.connection, &qp)? }
        }
        NetOp::Map { key } => {
            let key = ObjectKey::from(key);
            authorize(shared, token, Scopes::READ, job, Some(&key))?;
            let rdma = shared.rdma.as_ref().ok_or_else(not_served)?;
            let bytes = read(store, key).await?;
            NetResponse::Mapped { region: rdma.map(from.connection, key, bytes)? }
        }
        NetOp::Unmap { key } => {
            let key = ObjectKey::from(key);
            authorize(shared, token, Scopes::READ, job, Some(&key))?;
            shared.rdma.as_ref().ok_or_else(not_served)?.unmap(from.connection, &key);
            NetResponse::Done
        }
    };
    reply(send, peer, &response).await
}

/// The object at `key` open to serve piece by piece: the memory tier's hold on it at once, or
/// its file on flash opened on a blocking thread.
async fn open(store: &Arc<TieredStore>, key: ObjectKey) -> Result<Opened> {
    match store.resident(&key)? {
        Some(resident) => Ok(Opened::Memory(resident)),
        None => {
            let store = store.clone();
            blocking(move || store.open_object(&key)).await
        }
    }
}

/// The object at `key`: straight from memory, or from flash on a blocking thread.
async fn read(store: &Arc<TieredStore>, key: ObjectKey) -> Result<Bytes> {
    match store.read_resident(&key)? {
        Some(bytes) => Ok(bytes),
        None => {
            let store = store.clone();
            blocking(move || store.read(&key)).await
        }
    }
}

fn gone(peer: &str, e: impl std::fmt::Display) -> Error {
    Error::PeerGone { endpoint: peer.to_string(), reason: e.to_string() }
}

/// Reads exactly `len` bytes and then the end of the stream (a put's body); anything else is an error and
/// nothing is kept.
pub async fn receive_exactly(recv: &mut quinn::RecvStream, peer: &str, len: u64) -> Result<Bytes> {
    // The announced length sizes the buffer only up to 1 GiB: a larger object grows it as
    // its bytes really arrive.
    let mut pooled = Pool::global().take(len.min(1 << 30) as usize);
    let buf = pooled.vec();
    while (buf.len() as u64) < len {
        let want = (len - buf.len() as u64).min(usize::MAX as u64) as usize;
        match recv.read_chunk(want, true).await.map_err(|e| gone(peer, e))? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => {
                return Err(gone(peer, format!("stream ended after {} of {len} bytes", buf.len())));
            }
        }
    }
    match recv.read_chunk(1, true).await.map_err(|e| gone(peer, e))? {
        None => Ok(pooled.freeze()),
        Some(_) => {
            Err(Error::Protocol { endpoint: peer.to_string(), reason: format!("more than the {len} bytes announced") })
        }
    }
}
