//! The object-store path: objects in any `object_store` backend (S3, a file system, memory).
//!
//! This is the slow, cheap tier that is always there. Keys map to
//! `<prefix>/job-<hex>/edge-<n>/<producer>-<consumer>`; a job's objects share a prefix so that
//! ending the job deletes them with one listing.
//!
//! An object written by a writer (`put_with`) larger than [`STREAM_ABOVE`] is not gathered in
//! memory: its bytes go to the store as a multipart upload to a staging name beside its key
//! (in parts of [`PART`], a few in flight), which is then copied to the key only if nothing is
//! there and deleted — so the object still appears whole or not at all, and the first writer
//! of a key still wins (where the store cannot copy conditionally — S3 without a configured
//! method — the key is looked up first, which two writers of one key at once could race; a
//! task's keys carry its attempt, so only a duplicate of one attempt could). A staging object a
//! killed writer left goes with its job.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};
use crate::ids::{JobId, KeyPrefix, ObjectKey};
use crate::path::{DataPath, ObjectMeta, ObjectWriter, put_gathered};

/// Objects a writer makes that are larger than this stream to the store in parts.
pub const STREAM_ABOVE: u64 = 64 << 20;
/// Bytes per part of a streamed object (S3 wants at least 5 MiB).
pub const PART: usize = 16 << 20;
/// Parts of one streamed object in flight, and parts the writer may run ahead of them.
const PARTS_IN_FLIGHT: usize = 2;

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

    /// Streams the bytes `write` makes to a staging object, then moves it to `key` if nothing
    /// is there.
    async fn put_streamed(&self, key: &ObjectKey, write: ObjectWriter) -> Result<u64> {
        let staging = self.join(&format!("{key}.staging-{}", staging_suffix()));
        let upload = self.store.put_multipart(&staging).await.map_err(|e| self.map_err(key, e))?;
        let mut upload = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
        let (parts, mut incoming) = tokio::sync::mpsc::channel::<Bytes>(PARTS_IN_FLIGHT);
        let writer = tokio::task::spawn_blocking(move || -> Result<u64> {
            let mut sink = PartSink { parts, buffer: Vec::with_capacity(PART) };
            let len = write(&mut sink)?;
            std::io::Write::flush(&mut sink).map_err(|e| Error::io("stream", "an object's parts", e))?;
            Ok(len)
        });
        let sent: std::result::Result<(), object_store::Error> = async {
            while let Some(part) = incoming.recv().await {
                upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                upload.write(&part);
            }
            Ok(())
        }
        .await;
        // A failed upload stops taking parts: the writer's next one fails, and it ends.
        drop(incoming);
        let written = writer.await.map_err(|e| Error::Remote { message: format!("writer task failed: {e}") });
        let len = match (sent, written) {
            (Ok(()), Ok(Ok(len))) => len,
            (Err(e), _) => {
                let _ = upload.abort().await;
                return Err(self.map_err(key, e));
            }
            (Ok(()), Ok(Err(e)) | Err(e)) => {
                let _ = upload.abort().await;
                return Err(e);
            }
        };
        upload.finish().await.map_err(|e| self.map_err(key, e))?;
        let moved = self.move_if_absent(key, &staging).await;
        let _ = self.store.delete(&staging).await;
        moved.map(|()| len)
    }

    /// Copies the staging object to `key` if nothing is there. A store that cannot copy
    /// conditionally (S3 without a configured method) is asked whether `key` is there first.
    async fn move_if_absent(&self, key: &ObjectKey, staging: &StorePath) -> Result<()> {
        let target = self.location(key);
        match self.store.copy_if_not_exists(staging, &target).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                match self.store.head(&target).await {
                    Ok(_) => return Err(Error::AlreadyExists { key: *key }),
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.map_err(key, e)),
                }
                self.store.copy(staging, &target).await.map_err(|e| self.map_err(key, e))
            }
            Err(e) => Err(self.map_err(key, e)),
        }
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

    async fn put_with(&self, key: &ObjectKey, size_hint: u64, write: ObjectWriter) -> Result<u64> {
        if size_hint > STREAM_ABOVE {
            return self.put_streamed(key, write).await;
        }
        put_gathered(self, key, size_hint, write).await
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
        // Everything under the job's prefix, staging objects of killed writers too.
        let under = self.join(&KeyPrefix::job(job).to_string());
        let objects: Vec<object_store::ObjectMeta> = self.store.list(Some(&under)).try_collect().await?;
        let freed = objects.iter().map(|m| m.size).sum();
        let locations: Vec<_> = objects.into_iter().map(|m| Ok(m.location)).collect();
        let locations = futures::stream::iter(locations).boxed();
        self.store.delete_stream(locations).try_for_each(|_| async { Ok(()) }).await.or_else(|e| match e {
            object_store::Error::NotFound { .. } => Ok(()),
            other => Err(Error::from(other)),
        })?;
        Ok(freed)
    }
}

/// A suffix no other writer's staging object has: this process, the time, a counter.
fn staging_suffix() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}-{n:x}", std::process::id())
}

/// A writer's sink that hands its bytes on in parts, waiting while the upload is behind.
struct PartSink {
    parts: tokio::sync::mpsc::Sender<Bytes>,
    buffer: Vec<u8>,
}

impl PartSink {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let part = std::mem::replace(&mut self.buffer, Vec::with_capacity(PART));
        self.parts.blocking_send(part.into()).map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

impl std::io::Write for PartSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let take = (PART - self.buffer.len()).min(buf.len());
        self.buffer.extend_from_slice(&buf[..take]);
        if self.buffer.len() == PART {
            self.send()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
