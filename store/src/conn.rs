//! Requests to storage nodes over QUIC: one endpoint, a connection per node kept open, and
//! nodes that did not answer skipped for a while; to a node on the client's own host, over
//! loopback TCP instead ([`crate::same_host`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_fabric::JobId;
use baton_fabric::net::TlsDir;
use baton_fabric::net::token::WireToken;
use baton_fabric::net::transport::Limits;
use baton_fabric::node::wire;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::member::NodeInfo;
use crate::proto::{Op, Request, Response};
use crate::same_host::{Conn, Pool};

/// How long a storage node may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A storage node silent for this long is gone (keep-alives go out every third of it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node found gone is not asked again (its copies are asked instead, and reads
/// with no other copy fail at once rather than wait for it).
const DEAD_FOR: Duration = Duration::from_secs(10);
/// How long a node on the same host may take to answer a request, or to send an item (it has
/// no keep-alives to show it is there, as QUIC has).
const LOCAL_TIMEOUT: Duration = Duration::from_secs(30);

/// A copy of a group: a block on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Replica {
    pub(crate) node: String,
    /// `None`: the node is no longer a member.
    pub(crate) addr: Option<SocketAddr>,
    /// Where it serves clients on this host, if it runs on this host.
    pub(crate) local: Option<SocketAddr>,
}

impl Replica {
    /// The copy on `node`, as the membership describes the node (`None`: not a member).
    pub(crate) fn of(node: &str, info: Option<&NodeInfo>) -> Self {
        Replica {
            node: node.to_string(),
            addr: info.map(|n| n.addr),
            local: info.and_then(|n| n.local.as_ref()?.reachable()),
        }
    }
}

/// What may follow a node's answer: the item a get asked for.
#[derive(Debug)]
pub(crate) enum Body {
    Quic(quinn::RecvStream),
    Local(Conn),
    Empty,
}

impl Body {
    /// Reads the item of `len` bytes that follows an answer.
    pub(crate) async fn item(self, peer: &str, len: u64) -> baton_fabric::Result<Bytes> {
        let gone = |reason: String| baton_fabric::Error::PeerGone { endpoint: peer.to_string(), reason };
        match self {
            Body::Quic(mut recv) => baton_fabric::net::server::receive_exactly(&mut recv, peer, len).await,
            Body::Local(mut conn) => {
                match tokio::time::timeout(LOCAL_TIMEOUT, crate::same_host::read_exactly(&mut conn.stream, len)).await {
                    Ok(Ok(bytes)) => {
                        conn.release();
                        Ok(bytes)
                    }
                    Ok(Err(e)) => Err(gone(e.to_string())),
                    Err(_) => Err(gone(format!("no item within {} s", LOCAL_TIMEOUT.as_secs()))),
                }
            }
            Body::Empty => Err(gone("no item followed its answer".into())),
        }
    }
}

/// Connections to storage nodes.
#[derive(Debug)]
pub(crate) struct Nodes {
    endpoint: quinn::Endpoint,
    tls: quinn::ClientConfig,
    connections: Mutex<HashMap<SocketAddr, quinn::Connection>>,
    /// Connections to nodes on this host.
    local: Arc<Pool>,
    /// Whether nodes on this host are asked over loopback TCP (else over QUIC like the rest).
    same_host: std::sync::atomic::AtomicBool,
    /// Nodes found gone, and when.
    dead: Mutex<HashMap<String, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A node that did not answer (its name and address), for `job`.
pub(crate) fn lost(job: JobId, replica: &Replica, reason: String) -> Error {
    let at = replica.addr.map_or_else(String::new, |a| format!(" at {a}"));
    Error::Lost { job, node: format!("{}{at}", replica.node), keys: Vec::new(), reason }
}

impl Nodes {
    /// Trusting the cluster's CA in `tls`.
    pub(crate) fn new(tls: &TlsDir) -> Result<Self> {
        let limits = Limits { idle_timeout: IDLE_TIMEOUT, ..Limits::default() };
        let endpoint = baton_fabric::net::transport::endpoint(([0, 0, 0, 0], 0).into(), None, &limits)
            .map_err(|e| Error::Io { what: "a QUIC endpoint".into(), source: e })?;
        Ok(Self {
            endpoint,
            tls: tls.client_config(&limits)?,
            connections: Mutex::default(),
            local: Arc::default(),
            same_host: std::sync::atomic::AtomicBool::new(true),
            dead: Mutex::default(),
        })
    }

    /// Closes every connection.
    pub(crate) fn close(&self) {
        self.endpoint.close(0u32.into(), b"done");
        self.local.clear();
    }

    /// Asks nodes on this host over loopback TCP (`true`, the default) or over QUIC.
    pub(crate) fn set_same_host(&self, on: bool) {
        self.same_host.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `node` did not answer a little while ago.
    pub(crate) fn is_dead(&self, node: &str) -> bool {
        lock(&self.dead).get(node).is_some_and(|t| t.elapsed() < DEAD_FOR)
    }

    async fn connection(&self, job: JobId, replica: &Replica) -> Result<quinn::Connection> {
        let addr =
            replica.addr.ok_or_else(|| lost(job, replica, "its membership lapsed (it stopped or lost etcd)".into()))?;
        if let Some(c) = lock(&self.connections).get(&addr).filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        let connecting = self
            .endpoint
            .connect_with(self.tls.clone(), addr, &addr.ip().to_string())
            .map_err(|e| lost(job, replica, e.to_string()))?;
        let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(lost(job, replica, e.to_string())),
            Err(_) => return Err(lost(job, replica, format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))),
        };
        lock(&self.connections).insert(addr, connection.clone());
        Ok(connection)
    }

    /// Sends `op` (and `body`) for `job` to a node; its answer and the stream an item follows
    /// on. A node that does not answer counts as gone for a while.
    pub(crate) async fn call(
        &self,
        job: JobId,
        token: &WireToken,
        replica: &Replica,
        op: Op,
        body: Option<Bytes>,
    ) -> Result<(Response, Body)> {
        if let Some(since) = lock(&self.dead).get(&replica.node).map(Instant::elapsed).filter(|t| *t < DEAD_FOR) {
            return Err(lost(job, replica, format!("it did not answer {} s ago", since.as_secs())));
        }
        let request = Request { job: job.0, token: Some(token.clone()), op };
        let same_host = self.same_host.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(local) = replica.local.filter(|_| same_host) {
            let answer = self.call_local(job, replica, local, &request, body).await;
            if answer.is_err() {
                lock(&self.dead).insert(replica.node.clone(), Instant::now());
            }
            return answer;
        }
        let answer = async {
            let connection = self.connection(job, replica).await?;
            let peer = format!("storage node {}", replica.node);
            let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(job, replica, e.to_string()))?;
            wire::send(&mut send, &peer, &request).await.map_err(|e| lost(job, replica, e.to_string()))?;
            // A node that refuses a put stops reading its body: its answer says why.
            let sent = match body {
                Some(body) => send.write_chunk(body).await.map_err(|e| e.to_string()),
                None => Ok(()),
            };
            let _ = send.finish();
            match wire::recv::<Response>(&mut recv, &peer).await {
                Ok(Some(response)) => Ok((response, Body::Quic(recv))),
                Ok(None) => Err(lost(job, replica, sent.err().unwrap_or_else(|| "it closed the stream".into()))),
                Err(e) => Err(lost(job, replica, e.to_string())),
            }
        }
        .await;
        if answer.is_err() {
            lock(&self.dead).insert(replica.node.clone(), Instant::now());
        }
        answer
    }

    /// [`Nodes::call`] to a node on this host: on a connection from the pool (a fresh one if a
    /// pooled one fails: the node may have closed it).
    async fn call_local(
        &self,
        job: JobId,
        replica: &Replica,
        addr: SocketAddr,
        request: &Request,
        body: Option<Bytes>,
    ) -> Result<(Response, Body)> {
        let peer = format!("storage node {} (same host)", replica.node);
        for fresh in [false, true] {
            let (mut conn, reused) = match self.local.take(addr, fresh).await {
                Ok(taken) => taken,
                Err(e) => return Err(lost(job, replica, format!("cannot connect to {addr}: {e}"))),
            };
            let exchange = async {
                let mut message = wire::encode(request).map_err(|e| e.to_string())?;
                let stream = conn.stream.get_mut();
                match &body {
                    // A small body in the same write as its request.
                    Some(body) if body.len() <= crate::same_host::ONE_WRITE => {
                        message.extend_from_slice(body);
                        stream.write_all(&message).await.map_err(|e| e.to_string())?;
                    }
                    Some(body) => {
                        stream.write_all(&message).await.map_err(|e| e.to_string())?;
                        stream.write_all(body).await.map_err(|e| e.to_string())?;
                    }
                    None => stream.write_all(&message).await.map_err(|e| e.to_string())?,
                }
                wire::recv::<Response>(&mut conn.stream, &peer).await.map_err(|e| e.to_string())
            };
            let reason = match tokio::time::timeout(LOCAL_TIMEOUT, exchange).await {
                Ok(Ok(Some(response @ Response::Item { .. }))) => return Ok((response, Body::Local(conn))),
                Ok(Ok(Some(response))) => {
                    conn.release();
                    return Ok((response, Body::Empty));
                }
                Ok(Ok(None)) => "it closed the connection".to_string(),
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {} s", LOCAL_TIMEOUT.as_secs()),
            };
            if !reused {
                return Err(lost(job, replica, reason));
            }
        }
        Err(lost(job, replica, "no connection answered".into()))
    }
}
