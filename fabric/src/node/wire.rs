//! The node's local protocol, at the edge of the crate.
//!
//! Functions on a host talk to their node over a Unix socket. Each message is
//! `u32 length (LE) | u8 version | postcard body`; bodies are the wire types below, which are
//! converted to and from the domain types with checks and never used elsewhere. Only control
//! messages and small objects travel here: larger object bytes move through files the node
//! names (see [`crate::path::vm_local`]). Decoding never panics and refuses oversized messages.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result, Tier};
use crate::ids::{EdgeId, JobId, KeyPrefix, ObjectKey};
use crate::net::token::{Scopes, WireToken};
use crate::path::ObjectMeta;
use crate::store::Location;

/// The protocol version this build speaks.
pub const VERSION: u8 = 5;
/// The largest message accepted, in bytes (answers: a listing of many objects).
pub const MAX_MESSAGE: usize = 16 << 20;
/// The largest request a node reads from a local function: an inline object and its key.
pub const MAX_LOCAL_REQUEST: usize = 256 << 10;

/// An object key on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireKey {
    job: u64,
    edge: u32,
    producer: u32,
    consumer: u32,
    attempt: u32,
}

impl From<ObjectKey> for WireKey {
    fn from(k: ObjectKey) -> Self {
        Self { job: k.job.0, edge: k.edge.0, producer: k.producer, consumer: k.consumer, attempt: k.attempt }
    }
}

impl From<WireKey> for ObjectKey {
    fn from(k: WireKey) -> Self {
        ObjectKey::new(JobId(k.job), EdgeId(k.edge), k.producer, k.consumer).with_attempt(k.attempt)
    }
}

/// A tier on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireTier {
    /// [`Tier::Memory`].
    Memory,
    /// [`Tier::Flash`].
    Flash,
    /// [`Tier::ObjectStore`].
    ObjectStore,
}

impl From<Tier> for WireTier {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Memory => WireTier::Memory,
            Tier::Flash => WireTier::Flash,
            Tier::ObjectStore => WireTier::ObjectStore,
        }
    }
}

impl From<WireTier> for Tier {
    fn from(t: WireTier) -> Self {
        match t {
            WireTier::Memory => Tier::Memory,
            WireTier::Flash => Tier::Flash,
            WireTier::ObjectStore => Tier::ObjectStore,
        }
    }
}

/// A request from a function to its node, with the token of the job it acts on (which a node
/// that holds its cluster's token public key checks, as it does for requests over QUIC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRequest {
    /// The job's token, if the client has one.
    pub token: Option<WireToken>,
    /// The request.
    pub request: Request,
}

impl Request {
    /// The job the request acts on and what a token must grant for it (`None`: no job).
    pub fn needs(&self) -> Option<(JobId, Scopes)> {
        let job = |j: u64| JobId(j);
        Some(match self {
            Request::OpenJob { job: j, .. } | Request::RenewJob { job: j } | Request::EndJob { job: j } => {
                (job(*j), Scopes::END)
            }
            Request::Stage { key, .. }
            | Request::Commit { key, .. }
            | Request::Put { key, .. }
            | Request::Delete { key } => (ObjectKey::from(*key).job, Scopes::WRITE),
            Request::Locate { key, .. } => (ObjectKey::from(*key).job, Scopes::READ),
            Request::List { job: j, .. } => (job(*j), Scopes::READ),
            Request::Status | Request::Metrics => return None,
        })
    }
}

/// A request from a function to its node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Open (or renew with a new ttl) a job's lease.
    OpenJob { job: u64, ttl_ms: u64 },
    /// Renew a job's lease.
    RenewJob { job: u64 },
    /// End a job: delete all of its objects.
    EndJob { job: u64 },
    /// Name a file to write a new object into; on flash when `flash` (shared memory was full).
    Stage { key: WireKey, size_hint: Option<u64>, flash: bool },
    /// Take a staged file as the object.
    Commit { key: WireKey, path: String, len: u64 },
    /// Store a small object sent inline.
    Put {
        key: WireKey,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Where to map an object from; objects of at most `inline_max` bytes come back inline.
    Locate { key: WireKey, inline_max: u64 },
    /// Delete an object.
    Delete { key: WireKey },
    /// List a job's (or one edge's) objects.
    List { job: u64, edge: Option<u32> },
    /// The node's tiers and jobs.
    Status,
    /// The node's metrics, in Prometheus' text format.
    Metrics,
}

/// A node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Done.
    Done,
    /// A lease, with the time left on it.
    Lease { ttl_ms: u64 },
    /// Bytes freed.
    Freed { bytes: u64 },
    /// A file to write to.
    Staged { path: String },
    /// The tier a committed object went to.
    Committed { tier: WireTier },
    /// Where an object sits.
    Located { path: String, len: u64, tier: WireTier },
    /// A small object's bytes.
    Inline {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Objects and their sizes.
    Objects { objects: Vec<(WireKey, u64)> },
    /// The node's state.
    Status(NodeStatus),
    /// The node's metrics, in Prometheus' text format.
    Metrics { text: String },
    /// The request failed.
    Failed(WireError),
}

/// What a node reports of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Bytes held in memory.
    pub memory_used: u64,
    /// Memory budget.
    pub memory_budget: u64,
    /// Bytes held on flash.
    pub flash_used: u64,
    /// Flash budget.
    pub flash_budget: u64,
    /// Open jobs.
    pub jobs: Vec<u64>,
}

/// An error on the wire: the variants a caller can act on, and a message for the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    /// [`Error::NotFound`].
    NotFound { key: WireKey },
    /// [`Error::AlreadyExists`].
    AlreadyExists { key: WireKey },
    /// [`Error::UnknownJob`].
    UnknownJob { job: u64 },
    /// [`Error::LeaseExpired`].
    LeaseExpired { job: u64 },
    /// [`Error::NoCapacity`].
    NoCapacity { tier: WireTier, needed: u64, available: u64 },
    /// [`Error::Unauthorized`].
    Unauthorized { job: u64, reason: String },
    /// [`Error::Corrupt`].
    Corrupt { what: String, offset: u64, message: String },
    /// [`Error::BadRange`].
    BadRange { key: WireKey, start: u64, end: u64, len: u64 },
    /// Anything else.
    Other { message: String },
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::NotFound { key } => WireError::NotFound { key: (*key).into() },
            Error::AlreadyExists { key } => WireError::AlreadyExists { key: (*key).into() },
            Error::UnknownJob { job } => WireError::UnknownJob { job: job.0 },
            Error::LeaseExpired { job } => WireError::LeaseExpired { job: job.0 },
            Error::NoCapacity { tier, needed, available } => {
                WireError::NoCapacity { tier: (*tier).into(), needed: *needed, available: *available }
            }
            Error::Unauthorized { job, reason } => WireError::Unauthorized { job: job.0, reason: reason.clone() },
            Error::BadRange { key, start, end, len } => {
                WireError::BadRange { key: (*key).into(), start: *start, end: *end, len: *len }
            }
            Error::Corrupt { what, offset, corruption } => {
                WireError::Corrupt { what: what.clone(), offset: *offset, message: corruption.to_string() }
            }
            other => WireError::Other { message: other.to_string() },
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotFound { key } => Error::NotFound { key: key.into() },
            WireError::AlreadyExists { key } => Error::AlreadyExists { key: key.into() },
            WireError::UnknownJob { job } => Error::UnknownJob { job: JobId(job) },
            WireError::LeaseExpired { job } => Error::LeaseExpired { job: JobId(job) },
            WireError::NoCapacity { tier, needed, available } => {
                Error::NoCapacity { tier: tier.into(), needed, available }
            }
            WireError::Unauthorized { job, reason } => Error::Unauthorized { job: JobId(job), reason },
            WireError::BadRange { key, start, end, len } => Error::BadRange { key: key.into(), start, end, len },
            WireError::Corrupt { what, offset, message } => {
                Error::Corrupt { what, offset, corruption: crate::error::Corruption::Remote { message } }
            }
            WireError::Other { message } => Error::Remote { message },
        }
    }
}

impl Response {
    /// The answer to a request that failed with `e`.
    pub fn failed(e: &Error) -> Self {
        Response::Failed(e.into())
    }

    /// A listing.
    pub fn objects(objects: &[ObjectMeta]) -> Self {
        Response::Objects { objects: objects.iter().map(|m| (m.key.into(), m.size)).collect() }
    }

    /// The objects of a [`Response::Objects`].
    pub fn into_objects(objects: Vec<(WireKey, u64)>) -> Vec<ObjectMeta> {
        objects.into_iter().map(|(k, size)| ObjectMeta { key: k.into(), size }).collect()
    }
}

impl Location {
    /// The answer that carries this location.
    pub fn to_wire(&self) -> Response {
        Response::Located { path: self.path.to_string_lossy().into_owned(), len: self.len, tier: self.tier.into() }
    }
}

/// A listing prefix from its wire parts.
pub fn prefix(job: u64, edge: Option<u32>) -> KeyPrefix {
    KeyPrefix { job: JobId(job), edge: edge.map(EdgeId) }
}

/// A path from the wire.
pub fn path(s: String) -> PathBuf {
    PathBuf::from(s)
}

fn protocol(endpoint: &str, reason: impl Into<String>) -> Error {
    Error::Protocol { endpoint: endpoint.to_string(), reason: reason.into() }
}

/// Encodes one message (length, version, body).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>> {
    let body = postcard::to_stdvec(message).map_err(|e| protocol("self", format!("cannot encode message: {e}")))?;
    let len = u32::try_from(body.len() + 1).map_err(|_| protocol("self", "message too large"))?;
    let mut out = Vec::with_capacity(body.len() + 5);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(VERSION);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a message's version byte and body (the bytes after the length).
pub fn decode<T: for<'de> Deserialize<'de>>(endpoint: &str, frame: &[u8]) -> Result<T> {
    let (&version, body) = frame.split_first().ok_or_else(|| protocol(endpoint, "empty message"))?;
    if version != VERSION {
        return Err(protocol(endpoint, format!("speaks protocol version {version}, this build {VERSION}")));
    }
    let (message, rest) =
        postcard::take_from_bytes(body).map_err(|e| protocol(endpoint, format!("bad message: {e}")))?;
    if !rest.is_empty() {
        return Err(protocol(endpoint, format!("{} stray bytes after the message", rest.len())));
    }
    Ok(message)
}

/// Writes one message.
pub async fn send<T: Serialize>(io: &mut (impl AsyncWrite + Unpin), endpoint: &str, message: &T) -> Result<()> {
    let bytes = encode(message)?;
    io.write_all(&bytes).await.map_err(|e| gone(endpoint, e))
}

/// Reads one message of at most [`MAX_MESSAGE`] bytes; `Ok(None)` when the peer closed the
/// connection between messages.
pub async fn recv<T: for<'de> Deserialize<'de>>(
    io: &mut (impl AsyncRead + Unpin),
    endpoint: &str,
) -> Result<Option<T>> {
    recv_within(io, endpoint, MAX_MESSAGE).await
}

/// Reads one message of at most `max` bytes: a longer one is refused from its length alone,
/// before any of it is buffered.
pub async fn recv_within<T: for<'de> Deserialize<'de>>(
    io: &mut (impl AsyncRead + Unpin),
    endpoint: &str,
    max: usize,
) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(gone(endpoint, e)),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > max {
        return Err(protocol(endpoint, format!("message of {len} bytes (limit {max})")));
    }
    let mut frame = vec![0u8; len];
    io.read_exact(&mut frame).await.map_err(|e| gone(endpoint, e))?;
    decode(endpoint, &frame).map(Some)
}

fn gone(endpoint: &str, e: std::io::Error) -> Error {
    Error::PeerGone { endpoint: endpoint.to_string(), reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let key: WireKey = ObjectKey::new(JobId(9), EdgeId(1), 2, 3).into();
        let requests = [
            Request::OpenJob { job: 9, ttl_ms: 1000 },
            Request::Stage { key, size_hint: Some(5), flash: false },
            Request::Commit { key, path: "/dev/shm/x".into(), len: 5 },
            Request::List { job: 9, edge: None },
        ];
        for request in requests {
            let bytes = encode(&request).unwrap();
            assert_eq!(decode::<Request>("t", &bytes[4..]).unwrap(), request);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for frame in [&[][..], &[VERSION], &[VERSION, 0xff, 0xff, 0xff], &[2, 0], &[VERSION, 200, 1, 2]] {
            assert!(decode::<Request>("t", frame).is_err(), "{frame:?}");
        }
    }

    #[test]
    fn errors_keep_their_variant_across_the_wire() {
        let key = ObjectKey::new(JobId(1), EdgeId(0), 0, 0);
        let e: Error = WireError::from(&Error::NotFound { key }).into();
        assert!(matches!(e, Error::NotFound { key: k } if k == key));
        let e: Error = WireError::from(&Error::LeaseExpired { job: JobId(3) }).into();
        assert!(matches!(e, Error::LeaseExpired { job: JobId(3) }));
    }
}
