//! Blocks moved while jobs run, against a real etcd and storage nodes on 127.0.0.1: a node
//! drained while a job reads and writes leaves with no object lost; a group whose node is lost
//! gets a new copy from its other one; a move left halfway (its controller killed) serves reads
//! from the old block, takes writes and deletes on the new one, and is finished by the next
//! controller; of two controllers one leads, and the other takes over when it goes.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use baton_fabric::JobId;
use baton_fabric::net::token::{Audience, Scopes, unix_ms_now};
use baton_store::alloc::{BlockMap, Hints};
use baton_store::client::StoreClient;
use baton_store::controller::{Controller, ControllerConfig};
use baton_store::member::{DRAINED, drain_key};
use baton_store::moves;
use baton_store::testing::TestStore;
use bytes::Bytes;

const MIB: u64 = 1 << 20;
const TTL: Duration = Duration::from_secs(5);

async fn store(names: &[&str], memory: u64) -> TestStore {
    TestStore::start(names, memory, 0).await.unwrap()
}

fn controller(store: &TestStore, name: &str) -> Controller {
    let config = ControllerConfig {
        name: name.into(),
        tls: store.tls.clone(),
        every: Duration::from_millis(100),
        provision_below: 0.0,
    };
    Controller::new(&store.etcd, config, None).unwrap()
}

fn object(seed: u64, len: usize) -> Bytes {
    (0..len).map(|i| (seed.wrapping_mul(131).wrapping_add(i as u64 * 3) % 253) as u8).collect()
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_drained_under_load_leaves_with_no_object_lost() {
    let mut store = store(&["a", "b", "c"], 8).await;
    let hints = Hints { bytes: 3 * MIB, ..Hints::default() };
    let client = Arc::new(StoreClient::open(&store.etcd, &store.tls, JobId(1), hints, TTL).await.unwrap());
    for i in 0..60 {
        client.put(&format!("old/{i}"), object(i, 90_000)).await.unwrap();
    }
    let on_b = || store.nodes[1].as_ref().unwrap().usage().iter().map(|(_, _, b)| b).sum::<u64>();
    assert!(on_b() > 0);

    // A reader and a writer keep going while the node drains.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn({
        let (client, stop, reads) = (client.clone(), stop.clone(), reads.clone());
        async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("old/{}", i % 60);
                assert_eq!(client.get(&key).await.unwrap(), object(i % 60, 90_000), "{key}");
                reads.fetch_add(1, Ordering::Relaxed);
                i += 7;
            }
        }
    });
    let writer = tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            let mut written = 0u64;
            while !stop.load(Ordering::Relaxed) && written < 200 {
                client.put(&format!("new/{written}"), object(1000 + written, 20_000)).await.unwrap();
                written += 1;
            }
            written
        }
    });
    store.etcd.put(&drain_key("b"), b"draining", 0).await.unwrap();
    let mut leader = controller(&store, "c1");
    let (stop_leader, stopped) = tokio::sync::oneshot::channel::<()>();
    let leading = tokio::spawn(async move {
        leader
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), store.nodes[1].as_ref().unwrap().drained()).await.unwrap();
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    let written = writer.await.unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0);
    eprintln!("drained b in {took:?}, {} reads and {written} writes meanwhile", reads.load(Ordering::Relaxed));

    // Node b holds nothing, the map gives it nothing, and the drain is marked done.
    assert_eq!(on_b(), 0);
    let map = BlockMap::read(&store.etcd).await.unwrap();
    assert!(map.held.keys().all(|b| b.node != "b"), "{:?}", map.held);
    assert_eq!(store.etcd.get(&drain_key("b")).await.unwrap().unwrap().value, DRAINED);
    // It leaves; every object, old and new, reads back from the others.
    store.nodes[1].take().unwrap().leave().await.unwrap();
    client.refresh().await.unwrap();
    for i in 0..60 {
        assert_eq!(client.get(&format!("old/{i}")).await.unwrap(), object(i, 90_000));
    }
    for i in 0..written {
        assert_eq!(client.get(&format!("new/{i}")).await.unwrap(), object(1000 + i, 20_000));
    }
    stop_leader.send(()).unwrap();
    leading.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nodes_groups_get_a_new_copy_from_their_other_one() {
    let mut store = store(&["a", "b", "c"], 8).await;
    let hints = Hints { bytes: 3 * MIB, replicas: 2, latency_sensitive: true };
    let client = StoreClient::open(&store.etcd, &store.tls, JobId(1), hints, TTL).await.unwrap();
    for i in 0..40 {
        client.put(&format!("k{i}"), object(i, 60_000)).await.unwrap();
    }
    // Node c dies: its membership lapses, and the controller copies its groups anew.
    store.nodes[2] = None;
    let mut leader = controller(&store, "c1");
    until("c's groups should get new copies", async || {
        leader.step().await.unwrap();
        let map = BlockMap::read(&store.etcd).await.unwrap();
        map.held.keys().all(|b| b.node != "c") && map.held.values().all(|h| h.from.is_none())
    })
    .await;
    let map = BlockMap::read(&store.etcd).await.unwrap();
    for (group, blocks) in map.of(JobId(1)) {
        assert_eq!(blocks.len(), 2, "group {group}: {blocks:?}");
    }
    // Then a loses: every object still has its copy on b.
    store.nodes[0] = None;
    client.refresh().await.unwrap();
    for i in 0..40 {
        assert_eq!(client.get(&format!("k{i}")).await.unwrap(), object(i, 60_000), "k{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_left_halfway_serves_the_job_and_the_next_controller_finishes_it() {
    let store = store(&["a", "b"], 8).await;
    let hints = Hints { bytes: MIB, ..Hints::default() };
    let client = StoreClient::open(&store.etcd, &store.tls, JobId(1), hints, TTL).await.unwrap();
    for i in 0..20 {
        client.put(&format!("k{i}"), object(i, 30_000)).await.unwrap();
    }
    // Another process of the job, whose map will be stale.
    let token = store.tls.signer().unwrap().mint(JobId(1), unix_ms_now() + 60_000, Scopes::ALL, Audience::ANY);
    let stale = StoreClient::attach(&store.etcd, &store.tls, JobId(1), token).await.unwrap();
    // A controller starts moving the job's one group and dies before copying anything.
    let map = BlockMap::read(&store.etcd).await.unwrap();
    let (block, _) = map.held.iter().next().unwrap();
    let started = moves::start(&store.etcd, &map, block).await.unwrap().unwrap();
    assert_ne!(started.to.node, block.node);
    client.refresh().await.unwrap();
    // Reads find the old block's items; writes and deletes go to the new one.
    for i in 0..20 {
        assert_eq!(client.get(&format!("k{i}")).await.unwrap(), object(i, 30_000), "k{i}");
    }
    client.put("k0", Bytes::from_static(b"replaced")).await.unwrap();
    client.put("fresh", Bytes::from_static(b"written mid-move")).await.unwrap();
    client.delete("k1").await.unwrap();
    assert!(client.get("k1").await.is_err(), "a deleted key read back from the old block");
    assert_eq!(client.get("k0").await.unwrap(), Bytes::from_static(b"replaced"));
    // A process whose map is stale writes too: to the old block before that node has seen the
    // move (then the copy takes it), or, refused there, to the new one.
    stale.put("late", Bytes::from_static(b"from a stale map")).await.unwrap();
    let leaving = store.nodes.iter().flatten().find(|n| n.info().name == block.node).unwrap();
    assert!(leaving.usage().iter().any(|(_, _, b)| *b > 0));

    // The next controller finds the move under way and finishes it.
    let mut next = controller(&store, "c2");
    let step = next.step().await.unwrap();
    assert_eq!(step.moved, 1, "{step:?}");
    assert!((18..=19).contains(&step.items), "the copy skips the replaced and the deleted key: {step:?}");
    let map = BlockMap::read(&store.etcd).await.unwrap();
    assert!(map.held.keys().all(|b| b.node == started.to.node), "{:?}", map.held);
    until("the old node should let the bytes go", async || leaving.usage().is_empty()).await;
    client.refresh().await.unwrap();
    assert_eq!(client.get("k0").await.unwrap(), Bytes::from_static(b"replaced"));
    assert_eq!(client.get("fresh").await.unwrap(), Bytes::from_static(b"written mid-move"));
    assert_eq!(client.get("late").await.unwrap(), Bytes::from_static(b"from a stale map"));
    assert!(client.get("k1").await.is_err());
    for i in 2..20 {
        assert_eq!(client.get(&format!("k{i}")).await.unwrap(), object(i, 30_000), "k{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_controllers_leads_and_the_other_takes_over() {
    let store = store(&["a"], 4).await;
    let mut first = controller(&store, "first");
    let mut second = controller(&store, "second");
    let (stop_first, first_stopped) = tokio::sync::oneshot::channel::<()>();
    let one = tokio::spawn(async move {
        first
            .run(async {
                let _ = first_stopped.await;
            })
            .await
    });
    until("a leader", async || Controller::leader(&store.etcd).await.unwrap().is_some()).await;
    let two = tokio::spawn(async move { second.run(std::future::pending()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(Controller::leader(&store.etcd).await.unwrap().as_deref(), Some("first"));
    stop_first.send(()).unwrap();
    one.await.unwrap().unwrap();
    until("the second should lead", async || {
        Controller::leader(&store.etcd).await.unwrap().as_deref() == Some("second")
    })
    .await;
    two.abort();
}
