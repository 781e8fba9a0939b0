//! The object-store path: objects in any `object_store` backend (S3, a file system, memory).
//!
//! This is the slow, cheap tier that is always there. Keys map to
//! `<prefix>/job-<hex>/edge-<n>/<producer>-<consumer>`; a job's objects share a prefix so that
//! ending the job deletes them with one listing.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};
use crate::ids::{JobId, KeyPrefix, ObjectKey};
use crate::path::{DataPath, ObjectMeta};

/// Objects in an object store, under a prefix.
#[derive(Debug, Clone)]
pub struct ObjectStorePath {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
}

impl ObjectStorePath {
    /// Objects in `store` under `prefix` (which may be empty).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: StorePath) -> Self {
        Self { store, prefix }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn location(&self, key: &ObjectKey) -> StorePath {
        self.join(&key.to_string())
    }

    fn join(&self, relative: &str) -> StorePath {
        relative.split('/').fold(self.prefix.clone(), |p, part| p.join(part))
    }

    fn key_of(&self, location: &StorePath) -> Option<ObjectKey> {
        let rest: Vec<_> = location.prefix_match(&self.prefix)?.map(|p| p.as_ref().to_string()).collect();
        rest.join("/").parse().ok()
    }

    fn map_err(&self, key: &ObjectKey, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound { key: *key },
            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists { key: *key },
            other => Error::ObjectStore { source: other },
        }
    }
}

#[async_trait]
impl DataPath for ObjectStorePath {
    async fn put(&self, key: &ObjectKey, payload: Bytes) -> Result<()> {
        let options = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&self.location(key), PutPayload::from_bytes(payload), options).await {
            Ok(_) => Ok(()),
            // Some stores (S3 without conditional writes) cannot refuse an overwrite.
            Err(object_store::Error::NotImplemented { .. }) => Err(Error::Config {
                field: "object store".into(),
                reason: format!("{} cannot create objects exclusively", self.store),
            }),
            Err(e) => Err(self.map_err(key, e)),
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let result = self.store.get(&self.location(key)).await.map_err(|e| self.map_err(key, e))?;
        result.bytes().await.map_err(|e| self.map_err(key, e))
    }

    async fn get_range(&self, key: &ObjectKey, range: std::ops::Range<u64>) -> Result<Bytes> {
        if range.start == range.end {
            // Stores differ on empty ranges; the answer is known once the length is.
            let meta = self.store.head(&self.location(key)).await.map_err(|e| self.map_err(key, e))?;
            if range.end > meta.size {
                return Err(Error::BadRange { key: *key, start: range.start, end: range.end, len: meta.size });
            }
            return Ok(Bytes::new());
        }
        match self.store.get_range(&self.location(key), range.clone()).await {
            Ok(bytes) if bytes.len() as u64 == range.end - range.start => Ok(bytes),
            Ok(bytes) => Err(Error::BadRange {
                key: *key,
                start: range.start,
                end: range.end,
                len: range.start + bytes.len() as u64,
            }),
            Err(object_store::Error::NotFound { .. }) => Err(Error::NotFound { key: *key }),
            Err(e) => match self.store.head(&self.location(key)).await {
                Ok(meta) if range.end > meta.size => {
                    Err(Error::BadRange { key: *key, start: range.start, end: range.end, len: meta.size })
                }
                _ => Err(self.map_err(key, e)),
            },
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        match self.store.delete(&self.location(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err(key, e)),
        }
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>> {
        let under = self.join(&prefix.to_string());
        let mut out: Vec<ObjectMeta> = self
            .store
            .list(Some(&under))
            .map_err(Error::from)
            .try_filter_map(|meta| async move {
                Ok(self.key_of(&meta.location).map(|key| ObjectMeta { key, size: meta.size }))
            })
            .try_collect()
            .await?;
        out.sort_by_key(|m| m.key);
        Ok(out)
    }

    async fn purge_job(&self, job: JobId) -> Result<u64> {
        let objects = self.list(&KeyPrefix::job(job)).await?;
        let freed = objects.iter().map(|m| m.size).sum();
        let locations: Vec<_> = objects.iter().map(|m| Ok(self.location(&m.key))).collect();
        let locations = futures::stream::iter(locations).boxed();
        self.store.delete_stream(locations).try_for_each(|_| async { Ok(()) }).await.or_else(|e| match e {
            object_store::Error::NotFound { .. } => Ok(()),
            other => Err(Error::from(other)),
        })?;
        Ok(freed)
    }
}
