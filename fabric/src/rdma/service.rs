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
    /// The registration of each object a connection mapped, by connection and key.
    mapped: HashMap<(u64, ObjectKey), super::Registration>,
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
        let registration = self.device.register(bytes)?;
        let region = registration.region();
        let mut state = self.state();
        if !state.pairs.contains_key(&connection) {
            return Err(unavailable("map asked before any queue pair was connected (send RdmaConnect first)"));
        }
        state.mapped.insert((connection, key), registration);
        Ok(region)
    }

    /// Releases `connection`'s mapping of the object at `key`; whether there was one.
    pub(crate) fn unmap(&self, connection: u64, key: &ObjectKey) -> bool {
        self.state().mapped.remove(&(connection, *key)).is_some()
    }

    /// Releases every mapping of the object at `key` (it is being deleted).
    pub(crate) fn unmap_everywhere(&self, key: &ObjectKey) {
        self.state().mapped.retain(|(_, k), _| k != key);
    }

    /// Releases every object of `job`.
    pub(crate) fn unmap_job(&self, job: JobId) {
        self.state().mapped.retain(|(_, key), _| key.job != job);
    }

    /// Drops `connection`'s queue pairs and the objects it mapped.
    pub(crate) fn disconnect(&self, connection: u64) {
        let mut state = self.state();
        state.mapped.retain(|(owner, _), _| *owner != connection);
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

    pub(crate) fn unmap(&self, _connection: u64, _key: &ObjectKey) -> bool {
        match self.never {}
    }

    pub(crate) fn unmap_everywhere(&self, _key: &ObjectKey) {
        match self.never {}
    }

    pub(crate) fn unmap_job(&self, _job: JobId) {
        match self.never {}
    }

    pub(crate) fn disconnect(&self, _connection: u64) {
        match self.never {}
    }
}
