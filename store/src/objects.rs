//! `baton://JOB/...`: the store as an [`object_store::ObjectStore`], so that DataFusion and any
//! other object_store user reads and writes a job's namespace.
//!
//! Paths are the job's keys. Every put (multipart ones on completion) writes a new version of
//! the object, which appears whole or not at all; `PutMode::Create` and `PutMode::Update` are
//! conditional puts the storage nodes check, so racing writers never both win. The e-tag is
//! the version; objects have no attributes or tags (a put with any is refused). A multipart
//! upload stores each chunk of the object as soon as its parts fill it, and the object appears
//! when it completes; an aborted one deletes what it stored (a chunk still in flight then goes
//! with the job).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use crate::client::{Cond, Meta, StoreClient};
use crate::error::Error;
use crate::put::PutStream;

const STORE: &str = "baton";

/// A job's namespace in the store, as an object store.
#[derive(Debug, Clone)]
pub struct BatonObjectStore {
    client: Arc<StoreClient>,
}

impl BatonObjectStore {
    /// The object store over `client`'s job.
    pub fn new(client: Arc<StoreClient>) -> Self {
        Self { client }
    }

    /// The client underneath.
    pub fn client(&self) -> &Arc<StoreClient> {
        &self.client
    }
}

impl fmt::Display for BatonObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "baton://{}", self.client.job())
    }
}

fn e_tag(version: u64) -> String {
    format!("{version:016x}")
}

fn meta(location: &Path, meta: Meta) -> ObjectMeta {
    ObjectMeta {
        location: location.clone(),
        last_modified: chrono::DateTime::from_timestamp_millis(meta.modified_ms as i64).unwrap_or_default(),
        size: meta.len,
        e_tag: Some(e_tag(meta.version)),
        version: None,
    }
}

/// The store's error as object_store's.
fn error(location: &Path, e: Error) -> object_store::Error {
    let path = location.to_string();
    match e {
        Error::NotFound { .. } => object_store::Error::NotFound { path, source: Box::new(e) },
        Error::Precondition { .. } => object_store::Error::Precondition { path, source: Box::new(e) },
        other => object_store::Error::Generic { store: STORE, source: Box::new(other) },
    }
}

fn payload(bytes: Bytes) -> GetResultPayload {
    GetResultPayload::Stream(futures::stream::once(futures::future::ready(Ok(bytes))).boxed())
}

fn whole(payload: PutPayload) -> Bytes {
    let mut parts = payload.into_iter();
    match (parts.next(), parts.next()) {
        (None, _) => Bytes::new(),
        (Some(one), None) => one,
        (Some(first), Some(second)) => {
            let mut buf = BytesMut::from(first.as_ref());
            buf.extend_from_slice(&second);
            parts.for_each(|p| buf.extend_from_slice(&p));
            buf.freeze()
        }
    }
}

impl BatonObjectStore {
    async fn put_bytes(&self, location: &Path, bytes: Bytes, opts: PutOptions) -> object_store::Result<PutResult> {
        if !opts.attributes.is_empty() || !opts.tags.encoded().is_empty() {
            return Err(object_store::Error::NotImplemented {
                operation: "a put with attributes or tags".into(),
                implementer: STORE.into(),
            });
        }
        let cond = match &opts.mode {
            PutMode::Overwrite => Cond::Any,
            PutMode::Create => Cond::Absent,
            PutMode::Update(version) => {
                let tag = version.e_tag.as_deref().unwrap_or_default();
                match u64::from_str_radix(tag, 16) {
                    Ok(v) => Cond::Version(v),
                    Err(_) => {
                        return Err(object_store::Error::Precondition {
                            path: location.to_string(),
                            source: format!("{tag:?} is not an e-tag of this store").into(),
                        });
                    }
                }
            }
        };
        match self.client.put_if(location.as_ref(), bytes, cond).await {
            Ok(meta) => Ok(PutResult { e_tag: Some(e_tag(meta.version)), version: None }),
            Err(e @ Error::Precondition { .. }) if cond == Cond::Absent => {
                Err(object_store::Error::AlreadyExists { path: location.to_string(), source: Box::new(e) })
            }
            Err(e) => Err(error(location, e)),
        }
    }
}

#[async_trait]
impl ObjectStore for BatonObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.put_bytes(location, whole(payload), opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if !opts.attributes.is_empty() || !opts.tags.encoded().is_empty() {
            return Err(object_store::Error::NotImplemented {
                operation: "a multipart put with attributes or tags".into(),
                implementer: STORE.into(),
            });
        }
        let put = self.client.put_stream(location.as_ref()).map_err(|e| error(location, e))?;
        Ok(Box::new(Upload { location: location.clone(), put: Some(put) }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        if options.version.is_some() {
            return Err(object_store::Error::NotImplemented {
                operation: "a get of an earlier version".into(),
                implementer: STORE.into(),
            });
        }
        let key = location.as_ref();
        let (found, bytes, range) = match (&options.range, options.head) {
            (_, true) => {
                let found = self.client.head(key).await.map_err(|e| error(location, e))?;
                (found, Bytes::new(), 0..found.len)
            }
            (None, false) => {
                let (found, bytes) = self.client.get_with_meta(key).await.map_err(|e| error(location, e))?;
                (found, bytes, 0..found.len)
            }
            (Some(range), false) => {
                let len = self.client.head(key).await.map_err(|e| error(location, e))?.len;
                let range = range
                    .as_range(len)
                    .map_err(|source| object_store::Error::Generic { store: STORE, source: Box::new(source) })?;
                let (found, bytes) =
                    self.client.get_range_with_meta(key, range.clone()).await.map_err(|e| error(location, e))?;
                (found, bytes, range)
            }
        };
        let meta = meta(location, found);
        options.check_preconditions(&meta)?;
        Ok(GetResult { payload: payload(bytes), meta, range, attributes: Attributes::new() })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            out.push(self.client.get_range(location.as_ref(), range.clone()).await.map_err(|e| error(location, e))?);
        }
        Ok(out)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let client = self.client.clone();
        locations
            .and_then(move |location| {
                let client = client.clone();
                async move {
                    match client.delete(location.as_ref()).await {
                        // Deleting what is not there is not an error (as on S3).
                        Ok(()) | Err(Error::NotFound { .. }) => Ok(location),
                        Err(e) => Err(error(&location, e)),
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let client = self.client.clone();
        let prefix = prefix.cloned().unwrap_or_default();
        futures::stream::once(async move {
            let objects = client.list(prefix.as_ref()).await.map_err(|e| error(&prefix, e))?;
            let metas: Vec<object_store::Result<ObjectMeta>> = objects
                .into_iter()
                .filter_map(|(key, found)| {
                    let location = Path::parse(&key).ok()?;
                    // Strictly under the prefix: an object at the prefix itself is not in it.
                    let under = location.prefix_match(&prefix).is_some_and(|mut rest| rest.next().is_some());
                    under.then(|| Ok(meta(&location, found)))
                })
                .collect();
            Ok::<_, object_store::Error>(futures::stream::iter(metas))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let root = Path::default();
        let prefix = prefix.unwrap_or(&root);
        let objects: Vec<ObjectMeta> = self.list(Some(prefix)).try_collect().await?;
        let mut common = std::collections::BTreeSet::new();
        let mut direct = Vec::new();
        for object in objects {
            let nested = {
                let Some(mut parts) = object.location.prefix_match(prefix) else { continue };
                let Some(first) = parts.next() else { continue };
                parts.next().is_some().then(|| prefix.clone().join(first))
            };
            match nested {
                Some(dir) => {
                    common.insert(dir);
                }
                None => direct.push(object),
            }
        }
        Ok(ListResult { objects: direct, common_prefixes: common.into_iter().collect() })
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        let bytes = self.client.get(from.as_ref()).await.map_err(|e| error(from, e))?;
        let mode = match options.mode {
            CopyMode::Overwrite => PutMode::Overwrite,
            CopyMode::Create => PutMode::Create,
        };
        self.put_bytes(to, bytes, mode.into()).await.map(drop)
    }
}

/// A multipart upload: its parts cut into the store's chunks as they come, each chunk stored as
/// soon as it is whole; completing stores the first chunk, and the object appears.
#[derive(Debug)]
struct Upload {
    location: Path,
    /// `None` once completed or aborted.
    put: Option<PutStream>,
}

impl Upload {
    fn ended(&self) -> object_store::Error {
        object_store::Error::Generic {
            store: STORE,
            source: format!("the upload of {} was completed or aborted", self.location).into(),
        }
    }
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let Some(put) = self.put.as_mut() else {
            return Box::pin(futures::future::ready(Err(self.ended())));
        };
        let stores: Vec<_> = data.iter().map(|bytes| put.write(bytes)).collect();
        let location = self.location.clone();
        Box::pin(async move {
            for store in stores {
                store.await.map_err(|e| error(&location, e))?;
            }
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let mut put = self.put.take().ok_or_else(|| self.ended())?;
        let meta = put.finish(Cond::Any).await.map_err(|e| error(&self.location, e))?;
        Ok(PutResult { e_tag: Some(e_tag(meta.version)), version: None })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        if let Some(mut put) = self.put.take() {
            put.abort().await;
        }
        Ok(())
    }
}
