//! Requests to storage nodes over QUIC: one endpoint, a connection per node kept open, and
//! nodes that did not answer skipped for a while.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use baton_fabric::JobId;
use baton_fabric::net::TlsDir;
use baton_fabric::net::token::WireToken;
use baton_fabric::net::transport::Limits;
use baton_fabric::node::wire;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::proto::{Op, Request, Response};

/// How long a storage node may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A storage node silent for this long is gone (keep-alives go out every third of it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node found gone is not asked again (its copies are asked instead, and reads
/// with no other copy fail at once rather than wait for it).
const DEAD_FOR: Duration = Duration::from_secs(10);

/// A copy of a group: a block on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Replica {
    pub(crate) node: String,
    /// `None`: the node is no longer a member.
    pub(crate) addr: Option<SocketAddr>,
}

/// Connections to storage nodes.
#[derive(Debug)]
pub(crate) struct Nodes {
    endpoint: quinn::Endpoint,
    tls: quinn::ClientConfig,
    connections: Mutex<HashMap<SocketAddr, quinn::Connection>>,
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
        Ok(Self { endpoint, tls: tls.client_config(&limits)?, connections: Mutex::default(), dead: Mutex::default() })
    }

    /// Closes every connection.
    pub(crate) fn close(&self) {
        self.endpoint.close(0u32.into(), b"done");
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
    ) -> Result<(Response, quinn::RecvStream)> {
        if let Some(since) = lock(&self.dead).get(&replica.node).map(Instant::elapsed).filter(|t| *t < DEAD_FOR) {
            return Err(lost(job, replica, format!("it did not answer {} s ago", since.as_secs())));
        }
        let answer = async {
            let connection = self.connection(job, replica).await?;
            let peer = format!("storage node {}", replica.node);
            let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(job, replica, e.to_string()))?;
            let request = Request { job: job.0, token: Some(token.clone()), op };
            wire::send(&mut send, &peer, &request).await.map_err(|e| lost(job, replica, e.to_string()))?;
            // A node that refuses a put stops reading its body: its answer says why.
            let sent = match body {
                Some(body) => send.write_chunk(body).await.map_err(|e| e.to_string()),
                None => Ok(()),
            };
            let _ = send.finish();
            match wire::recv::<Response>(&mut recv, &peer).await {
                Ok(Some(response)) => Ok((response, recv)),
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
}
