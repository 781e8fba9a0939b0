//! The seam every way of carrying bytes implements, and the implementations.
//!
//! A [`DataPath`] stores and returns whole objects by [`ObjectKey`]. Tiers (memory, flash), the
//! node's tiered store, the VM-local path and the object-store path all implement it, and one
//! conformance suite ([`crate::conformance`]) runs against each.

pub mod direct;
pub mod object_store;
pub mod vm_local;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::ids::{JobId, KeyPrefix, ObjectKey};

/// What a listing says of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
}

/// A place objects can be written to and read from.
///
/// The contract, which the conformance suite checks:
/// - `put` is atomic: a reader sees the whole object or none of it. Writing a key that exists
///   fails with [`Error::AlreadyExists`](crate::Error::AlreadyExists) and leaves the first
///   object in place (the first committed attempt wins).
/// - `get` returns exactly the bytes put, or [`Error::NotFound`](crate::Error::NotFound);
///   `get_range` the bytes of the range, or `BadRange` when it reaches past the end.
/// - `delete` of a missing key is not an error (deletion is idempotent).
/// - `list` returns every object under the prefix, sorted by key.
/// - `purge_job` deletes every object of the job and returns how many bytes it freed.
#[async_trait]
pub trait DataPath: Send + Sync + std::fmt::Debug {
    /// Stores `payload` at `key`.
    async fn put(&self, key: &ObjectKey, payload: Bytes) -> Result<()>;

    /// Returns the object at `key`.
    async fn get(&self, key: &ObjectKey) -> Result<Bytes>;

    /// Returns bytes `range` of the object at `key` (a coalesced shuffle's reducers read their
    /// partition this way); a range past the end is [`Error::BadRange`](crate::Error::BadRange).
    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes>;

    /// Removes the object at `key`, if present.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;

    /// Lists the objects under `prefix`, sorted by key.
    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>>;

    /// Removes every object of `job`; returns the bytes freed.
    async fn purge_job(&self, job: JobId) -> Result<u64>;
}

/// Bytes `range` of `object` (the object at `key`), or `BadRange`.
pub fn slice_range(key: &ObjectKey, object: &Bytes, range: Range<u64>) -> Result<Bytes> {
    let len = object.len() as u64;
    if range.start > range.end || range.end > len {
        return Err(Error::BadRange { key: *key, start: range.start, end: range.end, len });
    }
    Ok(object.slice(range.start as usize..range.end as usize))
}
