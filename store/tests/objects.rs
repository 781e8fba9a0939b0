//! `baton://`: the store as an `object_store::ObjectStore`, against a real etcd and storage
//! nodes on 127.0.0.1 — object_store's own integration test functions, and the fabric's
//! conformance suite through the object-store path over it.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use baton_fabric::JobId;
use baton_fabric::conformance::run_all;
use baton_fabric::path::object_store::ObjectStorePath;
use baton_store::alloc::Hints;
use baton_store::client::StoreClient;
use baton_store::objects::BatonObjectStore;
use baton_store::testing::{TEST_BLOCK, TestStore};
use object_store::integration::*;
use object_store::{ObjectStore, ObjectStoreExt, PutMode};

async fn job_store(store: &TestStore, job: u64) -> BatonObjectStore {
    // Homes of a quarter of the room the tests use: most objects overflow into later groups.
    let hints = Hints { bytes: 2 * TEST_BLOCK, ..Hints::default() };
    let client = StoreClient::open(&store.etcd, &store.tls, JobId(job), hints, Duration::from_secs(10)).await.unwrap();
    BatonObjectStore::new(Arc::new(client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_stores_integration_tests_pass() {
    let store = TestStore::start(&["a", "b", "c"], 16, 16).await.unwrap();
    let baton = job_store(&store, 1).await;
    assert_eq!(baton.to_string(), "baton://job-0000000000000001");
    put_get_delete_list(&baton).await;
    get_opts(&baton).await;
    put_opts(&baton, true).await;
    list_uses_directories_correctly(&baton).await;
    list_with_delimiter(&baton).await;
    rename_and_copy(&baton).await;
    copy_if_not_exists(&baton).await;
    copy_rename_nonexistent_object(&baton).await;
    stream_get(&baton).await;
    list_with_offset_exclusivity(&baton).await;
    multipart_out_of_order(&baton).await;
    multipart_race_condition(&baton, true).await;
    // A put with attributes is refused, not stored without them.
    let mut opts = object_store::PutOptions::from(PutMode::Overwrite);
    opts.attributes.insert(object_store::Attribute::ContentType, "text/plain".into());
    let refused = baton.put_opts(&"a".into(), "x".into(), opts).await.unwrap_err();
    assert!(matches!(refused, object_store::Error::NotImplemented { .. }), "{refused}");
    assert!(baton.head(&"a".into()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fabric_conformance_suite_passes_through_the_object_store_path() {
    let store = TestStore::start(&["a", "b"], 16, 0).await.unwrap();
    let baton = job_store(&store, 7).await;
    let path = ObjectStorePath::new(Arc::new(baton), object_store::path::Path::default());
    run_all(&path, JobId(7)).await;
}

/// A multipart upload stores each chunk as soon as its parts fill it (the client does not hold
/// the object), the object appears only on completion, and an abort leaves nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_streams_its_chunks_and_appears_only_when_complete() {
    let store = TestStore::start(&["a", "b"], 16, 0).await.unwrap();
    let baton = job_store(&store, 9).await;
    let stored = |baton: &BatonObjectStore| {
        let client = baton.client().clone();
        async move { client.usage().await.unwrap().values().sum::<u64>() }
    };
    let chunk = TEST_BLOCK / 4;
    let part = |b: u8| bytes::Bytes::from(vec![b; (chunk + chunk / 4) as usize]);
    let path: object_store::path::Path = "streamed".into();

    let mut upload = baton.put_multipart(&path).await.unwrap();
    for b in 1..=3 {
        upload.put_part(part(b).into()).await.unwrap();
    }
    // 3¾ chunks written: the first is kept for the end, chunks 1 and 2 are whole and stored.
    assert!(stored(&baton).await >= 2 * chunk, "the parts' chunks are not in the store yet");
    assert!(matches!(baton.head(&path).await, Err(object_store::Error::NotFound { .. })), "visible before completion");
    upload.complete().await.unwrap();
    let back = baton.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(back, [part(1), part(2), part(3)].concat());
    let with_object = stored(&baton).await;
    assert!(with_object >= back.len() as u64, "{with_object}");

    let mut aborted = baton.put_multipart(&"aborted".into()).await.unwrap();
    for b in 4..=6 {
        aborted.put_part(part(b).into()).await.unwrap();
    }
    assert!(stored(&baton).await >= with_object + 2 * chunk);
    aborted.abort().await.unwrap();
    assert_eq!(stored(&baton).await, with_object, "an aborted upload left chunks behind");
    assert!(baton.put_multipart(&"aborted".into()).await.is_ok());
    assert!(matches!(baton.head(&"aborted".into()).await, Err(object_store::Error::NotFound { .. })));
}
