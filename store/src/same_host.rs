//! Clients on a storage node's own host: the node also serves the store's protocol over TCP on
//! loopback, without TLS, and a client on the same host talks to it there instead of over QUIC
//! (as the fabric's VM-local path skips the network). The bytes never leave the host's kernel,
//! so encrypting them buys nothing; every request still carries the job's token, checked as on
//! QUIC, and the listener is on loopback only.
//!
//! "The same host" is the same kernel boot and the same network namespace: an emulated host
//! (a namespace of its own) shares this machine's kernel but not its loopback, so its clients
//! keep to QUIC and to its capped link.
//!
//! A connection carries one request at a time, framed as on QUIC (a message, then a put's
//! body or a get's item, each of the length its message announced), and goes back to the
//! client's pool once the answer is read whole; one whose answer was not read whole is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

/// Where a storage node serves clients on its own host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SameHost {
    /// The host it runs on ([`this_host`] there).
    pub host: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl SameHost {
    /// The address a client reaches the node at, if the client runs on the node's host.
    pub fn reachable(&self) -> Option<SocketAddr> {
        (this_host()? == self.host).then(|| SocketAddr::from(([127, 0, 0, 1], self.port)))
    }
}

/// This process's host, as [`SameHost::host`] names it: the kernel's boot id and the network
/// namespace. `None` where either cannot be read (then nothing is taken for the same host).
pub fn this_host() -> Option<&'static str> {
    static HOST: OnceLock<Option<String>> = OnceLock::new();
    HOST.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let netns = std::fs::read_link("/proc/self/ns/net").ok()?;
        Some(format!("{}/{}", boot.trim(), netns.display()))
    })
    .as_deref()
}

/// Bytes each end of a connection reads ahead: a request's or an answer's length and message
/// in one read, and a small body with them.
pub(crate) const READ_BUFFER: usize = 16 << 10;

/// A request and a body of at most this many bytes go to the kernel in one write.
pub(crate) const ONE_WRITE: usize = 64 << 10;

/// Reads exactly `len` bytes from `io` (a put's body, a get's item): the buffer grows as the
/// bytes arrive, past the first 64 MiB.
pub(crate) async fn read_exactly(io: &mut (impl AsyncRead + Unpin), len: u64) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(len.min(64 << 20) as usize);
    while (buf.len() as u64) < len {
        let want = len - buf.len() as u64;
        if buf.capacity() == buf.len() {
            buf.reserve(want.min(64 << 20) as usize);
        }
        if (&mut *io).take(want).read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the connection ended after {} of {len} bytes", buf.len()),
            ));
        }
    }
    Ok(buf.freeze())
}

/// A client's idle connections to nodes on its host.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<BufReader<TcpStream>>>>,
}

/// At most this many idle connections are kept per node.
const IDLE_PER_NODE: usize = 64;

impl Pool {
    /// An idle connection to `addr` (unless `fresh`), or a new one; and whether it was idle.
    pub(crate) async fn take(self: &Arc<Self>, addr: SocketAddr, fresh: bool) -> std::io::Result<(Conn, bool)> {
        let idle = if fresh {
            None
        } else {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&addr).and_then(Vec::pop)
        };
        let reused = idle.is_some();
        let stream = match idle {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                BufReader::with_capacity(READ_BUFFER, stream)
            }
        };
        Ok((Conn { stream, addr, pool: self.clone() }, reused))
    }

    /// Closes every idle connection.
    pub(crate) fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A connection taken from the pool: [`Conn::release`] gives it back once an answer was read
/// whole; dropped otherwise, it closes.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Read through a small buffer; written to directly.
    pub(crate) stream: BufReader<TcpStream>,
    addr: SocketAddr,
    pool: Arc<Pool>,
}

impl Conn {
    /// Back to the pool, for the next request.
    pub(crate) fn release(self) {
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        let idle = idle.entry(self.addr).or_default();
        if idle.len() < IDLE_PER_NODE {
            idle.push(self.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_is_reachable_and_another_is_not() {
        let Some(host) = this_host() else {
            eprintln!("SKIPPED: no /proc/sys/kernel/random/boot_id or /proc/self/ns/net here");
            return;
        };
        let here = SameHost { host: host.to_string(), port: 7171 };
        assert_eq!(here.reachable(), Some(SocketAddr::from(([127, 0, 0, 1], 7171))));
        let there = SameHost { host: format!("{host}x"), port: 7171 };
        assert_eq!(there.reachable(), None);
    }

    #[tokio::test]
    async fn read_exactly_takes_no_byte_of_what_follows_and_names_a_short_body() {
        let mut io: &[u8] = b"abcdefgh";
        assert_eq!(read_exactly(&mut io, 3).await.unwrap_or_default(), Bytes::from_static(b"abc"));
        assert_eq!(io, b"defgh");
        let err = read_exactly(&mut io, 9).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("after 5 of 9 bytes"), "{err}");
    }
}
