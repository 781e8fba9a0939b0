//! The direct path: a function (or node) talks to another host's node over QUIC — pushing an
//! object to the consumer's node, or pulling it from the producer's.
//!
//! Every request carries a token for the job it touches (see [`crate::net::token`]); the
//! client keeps one per job it was given.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::ids::{JobId, KeyPrefix, ObjectKey};
use crate::net::protocol::{NetOp, NetRequest, NetResponse};
use crate::net::server::receive_exactly;
use crate::net::tls::TlsDir;
use crate::net::token::Token;
use crate::net::transport::Limits;
use crate::node::wire::{self, Response};
use crate::path::{DataPath, ObjectMeta};
#[cfg(feature = "rdma")]
use crate::rdma::{Device, QueuePair};
use crate::rdma::{QpEndpoint, RemoteRegion};

/// How long connecting may take before the node counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A queue pair connected to one node, which reads the objects that node maps.
#[cfg(feature = "rdma")]
#[derive(Debug, Clone)]
pub struct RdmaReader {
    pair: std::sync::Arc<std::sync::Mutex<QueuePair>>,
}

#[cfg(feature = "rdma")]
impl RdmaReader {
    /// Reads a region the node mapped, on a blocking thread (the READ polls for completion).
    pub async fn read_region(&self, region: RemoteRegion) -> Result<Bytes> {
        let pair = self.pair.clone();
        tokio::task::spawn_blocking(move || pair.lock().unwrap_or_else(|p| p.into_inner()).read(&region))
            .await
            .map_err(|e| Error::Remote { message: format!("RDMA read task failed: {e}") })?
    }
}

/// A client of one remote node.
#[derive(Debug)]
pub struct DirectPath {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    peer: String,
    tokens: RwLock<HashMap<JobId, Token>>,
}

/// QUIC's crypto error codes: 0x100 plus a TLS alert. A handshake that ends with one was TLS
/// refusing the peer, not the network failing.
const TLS_ALERTS: std::ops::Range<u64> = 0x100..0x200;

impl DirectPath {
    /// Connects to the node at `addr`, trusting the cluster CA in `tls`.
    pub async fn connect(addr: SocketAddr, tls: &TlsDir) -> Result<Self> {
        Self::connect_with_limits(addr, tls, &Limits::default()).await
    }

    /// Connects with the given flow-control windows: how much the node may send ahead of this
    /// client's reading.
    /// The node must present a certificate from the cluster's CA for the address it is
    /// reached at: another node's certificate, or one for another address, is refused.
    pub async fn connect_with_limits(addr: SocketAddr, tls: &TlsDir, limits: &Limits) -> Result<Self> {
        Self::connect_with(addr, tls.client_config(limits)?, &addr.ip().to_string(), limits).await
    }

    /// Connects with a given client configuration and expected server name.
    pub async fn connect_with(
        addr: SocketAddr,
        client: quinn::ClientConfig,
        server_name: &str,
        limits: &Limits,
    ) -> Result<Self> {
        let peer = format!("node at {addr}");
        let unreachable = |source: std::io::Error| Error::Unreachable { endpoint: peer.clone(), source };
        let bind: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let mut endpoint = crate::net::transport::endpoint(bind, None, limits).map_err(unreachable)?;
        endpoint.set_default_client_config(client);
        let connecting = endpoint.connect(addr, server_name).map_err(|e| unreachable(std::io::Error::other(e)))?;
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(quinn::ConnectionError::TransportError(e))) if TLS_ALERTS.contains(&u64::from(e.code)) => {
                return Err(Error::Untrusted { endpoint: peer, reason: e.reason.clone() });
            }
            Ok(Err(quinn::ConnectionError::ConnectionClosed(c))) if TLS_ALERTS.contains(&u64::from(c.error_code)) => {
                let reason = format!("it refused this client's TLS ({})", c.error_code);
                return Err(Error::Untrusted { endpoint: peer, reason });
            }
            Ok(Err(e)) => return Err(unreachable(std::io::Error::other(e))),
            Err(_) => return Err(unreachable(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))),
        };
        Ok(Self { endpoint, connection, peer, tokens: RwLock::default() })
    }

    /// Adds the token for a job; requests for that job carry it.
    pub fn add_token(&self, token: Token) {
        self.tokens.write().unwrap_or_else(|p| p.into_inner()).insert(token.job, token);
    }

    /// The same client with `token` added.
    pub fn with_token(self, token: Token) -> Self {
        self.add_token(token);
        self
    }

    fn token(&self, job: JobId) -> Option<Token> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner()).get(&job).copied()
    }

    fn gone(&self, e: impl std::fmt::Display) -> Error {
        Error::PeerGone { endpoint: self.peer.clone(), reason: e.to_string() }
    }

    fn unexpected(&self, response: NetResponse) -> Error {
        match response {
            NetResponse::Failed(e) => e.into(),
            other => Error::Protocol { endpoint: self.peer.clone(), reason: format!("unexpected answer {other:?}") },
        }
    }

    /// Sends a request (and `body`, for a put); returns the answer and the stream to read any
    /// object from.
    async fn call(
        &self,
        job: Option<JobId>,
        op: NetOp,
        body: Option<Bytes>,
    ) -> Result<(NetResponse, quinn::RecvStream)> {
        let token = job.and_then(|j| self.token(j)).map(Into::into);
        let (mut send, mut recv) = self.connection.open_bi().await.map_err(|e| self.gone(e))?;
        let request = NetRequest { job: job.map_or(0, |j| j.0), token, op };
        wire::send(&mut send, &self.peer, &request).await?;
        if let Some(body) = body {
            send.write_chunk(body).await.map_err(|e| self.gone(e))?;
        }
        send.finish().map_err(|e| self.gone(e))?;
        match wire::recv::<NetResponse>(&mut recv, &self.peer).await? {
            Some(response) => Ok((response, recv)),
            None => Err(self.gone("closed the stream without an answer")),
        }
    }

    /// The QUIC connection's statistics (packets, path MTU, congestion window, round trip).
    pub fn connection_stats(&self) -> quinn::ConnectionStats {
        self.connection.stats()
    }

    /// The node's protocol version and whether it serves RDMA.
    pub async fn hello(&self) -> Result<(u8, bool)> {
        match self.call(None, NetOp::Hello, None).await?.0 {
            NetResponse::Hello { version, rdma } => Ok((version, rdma)),
            other => Err(self.unexpected(other)),
        }
    }

    /// Opens `job` on the node with a lease of `ttl` (needs the job's token).
    pub async fn open_job(&self, job: JobId, ttl: Duration) -> Result<()> {
        let ttl_ms = ttl.as_millis().try_into().unwrap_or(u64::MAX);
        match self.call(Some(job), NetOp::OpenJob { ttl_ms }, None).await?.0 {
            NetResponse::Lease { .. } => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Renews `job`'s lease.
    pub async fn renew_job(&self, job: JobId) -> Result<()> {
        match self.call(Some(job), NetOp::RenewJob, None).await?.0 {
            NetResponse::Lease { .. } => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Ends `job` on the node; returns the bytes freed.
    pub async fn end_job(&self, job: JobId) -> Result<u64> {
        match self.call(Some(job), NetOp::EndJob, None).await?.0 {
            NetResponse::Freed { bytes } => Ok(bytes),
            other => Err(self.unexpected(other)),
        }
    }

    /// Asks the node for a queue pair connected to `local` (the RDMA map path); `job` is any
    /// job this client holds a token for.
    pub async fn rdma_connect(&self, job: JobId, local: QpEndpoint) -> Result<QpEndpoint> {
        match self.call(Some(job), NetOp::RdmaConnect { qp: local }, None).await?.0 {
            NetResponse::RdmaConnected { qp } => Ok(qp),
            other => Err(self.unexpected(other)),
        }
    }

    /// Has the node register the object at `key` for this connection's queue pairs to read.
    pub async fn map(&self, key: &ObjectKey) -> Result<RemoteRegion> {
        match self.call(Some(key.job), NetOp::Map { key: (*key).into() }, None).await?.0 {
            NetResponse::Mapped { region } => Ok(region),
            other => Err(self.unexpected(other)),
        }
    }

    /// Releases the object at `key` that `map` registered.
    pub async fn unmap(&self, key: &ObjectKey) -> Result<()> {
        match self.call(Some(key.job), NetOp::Unmap { key: (*key).into() }, None).await?.0 {
            NetResponse::Done => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Connects a queue pair of `device` to this node, for [`DirectPath::get_rdma`].
    #[cfg(feature = "rdma")]
    pub async fn rdma_reader(&self, job: JobId, device: &std::sync::Arc<Device>) -> Result<RdmaReader> {
        let mut pair = QueuePair::new(device)?;
        let remote = self.rdma_connect(job, pair.endpoint()).await?;
        pair.connect(&remote)?;
        Ok(RdmaReader { pair: std::sync::Arc::new(std::sync::Mutex::new(pair)) })
    }

    /// Reads the object at `key` one-sidedly from the node's memory: map, RDMA READ, unmap.
    #[cfg(feature = "rdma")]
    pub async fn get_rdma(&self, reader: &RdmaReader, key: &ObjectKey) -> Result<Bytes> {
        let region = self.map(key).await?;
        let read = reader.read_region(region).await;
        let unmapped = self.unmap(key).await;
        let bytes = read?;
        unmapped?;
        Ok(bytes)
    }

    /// Starts reading the object at `key`: its length and the stream its bytes arrive on.
    pub async fn open_read(&self, key: &ObjectKey) -> Result<(u64, quinn::RecvStream)> {
        self.open_read_range(key, None).await
    }

    async fn open_read_range(&self, key: &ObjectKey, range: Option<(u64, u64)>) -> Result<(u64, quinn::RecvStream)> {
        match self.call(Some(key.job), NetOp::Get { key: (*key).into(), range }, None).await? {
            (NetResponse::Object { len }, recv) => Ok((len, recv)),
            (other, _) => Err(self.unexpected(other)),
        }
    }
}

impl Drop for DirectPath {
    fn drop(&mut self) {
        self.connection.close(0u32.into(), b"done");
        self.endpoint.close(0u32.into(), b"done");
    }
}

#[async_trait]
impl DataPath for DirectPath {
    async fn put(&self, key: &ObjectKey, payload: Bytes) -> Result<()> {
        let op = NetOp::Put { key: (*key).into(), len: payload.len() as u64 };
        match self.call(Some(key.job), op, Some(payload)).await?.0 {
            NetResponse::Done => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let (len, mut recv) = self.open_read(key).await?;
        receive_exactly(&mut recv, &self.peer, len).await
    }

    async fn get_range(&self, key: &ObjectKey, range: std::ops::Range<u64>) -> Result<Bytes> {
        let (len, mut recv) = self.open_read_range(key, Some((range.start, range.end))).await?;
        receive_exactly(&mut recv, &self.peer, len).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        match self.call(Some(key.job), NetOp::Delete { key: (*key).into() }, None).await?.0 {
            NetResponse::Done => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>> {
        match self.call(Some(prefix.job), NetOp::List { edge: prefix.edge.map(|e| e.0) }, None).await?.0 {
            NetResponse::Objects { objects } => Ok(Response::into_objects(objects)),
            other => Err(self.unexpected(other)),
        }
    }

    async fn purge_job(&self, job: JobId) -> Result<u64> {
        self.end_job(job).await
    }
}
