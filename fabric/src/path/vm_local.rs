//! The VM-local path: producer and consumer on one host, bytes through shared memory.
//!
//! The client talks to the host's node over its Unix socket, but object bytes never cross the
//! socket. To write, the client asks the node to name a file (in the node's shared-memory
//! directory, or on flash for objects larger than memory), writes the object into it and
//! commits it. To read, it asks where the object sits and maps that file read-only: Arrow
//! arrays decoded from the mapping point into the node's memory, with no copy and no
//! deserialization. A consumer that crashes cannot harm the node's data: it only ever holds
//! read-only mappings.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use async_trait::async_trait;
use bytes::Bytes;
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use crate::arrow::ArrowFrameWriter;
use crate::error::{Error, Result, Tier};
use crate::ids::{JobId, KeyPrefix, ObjectKey};
use crate::mapping::{Prefault, map_file};
use crate::net::token::{Token, WireToken};
use crate::node::wire::{self, LocalRequest, NodeStatus, Request, Response};
use crate::path::{DataPath, ObjectMeta, ObjectWriter};

/// Objects up to this size travel inline over the node's socket: for them one message costs
/// less than creating, mapping and unlinking a file.
pub const INLINE_MAX: usize = 64 << 10;

/// A client of the node on this host.
///
/// Calls are cancel-safe: a call takes the connection out of its slot for as long as it runs
/// and puts it back only after reading its whole answer. A call dropped halfway (a timeout, a
/// `select!`) drops the connection with it, so no later call can read the answer meant for an
/// earlier one; the next call connects afresh.
#[derive(Debug)]
pub struct VmLocalPath {
    socket: PathBuf,
    endpoint: String,
    conn: Mutex<Option<UnixStream>>,
    prefault: Prefault,
    /// Tokens by job, presented with each request for that job.
    tokens: std::sync::Mutex<std::collections::HashMap<JobId, Token>>,
}

impl VmLocalPath {
    /// Connects to the node serving `socket`.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Self> {
        let socket = socket.as_ref().to_path_buf();
        let endpoint = format!("node at {}", socket.display());
        let conn = dial(&socket, &endpoint).await?;
        Ok(Self {
            socket,
            endpoint,
            conn: Mutex::new(Some(conn)),
            prefault: Prefault::Lazy,
            tokens: Default::default(),
        })
    }

    /// Sets whether reads fault pages in lazily (the default: the kernel's fault-around maps
    /// 64 KiB per fault, which measured faster than `MAP_POPULATE` even for readers that touch
    /// every byte) or all up front.
    pub fn with_prefault(mut self, prefault: Prefault) -> Self {
        self.prefault = prefault;
        self
    }

    /// Presents `token` with every request for its job (a node with its cluster's token key
    /// requires one, as over QUIC).
    pub fn add_token(&self, token: Token) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(token.job, token);
    }

    /// The node's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn call(&self, request: Request) -> Result<Response> {
        let mut slot = self.conn.lock().await;
        // Taken out of the slot: if this future is dropped before the answer is read, the
        // connection goes with it, half-read answer and all.
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => dial(&self.socket, &self.endpoint).await?,
        };
        let token = request.needs().and_then(|(job, _)| {
            self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&job).map(|t| WireToken::from(*t))
        });
        wire::send(&mut conn, &self.endpoint, &LocalRequest { token, request }).await?;
        let response = match wire::recv::<Response>(&mut conn, &self.endpoint).await? {
            Some(response) => response,
            None => {
                return Err(Error::PeerGone {
                    endpoint: self.endpoint.clone(),
                    reason: "closed the connection".into(),
                });
            }
        };
        // A whole exchange: the connection is in step again.
        *slot = Some(conn);
        match response {
            Response::Failed(e) => Err(e.into()),
            response => Ok(response),
        }
    }

    fn unexpected(&self, response: Response) -> Error {
        Error::Protocol { endpoint: self.endpoint.clone(), reason: format!("unexpected answer {response:?}") }
    }

    /// Opens `job` with a lease of `ttl`, or renews it with that ttl.
    pub async fn open_job(&self, job: JobId, ttl: Duration) -> Result<()> {
        let ttl_ms = ttl.as_millis().try_into().unwrap_or(u64::MAX);
        match self.call(Request::OpenJob { job: job.0, ttl_ms }).await? {
            Response::Lease { .. } => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Renews `job`'s lease.
    pub async fn renew_job(&self, job: JobId) -> Result<()> {
        match self.call(Request::RenewJob { job: job.0 }).await? {
            Response::Lease { .. } => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Ends `job`: the node deletes its objects from every tier. Returns the bytes freed.
    pub async fn end_job(&self, job: JobId) -> Result<u64> {
        match self.call(Request::EndJob { job: job.0 }).await? {
            Response::Freed { bytes } => Ok(bytes),
            other => Err(self.unexpected(other)),
        }
    }

    /// The node's metrics, in Prometheus' text format (empty if its process keeps none).
    pub async fn metrics(&self) -> Result<String> {
        match self.call(Request::Metrics).await? {
            Response::Metrics { text } => Ok(text),
            other => Err(self.unexpected(other)),
        }
    }

    /// The node's tiers and jobs.
    pub async fn status(&self) -> Result<NodeStatus> {
        match self.call(Request::Status).await? {
            Response::Status(status) => Ok(status),
            other => Err(self.unexpected(other)),
        }
    }

    /// Asks the node for a file to write the object at `key` into: in shared memory unless
    /// the size calls for flash, or `flash` asks for it.
    pub async fn stage(&self, key: &ObjectKey, size_hint: Option<u64>, flash: bool) -> Result<PathBuf> {
        match self.call(Request::Stage { key: (*key).into(), size_hint, flash }).await? {
            Response::Staged { path } => Ok(wire::path(path)),
            other => Err(self.unexpected(other)),
        }
    }

    /// Stages a file for `key`, fills it with `write` (off the async workers) and commits it.
    /// When the shared-memory file system fills up first (a small `/dev/shm`, as containers
    /// have), the object is written to flash instead. Returns the tier and the size.
    async fn write_object<F>(&self, key: &ObjectKey, size_hint: Option<u64>, write: F) -> Result<(Tier, u64)>
    where
        F: Fn(&Path) -> Result<u64> + Clone + Send + 'static,
    {
        let mut flash = false;
        loop {
            let path = self.stage(key, size_hint, flash).await?;
            let (target, write_once) = (path.clone(), write.clone());
            match blocking(move || write_once(&target)).await {
                Ok(len) => return Ok((self.commit(key, &path, len).await?, len)),
                Err(Error::NoSpace { .. }) => {
                    let _ = std::fs::remove_file(&path);
                    // Named by the file the write was for (an encoder knows no path), with what
                    // is free there now that the partial file is gone.
                    let dir = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
                    let free = crate::error::free_bytes(&dir);
                    if flash {
                        return Err(Error::NoSpace { dir, free });
                    }
                    tracing::debug!(%key, "{} is full ({free} bytes free): writing to flash", dir.display());
                    flash = true;
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            }
        }
    }

    /// Hands a staged file of `len` bytes to the node as the object at `key`.
    pub async fn commit(&self, key: &ObjectKey, path: &Path, len: u64) -> Result<Tier> {
        let request = Request::Commit { key: (*key).into(), path: path.to_string_lossy().into_owned(), len };
        match self.call(request).await? {
            Response::Committed { tier } => Ok(tier.into()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Writes record batches as an Arrow object straight into the node's shared memory.
    /// Returns where the node put it and its size.
    pub async fn put_batches(&self, key: &ObjectKey, schema: &Schema, batches: &[RecordBatch]) -> Result<(Tier, u64)> {
        let (schema, batches) = (schema.clone(), batches.to_vec());
        self.write_object(key, None, move |target| {
            let mut writer = ArrowFrameWriter::try_new(create_new(target)?, &schema)?;
            for batch in &batches {
                writer.write(batch)?;
            }
            let (mut file, len) = writer.finish()?;
            // Flushed here, not on drop, so that a full file system is an error.
            file.flush().map_err(|e| Error::io("write", target, e))?;
            Ok(len)
        })
        .await
    }

    /// Where the object at `key` sits, and its bytes mapped read-only from there.
    pub async fn map(&self, key: &ObjectKey) -> Result<(Tier, Bytes)> {
        // The node may move an object (memory to flash) between telling us where it is and our
        // opening it; asking again finds it in its new place.
        let mut last = None;
        for _ in 0..4 {
            let request = Request::Locate { key: (*key).into(), inline_max: INLINE_MAX as u64 };
            let (path, len, tier) = match self.call(request).await? {
                Response::Located { path, len, tier } => (wire::path(path), len, Tier::from(tier)),
                Response::Inline { data } => return Ok((Tier::Memory, data.into())),
                other => return Err(self.unexpected(other)),
            };
            match map_file(&path, self.prefault, false) {
                Ok(bytes) if bytes.len() as u64 == len => return Ok((tier, bytes)),
                Ok(bytes) => {
                    return Err(Error::Protocol {
                        endpoint: self.endpoint.clone(),
                        reason: format!("{} holds {} bytes, the node says {len}", path.display(), bytes.len()),
                    });
                }
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    last = Some(source);
                }
                Err(e) => return Err(e),
            }
        }
        let source = last.unwrap_or_else(|| std::io::Error::other("object kept moving"));
        Err(Error::io("open", format!("object {key}"), source))
    }
}

async fn dial(socket: &Path, endpoint: &str) -> Result<UnixStream> {
    UnixStream::connect(socket).await.map_err(|source| Error::Unreachable { endpoint: endpoint.to_owned(), source })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Remote { message: format!("writer task failed: {e}") })?
}

/// A sink that keeps the first I/O error it met.
struct Watched<W> {
    inner: W,
    error: Option<std::io::Error>,
}

impl<W: Write> Write for Watched<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| self.keep(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|e| self.keep(e))
    }
}

impl<W> Watched<W> {
    fn keep(&mut self, e: &std::io::Error) {
        if self.error.is_none() {
            self.error = Some(
                e.raw_os_error()
                    .map_or_else(|| std::io::Error::new(e.kind(), e.to_string()), std::io::Error::from_raw_os_error),
            );
        }
    }
}

fn create_new(path: &Path) -> Result<BufWriter<std::fs::File>> {
    Ok(BufWriter::with_capacity(1 << 20, crate::private::create_file(path)?))
}

#[async_trait]
impl DataPath for VmLocalPath {
    async fn put(&self, key: &ObjectKey, payload: Bytes) -> Result<()> {
        if payload.len() <= INLINE_MAX {
            return match self.call(Request::Put { key: (*key).into(), data: payload.to_vec() }).await? {
                Response::Done => Ok(()),
                other => Err(self.unexpected(other)),
            };
        }
        let len = payload.len() as u64;
        self.write_object(key, Some(len), move |target| {
            let mut file = crate::private::create_file(target)?;
            file.write_all(&payload).map_err(|e| Error::io("write", target, e))?;
            Ok(len)
        })
        .await
        .map(drop)
    }

    async fn put_with(&self, key: &ObjectKey, size_hint: u64, write: ObjectWriter) -> Result<u64> {
        if size_hint <= INLINE_MAX as u64 {
            let mut data = Vec::with_capacity(size_hint as usize);
            write(&mut data)?;
            let len = data.len() as u64;
            self.put(key, data.into()).await?;
            return Ok(len);
        }
        let (_, len) = self
            .write_object(key, Some(size_hint), move |target| {
                let mut file = Watched { inner: create_new(target)?, error: None };
                let written = write(&mut file);
                // A full file system is named as such (and sends the object to flash), whatever
                // the writer made of the error.
                if let Some(e) = file.error.take() {
                    return Err(Error::io("write", target, e));
                }
                let n = written?;
                file.inner.flush().map_err(|e| Error::io("write", target, e))?;
                Ok(n)
            })
            .await?;
        Ok(len)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        Ok(self.map(key).await?.1)
    }

    async fn get_range(&self, key: &ObjectKey, range: std::ops::Range<u64>) -> Result<Bytes> {
        crate::path::slice_range(key, &DataPath::get(self, key).await?, range)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        match self.call(Request::Delete { key: (*key).into() }).await? {
            Response::Done => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>> {
        match self.call(Request::List { job: prefix.job.0, edge: prefix.edge.map(|e| e.0) }).await? {
            Response::Objects { objects } => Ok(Response::into_objects(objects)),
            other => Err(self.unexpected(other)),
        }
    }

    async fn purge_job(&self, job: JobId) -> Result<u64> {
        let freed = self.end_job(job).await?;
        Ok(freed)
    }
}
