//! Where a job writes its result: `part-r-NNNNN` files in a directory or object-store prefix.
//!
//! An output appears whole or not at all. Tasks write their parts into the job's staging place
//! inside the output, `_temporary/<job>/` ([`Output::staging_url`]); when the job has
//! committed, [`Output::commit`] moves the parts into the output and then writes `_SUCCESS`, a
//! JSON manifest of every part and its size (Hadoop's marker, which Spark and others read). An
//! output without `_SUCCESS` is not finished: a job that failed or was killed leaves its parts
//! only in `_temporary/`, which the next run into the same place clears.
//!
//! A task writes a file through a [`PartWriter`], which streams it. Large files in a local
//! directory are written past the page cache ([`baton_fabric::uncached`]) while the task
//! produces the next bytes: the job does not read them again, and on a small machine the
//! kernel's copy into the cache costs more CPU than a reducer's sort. Other files are gathered
//! in memory and put whole when finished.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use baton_fabric::buffers::{Pool, PooledVec};
use baton_fabric::uncached::{FileWriter, MIN_UNCACHED};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};
use crate::mapreduce::input::Source;

/// The marker a committed output holds: a JSON manifest of its parts.
pub const SUCCESS: &str = "_SUCCESS";
/// The directory inside an output where jobs stage their parts.
pub const STAGING: &str = "_temporary";

/// The URL of an output location given as a local directory or a URL. Nothing is created yet.
pub fn output_url(location: &str) -> Result<String> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    let abs = std::path::absolute(location).map_err(|e| Error::io("resolve", location, e))?;
    Ok(format!("file://{}", canonical(&abs).display()))
}

/// `path` with symlinks resolved as far as it exists (an output need not exist yet).
fn canonical(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => canonical(parent).join(name),
        _ => path.to_path_buf(),
    }
}

/// Refuses an output that is, or holds, one of `sources`: before anything is touched.
pub fn check_disjoint(sources: &[Source], output_url: &str) -> Result<()> {
    // Without trailing slashes, so that `a` holds `a/b` and not `ab`; the root becomes the
    // scheme alone, which every URL of that scheme starts with.
    let normal = |url: &str| -> String {
        let url = match baton_connectors::local_dir(url) {
            Some(dir) => format!("file://{}", canonical(&dir).display()),
            None => url.split('?').next().unwrap_or(url).to_string(),
        };
        url.trim_end_matches('/').to_string()
    };
    let output = normal(output_url);
    for source in sources {
        let input = normal(&format!("{}/{}", source.store.trim_end_matches('/'), source.object));
        if input == output || input.starts_with(&format!("{output}/")) {
            return Err(Error::Overlap { input: source.name.clone(), output: output_url.to_string() });
        }
    }
    Ok(())
}

/// The name of reducer `partition`'s file.
pub fn part_name(partition: u32) -> String {
    format!("part-r-{partition:05}")
}

/// An output location, opened.
#[derive(Debug)]
pub struct Output {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The directory, when the output is local.
    local: Option<PathBuf>,
}

impl Output {
    /// Opens the output at `url` (a local directory is created if missing).
    pub fn open(url: &str) -> Result<Self> {
        let (store, prefix) = baton_connectors::open_url(url)?;
        Ok(Self { store, prefix, local: baton_connectors::local_dir(url) })
    }

    /// The URL where `job` stages its parts inside the output at `url`.
    pub fn staging_url(url: &str, job: impl std::fmt::Display) -> String {
        let (path, query) = url.split_once('?').map_or((url, None), |(p, q)| (p, Some(q)));
        let staged = format!("{}/{STAGING}/{job}", path.trim_end_matches('/'));
        match query {
            Some(q) => format!("{staged}?{q}"),
            None => staged,
        }
    }

    /// Where `job` stages its parts: the place [`Output::staging_url`] names, on this output's
    /// store.
    pub fn staging(&self, job: impl std::fmt::Display) -> Output {
        let job = job.to_string();
        Output {
            store: self.store.clone(),
            prefix: self.prefix.clone().join(STAGING).join(job.as_str()),
            local: self.local.as_ref().map(|d| d.join(STAGING).join(&job)),
        }
    }

    /// Publishes what `job` staged ([`Output::staging`]): moves its `part-r-*` files here,
    /// removes the staging place (and whatever dead writers left in it), then writes
    /// [`SUCCESS`] listing the parts. Returns the parts.
    pub async fn commit(&self, job: impl std::fmt::Display) -> Result<Vec<(String, u64)>> {
        let staging = self.staging(job);
        let parts = staging.parts().await?;
        for (name, _) in &parts {
            let (from, to) = (staging.prefix.clone().join(name.as_str()), self.prefix.clone().join(name.as_str()));
            self.store.rename(&from, &to).await?;
        }
        staging.discard().await?;
        let manifest = serde_json::json!({
            "parts": parts.iter().map(|(name, size)| serde_json::json!({"name": name, "size": size})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::BadJob { reason: e.to_string() })?;
        self.store.put(&self.prefix.clone().join(SUCCESS), Bytes::from(bytes).into()).await?;
        Ok(parts)
    }

    /// Deletes everything under this location: for a job's staging place that failed.
    pub async fn discard(&self) -> Result<()> {
        if let Some(dir) = &self.local {
            return match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("delete", dir, e)),
                _ => {
                    // `_temporary` itself goes once no other job stages there.
                    if let Some(parent) = dir.parent().filter(|p| p.ends_with(STAGING)) {
                        let _ = std::fs::remove_dir(parent);
                    }
                    Ok(())
                }
            };
        }
        let objects: Vec<_> = self.store.list(Some(&self.prefix)).map_ok(|m| m.location).try_collect().await?;
        for location in objects {
            self.store.delete(&location).await?;
        }
        Ok(())
    }

    /// Checks that this location takes writes (permissions, a read-only or full file system,
    /// credentials) by writing and deleting a small file in its staging place: before any task
    /// runs, so that an output that cannot be written fails the job at once.
    pub async fn probe(&self) -> Result<()> {
        let probe = self.prefix.clone().join(STAGING).join(format!(".probe-{}", std::process::id()).as_str());
        self.store.put(&probe, Bytes::from_static(b"baton").into()).await?;
        self.store.delete(&probe).await?;
        if let Some(dir) = &self.local {
            let _ = std::fs::remove_dir(dir.join(STAGING));
        }
        Ok(())
    }

    /// Whether a job committed this output ([`SUCCESS`] is there).
    pub async fn committed(&self) -> Result<bool> {
        match self.store.head(&self.prefix.clone().join(SUCCESS)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts writing file `name`, of about `size_hint` bytes. Nothing is visible under the
    /// name until [`PartWriter::finish`]; a retry that writes it again replaces it whole.
    pub fn create(&self, name: &str, size_hint: usize) -> Result<PartWriter> {
        let sink = match self.streamed_to(size_hint) {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
                static STAGED: AtomicU64 = AtomicU64::new(0);
                let n = STAGED.fetch_add(1, Ordering::Relaxed);
                let staged = dir.join(format!(".{name}.{}-{n}.staged", std::process::id()));
                let file = FileWriter::create(&staged).map_err(|e| Error::io("create", &staged, e))?;
                Sink::Local { file, staged, path: dir.join(name) }
            }
            _ => Sink::Memory {
                buf: Pool::global().take(size_hint),
                store: self.store.clone(),
                location: self.prefix.clone().join(name),
            },
        };
        Ok(PartWriter { sink })
    }

    /// Writes file `name` whole.
    pub async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        if self.streamed_to(bytes.len()).is_some() {
            let mut part = self.create(name, bytes.len())?;
            part.write_all(&bytes).map_err(|e| Error::io("write", name, e))?;
            part.finish().await?;
        } else {
            self.store.put(&self.prefix.clone().join(name), bytes.into()).await?;
        }
        Ok(())
    }

    /// The directory a file of `size` bytes is streamed to past the page cache, if any (else
    /// it is gathered and put whole).
    fn streamed_to(&self, size: usize) -> Option<&Path> {
        self.local.as_deref().filter(|_| size >= MIN_UNCACHED)
    }

    /// The `part-r-*` files right at this location (not in staging places below it), sorted
    /// by name, with their sizes.
    pub async fn parts(&self) -> Result<Vec<(String, u64)>> {
        let depth = self.prefix.parts().count() + 1;
        let mut parts: Vec<(String, u64)> = self
            .store
            .list(Some(&self.prefix))
            .try_filter_map(|m| async move {
                let name = m.location.filename().unwrap_or_default().to_string();
                let here = m.location.parts().count() == depth;
                Ok((here && name.starts_with("part-r-")).then_some((name, m.size)))
            })
            .try_collect()
            .await?;
        parts.sort();
        Ok(parts)
    }

    /// Reads file `name`.
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        Ok(self.store.get(&self.prefix.clone().join(name)).await?.bytes().await?)
    }

    /// Makes way for a new run into this place: removes [`SUCCESS`] first (so that nothing
    /// here looks finished), then the `part-r-*` files, what staging places of earlier runs
    /// hold, and in a local directory the staging files of writers that died. Nothing else.
    pub async fn clear(&self) -> Result<()> {
        match self.store.delete(&self.prefix.clone().join(SUCCESS)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let staging = Output {
            store: self.store.clone(),
            prefix: self.prefix.clone().join(STAGING),
            local: self.local.as_ref().map(|d| d.join(STAGING)),
        };
        staging.discard().await?;
        for (name, _) in self.parts().await? {
            self.store.delete(&self.prefix.clone().join(name.as_str())).await?;
        }
        if let Some(dir) = &self.local {
            let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".part-r-") && name.ends_with(".staged") {
                    std::fs::remove_file(entry.path()).map_err(|e| Error::io("delete", entry.path(), e))?;
                }
            }
        }
        Ok(())
    }
}

/// One file of the output being written: bytes go in with [`std::io::Write`] (a local file's
/// writes block only while the disk is behind by a few chunks), and [`PartWriter::finish`]
/// makes the file visible whole.
#[derive(Debug)]
pub struct PartWriter {
    sink: Sink,
}

#[derive(Debug)]
enum Sink {
    /// A large file in a local directory: written to a hidden staging file, renamed when done.
    Local { file: FileWriter, staged: PathBuf, path: PathBuf },
    /// Anything else: gathered, then put in one request.
    Memory { buf: PooledVec, store: Arc<dyn ObjectStore>, location: ObjectPath },
}

impl std::io::Write for PartWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &mut self.sink {
            Sink::Local { file, .. } => file.write(bytes)?,
            Sink::Memory { buf, .. } => buf.vec().extend_from_slice(bytes),
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PartWriter {
    /// Writes what is left, makes the file visible under its name, and returns its length.
    /// A failed file leaves nothing under the name.
    pub async fn finish(self) -> Result<u64> {
        match self.sink {
            Sink::Local { file, staged, path } => {
                let done = path.clone();
                tokio::task::spawn_blocking(move || finish_local(file, &staged, &path))
                    .await
                    .map_err(|e| Error::io("write", done, std::io::Error::other(e)))?
            }
            Sink::Memory { buf, store, location } => {
                let bytes = buf.freeze();
                let len = bytes.len() as u64;
                store.put(&location, bytes.into()).await?;
                Ok(len)
            }
        }
    }
}

fn finish_local(file: FileWriter, staged: &Path, path: &Path) -> Result<u64> {
    let written = file
        .finish()
        .map_err(|e| Error::io("write", staged, e))
        .and_then(|len| std::fs::rename(staged, path).map(|()| len).map_err(|e| Error::io("rename", path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(staged);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    #[tokio::test]
    async fn a_large_local_file_appears_whole_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::open(&output_url(dir.path().to_str().unwrap()).unwrap()).unwrap();
        let want = bytes(MIN_UNCACHED * 2 + 12_345);
        let mut part = out.create(&part_name(3), want.len()).unwrap();
        for piece in want.chunks(1000) {
            part.write_all(piece).unwrap();
        }
        assert!(out.parts().await.unwrap().is_empty(), "nothing is visible before finish");
        assert_eq!(part.finish().await.unwrap(), want.len() as u64);
        assert_eq!(out.parts().await.unwrap(), vec![(part_name(3), want.len() as u64)]);
        assert_eq!(out.get(&part_name(3)).await.unwrap(), want);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(part_name(3))], "no staging file is left behind");
    }

    #[tokio::test]
    async fn clear_removes_parts_and_the_staging_files_of_dead_writers() {
        let dir = tempfile::tempdir().unwrap();
        let out = Output::open(&output_url(dir.path().to_str().unwrap()).unwrap()).unwrap();
        out.put(&part_name(0), Bytes::from_static(b"small")).await.unwrap();
        // A writer killed mid-file leaves its staging file.
        std::fs::write(dir.path().join(format!(".{}.4242-0.staged", part_name(1))), b"half").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();
        out.clear().await.unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("notes.txt")], "only files that are not the job's stay");
    }

    #[tokio::test]
    async fn object_store_outputs_are_put_whole() {
        let out = Output::open("memory://out").unwrap();
        let want = bytes(MIN_UNCACHED + 1);
        let mut part = out.create(&part_name(0), want.len()).unwrap();
        part.write_all(&want).unwrap();
        assert!(out.parts().await.unwrap().is_empty());
        part.finish().await.unwrap();
        assert_eq!(out.get(&part_name(0)).await.unwrap(), want);
    }

    #[tokio::test]
    async fn a_commit_publishes_the_staged_parts_then_the_manifest_and_leaves_nothing_staged() {
        let dir = tempfile::tempdir().unwrap();
        let url = output_url(dir.path().to_str().unwrap()).unwrap();
        let out = Output::open(&url).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();
        let staging = Output::open(&Output::staging_url(&url, "job-7")).unwrap();
        staging.put(&part_name(0), Bytes::from_static(b"zero")).await.unwrap();
        staging.put(&part_name(1), Bytes::from(bytes(MIN_UNCACHED + 5))).await.unwrap();
        // What a reducer killed mid-write leaves in the staging place.
        std::fs::write(dir.path().join("_temporary/job-7/.part-r-00002.99-0.staged"), b"half").unwrap();
        assert!(out.parts().await.unwrap().is_empty(), "staged parts are not the output's");
        assert!(!out.committed().await.unwrap());
        let parts = out.commit("job-7").await.unwrap();
        assert_eq!(parts, vec![(part_name(0), 4), (part_name(1), MIN_UNCACHED as u64 + 5)]);
        let mut left: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["_SUCCESS", "notes.txt", "part-r-00000", "part-r-00001"]);
        assert!(out.committed().await.unwrap());
        let manifest: serde_json::Value = serde_json::from_slice(&out.get(SUCCESS).await.unwrap()).unwrap();
        assert_eq!(manifest["parts"][1]["size"], MIN_UNCACHED as u64 + 5);
        // A rerun's clear takes the marker first, then the parts, and leaves the rest.
        out.clear().await.unwrap();
        assert!(!out.committed().await.unwrap());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("notes.txt")]);
    }

    #[tokio::test]
    async fn object_store_outputs_commit_too() {
        let out = Output::open("memory://bucket/out").unwrap();
        out.staging("j").put(&part_name(0), Bytes::from_static(b"abc")).await.unwrap();
        out.commit("j").await.unwrap();
        assert_eq!(out.parts().await.unwrap(), vec![(part_name(0), 3)]);
        assert!(out.committed().await.unwrap());
        let all: Vec<_> = out.store.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        assert_eq!(all.len(), 2, "only the part and the marker: {all:?}");
    }

    #[test]
    fn staging_urls_keep_their_query() {
        assert_eq!(Output::staging_url("file:///o/", 5), "file:///o/_temporary/5");
        assert_eq!(
            Output::staging_url("s3://b/out?aws_endpoint=http://127.0.0.1:9000", "j"),
            "s3://b/out/_temporary/j?aws_endpoint=http://127.0.0.1:9000"
        );
    }

    #[test]
    fn outputs_that_are_or_hold_an_input_are_refused() {
        let source = |store: &str, object: &str| Source {
            name: format!("{store}/{object}"),
            store: store.into(),
            object: object.into(),
            size: 1,
        };
        let inputs = [source("file:///data", "in.bin"), source("s3://bucket/in", "a.bin")];
        for output in ["file:///data", "file:///data/", "file:///data/in.bin", "file:///", "s3://bucket/in?region=x"] {
            assert!(matches!(check_disjoint(&inputs, output), Err(Error::Overlap { .. })), "{output}");
        }
        for output in ["file:///data2", "file:///data/out", "s3://bucket/in2", "s3://other/in"] {
            check_disjoint(&inputs, output).unwrap_or_else(|e| panic!("{output}: {e}"));
        }
    }
}
