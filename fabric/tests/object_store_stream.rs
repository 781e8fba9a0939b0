//! The object-store path streams a large writer's object to the store in parts, through a
//! staging object: the object appears whole or not at all, the first writer of a key wins, a
//! failed writer leaves nothing, and a job's purge takes staging objects a killed writer left.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;

use baton_fabric::path::object_store::{ObjectStorePath, PART, STREAM_ABOVE};
use baton_fabric::path::{DataPath, ObjectWriter};
use baton_fabric::{EdgeId, Error, JobId, ObjectKey};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

const JOB: JobId = JobId(0x5eed);

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// A writer of `data` in odd-sized pieces.
fn writer(data: Arc<Vec<u8>>) -> ObjectWriter {
    Arc::new(move |sink: &mut dyn std::io::Write| {
        for piece in data.chunks(3_000_001) {
            sink.write_all(piece).map_err(|e| Error::io("write", "test", e))?;
        }
        Ok(data.len() as u64)
    })
}

async fn everything(store: &dyn ObjectStore) -> Vec<String> {
    let all: Vec<_> = store.list(None).try_collect().await.unwrap();
    let mut names: Vec<String> = all.into_iter().map(|m| m.location.to_string()).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_streams_in_parts_and_appears_whole() {
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<Arc<dyn ObjectStore>> =
        vec![Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap()), Arc::new(InMemory::new())];
    for store in stores {
        let path = ObjectStorePath::new(store.clone(), "baton".into());
        let key = ObjectKey::new(JOB, EdgeId(1), 0, 0);
        // More than two parts; a hint past the threshold takes the streamed way.
        let data = Arc::new(bytes(1, 2 * PART + 12_345));
        let len = path.put_with(&key, STREAM_ABOVE + 1, writer(data.clone())).await.unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(&path.get(&key).await.unwrap()[..], &data[..], "{store}");
        // Nothing but the object is left: the staging object went.
        assert_eq!(everything(store.as_ref()).await, vec![format!("baton/{key}")], "{store}");

        // A second writer of the key loses and leaves the first object as it was.
        let other = Arc::new(bytes(2, PART + 1));
        let lost = path.put_with(&key, STREAM_ABOVE + 1, writer(other)).await.unwrap_err();
        assert!(matches!(lost, Error::AlreadyExists { .. }), "{store}: {lost}");
        assert_eq!(&path.get(&key).await.unwrap()[..], &data[..], "{store}");

        // A writer that fails halfway leaves no object and no staging object.
        let failing: ObjectWriter = Arc::new(|sink: &mut dyn std::io::Write| {
            sink.write_all(&vec![7u8; PART + 10]).map_err(|e| Error::io("write", "test", e))?;
            Err(Error::io("write", "test", std::io::Error::other("the writer broke")))
        });
        let key2 = ObjectKey::new(JOB, EdgeId(1), 1, 0);
        let err = path.put_with(&key2, STREAM_ABOVE + 1, failing).await.unwrap_err();
        assert!(err.to_string().contains("the writer broke"), "{err}");
        assert!(matches!(path.get(&key2).await, Err(Error::NotFound { .. })));
        assert_eq!(everything(store.as_ref()).await.len(), 1, "{store}");

        // A staging object a killed writer left goes with the job.
        let stray = object_store::path::Path::from(format!("baton/{key2}.staging-dead"));
        store.put(&stray, vec![1u8; 10].into()).await.unwrap();
        let freed = path.purge_job(JOB).await.unwrap();
        assert_eq!(freed, data.len() as u64 + 10);
        assert!(everything(store.as_ref()).await.is_empty(), "{store}");
    }
}
