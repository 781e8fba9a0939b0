//! The conformance suite against every `DataPath` this crate has.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use baton_fabric::JobId;
use baton_fabric::conformance::run_all;
use baton_fabric::node::Node;
use baton_fabric::path::object_store::ObjectStorePath;
use baton_fabric::path::vm_local::VmLocalPath;
use baton_fabric::store::{StoreConfig, TieredStore};
use baton_fabric::tier::{FlashTier, MemoryTier};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

const JOB: JobId = JobId(0xc0ffee);

fn store_config(dir: &tempfile::TempDir, memory: u64) -> StoreConfig {
    StoreConfig {
        memory_bytes: memory,
        flash_dir: dir.path().join("flash"),
        flash_bytes: 1 << 30,
        shm_dir: std::env::temp_dir(),
    }
}

#[tokio::test]
async fn memory_tier() {
    run_all(&MemoryTier::new(64 << 20), JOB).await;
}

#[tokio::test]
async fn flash_tier() {
    let dir = tempfile::tempdir().unwrap();
    run_all(&FlashTier::open(dir.path(), 64 << 20).unwrap(), JOB).await;
}

#[tokio::test]
async fn tiered_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = TieredStore::open(&store_config(&dir, 64 << 20)).unwrap();
    store.open_job(JOB, Duration::from_secs(60)).unwrap();
    run_all(&store, JOB).await;
}

#[tokio::test]
async fn tiered_store_that_spills_everything() {
    // A memory budget smaller than most objects: the suite runs against flash behind memory.
    let dir = tempfile::tempdir().unwrap();
    let store = TieredStore::open(&store_config(&dir, 16)).unwrap();
    store.open_job(JOB, Duration::from_secs(60)).unwrap();
    run_all(&store, JOB).await;
}

#[tokio::test]
async fn vm_local_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TieredStore::open(&store_config(&dir, 64 << 20)).unwrap());
    let socket = dir.path().join("node.sock");
    let _node = Node::serve(store, &socket, Duration::from_secs(1)).await.unwrap();
    let path = VmLocalPath::connect(&socket).await.unwrap();
    path.open_job(JOB, Duration::from_secs(60)).await.unwrap();
    run_all(&path, JOB).await;
}

#[tokio::test]
async fn object_store_file() {
    let dir = tempfile::tempdir().unwrap();
    let fs = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    run_all(&ObjectStorePath::new(Arc::new(fs), "baton".into()), JOB).await;
}

#[tokio::test]
async fn object_store_memory() {
    run_all(&ObjectStorePath::new(Arc::new(InMemory::new()), Default::default()), JOB).await;
}
