//! The memory tier: objects held as [`Bytes`] up to a byte budget, least recently used first out.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result, Tier};
use crate::ids::{JobId, KeyPrefix, ObjectKey};
use crate::path::{DataPath, ObjectMeta};

/// One object in memory: bytes on this process's heap, or a file in shared memory that
/// other processes on the host map.
///
/// A shared file is never mapped by the node: its producer (a process of the node's user)
/// could still truncate it. The node reads such an object with `pread` (see
/// [`super::read_piece`]), so a file changed after commit is an error for that object alone.
#[derive(Clone, Debug)]
pub struct Resident {
    held: Held,
}

#[derive(Clone, Debug)]
enum Held {
    Heap(Bytes),
    Shared(Arc<SharedFile>),
}

/// A committed object's file in shared memory, open for reading; removed when the last holder
/// lets go.
#[derive(Debug)]
struct SharedFile {
    path: PathBuf,
    file: File,
    len: u64,
}

impl Drop for SharedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Resident {
    /// An object on the heap, visible only in this process.
    pub fn heap(bytes: Bytes) -> Self {
        Self { held: Held::Heap(bytes) }
    }

    /// The object committed as the `len` bytes of the file at `path` (which it now owns: the
    /// file goes when the object does). Opened without following a symlink.
    pub fn shared(path: &Path, len: u64) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        Ok(Self { held: Held::Shared(Arc::new(SharedFile { path: path.to_path_buf(), file, len })) })
    }

    /// Its size.
    pub fn len(&self) -> u64 {
        match &self.held {
            Held::Heap(bytes) => bytes.len() as u64,
            Held::Shared(shared) => shared.len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shared-memory file holding it, if any.
    pub fn shm(&self) -> Option<&Path> {
        match &self.held {
            Held::Heap(_) => None,
            Held::Shared(shared) => Some(&shared.path),
        }
    }

    /// Its bytes: the heap's without a copy, a shared file's read into a buffer of the
    /// process's pool. A shared file shorter than the object was committed is an error
    /// naming the file.
    pub fn bytes(&self) -> Result<Bytes> {
        self.read_at(0, self.len() as usize)
    }

    /// `len` of its bytes from `offset` (which the caller keeps within the object): the heap's
    /// without a copy, a shared file's read into a pooled buffer, so that serving an object
    /// piece by piece reuses warm memory instead of faulting in fresh pages for each piece.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let shared = match &self.held {
            Held::Heap(bytes) => {
                let start = (offset as usize).min(bytes.len());
                return Ok(bytes.slice(start..(start + len).min(bytes.len())));
            }
            Held::Shared(shared) => shared,
        };
        super::read_piece(&shared.file, &shared.path, offset, len, shared.len)
    }
}

#[derive(Debug)]
struct Entry {
    resident: Resident,
    tick: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<ObjectKey, Entry>,
    by_use: BTreeMap<u64, ObjectKey>,
    used: u64,
    tick: u64,
}

impl Inner {
    fn touch(&mut self, key: &ObjectKey) -> Option<&Entry> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(key)?;
        self.by_use.remove(&entry.tick);
        entry.tick = tick;
        self.by_use.insert(tick, *key);
        Some(entry)
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Resident> {
        let entry = self.entries.remove(key)?;
        self.by_use.remove(&entry.tick);
        self.used -= entry.resident.len();
        Some(entry.resident)
    }
}

/// Objects in memory up to `budget` bytes.
#[derive(Debug)]
pub struct MemoryTier {
    budget: u64,
    inner: Mutex<Inner>,
}

impl MemoryTier {
    /// An empty tier that holds at most `budget` bytes.
    pub fn new(budget: u64) -> Self {
        Self { budget, inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way that
        // matters more than losing the tier, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Bytes that can still be admitted.
    pub fn free(&self) -> u64 {
        self.budget - self.lock().used
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.lock().entries.contains_key(key)
    }

    /// Admits an object if it is new and fits.
    pub fn insert(&self, key: ObjectKey, resident: Resident) -> Result<()> {
        let mut inner = self.lock();
        if inner.entries.contains_key(&key) {
            return Err(Error::AlreadyExists { key });
        }
        let needed = resident.len();
        let available = self.budget - inner.used;
        if needed > available {
            return Err(Error::NoCapacity { tier: Tier::Memory, needed, available });
        }
        inner.used += needed;
        inner.tick += 1;
        let tick = inner.tick;
        inner.by_use.insert(tick, key);
        inner.entries.insert(key, Entry { resident, tick });
        Ok(())
    }

    /// Replaces the residence of an object already held with the same bytes in another place
    /// (a heap object moved into shared memory).
    pub fn replace(&self, key: &ObjectKey, resident: Resident) -> bool {
        let mut inner = self.lock();
        match inner.entries.get_mut(key) {
            Some(entry) if entry.resident.len() == resident.len() => {
                entry.resident = resident;
                true
            }
            _ => false,
        }
    }

    /// The object at `key`, marking it recently used.
    pub fn get(&self, key: &ObjectKey) -> Option<Resident> {
        self.lock().touch(key).map(|e| e.resident.clone())
    }

    /// Removes and returns the object at `key`.
    pub fn remove(&self, key: &ObjectKey) -> Option<Resident> {
        self.lock().remove(key)
    }

    /// The least recently used object, without removing it.
    pub fn coldest(&self) -> Option<(ObjectKey, Resident)> {
        let inner = self.lock();
        let key = *inner.by_use.values().next()?;
        Some((key, inner.entries[&key].resident.clone()))
    }

    /// The objects under `prefix`, sorted by key.
    pub fn list(&self, prefix: &KeyPrefix) -> Vec<ObjectMeta> {
        let inner = self.lock();
        let mut out: Vec<_> = inner
            .entries
            .iter()
            .filter(|(k, _)| k.matches(prefix))
            .map(|(k, e)| ObjectMeta { key: *k, size: e.resident.len() })
            .collect();
        out.sort_by_key(|m| m.key);
        out
    }

    /// Removes every object of `job`; returns the bytes freed.
    pub fn remove_job(&self, job: JobId) -> u64 {
        let mut inner = self.lock();
        let keys: Vec<_> = inner.entries.keys().filter(|k| k.job == job).copied().collect();
        keys.iter().filter_map(|k| inner.remove(k)).map(|r| r.len()).sum()
    }
}

#[async_trait]
impl DataPath for MemoryTier {
    async fn put(&self, key: &ObjectKey, payload: Bytes) -> Result<()> {
        self.insert(*key, Resident::heap(payload))
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        MemoryTier::get(self, key).ok_or(Error::NotFound { key: *key })?.bytes()
    }

    async fn get_range(&self, key: &ObjectKey, range: std::ops::Range<u64>) -> Result<Bytes> {
        crate::path::slice_range(key, &DataPath::get(self, key).await?, range)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>> {
        Ok(MemoryTier::list(self, prefix))
    }

    async fn purge_job(&self, job: JobId) -> Result<u64> {
        Ok(self.remove_job(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::EdgeId;

    fn key(n: u32) -> ObjectKey {
        ObjectKey::new(JobId(1), EdgeId(0), n, 0)
    }

    #[test]
    fn budget_is_enforced_and_freed() {
        let tier = MemoryTier::new(10);
        tier.insert(key(0), Resident::heap(Bytes::from(vec![0; 6]))).unwrap();
        let err = tier.insert(key(1), Resident::heap(Bytes::from(vec![0; 6]))).unwrap_err();
        assert!(matches!(err, Error::NoCapacity { needed: 6, available: 4, .. }), "{err}");
        tier.remove(&key(0));
        assert_eq!(tier.free(), 10);
        tier.insert(key(1), Resident::heap(Bytes::from(vec![0; 6]))).unwrap();
    }

    #[test]
    fn coldest_follows_use() {
        let tier = MemoryTier::new(100);
        for n in 0..3 {
            tier.insert(key(n), Resident::heap(Bytes::from_static(b"x"))).unwrap();
        }
        assert_eq!(tier.coldest().unwrap().0, key(0));
        tier.get(&key(0));
        assert_eq!(tier.coldest().unwrap().0, key(1));
    }

    #[test]
    fn a_shared_object_reads_piece_by_piece_and_a_truncated_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        let data: Vec<u8> = (0..(9 << 20)).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let resident = Resident::shared(&path, data.len() as u64).unwrap();
        let mut read = Vec::new();
        let mut offset = 0;
        while offset < data.len() {
            let n = (4 << 20).min(data.len() - offset);
            read.extend_from_slice(&resident.read_at(offset as u64, n).unwrap());
            offset += n;
        }
        assert!(read == data, "pieces put together are the object");
        assert_eq!(&resident.read_at(5, 3).unwrap()[..], &data[5..8]);
        assert!(resident.bytes().unwrap() == data);

        // A producer that shrinks its file after commit breaks only that object's reads.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(1 << 20).unwrap();
        let err = resident.read_at(0, 2 << 20).unwrap_err().to_string();
        assert!(err.contains("fewer than the 9437184 committed") && err.contains("object"), "{err}");
        assert_eq!(&resident.read_at(10, 2).unwrap()[..], &data[10..12]);
    }
}
