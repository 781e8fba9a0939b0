//! The conformance suite over the S3 protocol, against a real S3 server (s3s-fs) that the
//! test starts on 127.0.0.1.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::net::SocketAddr;

use baton_connectors::open_url_with;
use baton_connectors::testing::{self, BUCKET, KEY};
use baton_fabric::JobId;
use baton_fabric::conformance::run_all;
use baton_fabric::path::object_store::ObjectStorePath;

/// Starts an S3 server over a temporary directory; returns its address and the directory.
async fn start_s3() -> (SocketAddr, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let addr = testing::start_s3(root.path()).await.unwrap();
    (addr, root)
}

fn s3_path(addr: SocketAddr, prefix: &str) -> ObjectStorePath {
    let (store, prefix_path) = open_url_with(&format!("s3://{BUCKET}/{prefix}"), testing::options(addr)).unwrap();
    ObjectStorePath::new(store, prefix_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_conformance() {
    let (addr, root) = start_s3().await;
    run_all(&s3_path(addr, "runs/1"), JobId(0x53)).await;
    // The purge really emptied the server's bucket of the job's objects.
    let left: Vec<_> = walk(&root.path().join(BUCKET)).into_iter().filter(|p| p.contains("job-")).collect();
    assert!(left.is_empty(), "objects left on the S3 server: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused() {
    let (addr, _root) = start_s3().await;
    let options = [
        ("aws_endpoint", format!("http://{addr}")),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", KEY.into()),
        ("aws_secret_access_key", "wrong".into()),
        ("aws_region", "us-east-1".into()),
    ];
    let (store, prefix) = open_url_with(&format!("s3://{BUCKET}"), options).unwrap();
    let path = ObjectStorePath::new(store, prefix);
    let key = baton_fabric::ObjectKey::new(JobId(1), baton_fabric::EdgeId(0), 0, 0);
    let err = baton_fabric::DataPath::put(&path, &key, bytes::Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(err, baton_fabric::Error::ObjectStore { .. }), "{err}");
}

/// A URL that says it all in its query reaches an open server with no credentials anywhere,
/// and passes the whole suite; a secret in a URL is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_with_its_settings_in_the_query_passes_the_suite() {
    let root = tempfile::tempdir().unwrap();
    let addr = testing::start_open_s3(root.path()).await.unwrap();
    let url = testing::open_url(addr, "runs/2");
    run_all(&baton_connectors::object_store_path(&url).unwrap(), JobId(0x54)).await;
    let left: Vec<_> = walk(&root.path().join(BUCKET)).into_iter().filter(|p| p.contains("job-")).collect();
    assert!(left.is_empty(), "objects left on the S3 server: {left:?}");

    let secret = format!("s3://{BUCKET}?aws_endpoint=http://{addr}&AWS_SECRET_ACCESS_KEY=hunter2");
    let err = baton_connectors::open_url(&secret).err().unwrap().to_string();
    assert!(err.contains("aws_secret_access_key") && !err.contains("hunter2"), "{err}");
    let unknown = baton_connectors::open_url(&format!("s3://{BUCKET}?no_such_option=1")).err().unwrap().to_string();
    assert!(unknown.contains("no_such_option"), "{unknown}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

/// Past S3's rate the server answers `503 SlowDown` (as S3 does), and the object-store path
/// backs off with jitter and retries (object_store's retry: 100 ms doubling, decorrelated
/// jitter) until every request has gone through: nothing is lost, nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_rate_the_server_says_slow_down_and_the_path_retries_to_success() {
    use baton_connectors::testing::RateLimits;
    use baton_fabric::{DataPath, EdgeId, ObjectKey};
    let root = tempfile::tempdir().unwrap();
    let limits = RateLimits { writes_per_s: 40.0, reads_per_s: 40.0 };
    let (addr, limiter) = testing::start_limited_s3_on(root.path(), ([127, 0, 0, 1], 0).into(), limits).await.unwrap();
    // A flood of unsigned requests to one prefix: the first second's worth are let through
    // (and refused for their missing signature), the rest get SlowDown.
    let mut slow = 0;
    for i in 0..80 {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "PUT /{BUCKET}/flood/k{i} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut conn, request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut answer).await.unwrap();
        if answer.starts_with("HTTP/1.1 503") {
            assert!(answer.contains("<Code>SlowDown</Code>"), "{answer}");
            slow += 1;
        }
    }
    assert!(slow >= 30, "only {slow} of 80 requests past a rate of 40/s were slowed down");
    // 120 puts and gets through Baton's path, 16 at a time, into one prefix.
    let path = std::sync::Arc::new(s3_path(addr, "runs/slow"));
    let refused_before = limiter.refused();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..120u32 {
        let path = path.clone();
        tasks.spawn(async move {
            let key = ObjectKey::new(JobId(0x5d), EdgeId(1), i, 0);
            let body = bytes::Bytes::from(format!("object {i}"));
            path.put(&key, body.clone()).await.unwrap();
            assert_eq!(path.get(&key).await.unwrap(), body);
        });
        if tasks.len() >= 16 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert!(limiter.refused() > refused_before, "the path's requests met the rate and were slowed down");
}
