//! The conformance suite every [`DataPath`] runs: plain async functions over `&dyn DataPath`.
//!
//! Each implementation's tests call [`run_all`] with a job that is open on it (paths that
//! enforce leases need one); the suite uses that job only and ends by purging it.

use bytes::Bytes;

use crate::error::Error;
use crate::frame::{decode_records, encode_records};
use crate::ids::{EdgeId, JobId, KeyPrefix, ObjectKey};
use crate::path::DataPath;

/// Runs every check, in an order that leaves `job` purged.
pub async fn run_all(path: &dyn DataPath, job: JobId) {
    round_trip(path, job).await;
    missing_is_not_found(path, job).await;
    first_write_wins(path, job).await;
    delete_is_idempotent(path, job).await;
    list_is_sorted_and_filtered(path, job).await;
    framed_objects_survive(path, job).await;
    byte_ranges(path, job).await;
    purge_removes_everything(path, job).await;
}

fn key(job: JobId, edge: u32, producer: u32, consumer: u32) -> ObjectKey {
    ObjectKey::new(job, EdgeId(edge), producer, consumer)
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<_>>().into()
}

/// Objects of many sizes come back byte for byte.
pub async fn round_trip(path: &dyn DataPath, job: JobId) {
    for (i, len) in [0usize, 1, 7, 4096, 1 << 20].into_iter().enumerate() {
        let k = key(job, 1, i as u32, 0);
        let data = pattern(len, i as u8);
        path.put(&k, data.clone()).await.unwrap_or_else(|e| panic!("{path:?}: put {k}: {e}"));
        let back = path.get(&k).await.unwrap_or_else(|e| panic!("{path:?}: get {k}: {e}"));
        assert_eq!(back.len(), len, "{path:?}: length of {k}");
        assert!(back == data, "{path:?}: bytes of {k} differ");
    }
}

/// A key never written is `NotFound`.
pub async fn missing_is_not_found(path: &dyn DataPath, job: JobId) {
    let k = key(job, 2, 0, 0);
    match path.get(&k).await {
        Err(Error::NotFound { key }) => assert_eq!(key, k),
        other => panic!("{path:?}: get of a missing key gave {other:?}"),
    }
}

/// Writing a key twice fails and keeps the first object.
pub async fn first_write_wins(path: &dyn DataPath, job: JobId) {
    let k = key(job, 3, 0, 0);
    path.put(&k, Bytes::from_static(b"first")).await.expect("first put");
    match path.put(&k, Bytes::from_static(b"second")).await {
        Err(Error::AlreadyExists { key }) => assert_eq!(key, k),
        other => panic!("{path:?}: second put gave {other:?}"),
    }
    assert_eq!(path.get(&k).await.expect("get"), Bytes::from_static(b"first"));
    // A retry writes its own keys: both attempts' objects stand side by side.
    let retry = k.with_attempt(1);
    path.put(&retry, Bytes::from_static(b"retry")).await.expect("put of a retry's key");
    assert_eq!(path.get(&retry).await.expect("get retry"), Bytes::from_static(b"retry"));
    assert_eq!(path.get(&k).await.expect("get"), Bytes::from_static(b"first"));
}

/// Deleted objects are gone, and deleting again is fine.
pub async fn delete_is_idempotent(path: &dyn DataPath, job: JobId) {
    let k = key(job, 4, 0, 0);
    path.put(&k, Bytes::from_static(b"doomed")).await.expect("put");
    path.delete(&k).await.expect("delete");
    assert!(matches!(path.get(&k).await, Err(Error::NotFound { .. })), "{path:?}: deleted object still readable");
    path.delete(&k).await.expect("second delete");
    // The key may be written afresh after deletion.
    path.put(&k, Bytes::from_static(b"again")).await.expect("put after delete");
    path.delete(&k).await.expect("delete");
}

/// Listing returns exactly the prefix's objects, sorted by key, with sizes.
pub async fn list_is_sorted_and_filtered(path: &dyn DataPath, job: JobId) {
    let keys = [
        key(job, 5, 2, 1),
        key(job, 5, 0, 3),
        key(job, 5, 10, 0),
        key(job, 6, 0, 0),
        key(job, 5, 2, 1).with_attempt(3),
    ];
    for (i, k) in keys.iter().enumerate() {
        path.put(k, pattern(10 + i, 0)).await.expect("put");
    }
    let listed = path.list(&KeyPrefix::edge(job, EdgeId(5))).await.expect("list edge");
    let got: Vec<_> = listed.iter().map(|m| (m.key, m.size)).collect();
    assert_eq!(got, vec![(keys[1], 11), (keys[0], 10), (keys[4], 14), (keys[2], 12)], "{path:?}: listing of edge 5");
    let all = path.list(&KeyPrefix::job(job)).await.expect("list job");
    assert!(keys.iter().all(|k| all.iter().any(|m| m.key == *k)), "{path:?}: job listing misses objects");
    assert!(all.windows(2).all(|w| w[0].key < w[1].key), "{path:?}: job listing not sorted");
}

/// Framed objects pass their checks after the trip, and a flipped byte is caught.
pub async fn framed_objects_survive(path: &dyn DataPath, job: JobId) {
    let k = key(job, 7, 0, 0);
    let records: Vec<&[u8]> = vec![b"alpha", b"", b"gamma gamma"];
    path.put(&k, encode_records(records.iter().copied())).await.expect("put");
    let back = path.get(&k).await.expect("get");
    let decoded = decode_records(k, back.clone()).expect("framed object corrupted in transit");
    assert_eq!(decoded.iter().map(|b| &b[..]).collect::<Vec<_>>(), records);
    let mut flipped = back.to_vec();
    flipped[26] ^= 0x40; // inside the payload "alpha"
    assert!(matches!(decode_records(k, flipped.into()), Err(Error::Corrupt { .. })));
}

/// Byte ranges come back exactly; a range past the end is `BadRange`; a missing key `NotFound`.
pub async fn byte_ranges(path: &dyn DataPath, job: JobId) {
    let k = key(job, 8, 0, 0);
    let data = pattern(100_000, 9);
    path.put(&k, data.clone()).await.expect("put");
    for range in [0..0u64, 0..1, 10..20, 65_530..70_000, 99_990..100_000, 0..100_000, 100_000..100_000] {
        let got = path.get_range(&k, range.clone()).await.unwrap_or_else(|e| panic!("{path:?}: {range:?}: {e}"));
        assert!(got == data.slice(range.start as usize..range.end as usize), "{path:?}: bytes {range:?} differ");
    }
    for range in [99_990..100_001, 200_000..200_010] {
        match path.get_range(&k, range.clone()).await {
            Err(Error::BadRange { key, len, .. }) => assert_eq!((key, len), (k, 100_000), "{path:?}"),
            other => panic!("{path:?}: range {range:?} past the end gave {other:?}"),
        }
    }
    let missing = key(job, 8, 1, 0);
    assert!(matches!(path.get_range(&missing, 0..1).await, Err(Error::NotFound { .. })), "{path:?}");
}

/// Purging a job leaves nothing of it.
pub async fn purge_removes_everything(path: &dyn DataPath, job: JobId) {
    let before = path.list(&KeyPrefix::job(job)).await.expect("list");
    assert!(!before.is_empty(), "{path:?}: the suite's objects should be there before the purge");
    let expected: u64 = before.iter().map(|m| m.size).sum();
    let freed = path.purge_job(job).await.expect("purge");
    assert_eq!(freed, expected, "{path:?}: bytes freed by the purge");
}
