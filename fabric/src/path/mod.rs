//! The seam every way of carrying bytes implements, and the implementations.
//!
//! A [`DataPath`] stores and returns whole objects by [`ObjectKey`]. Tiers (memory, flash), the
//! node's tiered store, the VM-local path and the object-store path all implement it, and one
//! conformance suite ([`crate::conformance`]) runs against each.

pub mod counted;
pub mod direct;
pub mod object_store;
#[cfg(feature = "rdma")]
pub mod rdma_map;
pub mod vm_local;

use std::ops::Range;
use std::sync::Arc;

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

/// Writes an object's bytes to a sink and returns how many it wrote. A path may call it again,
/// from the start and on a new sink, when it retries the write elsewhere.
pub type ObjectWriter = Arc<dyn Fn(&mut dyn std::io::Write) -> Result<u64> + Send + Sync>;

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

    /// Stores at `key` the bytes `write` makes (about `size_hint` of them), with `put`'s
    /// contract, and returns how many there were. A path that can stream them to where the
    /// object goes does (the VM-local path writes them straight into the node's shared memory,
    /// so a writer need not hold the object); by default they are gathered in memory, off the
    /// async threads, and put.
    async fn put_with(&self, key: &ObjectKey, size_hint: u64, write: ObjectWriter) -> Result<u64> {
        put_gathered(self, key, size_hint, write).await
    }

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

/// The bytes `write` makes (about `size_hint` of them), gathered in memory off the async threads.
pub async fn gather(size_hint: u64, write: ObjectWriter) -> Result<Bytes> {
    let gathered = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let mut buffer = Vec::with_capacity(usize::try_from(size_hint).unwrap_or(0));
        write(&mut buffer)?;
        Ok(buffer)
    })
    .await
    .map_err(|e| Error::Remote { message: format!("writer task failed: {e}") })??;
    Ok(gathered.into())
}

/// [`DataPath::put_with`] by gathering the bytes in memory and putting them: the default, and
/// what a path that streams large objects does with small ones.
pub async fn put_gathered<P: DataPath + ?Sized>(
    path: &P,
    key: &ObjectKey,
    size_hint: u64,
    write: ObjectWriter,
) -> Result<u64> {
    let gathered = gather(size_hint, write).await?;
    let len = gathered.len() as u64;
    path.put(key, gathered).await?;
    Ok(len)
}

/// Bytes `range` of `object` (the object at `key`), or `BadRange`.
pub fn slice_range(key: &ObjectKey, object: &Bytes, range: Range<u64>) -> Result<Bytes> {
    check_range(key, &range, object.len() as u64)?;
    Ok(object.slice(range.start as usize..range.end as usize))
}

/// `range` of the object at `key`, `len` bytes long, or `BadRange`.
pub fn check_range(key: &ObjectKey, range: &Range<u64>, len: u64) -> Result<()> {
    if range.start > range.end || range.end > len {
        return Err(Error::BadRange { key: *key, start: range.start, end: range.end, len });
    }
    Ok(())
}
