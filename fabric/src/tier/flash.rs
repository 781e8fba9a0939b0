//! The flash tier: one file per object under a directory on local disk, up to a byte budget.
//!
//! Objects are written to a staging file and renamed into place, so a reader never sees half an
//! object. The tier keeps its files in a directory of its own inside the one it is given (an
//! [`OwnedDir`], 0700), removed when the tier is dropped; what a killed process left there is
//! swept by the next tier that opens in the same place. Nothing else in the given directory is
//! touched.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result, Tier};
use crate::ids::{JobId, KeyPrefix, ObjectKey};
use crate::path::{DataPath, ObjectMeta};
use crate::private::{self, OwnedDir};

const STAGING: &str = ".staging";

/// An object's file on flash, open for reading ([`FlashTier::open_object`]).
#[derive(Debug)]
pub struct FlashObject {
    file: fs::File,
    path: PathBuf,
    len: u64,
}

impl FlashObject {
    /// Its committed size.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `len` of its bytes from `offset` (which the caller keeps within the object), read into
    /// a pooled buffer; a file found shorter than committed is an error naming it.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        super::read_piece(&self.file, &self.path, offset, len, self.len)
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Size of every object, and whether it is committed (readable) yet.
    index: BTreeMap<ObjectKey, (u64, bool)>,
    used: u64,
}

/// Objects in files under a directory, up to `budget` bytes.
#[derive(Debug)]
pub struct FlashTier {
    dir: OwnedDir,
    budget: u64,
    inner: Mutex<Inner>,
    next_staging: AtomicU64,
}

impl FlashTier {
    /// Opens a new tier in a directory of its own inside `parent` (created 0700 if missing).
    pub fn open(parent: impl AsRef<Path>, budget: u64) -> Result<Self> {
        let dir = OwnedDir::create(parent.as_ref(), "flash_dir")?;
        private::create_dir(&dir.path().join(STAGING))?;
        Ok(Self { dir, budget, inner: Mutex::default(), next_staging: AtomicU64::new(0) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tier's own directory (inside the one it was opened with).
    pub fn dir(&self) -> &Path {
        self.dir.path()
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
        self.dir.path().join(key.to_string())
    }

    /// A fresh path in the staging directory, for a writer that will hand the file to
    /// [`FlashTier::adopt`].
    pub fn staging_path(&self) -> PathBuf {
        let n = self.next_staging.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(STAGING).join(format!("{}-{n}", std::process::id()))
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
                match inner.index.get_mut(key) {
                    Some(entry) => entry.1 = true,
                    // Its job ended while it was written: the file must not outlive it.
                    None => {
                        let _ = fs::remove_file(self.object_path(key));
                    }
                }
                Ok(())
            }
            Err(e) => {
                let size = inner.index.remove(key).map_or(0, |(size, _)| size);
                inner.used -= size;
                Err(match e {
                    // The disk filled before the budget did.
                    Error::NoSpace { free, .. } => {
                        Error::NoCapacity { tier: Tier::Flash, needed: size, available: free }
                    }
                    other => other,
                })
            }
        }
    }

    fn place(&self, key: &ObjectKey, staged: &Path) -> Result<()> {
        let target = self.object_path(key);
        if let Some(parent) = target.parent() {
            private::create_dirs(parent)?;
        }
        match fs::rename(staged, &target) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                // Another file system (shared memory to disk): copy, then drop the original.
                let copied = fs::File::open(staged).map_err(|e| Error::io("open", staged, e)).and_then(|mut from| {
                    let mut to = private::create_file(&target)?;
                    std::io::copy(&mut from, &mut to).map_err(|e| Error::io("copy", &target, e))
                });
                if copied.is_err() {
                    let _ = fs::remove_file(&target);
                }
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
        let written = private::create_file(&staged)
            .and_then(|mut f| f.write_all(data).map_err(|e| Error::io("write", &staged, e)))
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

    /// The object at `key`, read whole from its file into a pooled buffer (not mapped: a file
    /// that a producer staged here could still be truncated by it).
    pub fn read(&self, key: &ObjectKey) -> Result<Bytes> {
        let object = self.open_object(key)?;
        object.read_at(0, object.len as usize)
    }

    /// The object at `key`'s file, open for reading piece by piece; it stays readable through
    /// this even if the object is deleted meanwhile.
    pub fn open_object(&self, key: &ObjectKey) -> Result<FlashObject> {
        let (path, len) = self.locate(key).ok_or(Error::NotFound { key: *key })?;
        let file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path).map_err(|e| match e
            .kind()
        {
            std::io::ErrorKind::NotFound => Error::NotFound { key: *key },
            _ => Error::io("open", &path, e),
        })?;
        Ok(FlashObject { file, path, len })
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
        let _ = fs::remove_dir_all(self.dir.path().join(job.to_string()));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ids::EdgeId;

    #[test]
    fn a_write_that_finishes_after_its_job_ended_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let tier = FlashTier::open(dir.path(), 1 << 20).unwrap();
        let key = ObjectKey::new(JobId(3), EdgeId(0), 0, 0);
        // The interleaving: a write reserves room, the job ends, the write lands.
        tier.reserve(&key, 4).unwrap();
        let staged = tier.staging_path();
        private::create_file(&staged).unwrap().write_all(b"late").unwrap();
        assert_eq!(tier.remove_job(JobId(3)), 4);
        let placed = tier.place(&key, &staged);
        tier.settle(&key, placed).unwrap();
        assert!(!tier.object_path(&key).exists(), "a file of an ended job was left on flash");
        assert_eq!(tier.used(), 0);
    }

    #[test]
    fn a_staged_file_its_producer_shrinks_after_commit_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let tier = FlashTier::open(dir.path(), 64 << 20).unwrap();
        let key = ObjectKey::new(JobId(4), EdgeId(0), 0, 0);
        let data: Vec<u8> = (0..(6 << 20)).map(|i: u32| (i % 253) as u8).collect();
        let staged = tier.staging_path();
        // The producer keeps its handle on the file it wrote.
        let mut producer = private::create_file(&staged).unwrap();
        producer.write_all(&data).unwrap();
        tier.adopt(&key, &staged, data.len() as u64).unwrap();
        let object = tier.open_object(&key).unwrap();
        assert_eq!(object.len(), data.len() as u64);
        assert_eq!(&object.read_at(4 << 20, 5).unwrap()[..], &data[(4 << 20)..(4 << 20) + 5]);
        assert!(tier.read(&key).unwrap() == data);

        // Had the node mapped the file, touching the lost pages would raise SIGBUS here.
        producer.set_len(1 << 20).unwrap();
        let err = tier.read(&key).unwrap_err().to_string();
        assert!(err.contains("fewer than the 6291456 committed"), "{err}");
        let err = object.read_at(2 << 20, 1024).unwrap_err().to_string();
        assert!(err.contains("changed after commit"), "{err}");
        assert_eq!(&object.read_at(0, 3).unwrap()[..], &data[..3]);
    }

    #[test]
    fn opening_never_touches_what_the_directory_already_holds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious.txt"), b"keep me").unwrap();
        let tier = FlashTier::open(dir.path(), 1 << 20).unwrap();
        let key = ObjectKey::new(JobId(1), EdgeId(0), 0, 0);
        tier.insert(&key, b"object").unwrap();
        let own = tier.dir().to_path_buf();
        assert!(own.starts_with(dir.path()) && own != dir.path());
        drop(tier);
        assert!(!own.exists(), "the tier's own directory stays after it is dropped");
        assert_eq!(std::fs::read(dir.path().join("precious.txt")).unwrap(), b"keep me");
    }
}
