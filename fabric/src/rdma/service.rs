//! A node's side of the RDMA map path: the queue pairs it keeps for its QUIC connections and
//! the objects it has registered for them to read.
//!
//! Everything here belongs to a connection: when the connection ends, its queue pairs and its
//! mappings go, so a consumer that vanishes leaves nothing pinned. Deleting an object or ending
//! its job unmaps it as well.

#[cfg(feature = "rdma")]
use std::collections::HashMap;
#[cfg(feature = "rdma")]
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{QpEndpoint, RemoteRegion};
use crate::error::{Error, Result};
use crate::ids::{JobId, ObjectKey};

/// The RDMA map path of a node with a device.
#[derive(Debug)]
pub(crate) struct Service {
    #[cfg(feature = "rdma")]
    device: Arc<super::Device>,
    #[cfg(feature = "rdma")]
    state: Mutex<State>,
    #[cfg(not(feature = "rdma"))]
    never: std::convert::Infallible,
}

#[cfg(feature = "rdma")]
#[derive(Debug, Default)]
struct State {
    /// Each connection's queue pairs.
    pairs: HashMap<u64, Vec<super::QueuePair>>,
    /// Each mapped object's registration, and the connection that asked for it.
    mapped: HashMap<ObjectKey, (u64, super::Registration)>,
}

fn unavailable(reason: &str) -> Error {
    Error::Config { field: "rdma".into(), reason: reason.into() }
}

/// The error a node without RDMA answers the map path's requests with.
pub(crate) fn not_served() -> Error {
    unavailable("this node does not serve RDMA (it needs the `rdma` build, a device, and rdma on in its config)")
}

#[cfg(feature = "rdma")]
impl Service {
    /// Opens the host's first RDMA device.
    pub(crate) fn start() -> Result<Self> {
        let device = super::Device::open_first()?;
        Ok(Self { device: Arc::new(device), state: Mutex::default() })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a queue pair for `connection`, connected to the consumer's `remote` one.
    pub(crate) fn accept(&self, connection: u64, remote: &QpEndpoint) -> Result<QpEndpoint> {
        let mut pair = super::QueuePair::new(&self.device)?;
        pair.connect(remote)?;
        let local = pair.endpoint();
        self.state().pairs.entry(connection).or_default().push(pair);
        Ok(local)
    }

    /// Registers `bytes`, the object at `key`, for `connection`'s queue pairs to read.
    pub(crate) fn map(&self, connection: u64, key: ObjectKey, bytes: Bytes) -> Result<RemoteRegion> {
        if !self.state().pairs.contains_key(&connection) {
            return Err(unavailable("map asked before any queue pair was connected (send RdmaConnect first)"));
        }
        let registration = self.device.register(bytes)?;
        let region = registration.region();
        self.state().mapped.insert(key, (connection, registration));
        Ok(region)
    }

    /// Releases the object at `key`; whether it was mapped.
    pub(crate) fn unmap(&self, key: &ObjectKey) -> bool {
        self.state().mapped.remove(key).is_some()
    }

    /// Releases every object of `job`.
    pub(crate) fn unmap_job(&self, job: JobId) {
        self.state().mapped.retain(|key, _| key.job != job);
    }

    /// Drops `connection`'s queue pairs and the objects it mapped.
    pub(crate) fn disconnect(&self, connection: u64) {
        let mut state = self.state();
        state.mapped.retain(|_, (owner, _)| *owner != connection);
        state.pairs.remove(&connection);
    }
}

#[cfg(not(feature = "rdma"))]
impl Service {
    /// Without the feature there is nothing to start.
    pub(crate) fn start() -> Result<Self> {
        Err(unavailable("this build has no RDMA: build with `--features rdma`"))
    }

    pub(crate) fn accept(&self, _connection: u64, _remote: &QpEndpoint) -> Result<QpEndpoint> {
        match self.never {}
    }

    pub(crate) fn map(&self, _connection: u64, _key: ObjectKey, _bytes: Bytes) -> Result<RemoteRegion> {
        match self.never {}
    }

    pub(crate) fn unmap(&self, _key: &ObjectKey) -> bool {
        match self.never {}
    }

    pub(crate) fn unmap_job(&self, _job: JobId) {
        match self.never {}
    }

    pub(crate) fn disconnect(&self, _connection: u64) {
        match self.never {}
    }
}
