//! Storage nodes' membership in a real etcd on 127.0.0.1: nodes join under leases of their own,
//! a name is one node's, a node that leaves is gone at once, one that stops renewing is gone
//! when its lease lapses, and an etcd that does not answer is a clear error.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::{Duration, Instant};

use baton_store::etcd::Etcd;
use baton_store::member::{Membership, NodeInfo, members};
use baton_store::testing::EtcdServer;

fn node(name: &str, port: u16) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        block_size: 32 << 20,
        memory_blocks: 8,
        flash_blocks: 16,
        local: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_under_leases_and_are_gone_when_they_leave_or_lapse() {
    let server = EtcdServer::start().await.unwrap();
    let etcd = server.client().unwrap();
    let ttl = Duration::from_secs(2);
    let a = Membership::join(&etcd, &node("a", 7001), ttl).await.unwrap();
    let b = Membership::join(&etcd, &node("b", 7002), ttl).await.unwrap();
    let names: Vec<String> = members(&etcd).await.unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(members(&etcd).await.unwrap()[1], node("b", 7002));
    // A name is one live node's.
    let taken = Membership::join(&etcd, &node("a", 7003), ttl).await.unwrap_err().to_string();
    assert!(taken.contains("already a member") && taken.contains("127.0.0.1:7001"), "{taken}");
    // Renewed past its TTL, a member stays.
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    assert!(a.alive() && b.alive());
    assert_eq!(members(&etcd).await.unwrap().len(), 2);
    // Leaving is at once.
    a.leave().await.unwrap();
    assert_eq!(members(&etcd).await.unwrap().len(), 1);
    // A node that stops renewing (a crash) is gone when its lease lapses.
    drop(b);
    let start = Instant::now();
    while !members(&etcd).await.unwrap().is_empty() {
        assert!(start.elapsed() < ttl * 4, "a lapsed member stayed {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its name is free again.
    Membership::join(&etcd, &node("b", 7004), ttl).await.unwrap().leave().await.unwrap();
}

#[tokio::test]
async fn an_etcd_that_does_not_answer_is_named() {
    let error = Etcd::new("http://127.0.0.1:1").unwrap().revision().await.unwrap_err().to_string();
    assert!(error.contains("etcd at http://127.0.0.1:1"), "{error}");
    let error = Etcd::new("127.0.0.1:2379").unwrap_err().to_string();
    assert!(error.contains("http://"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_with_authentication_takes_only_clients_with_credentials() {
    let server = EtcdServer::start().await.unwrap();
    server.enable_auth("s3cret").await.unwrap();
    let anonymous = server.client().unwrap();
    let refused = Membership::join(&anonymous, &node("a", 7001), Duration::from_secs(5)).await.unwrap_err();
    assert!(refused.to_string().contains(server.url()) && refused.to_string().contains("BATON_ETCD_USER"), "{refused}");
    let wrong = server.client().unwrap().with_credentials("root", "guess");
    assert!(wrong.revision().await.unwrap_err().to_string().contains("authentication failed"));
    let root = server.client().unwrap().with_credentials("root", "s3cret");
    let a = Membership::join(&root, &node("a", 7001), Duration::from_secs(5)).await.unwrap();
    assert_eq!(members(&root).await.unwrap().len(), 1);
    a.leave().await.unwrap();
    assert!(members(&root).await.unwrap().is_empty());
    // Credentials never come in the URL (the process table shows it).
    let in_url = Etcd::new("http://root:s3cret@127.0.0.1:2379").unwrap_err();
    assert!(in_url.to_string().contains("BATON_ETCD_USER"), "{in_url}");
}
