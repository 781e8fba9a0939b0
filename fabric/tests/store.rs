//! The node's store: spilling, leases and capacity, checked against what the tiers hold.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use baton_fabric::lease::ManualClock;
use baton_fabric::path::object_store::ObjectStorePath;
use baton_fabric::store::{StoreConfig, TieredStore};
use baton_fabric::{DataPath, EdgeId, Error, JobId, KeyPrefix, ObjectKey, Tier};
use bytes::Bytes;
use object_store::local::LocalFileSystem;

const MIB: u64 = 1 << 20;

fn config(dir: &tempfile::TempDir, memory: u64, flash: u64) -> StoreConfig {
    StoreConfig {
        memory_bytes: memory,
        flash_dir: dir.path().join("flash"),
        flash_bytes: flash,
        shm_dir: dir.path().join("shm"),
    }
}

/// Distinct, reproducible contents for object `n`.
fn contents(n: u32, len: usize) -> Bytes {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(n);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
        }
    }
    out
}

#[test]
fn writing_512_mib_through_64_mib_of_memory_reads_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("shm")).unwrap();
    let store = TieredStore::open(&config(&dir, 64 * MIB, 1 << 30)).unwrap();
    let job = JobId(1);
    store.open_job(job, Duration::from_secs(600)).unwrap();
    let (objects, size) = (64u32, 8 * MIB as usize);
    for n in 0..objects {
        store.insert(&ObjectKey::new(job, EdgeId(0), n, 0), contents(n, size)).unwrap();
        assert!(store.memory().used() <= 64 * MIB, "memory over budget after object {n}");
    }
    assert_eq!(store.memory().used() + store.flash().used(), u64::from(objects) * size as u64);
    assert!(store.flash().used() >= 448 * MIB, "at least 448 MiB must have spilled");
    for n in 0..objects {
        let back = store.read(&ObjectKey::new(job, EdgeId(0), n, 0)).unwrap();
        assert!(back == contents(n, size), "object {n} differs after the round trip");
    }
    // Reading spilled objects did not pull them back over the budget.
    assert!(store.memory().used() <= 64 * MIB);
}

#[test]
fn an_object_larger_than_memory_goes_to_flash() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("shm")).unwrap();
    let store = TieredStore::open(&config(&dir, MIB, 64 * MIB)).unwrap();
    store.open_job(JobId(1), Duration::from_secs(60)).unwrap();
    let key = ObjectKey::new(JobId(1), EdgeId(0), 0, 0);
    store.insert(&key, contents(0, 3 * MIB as usize)).unwrap();
    assert_eq!(store.memory().used(), 0);
    assert_eq!(store.locate(&key).unwrap().tier, Tier::Flash);
    assert!(store.read(&key).unwrap() == contents(0, 3 * MIB as usize));
}

#[test]
fn a_full_store_says_so_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("shm")).unwrap();
    let store = TieredStore::open(&config(&dir, MIB, 2 * MIB)).unwrap();
    let job = JobId(1);
    store.open_job(job, Duration::from_secs(60)).unwrap();
    let fits: Vec<_> = (0..3).map(|n| ObjectKey::new(job, EdgeId(0), n, 0)).collect();
    for (n, key) in fits.iter().enumerate() {
        store.insert(key, contents(n as u32, MIB as usize)).unwrap();
    }
    let err = store.insert(&ObjectKey::new(job, EdgeId(0), 9, 0), contents(9, MIB as usize)).unwrap_err();
    assert!(matches!(err, Error::NoCapacity { tier: Tier::Flash, .. }), "{err}");
    assert!(err.to_string().contains("flash tier full"), "{err}");
    for (n, key) in fits.iter().enumerate() {
        assert!(store.read(key).unwrap() == contents(n as u32, MIB as usize), "object {n} lost");
    }
}

#[tokio::test]
async fn ending_a_job_or_lapsing_its_lease_leaves_nothing_in_any_tier() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("shm")).unwrap();
    let objects_dir = dir.path().join("objects");
    std::fs::create_dir_all(&objects_dir).unwrap();
    let object_store =
        Arc::new(ObjectStorePath::new(Arc::new(LocalFileSystem::new_with_prefix(&objects_dir).unwrap()), "x".into()));
    let clock = Arc::new(ManualClock::default());
    let store = TieredStore::open_with_clock(&config(&dir, 2 * MIB, 64 * MIB), clock.clone())
        .unwrap()
        .purge_also(object_store.clone());
    let (ended, lapsed, survivor) = (JobId(1), JobId(2), JobId(3));
    for job in [ended, lapsed, survivor] {
        store.open_job(job, Duration::from_secs(10)).unwrap();
        for n in 0..4 {
            // Two objects per job stay in memory (one in shared memory), two spill to flash,
            // one more goes to the object store.
            let key = ObjectKey::new(job, EdgeId(0), n, 0);
            store.insert(&key, contents(n, MIB as usize / 2)).unwrap();
        }
        store.locate(&ObjectKey::new(job, EdgeId(0), 3, 0)).unwrap();
        object_store.put(&ObjectKey::new(job, EdgeId(1), 0, 0), contents(7, 1000)).await.unwrap();
    }
    assert!(store.flash().used() > 0 && store.memory().used() > 0, "the test must cover both tiers");

    store.end_job(ended).await.unwrap();
    clock.advance(Duration::from_secs(8));
    store.renew_job(survivor).unwrap();
    clock.advance(Duration::from_secs(3));
    assert_eq!(store.reap().await.unwrap(), vec![lapsed]);

    for job in [ended, lapsed] {
        assert!(store.memory().list(&KeyPrefix::job(job)).is_empty(), "{job} left objects in memory");
        assert!(store.flash().list(&KeyPrefix::job(job)).is_empty(), "{job} left objects on flash");
        assert!(!store.flash().dir().join(job.to_string()).exists(), "{job} left its flash directory");
        assert!(
            object_store.list(&KeyPrefix::job(job)).await.unwrap().is_empty(),
            "{job} left objects in the object store"
        );
    }
    let err = store.read(&ObjectKey::new(lapsed, EdgeId(0), 0, 0)).unwrap_err();
    assert!(matches!(err, Error::LeaseExpired { job } if job == lapsed), "{err}");
    let err = store.read(&ObjectKey::new(ended, EdgeId(0), 0, 0)).unwrap_err();
    assert!(matches!(err, Error::UnknownJob { job } if job == ended), "{err}");

    // Only the survivor's files remain on flash and in shared memory.
    assert_eq!(store.list_objects(&KeyPrefix::job(survivor)).unwrap().len(), 4);
    let flash_files = files_under(store.flash().dir());
    assert!(flash_files.iter().all(|p| p.to_string_lossy().contains(&survivor.to_string())), "{flash_files:?}");
    assert_eq!(files_under(store.shm_dir()).len(), 1, "only the survivor's shared segment remains");
    store.end_job(survivor).await.unwrap();
    assert_eq!(store.memory().used() + store.flash().used(), 0);
    assert!(files_under(store.shm_dir()).is_empty());
}

#[test]
fn objects_of_an_unopened_job_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("shm")).unwrap();
    let store = TieredStore::open(&config(&dir, MIB, MIB)).unwrap();
    let err = store.insert(&ObjectKey::new(JobId(5), EdgeId(0), 0, 0), Bytes::from_static(b"x")).unwrap_err();
    assert!(matches!(err, Error::UnknownJob { job: JobId(5) }), "{err}");
}

/// A flash directory on a file system that fills before the budget does: the disk's own
/// "no space" is reported as a full flash tier, and nothing half-written stays readable.
/// Needs root to mount a small tmpfs; elsewhere it says that it skipped.
#[test]
fn a_disk_that_fills_up_is_a_full_flash_tier() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED a_disk_that_fills_up_is_a_full_flash_tier: cannot mount a tmpfs (needs root)");
        return;
    }
    let outcome = std::panic::catch_unwind(|| {
        let flash = baton_fabric::tier::FlashTier::open(&mnt, 1 << 30).unwrap();
        let key = ObjectKey::new(JobId(1), EdgeId(0), 0, 0);
        let err = flash.insert(&key, &contents(0, 2 * MIB as usize)).unwrap_err();
        assert!(matches!(err, Error::NoCapacity { tier: Tier::Flash, needed, .. } if needed == 2 * MIB), "{err}");
        assert!(matches!(flash.read(&key), Err(Error::NotFound { .. })));
        assert_eq!(flash.used(), 0);
        // The tier still works for what fits.
        flash.insert(&key, &contents(1, 1000)).unwrap();
        assert!(flash.read(&key).unwrap() == contents(1, 1000));
    });
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
