//! The node's store: a memory tier over a flash tier, owned by jobs with leases.
//!
//! Objects go to memory while it has room; when it does not, the least recently used objects
//! spill to flash, and an object larger than the whole memory budget goes straight to flash.
//! Reads work the same wherever an object sits. Every object belongs to an open job: when the
//! job ends or its lease lapses, its objects are deleted from memory, flash and any slower tier
//! registered with [`TieredStore::purge_also`].
//!
//! For the VM-local path the store also hands out files: a producer on the same host writes an
//! object into a file the store names ([`TieredStore::stage`]) and commits it
//! ([`TieredStore::commit`]); a consumer asks where an object sits ([`TieredStore::locate`]) and
//! maps that file read-only.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::blocking::off_async;
use crate::error::{Error, Result, Tier};
use crate::ids::{JobId, KeyPrefix, ObjectKey};
use crate::lease::{Clock, Lease, LeaseTable, SystemClock};
use crate::path::{DataPath, ObjectMeta};
use crate::private::{self, OwnedDir};
use crate::tier::flash::FlashObject;
use crate::tier::memory::Resident;
use crate::tier::{FlashTier, MemoryTier};

/// Sizes and places of a store's tiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Bytes the memory tier may hold.
    pub memory_bytes: u64,
    /// Directory for the flash tier, which keeps its files in a directory of its own there.
    pub flash_dir: PathBuf,
    /// Bytes the flash tier may hold.
    pub flash_bytes: u64,
    /// Directory on a memory file system (tmpfs) for shared-memory segments; the store makes a
    /// private directory of its own there ([`OwnedDir`]) and removes it when dropped.
    pub shm_dir: PathBuf,
}

impl StoreConfig {
    /// Tiers of the given sizes inside `dir`: flash in `dir/flash`, shared-memory segments in
    /// `dir/shm`. Fit for tests and benchmarks; a node puts shared memory on a tmpfs.
    pub fn under(dir: &std::path::Path, memory_bytes: u64, flash_bytes: u64) -> Self {
        Self { memory_bytes, flash_dir: dir.join("flash"), flash_bytes, shm_dir: dir.join("shm") }
    }
}

/// Where an object can be mapped from by another process on the host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Location {
    /// The file holding the object's bytes.
    pub path: PathBuf,
    /// The object's size.
    pub len: u64,
    /// The tier the file belongs to.
    pub tier: Tier,
}

/// An object open to read piece by piece ([`TieredStore::open_object`]).
#[derive(Debug)]
pub enum Opened {
    /// Held by the memory tier.
    Memory(Resident),
    /// A file on flash.
    Flash(FlashObject),
}

impl Opened {
    /// Its size.
    pub fn len(&self) -> u64 {
        match self {
            Opened::Memory(resident) => resident.len(),
            Opened::Flash(file) => file.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes from `offset`, which the caller keeps within the object.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        match self {
            Opened::Memory(resident) => resident.read_at(offset, len),
            Opened::Flash(file) => file.read_at(offset, len),
        }
    }
}

/// An object as [`TieredStore::fetch`] hands it out.
#[derive(Clone, Debug)]
pub enum Fetched {
    /// A small object's bytes.
    Inline(Bytes),
    /// Where a larger object can be mapped from.
    Mapped(Location),
}

/// A memory tier over a flash tier, with job leases.
#[derive(Debug)]
pub struct TieredStore {
    memory: MemoryTier,
    flash: FlashTier,
    shm: OwnedDir,
    leases: Mutex<LeaseTable>,
    clock: Arc<dyn Clock>,
    /// Serializes admissions so that concurrent writers do not spill more than needed.
    admit: Mutex<()>,
    /// Files handed to producers and not yet committed, with the key each is for.
    staged: Mutex<HashMap<PathBuf, ObjectKey>>,
    next_segment: AtomicU64,
    slower: Vec<Arc<dyn DataPath>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TieredStore {
    /// Opens a store with the system clock.
    pub fn open(config: &StoreConfig) -> Result<Self> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Opens a store whose leases follow `clock`.
    pub fn open_with_clock(config: &StoreConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        let flash = FlashTier::open(&config.flash_dir, config.flash_bytes)?;
        let shm = OwnedDir::create(&config.shm_dir, "shm_dir")?;
        Ok(Self {
            memory: MemoryTier::new(config.memory_bytes),
            flash,
            shm,
            leases: Mutex::default(),
            clock,
            admit: Mutex::new(()),
            staged: Mutex::default(),
            next_segment: AtomicU64::new(0),
            slower: Vec::new(),
        })
    }

    /// Also deletes a job's objects from `tier` (an object store, say) when the job is over.
    pub fn purge_also(mut self, tier: Arc<dyn DataPath>) -> Self {
        self.slower.push(tier);
        self
    }

    /// The memory tier.
    pub fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    /// The flash tier.
    pub fn flash(&self) -> &FlashTier {
        &self.flash
    }

    /// This store's shared-memory directory.
    pub fn shm_dir(&self) -> &Path {
        self.shm.path()
    }

    // ---- jobs ----

    /// Opens `job` with a lease of `ttl` (or renews it with that ttl); see
    /// [`crate::lease::MAX_LEASE`].
    pub fn open_job(&self, job: JobId, ttl: Duration) -> Result<Lease> {
        lock(&self.leases).open(job, ttl, self.clock.now())
    }

    /// Renews `job`'s lease.
    pub fn renew_job(&self, job: JobId) -> Result<Lease> {
        lock(&self.leases).renew(job, self.clock.now())
    }

    /// The open jobs.
    pub fn jobs(&self) -> Vec<(JobId, Lease)> {
        lock(&self.leases).jobs()
    }

    fn check(&self, job: JobId) -> Result<()> {
        lock(&self.leases).check(job, self.clock.now())
    }

    /// Ends `job` and deletes its objects from every tier; returns the bytes freed.
    pub async fn end_job(&self, job: JobId) -> Result<u64> {
        lock(&self.leases).end(job)?;
        self.purge(job).await
    }

    /// Ends every job whose lease has lapsed and deletes its objects; returns those jobs. A job
    /// whose purge fails somewhere (a slower tier out of reach) does not stop the others: every
    /// lapsed job is purged from every tier that answers, and the first failure is returned
    /// after all were tried.
    pub async fn reap(&self) -> Result<Vec<JobId>> {
        let lapsed = lock(&self.leases).take_lapsed(self.clock.now());
        let mut first_error = None;
        for job in &lapsed {
            if let Err(e) = self.purge(*job).await {
                tracing::warn!(%job, "purging a lapsed job failed: {e}");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(lapsed), Err)
    }

    async fn purge(&self, job: JobId) -> Result<u64> {
        // Unlinking a job's files is disk work: keep it off the async threads where we can.
        let mut freed = off_async(|| {
            let freed = self.memory.remove_job(job) + self.flash.remove_job(job);
            lock(&self.staged).retain(|path, key| {
                let keep = key.job != job;
                if !keep {
                    let _ = fs::remove_file(path);
                }
                keep
            });
            freed
        });
        let mut first_error = None;
        for tier in &self.slower {
            match tier.purge_job(job).await {
                Ok(bytes) => freed += bytes,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(freed), Err)
    }

    // ---- objects ----

    /// Bytes the tiers could still take: free memory and free flash.
    pub fn room(&self) -> u64 {
        self.memory.free().saturating_add(self.flash.budget().saturating_sub(self.flash.used()))
    }

    fn ensure_new(&self, key: &ObjectKey) -> Result<()> {
        if self.memory.contains(key) || self.flash.contains(key) {
            return Err(Error::AlreadyExists { key: *key });
        }
        Ok(())
    }

    /// Spills the coldest objects to flash until memory has `needed` bytes free. Returns false
    /// when that cannot be done (flash is full too).
    fn make_room(&self, needed: u64) -> Result<bool> {
        if needed > self.memory.budget() {
            return Ok(false);
        }
        while self.memory.free() < needed {
            let Some((key, victim)) = self.memory.coldest() else { return Ok(false) };
            if !self.spill(key, &victim)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Moves one object from memory to flash; false when flash has no room for it.
    fn spill(&self, key: ObjectKey, victim: &Resident) -> Result<bool> {
        // A shared file is read, not mapped (see `Resident`). One its producer changed after
        // commit is dropped: it holds nothing a reader should get, and must not stop the node
        // making room for everyone else.
        let bytes = match victim.bytes() {
            Ok(bytes) => bytes,
            Err(e @ Error::Protocol { .. }) => {
                tracing::warn!(%key, "dropped: {e}");
                self.memory.remove(&key);
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        match self.flash.insert(&key, &bytes) {
            Ok(()) => {}
            Err(Error::NoCapacity { .. } | Error::NoSpace { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        if self.memory.remove(&key).is_none() {
            // Deleted, or its job ended, while it was being copied: it stays deleted.
            self.flash.remove(&key);
            return Ok(true);
        }
        tracing::debug!(%key, bytes = victim.len(), "spilled to flash");
        Ok(true)
    }

    /// Stores a new object from bytes in this process.
    pub fn insert(&self, key: &ObjectKey, bytes: Bytes) -> Result<()> {
        self.check(key.job)?;
        let _admit = lock(&self.admit);
        self.ensure_new(key)?;
        if self.make_room(bytes.len() as u64)? {
            self.memory.insert(*key, Resident::heap(bytes))
        } else {
            self.flash.insert(key, &bytes)
        }
    }

    /// The object at `key` if the memory tier holds it: no I/O, so an async task may call it.
    pub fn read_resident(&self, key: &ObjectKey) -> Result<Option<Bytes>> {
        self.resident(key)?.map(|r| r.bytes()).transpose()
    }

    /// The memory tier's hold on the object at `key`, if it has it, to read piece by piece
    /// (the object stays readable through it even if it is deleted meanwhile).
    pub fn resident(&self, key: &ObjectKey) -> Result<Option<Resident>> {
        self.check(key.job)?;
        Ok(self.memory.get(key))
    }

    /// The object at `key` open to read piece by piece, from whichever tier holds it (it stays
    /// readable through this even if it is deleted meanwhile). Opening a file on flash is I/O.
    pub fn open_object(&self, key: &ObjectKey) -> Result<Opened> {
        if let Some(resident) = self.resident(key)? {
            return Ok(Opened::Memory(resident));
        }
        match self.flash.open_object(key) {
            // Between the two looks the object may have been deleted, or have moved.
            Err(Error::NotFound { .. }) => {
                self.memory.get(key).map(Opened::Memory).ok_or(Error::NotFound { key: *key })
            }
            other => other.map(Opened::Flash),
        }
    }

    /// The object at `key`, from whichever tier holds it.
    pub fn read(&self, key: &ObjectKey) -> Result<Bytes> {
        let object = self.open_object(key)?;
        object.read_at(0, object.len() as usize)
    }

    /// Deletes the object at `key` from every tier it is in.
    pub fn remove(&self, key: &ObjectKey) -> Result<()> {
        self.check(key.job)?;
        self.memory.remove(key);
        self.flash.remove(key);
        Ok(())
    }

    /// The objects under `prefix` in every tier, sorted by key.
    pub fn list_objects(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>> {
        self.check(prefix.job)?;
        let mut all = self.memory.list(prefix);
        all.extend(self.flash.list(prefix));
        all.sort_by_key(|m| m.key);
        all.dedup_by_key(|m| m.key);
        Ok(all)
    }

    // ---- files for the VM-local path ----

    fn segment_path(&self) -> PathBuf {
        let n = self.next_segment.fetch_add(1, Ordering::Relaxed);
        self.shm.path().join(format!("seg-{n}"))
    }

    /// Names a file for a producer on this host to write the object at `key` into, in shared
    /// memory when `size_hint` (or an unknown size) may fit the memory tier, else — or when
    /// the producer asks for `flash` because shared memory was full — on flash.
    pub fn stage(&self, key: &ObjectKey, size_hint: Option<u64>, flash: bool) -> Result<PathBuf> {
        self.check(key.job)?;
        self.ensure_new(key)?;
        let path = match size_hint {
            Some(needed) if flash || needed > self.memory.budget() => {
                let available = self.flash.budget().saturating_sub(self.flash.used());
                if needed > available {
                    return Err(Error::NoCapacity { tier: Tier::Flash, needed, available });
                }
                self.flash.staging_path()
            }
            None if flash => self.flash.staging_path(),
            _ => self.segment_path(),
        };
        lock(&self.staged).insert(path.clone(), *key);
        Ok(path)
    }

    /// Takes the file a producer wrote (named by [`TieredStore::stage`]) as the object at `key`.
    pub fn commit(&self, key: &ObjectKey, path: &Path, len: u64) -> Result<Tier> {
        let staged_for = lock(&self.staged).remove(path);
        if staged_for != Some(*key) {
            if let Some(other) = staged_for {
                lock(&self.staged).insert(path.to_path_buf(), other);
            }
            return Err(Error::Protocol {
                endpoint: "producer".into(),
                reason: format!("{} was not staged for {key}", path.display()),
            });
        }
        let outcome = self.commit_staged(key, path, len);
        if outcome.is_err() {
            let _ = fs::remove_file(path);
        }
        outcome
    }

    fn commit_staged(&self, key: &ObjectKey, path: &Path, len: u64) -> Result<Tier> {
        self.check(key.job)?;
        let actual = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?.len();
        if actual != len {
            return Err(Error::Protocol {
                endpoint: "producer".into(),
                reason: format!("commit of {key} says {len} bytes, the file holds {actual}"),
            });
        }
        let _admit = lock(&self.admit);
        self.ensure_new(key)?;
        if path.starts_with(self.shm.path()) && self.make_room(len)? {
            self.memory.insert(*key, Resident::shared(path, len)?)?;
            return Ok(Tier::Memory);
        }
        self.flash.adopt(key, path, len)?;
        Ok(Tier::Flash)
    }

    /// A small object's bytes (at most `inline_max`), or where to map a larger one from.
    pub fn fetch(&self, key: &ObjectKey, inline_max: u64) -> Result<Fetched> {
        self.check(key.job)?;
        if let Some(resident) = self.memory.get(key) {
            if resident.len() <= inline_max {
                return Ok(Fetched::Inline(resident.bytes()?));
            }
        } else if let Some((_, len)) = self.flash.locate(key)
            && len <= inline_max
        {
            return self.flash.read(key).map(Fetched::Inline);
        }
        self.locate(key).map(Fetched::Mapped)
    }

    /// Where another process on this host can map the object at `key` from. An object that
    /// sits on this process's heap is first moved into shared memory.
    pub fn locate(&self, key: &ObjectKey) -> Result<Location> {
        self.check(key.job)?;
        if let Some(resident) = self.memory.get(key) {
            let len = resident.len();
            if let Some(path) = resident.shm() {
                return Ok(Location { path: path.to_path_buf(), len, tier: Tier::Memory });
            }
            let path = self.segment_path();
            let written =
                private::create_file(&path)?.write_all(&resident.bytes()?).map_err(|e| Error::io("write", &path, e));
            match written {
                Ok(()) => {
                    if self.memory.replace(key, Resident::shared(&path, len)?) {
                        return Ok(Location { path, len, tier: Tier::Memory });
                    }
                }
                // Shared memory is full: readers on the host map it from flash instead.
                Err(Error::NoSpace { .. }) => {
                    let _ = fs::remove_file(&path);
                    let _admit = lock(&self.admit);
                    if self.memory.contains(key) && !self.spill(*key, &resident)? {
                        return Err(Error::NoCapacity { tier: Tier::Flash, needed: len, available: 0 });
                    }
                }
                Err(e) => {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
            }
        }
        let (path, len) = self.flash.locate(key).ok_or(Error::NotFound { key: *key })?;
        Ok(Location { path, len, tier: Tier::Flash })
    }
}

#[async_trait]
impl DataPath for TieredStore {
    async fn put(&self, key: &ObjectKey, payload: Bytes) -> Result<()> {
        self.insert(key, payload)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.read(key)
    }

    async fn get_range(&self, key: &ObjectKey, range: std::ops::Range<u64>) -> Result<Bytes> {
        crate::path::slice_range(key, &DataPath::get(self, key).await?, range)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.remove(key)
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>> {
        self.list_objects(prefix)
    }

    async fn purge_job(&self, job: JobId) -> Result<u64> {
        self.purge(job).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ids::EdgeId;

    #[test]
    fn an_object_deleted_while_it_spills_stays_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = TieredStore::open(&StoreConfig::under(dir.path(), 1 << 20, 1 << 20)).unwrap();
        let job = JobId(5);
        store.open_job(job, Duration::from_secs(60)).unwrap();
        let key = ObjectKey::new(job, EdgeId(0), 0, 0);
        store.insert(&key, Bytes::from(vec![7u8; 1000])).unwrap();
        // The interleaving: a spill picks its victim, a client deletes it, the spill goes on.
        let (victim_key, victim) = store.memory.coldest().unwrap();
        store.remove(&key).unwrap();
        assert!(store.spill(victim_key, &victim).unwrap());
        assert!(!store.flash.contains(&key), "the deleted object came back on flash");
        assert_eq!(store.flash.used(), 0);
        assert!(matches!(store.read(&key), Err(Error::NotFound { .. })));
    }
}
