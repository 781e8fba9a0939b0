//! Where a job writes its result: `part-r-NNNNN` files in a directory or object-store prefix.
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

/// The URL of an output location given as a local directory or a URL.
pub fn output_url(location: &str) -> Result<String> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    std::fs::create_dir_all(location).map_err(|e| Error::io("create", location, e))?;
    let abs = std::path::absolute(location).map_err(|e| Error::io("resolve", location, e))?;
    Ok(format!("file://{}", abs.display()))
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
    /// Opens the output at `url`.
    pub fn open(url: &str) -> Result<Self> {
        let (store, prefix) = baton_connectors::open_url(url)?;
        Ok(Self { store, prefix, local: baton_connectors::local_dir(url) })
    }

    /// Starts writing file `name`, of about `size_hint` bytes. Nothing is visible under the
    /// name until [`PartWriter::finish`]; a retry that writes it again replaces it whole.
    pub fn create(&self, name: &str, size_hint: usize) -> Result<PartWriter> {
        let sink = match self.streamed_to(size_hint) {
            Some(dir) => {
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

    /// The `part-r-*` files, sorted by name, with their sizes.
    pub async fn parts(&self) -> Result<Vec<(String, u64)>> {
        let mut parts: Vec<(String, u64)> = self
            .store
            .list(Some(&self.prefix))
            .try_filter_map(|m| async move {
                let name = m.location.filename().unwrap_or_default().to_string();
                Ok(name.starts_with("part-r-").then_some((name, m.size)))
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

    /// Deletes the `part-r-*` files already there (a rerun into the same place), and in a
    /// local directory the staging files of writers that died.
    pub async fn clear(&self) -> Result<()> {
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
}
