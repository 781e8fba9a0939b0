//! The two ways requests reach a storage node: a QUIC stream each (any host), or one after
//! another on a loopback TCP connection from a client on the node's own host
//! ([`crate::same_host`]). [`Tx`] and [`Rx`] let the request handling not care which.

use std::sync::Arc;
use std::time::Instant;

use baton_fabric::node::wire;
use bytes::Bytes;
use serde::Serialize;
use tokio::io::BufReader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{Shared, handle, record};
use crate::proto::{MAX_REQUEST, Op, Refusal, Request, Response};

/// A put's body left unread after a refusal is read and dropped, up to this many bytes, so the
/// connection serves the next request; past it the connection closes.
const DRAIN_MAX: u64 = 64 << 20;

/// Where a request's answer goes.
pub(super) enum Tx<'a> {
    Quic(&'a mut quinn::SendStream),
    Local(&'a mut OwnedWriteHalf),
}

/// Where a request's body comes from.
pub(super) enum Rx<'a> {
    Quic(&'a mut quinn::RecvStream),
    /// With the bytes of the body read so far.
    Local(&'a mut BufReader<OwnedReadHalf>, u64),
}

impl Tx<'_> {
    /// Writes one message.
    pub(super) async fn message<T: Serialize>(&mut self, peer: &str, message: &T) -> Result<(), Refusal> {
        let sent = match self {
            Tx::Quic(send) => wire::send(*send, peer, message).await,
            Tx::Local(send) => wire::send(*send, peer, message).await,
        };
        sent.map_err(|e| Refusal::Failed(e.to_string()))
    }

    /// Writes one message and the bytes that follow it (a small item): on a loopback
    /// connection in one write.
    pub(super) async fn message_and<T: Serialize>(
        &mut self,
        peer: &str,
        message: &T,
        tail: &[u8],
    ) -> Result<(), Refusal> {
        match self {
            Tx::Quic(_) => {
                self.message(peer, message).await?;
                self.bytes(Bytes::copy_from_slice(tail)).await
            }
            Tx::Local(send) => {
                let mut out = wire::encode(message).map_err(|e| Refusal::Failed(e.to_string()))?;
                out.extend_from_slice(tail);
                send.write_all(&out).await.map_err(|e| Refusal::Failed(e.to_string()))
            }
        }
    }

    /// Writes bytes that follow a message.
    pub(super) async fn bytes(&mut self, bytes: Bytes) -> Result<(), Refusal> {
        let sent = match self {
            Tx::Quic(send) => send.write_chunk(bytes).await.map_err(|e| e.to_string()),
            Tx::Local(send) => send.write_all(&bytes).await.map_err(|e| e.to_string()),
        };
        sent.map_err(Refusal::Failed)
    }

    /// The answer is whole (a QUIC stream ends; a connection waits for the next request).
    pub(super) fn finish(&mut self) {
        if let Tx::Quic(send) = self {
            let _ = send.finish();
        }
    }
}

impl Rx<'_> {
    /// Reads a put's body of exactly `len` bytes (on QUIC, then the end of the stream).
    pub(super) async fn body(&mut self, peer: &str, len: u64) -> baton_fabric::Result<Bytes> {
        match self {
            Rx::Quic(recv) => baton_fabric::net::server::receive_exactly(recv, peer, len).await,
            Rx::Local(recv, read) => {
                let bytes = crate::same_host::read_exactly(*recv, len)
                    .await
                    .map_err(|e| baton_fabric::Error::PeerGone { endpoint: peer.to_string(), reason: e.to_string() })?;
                *read += len;
                Ok(bytes)
            }
        }
    }
}

/// Serves clients on the node's own host from `listener` (on loopback). Its connections end
/// with it (a node stopped in a process that goes on answers nothing more).
pub(super) async fn accept_local(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_local(shared.clone(), format!("{from} (same host)"), stream));
                }
                // Out of descriptors, say: a pause, not a spin.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One connection's requests, one after another, until the client closes it or breaks the
/// framing.
async fn serve_local(shared: Arc<Shared>, peer: String, stream: tokio::net::TcpStream) {
    let (recv, mut send) = stream.into_split();
    // A request's length and message in one read (a body larger than the buffer bypasses it).
    let mut recv = BufReader::with_capacity(crate::same_host::READ_BUFFER, recv);
    loop {
        let start = Instant::now();
        let request = match wire::recv_within::<Request>(&mut recv, &peer, MAX_REQUEST).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                // The framing is lost: answer, and close.
                let refused = Response::Refused(Refusal::Invalid(e.to_string()));
                let _ = Tx::Local(&mut send).message(&peer, &refused).await;
                return;
            }
        };
        let body = match &request.op {
            Op::Put { len, .. } => *len,
            _ => 0,
        };
        let op = super::op_name(&request.op);
        shared.same_host_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut rx = Rx::Local(&mut recv, 0);
        let outcome = handle(&shared, &peer, request, &mut Tx::Local(&mut send), &mut rx).await;
        let Rx::Local(_, read) = rx else { return };
        let answered = record(&shared, &peer, op, start, outcome, &mut Tx::Local(&mut send)).await;
        if answered.is_err() {
            return;
        }
        // A put refused before its body was read: the body is still on its way.
        let unread = body.saturating_sub(read);
        if unread > 0 {
            if unread > DRAIN_MAX {
                return;
            }
            let drained = tokio::io::copy(&mut (&mut recv).take(unread), &mut tokio::io::sink()).await;
            if drained.map_or(true, |n| n < unread) {
                return;
            }
        }
    }
}
