//! Jobs' objects in the store's blocks, against a real etcd and storage nodes serving QUIC on
//! 127.0.0.1: spread over three nodes and read back intact (whole, by range, listed), a job
//! growing past its blocks onto other nodes and flash, blocks freed by one job serving the
//! next, two copies surviving a lost node and one copy naming it, tokens confined to their job,
//! and nothing left on any node once a job ends or its lease lapses.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use baton_fabric::JobId;
use baton_fabric::net::token::{Audience, Scopes, unix_ms_now};
use baton_store::Error;
use baton_store::alloc::{BlockMap, Hints, Tier};
use baton_store::client::StoreClient;
use baton_store::testing::{NodeOptions, TestStore};
use bytes::Bytes;

const MIB: u64 = 1 << 20;
const TTL: Duration = Duration::from_secs(2);

/// Three storage nodes, each lending `memory` and `flash` blocks of 1 MiB.
async fn store(memory: u64, flash: u64) -> TestStore {
    TestStore::start(&["a", "b", "c"], memory, flash).await.unwrap()
}

/// Waits until no node holds anything for `job`.
async fn drained_of(store: &TestStore, job: JobId) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.held(job) > 0 {
        assert!(Instant::now() < deadline, "nodes still hold {} bytes of {job}", store.held(job));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An object whose bytes say which object and where in it they are.
fn object(seed: u64, len: usize) -> Bytes {
    (0..len).map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8).collect()
}

fn hints(bytes: u64) -> Hints {
    Hints { bytes, ..Hints::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_spread_over_three_nodes_read_back_intact_and_the_job_grows_onto_flash() {
    spread_and_grow(NodeOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_the_nodes_host_do_the_same_over_loopback_tcp() {
    spread_and_grow(NodeOptions { same_host: true, ..NodeOptions::default() }).await;
}

/// Objects spread over three nodes and read back, a job growing onto flash, deletes and
/// replacements; over QUIC, or (with `options.same_host`) over loopback TCP.
async fn spread_and_grow(options: NodeOptions) {
    let store = TestStore::start_with(&["a", "b", "c"], 4, 4, options).await.unwrap();
    let job = JobId(1);
    // Three homes, one per node; the job will hold far more than that.
    let client = StoreClient::open(&store.etcd, &store.tls, job, hints(3 * MIB), TTL).await.unwrap();
    let sizes: Vec<usize> = (0..96).map(|i| [1, 1000, 64 << 10, 500 << 10][i % 4] + i).collect();
    let mut written = 0;
    for (i, len) in sizes.iter().enumerate() {
        client.put(&format!("edge/{i:03}"), object(i as u64, *len)).await.unwrap();
        written += len;
    }
    // One object of 3 MiB: twelve chunks of a quarter block, spread by their own keys.
    client.put("big", object(99, 3 << 20)).await.unwrap();
    written += 3 << 20;
    assert!(written as u64 > 12 * MIB, "more than the three nodes' memory: {written}");

    for (i, len) in sizes.iter().enumerate() {
        let key = format!("edge/{i:03}");
        assert_eq!(client.get(&key).await.unwrap(), object(i as u64, *len), "{key}");
        assert_eq!(client.head(&key).await.unwrap().len, *len as u64);
    }
    let big = object(99, 3 << 20);
    assert_eq!(client.get("big").await.unwrap(), big);
    // Ranges within a chunk and across chunk boundaries.
    for (start, end) in [(0, 10), (262_000, 263_000), (100, 2 << 20), ((3 << 20) - 5, 3 << 20)] {
        assert_eq!(client.get_range("big", start..end).await.unwrap(), big.slice(start as usize..end as usize));
    }
    assert!(client.get_range("big", 0..(3 << 20) + 1).await.is_err());
    let listed = client.list("edge/").await.unwrap();
    assert_eq!(listed.len(), sizes.len());
    assert!(listed.iter().zip(&sizes).all(|((_, meta), size)| meta.len == *size as u64), "{listed:?}");
    assert_eq!(client.list("").await.unwrap().len(), sizes.len() + 1);

    // The job grew past the memory of every node, onto flash, on every node.
    let map = BlockMap::read(&store.etcd).await.unwrap();
    let blocks: Vec<_> = map.of(job).into_values().flatten().collect();
    assert!(blocks.iter().any(|b| b.tier == Tier::Flash), "{blocks:?}");
    let usage = client.usage().await.unwrap();
    assert_eq!(usage.len(), 3, "{usage:?}");
    assert!(usage.values().all(|b| *b > MIB), "{usage:?}");
    assert_eq!(usage.values().sum::<u64>(), written as u64);

    // Deleting gives room back; what is left still reads.
    for i in (0..sizes.len()).step_by(2) {
        client.delete(&format!("edge/{i:03}")).await.unwrap();
    }
    client.delete("big").await.unwrap();
    assert!(matches!(client.get("big").await.unwrap_err(), Error::NotFound { .. }));
    assert!(matches!(client.delete("big").await.unwrap_err(), Error::NotFound { .. }));
    for i in (1..sizes.len()).step_by(2) {
        assert_eq!(client.get(&format!("edge/{i:03}")).await.unwrap(), object(i as u64, sizes[i]));
    }
    // Replacing an object replaces it, wherever its old bytes were.
    client.put("edge/001", Bytes::from_static(b"new")).await.unwrap();
    assert_eq!(client.get("edge/001").await.unwrap(), Bytes::from_static(b"new"));
    let left: u64 = (3..sizes.len()).step_by(2).map(|i| sizes[i] as u64).sum::<u64>() + 3;
    assert_eq!(client.usage().await.unwrap().values().sum::<u64>(), left);
    // Bad keys are refused before anything is sent.
    for bad in ["", "a\0b"] {
        assert!(matches!(client.put(bad, Bytes::new()).await.unwrap_err(), Error::Invalid { .. }));
    }

    // Every node served its requests the one way.
    for node in store.nodes.iter().flatten() {
        let local = node.same_host_requests();
        assert_eq!(local > 0, options.same_host, "{}: {local} requests over loopback TCP", node.info().name);
    }

    // Ending the job: nothing left on any node.
    client.close().await.unwrap();
    drained_of(&store, job).await;
    assert!(BlockMap::read(&store.etcd).await.unwrap().held.is_empty());
}

/// The tier of `job`'s blocks, as the map says.
async fn tiers_of(store: &TestStore, job: JobId) -> Vec<Tier> {
    let map = BlockMap::read(&store.etcd).await.unwrap();
    map.of(job).values().flatten().map(|b| b.tier).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_its_memory_full_moves_the_coldest_block_to_flash_and_loses_nothing() {
    // One node of 2 memory and 4 flash blocks; a block unread and unwritten for 400 ms is cold.
    let options = NodeOptions { cold_after: Duration::from_millis(400), ..NodeOptions::default() };
    let store = TestStore::start_with(&["a"], 2, 4, options).await.unwrap();
    let node = || store.node("a").unwrap();
    let (cold, hot) = (JobId(1), JobId(2));
    let cold_client = StoreClient::open(&store.etcd, &store.tls, cold, hints(MIB), TTL).await.unwrap();
    let hot_client = StoreClient::open(&store.etcd, &store.tls, hot, hints(MIB), TTL).await.unwrap();
    assert_eq!(tiers_of(&store, cold).await, [Tier::Memory]);
    assert_eq!(tiers_of(&store, hot).await, [Tier::Memory]);
    let objects: Vec<(String, Bytes)> = (0..6).map(|i| (format!("o{i}"), object(i, 100_000 + i as usize))).collect();
    for (key, bytes) in &objects {
        cold_client.put(key, bytes.clone()).await.unwrap();
        hot_client.put(key, bytes.clone()).await.unwrap();
    }
    let both: u64 = 2 * objects.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
    assert_eq!(node().tiers(), (both, 0));

    // The node's memory blocks are both held: once the cold job's block has gone unused for
    // long enough it goes to flash, while the hot job, read all along, keeps its memory.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tiers_of(&store, cold).await != [Tier::Flash] || node().tiers().0 > both / 2 {
        assert!(Instant::now() < deadline, "never moved: {:?}, {:?}", tiers_of(&store, cold).await, node().tiers());
        for (key, bytes) in &objects {
            assert_eq!(hot_client.get(key).await.unwrap(), *bytes);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tiers_of(&store, hot).await, [Tier::Memory]);
    assert_eq!(node().tiers(), (both / 2, both / 2), "the cold job's items are files now");

    // Its clients notice nothing: every object reads back, whole and by range, and takes
    // writes (to flash now).
    for (key, bytes) in &objects {
        assert_eq!(cold_client.get(key).await.unwrap(), *bytes, "{key}");
        assert_eq!(cold_client.get_range(key, 10..1000).await.unwrap(), bytes.slice(10..1000));
    }
    cold_client.put("late", object(7, 5000)).await.unwrap();
    assert_eq!(cold_client.get("late").await.unwrap(), object(7, 5000));
    assert_eq!(node().tiers(), (both / 2, both / 2 + 5000));

    // The memory it freed serves the next job that asks for memory.
    let next = StoreClient::open(&store.etcd, &store.tls, JobId(3), hints(MIB), TTL).await.unwrap();
    assert_eq!(tiers_of(&store, JobId(3)).await, [Tier::Memory]);
    next.close().await.unwrap();
    // Ending the cold job deletes its files too.
    cold_client.close().await.unwrap();
    drained_of(&store, cold).await;
    assert_eq!(node().tiers(), (both / 2, 0));
    hot_client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_one_job_gives_back_serve_the_next_and_a_lapsed_lease_leaves_nothing() {
    // 12 MiB of memory in all; two jobs that each peak at 8 MiB.
    let store = store(4, 0).await;
    let (a, b) = (JobId(1), JobId(2));
    let first = StoreClient::open(&store.etcd, &store.tls, a, hints(MIB), TTL).await.unwrap();
    let second = StoreClient::open(&store.etcd, &store.tls, b, hints(MIB), TTL).await.unwrap();
    let piece = |seed| object(seed, 200 << 10);
    for i in 0..40 {
        first.put(&format!("a/{i}"), piece(i)).await.unwrap();
    }
    // The second job's peak does not fit beside the first's.
    let mut refused = None;
    for i in 0..40 {
        if let Err(e) = second.put(&format!("b/{i}"), piece(i)).await {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("both peaks fit at once");
    assert!(matches!(refused, Error::NoCapacity { .. }), "{refused}");
    assert!(refused.to_string().contains("0 memory"), "{refused}");
    // The first job is past its peak: its blocks go back, and the second job's peak fits.
    for i in 0..40 {
        first.delete(&format!("a/{i}")).await.unwrap();
    }
    assert!(first.give_back_empty().await.unwrap() > 0);
    for i in 0..40 {
        second.put(&format!("b/{i}"), piece(i)).await.unwrap();
    }
    for i in 0..40 {
        assert_eq!(second.get(&format!("b/{i}")).await.unwrap(), piece(i));
    }
    // The second job's driver dies: its lease lapses, and every node lets its bytes go.
    assert!(store.held(b) > 0);
    drop(second);
    drained_of(&store, b).await;
    assert!(BlockMap::read(&store.etcd).await.unwrap().of(b).is_empty());
    first.close().await.unwrap();
}

/// Puts that race a give-back of the job's empty groups land in groups that stay: a group is
/// sealed on its nodes before it goes, so no put is stored into a block on its way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_racing_a_give_back_are_never_lost() {
    let store = store(8, 0).await;
    let client =
        std::sync::Arc::new(StoreClient::open(&store.etcd, &store.tls, JobId(3), hints(MIB), TTL).await.unwrap());
    let piece = |seed| object(seed, 150 << 10);
    let mut given_back = 0;
    for round in 0..4u64 {
        // Past the homes into later groups, then empty again.
        for i in 0..30 {
            client.put(&format!("fill/{i}"), piece(i)).await.unwrap();
        }
        for i in 0..30 {
            client.delete(&format!("fill/{i}")).await.unwrap();
        }
        let writer = {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..30 {
                    client.put(&format!("race{round}/{i}"), piece(100 + i)).await.unwrap();
                }
            })
        };
        given_back += client.give_back_empty().await.unwrap();
        writer.await.unwrap();
        // Whatever the give-back took, the nodes have had time to let it go.
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.refresh().await.unwrap();
        for i in 0..30 {
            let key = format!("race{round}/{i}");
            assert_eq!(client.get(&key).await.unwrap(), piece(100 + i), "{key}");
            client.delete(&key).await.unwrap();
        }
    }
    assert!(given_back > 0, "no group was ever given back: the race was not run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_survive_a_lost_node_and_one_copy_names_it() {
    let mut store = store(8, 0).await;
    let safe = StoreClient::open(
        &store.etcd,
        &store.tls,
        JobId(1),
        Hints { bytes: 3 * MIB, replicas: 2, latency_sensitive: true },
        TTL,
    )
    .await
    .unwrap();
    let single = StoreClient::open(&store.etcd, &store.tls, JobId(2), hints(3 * MIB), TTL).await.unwrap();
    for i in 0..30 {
        safe.put(&format!("k{i}"), object(i, 50_000)).await.unwrap();
        single.put(&format!("k{i}"), object(i, 50_000)).await.unwrap();
    }
    // Every object is on two nodes.
    let usage = safe.usage().await.unwrap();
    assert_eq!(usage.values().sum::<u64>(), 2 * 30 * 50_000, "{usage:?}");
    assert!(store.node("b").unwrap().usage().iter().any(|(j, _, _)| *j == JobId(2)));

    // Node b stops serving without a word.
    store.nodes[1] = None;
    for i in 0..30 {
        assert_eq!(safe.get(&format!("k{i}")).await.unwrap(), object(i, 50_000), "k{i}");
    }
    let start = Instant::now();
    let mut lost = BTreeSet::new();
    for i in 0..30 {
        match single.get(&format!("k{i}")).await {
            Ok(bytes) => assert_eq!(bytes, object(i, 50_000)),
            Err(Error::Lost { node, keys, .. }) => {
                assert!(node.starts_with('b'), "{node}");
                assert_eq!(keys, [format!("k{i}")]);
                lost.insert(i);
            }
            Err(e) => panic!("k{i}: {e}"),
        }
    }
    assert!(!lost.is_empty() && lost.len() < 30, "{lost:?}");
    assert!(start.elapsed() < Duration::from_secs(20), "a lost node took {:?} to name", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_grants_its_own_job_and_scopes_only() {
    let store = store(4, 0).await;
    let owner = StoreClient::open(&store.etcd, &store.tls, JobId(1), hints(MIB), TTL).await.unwrap();
    owner.put("k", Bytes::from_static(b"secret")).await.unwrap();
    let signer = store.tls.signer().unwrap();
    let later = unix_ms_now() + 60_000;
    // Another job's token does not attach.
    let other = signer.mint(JobId(2), later, Scopes::ALL, Audience::ANY);
    assert!(StoreClient::attach(&store.etcd, &store.tls, JobId(1), other).await.is_err());
    // A reader's token reads and cannot write.
    let read_only = signer.mint(JobId(1), later, Scopes::READ, Audience::ANY);
    let reader = StoreClient::attach(&store.etcd, &store.tls, JobId(1), read_only).await.unwrap();
    assert_eq!(reader.get("k").await.unwrap(), Bytes::from_static(b"secret"));
    let refused = reader.put("k", Bytes::from_static(b"mine")).await.unwrap_err();
    assert!(matches!(&refused, Error::Refused { reason, .. } if reason.contains("Unauthorized")), "{refused}");
    // The nodes remember the reader's signature as checked: a token that reuses it with more
    // scopes is still refused.
    let mut forged = read_only;
    forged.scopes = Scopes::ALL;
    let forger = StoreClient::attach(&store.etcd, &store.tls, JobId(1), forged).await.unwrap();
    let refused = forger.put("k", Bytes::from_static(b"mine")).await.unwrap_err();
    assert!(matches!(&refused, Error::Refused { reason, .. } if reason.contains("signature")), "{refused}");
    // An expired token reads nothing.
    let expired = signer.mint(JobId(1), unix_ms_now() - 1, Scopes::ALL, Audience::ANY);
    let expired = StoreClient::attach(&store.etcd, &store.tls, JobId(1), expired).await.unwrap();
    assert!(expired.get("k").await.is_err());
    assert_eq!(owner.get("k").await.unwrap(), Bytes::from_static(b"secret"));
    // Attaching to a job that is not open says so.
    let token = signer.mint(JobId(9), later, Scopes::ALL, Audience::ANY);
    let absent = StoreClient::attach(&store.etcd, &store.tls, JobId(9), token).await.unwrap_err();
    assert!(absent.to_string().contains("not open"), "{absent}");
}
