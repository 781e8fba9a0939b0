//! QUIC transport settings and endpoints: flow-control windows, stream limits, UDP buffers.

use std::time::Duration;

/// The largest UDP payload worth asking for. quinn hands the kernel up to 10 datagrams per
/// segmentation-offload send, and one send carries at most 64 KiB: with larger datagrams
/// every batch fails, quinn reads that as loss, and its black-hole detection drops the path
/// to 1200 bytes. On loopback, 6500-byte datagrams move about 1.7x the bytes per CPU second
/// of 1472-byte ones.
pub const MAX_UDP_PAYLOAD: u16 = 6_500;

/// How much a QUIC connection may buffer: the flow-control windows that make a slow reader
/// slow its writer down instead of growing buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Unread bytes a receiver accepts per stream.
    pub stream_window: u32,
    /// Unread bytes a receiver accepts per connection.
    pub connection_window: u32,
    /// Unacknowledged bytes a sender keeps per connection.
    pub send_window: u64,
    /// Requests (streams) a connection may have open at once.
    pub max_streams: u32,
    /// A connection with no traffic for this long is closed; keep-alives go out at a third of
    /// it, so this is how long a peer that vanished without a word takes to count as gone.
    pub idle_timeout: Duration,
    /// Bytes of kernel buffer asked for each UDP socket, each way. Bursts that overflow a small
    /// buffer are dropped, which QUIC reads as congestion; the kernel caps this at
    /// `net.core.rmem_max` / `wmem_max`.
    pub udp_buffer: usize,
    /// The largest UDP payload this endpoint accepts and path-MTU discovery tries, at most
    /// [`MAX_UDP_PAYLOAD`]. Probes that do not get through are harmless: the path settles on
    /// what works (1472 bytes on Ethernet, more with jumbo frames or on loopback). Fewer,
    /// larger datagrams cut the per-packet cost that bounds QUIC's throughput.
    pub max_udp_payload: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stream_window: 16 << 20,
            connection_window: 64 << 20,
            send_window: 64 << 20,
            max_streams: 256,
            idle_timeout: Duration::from_secs(10),
            max_udp_payload: MAX_UDP_PAYLOAD,
            udp_buffer: 8 << 20,
        }
    }
}

impl Limits {
    /// The UDP payload asked for, within what QUIC and segmentation offload allow.
    fn udp_payload(&self) -> u16 {
        self.max_udp_payload.clamp(1200, MAX_UDP_PAYLOAD)
    }

    pub(crate) fn transport(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.stream_receive_window(self.stream_window.into());
        t.receive_window(self.connection_window.into());
        t.send_window(self.send_window);
        t.max_concurrent_bidi_streams(self.max_streams.into());
        t.max_concurrent_uni_streams(0u32.into());
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.idle_timeout).ok());
        t.keep_alive_interval(Some(self.idle_timeout / 3));
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.udp_payload());
        t.mtu_discovery_config(Some(mtu));
        t
    }
}

/// A QUIC endpoint on a UDP socket bound to `addr` with `limits.udp_buffer` of kernel buffer.
pub fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
    limits: &Limits,
) -> std::io::Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Larger buffers are an optimization: a kernel that refuses them still works.
    let _ = socket.set_recv_buffer_size(limits.udp_buffer);
    let _ = socket.set_send_buffer_size(limits.udp_buffer);
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(limits.udp_payload())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    quinn::Endpoint::new(config, server, socket.into(), runtime)
}
