//! Baton's elastic store (Pocket's rightsizing, Jiffy's blocks): storage nodes lend memory and
//! flash in fixed-size blocks; etcd holds who the nodes are, which job holds which blocks, and
//! jobs' leases, so that a restarted controller loses nothing and two can run with one leader.
//!
//! - [`etcd`]: the client of etcd's v3 API the store keeps its state through.
//! - [`member`]: storage nodes' membership: each node's key under an etcd lease of its own,
//!   gone when the node is.
//! - [`alloc`]: blocks reserved for jobs from their hints, grown and shrunk while they run,
//!   all freed when a job ends or its lease lapses.
//! - [`node`]: a storage node, holding jobs' objects in its blocks and serving them over QUIC
//!   ([`proto`]), and over loopback TCP to clients on its own host ([`same_host`]).
//! - [`client`]: a job's handle on the store: its block map cached, the nodes asked directly;
//!   [`objects`] makes it an `object_store::ObjectStore` (`baton://JOB/...`); [`put`] writes
//!   an object that arrives in pieces.
//! - [`moves`] and [`controller`]: blocks moved off draining and lost nodes while jobs run, by
//!   an elected controller that also asks for nodes when capacity runs low.

pub mod alloc;
pub mod client;
mod conn;
pub mod controller;
pub mod error;
pub mod etcd;
pub mod member;
pub mod moves;
pub mod node;
pub mod objects;
pub mod proto;
pub mod put;
pub mod same_host;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
