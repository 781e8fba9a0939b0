//! The RDMA map path (feature `rdma`): a consumer's NIC reads an object straight out of the
//! producer node's memory, one-sidedly, with no serialization and no CPU on the node.
//!
//! The node's QUIC channel carries the control messages; the bytes never do:
//!
//! 1. the consumer opens a reliable-connected queue pair and sends its [`QpEndpoint`]
//!    (`NetOp::RdmaConnect`); the node answers with the endpoint of a queue pair of its own
//!    connected to it, kept for as long as the QUIC connection lasts;
//! 2. for each object, the consumer asks the node to map it (`NetOp::Map`): the node registers
//!    the object's memory for remote reading and answers with a [`RemoteRegion`] (address,
//!    length, remote key);
//! 3. the consumer posts an RDMA READ of the region into a buffer of its own, waits for the
//!    completion, and unmaps (`NetOp::Unmap`). Deleting the object or ending its job unmaps it
//!    too, and so does the end of the connection.
//!
//! Without the feature, or without a device, [`probe`] says so, a node refuses to start with
//! RDMA on, and a node without it answers the control messages with a clear error.

use serde::{Deserialize, Serialize};

#[cfg(feature = "rdma")]
mod verbs;

#[cfg(feature = "rdma")]
pub use verbs::{Device, QueuePair, Registration};

pub(crate) mod service;

pub(crate) use service::Service;

/// What this build and host can do with RDMA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Built without the `rdma` feature.
    NotBuilt,
    /// Built with it, but the host has no RDMA device (or no verbs library).
    NoDevice,
    /// The RDMA devices found.
    Devices(Vec<String>),
}

impl Probe {
    /// Whether there is a device to serve RDMA with.
    pub fn has_device(&self) -> bool {
        matches!(self, Probe::Devices(d) if !d.is_empty())
    }
}

/// Where a consumer's NIC can read a registered object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRegion {
    /// Virtual address of the first byte in the producer node.
    pub addr: u64,
    /// Bytes registered.
    pub len: u64,
    /// The remote key that grants reading it.
    pub rkey: u32,
}

/// How to reach one end of a reliable-connected queue pair: what the two ends exchange
/// before either can move to ready-to-send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpEndpoint {
    /// The queue pair's number.
    pub qpn: u32,
    /// The first packet sequence number it sends with (24 bits).
    pub psn: u32,
    /// The port's local id (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// The port's global id (RoCE routes by it).
    pub gid: [u8; 16],
}

/// Lists the host's RDMA devices.
pub fn probe() -> Probe {
    #[cfg(feature = "rdma")]
    {
        match verbs::device_names() {
            Some(names) if !names.is_empty() => Probe::Devices(names),
            _ => Probe::NoDevice,
        }
    }
    #[cfg(not(feature = "rdma"))]
    {
        Probe::NotBuilt
    }
}
