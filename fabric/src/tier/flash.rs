//! The flash tier: one file per object under a directory on local disk, up to a byte budget.
//!
//! Objects are written to a staging file and renamed into place, so a reader never sees half an
//! object. The directory belongs to the tier: it is emptied when the tier opens, because the
//! jobs that owned anything left there are gone with the process that held their leases.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result, Tier};
use crate::ids::{JobId, KeyPrefix, ObjectKey};
use crate::mapping::{Prefault, map_file};
use crate::path::{DataPath, ObjectMeta};

const STAGING: &str = ".staging";

#[derive(Debug, Default)]
struct Inner {
    /// Size of every object, and whether it is committed (readable) yet.
    index: BTreeMap<ObjectKey, (u64, bool)>,
    used: u64,
}

/// Objects in files under a directory, up to `budget` bytes.
#[derive(Debug)]
pub struct FlashTier {
    dir: PathBuf,
    budget: u64,
    inner: Mutex<Inner>,
    next_staging: AtomicU64,
}

impl FlashTier {
    /// Opens the tier at `dir`, creating it and removing anything in it.
    pub fn open(dir: impl Into<PathBuf>, budget: u64) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))? {
            let path = entry.map_err(|e| Error::io("read directory", &dir, e))?.path();
            let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            removed.map_err(|e| Error::io("clear", &path, e))?;
        }
        let staging = dir.join(STAGING);
        fs::create_dir_all(&staging).map_err(|e| Error::io("create directory", &staging, e))?;
        Ok(Self { dir, budget, inner: Mutex::default(), next_staging: AtomicU64::new(0) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tier's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes held or reserved now.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Where the committed object at `key` lives, and its size.
    pub fn locate(&self, key: &ObjectKey) -> Option<(PathBuf, u64)> {
        match self.lock().index.get(key) {
            Some(&(size, true)) => Some((self.object_path(key), size)),
            _ => None,
        }
    }

    /// Whether `key` is held or being written.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.lock().index.contains_key(key)
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.dir.join(key.to_string())
    }

    /// A fresh path in the staging directory, for a writer that will hand the file to
    /// [`FlashTier::adopt`].
    pub fn staging_path(&self) -> PathBuf {
        let n = self.next_staging.fetch_add(1, Ordering::Relaxed);
        self.dir.join(STAGING).join(format!("{}-{n}", std::process::id()))
    }

    fn reserve(&self, key: &ObjectKey, needed: u64) -> Result<()> {
        let mut inner = self.lock();
        if inner.index.contains_key(key) {
            return Err(Error::AlreadyExists { key: *key });
        }
        let available = self.budget.saturating_sub(inner.used);
        if needed > available {
            return Err(Error::NoCapacity { tier: Tier::Flash, needed, available });
        }
        inner.used += needed;
        inner.index.insert(*key, (needed, false));
        Ok(())
    }

    fn settle(&self, key: &ObjectKey, outcome: Result<()>) -> Result<()> {
        let mut inner = self.lock();
        match outcome {
            Ok(()) => {
                if let Some(entry) = inner.index.get_mut(key) {
                    entry.1 = true;
                }
                Ok(())
            }
            Err(e) => {
                let size = inner.index.remove(key).map_or(0, |(size, _)| size);
                inner.used -= size;
                Err(match e {
                    // The disk filled before the budget did.
                    Error::NoCapacity { tier, .. } => Error::NoCapacity { tier, needed: size, available: 0 },
                    other => other,
                })
            }
        }
    }

    fn place(&self, key: &ObjectKey, staged: &Path) -> Result<()> {
        let target = self.object_path(key);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
        }
        match fs::rename(staged, &target) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                // Another file system (shared memory to disk): copy, then drop the original.
                let copied = fs::copy(staged, &target).map_err(|e| Error::io("copy", &target, e));
                let _ = fs::remove_file(staged);
                copied.map(drop)
            }
            Err(e) => Err(Error::io("rename", &target, e)),
        }
    }

    /// Writes a new object.
    pub fn insert(&self, key: &ObjectKey, data: &[u8]) -> Result<()> {
        self.reserve(key, data.len() as u64)?;
        let staged = self.staging_path();
        let written = fs::File::create(&staged)
            .and_then(|mut f| f.write_all(data))
            .map_err(|e| Error::io("write", &staged, e))
            .and_then(|()| self.place(key, &staged));
        if written.is_err() {
            let _ = fs::remove_file(&staged);
        }
        self.settle(key, written)
    }

    /// Takes a complete file of `len` bytes written elsewhere as the object at `key`.
    pub fn adopt(&self, key: &ObjectKey, file: &Path, len: u64) -> Result<()> {
        self.reserve(key, len)?;
        let placed = self.place(key, file);
        self.settle(key, placed)
    }

    /// The object at `key`, mapped from its file.
    pub fn read(&self, key: &ObjectKey) -> Result<Bytes> {
        let (path, _) = self.locate(key).ok_or(Error::NotFound { key: *key })?;
        map_file(&path, Prefault::Lazy, false).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Error::NotFound { key: *key },
            other => other,
        })
    }

    /// Removes the object at `key`; returns its size if it was held.
    pub fn remove(&self, key: &ObjectKey) -> Option<u64> {
        let mut inner = self.lock();
        let (size, committed) = *inner.index.get(key)?;
        if !committed {
            return None;
        }
        inner.index.remove(key);
        inner.used -= size;
        let _ = fs::remove_file(self.object_path(key));
        Some(size)
    }

    /// The committed objects under `prefix`, sorted by key.
    pub fn list(&self, prefix: &KeyPrefix) -> Vec<ObjectMeta> {
        let inner = self.lock();
        inner
            .index
            .iter()
            .filter(|(k, (_, committed))| *committed && k.matches(prefix))
            .map(|(k, (size, _))| ObjectMeta { key: *k, size: *size })
            .collect()
    }

    /// Removes every object of `job`, and its directory; returns the bytes freed.
    pub fn remove_job(&self, job: JobId) -> u64 {
        let mut inner = self.lock();
        let keys: Vec<_> = inner.index.keys().filter(|k| k.job == job).copied().collect();
        let mut freed = 0;
        for key in keys {
            if let Some((size, _)) = inner.index.remove(&key) {
                inner.used -= size;
                freed += size;
            }
        }
        let _ = fs::remove_dir_all(self.dir.join(job.to_string()));
        freed
    }
}

#[async_trait]
impl DataPath for FlashTier {
    async fn put(&self, key: &ObjectKey, payload: Bytes) -> Result<()> {
        self.insert(key, &payload)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.read(key)
    }

    async fn get_range(&self, key: &ObjectKey, range: std::ops::Range<u64>) -> Result<Bytes> {
        crate::path::slice_range(key, &DataPath::get(self, key).await?, range)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>> {
        Ok(FlashTier::list(self, prefix))
    }

    async fn purge_job(&self, job: JobId) -> Result<u64> {
        Ok(self.remove_job(job))
    }
}
