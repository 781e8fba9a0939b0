//! Blocks for jobs, against a real etcd on 127.0.0.1: reserved from hints across the members,
//! grown past a node's memory onto other nodes and flash, copies on distinct nodes, freed for the
//! next job when one ends (multiplexing), all gone when a lease lapses, never handed to two jobs
//! by allocators racing, and a full store's refusal names what was asked and what is free.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use baton_fabric::JobId;
use baton_store::Error;
use baton_store::alloc::{BlockMap, Hints, JobSpace, Tier};
use baton_store::etcd::Etcd;
use baton_store::member::{Membership, NodeInfo};
use baton_store::testing::EtcdServer;

const MIB: u64 = 1 << 20;
const TTL: Duration = Duration::from_secs(2);

/// Three members of 4 memory and 4 flash blocks of 1 MiB each.
async fn three_nodes(etcd: &Etcd) -> Vec<Membership> {
    let mut nodes = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let info = NodeInfo {
            name: name.to_string(),
            addr: format!("127.0.0.1:{}", 7001 + i).parse().unwrap(),
            block_size: MIB,
            memory_blocks: 4,
            flash_blocks: 4,
            local: None,
        };
        nodes.push(Membership::join(etcd, &info, Duration::from_secs(30)).await.unwrap());
    }
    nodes
}

fn hints(bytes: u64) -> Hints {
    Hints { bytes, ..Hints::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_get_blocks_across_nodes_and_tiers_and_give_them_back() {
    let server = EtcdServer::start().await.unwrap();
    let etcd = server.client().unwrap();
    let _nodes = three_nodes(&etcd).await;
    // Four blocks' worth, latency-sensitive: six homes (headroom for keys' uneven spread over
    // them), over the three nodes' memory.
    let a = JobSpace::open(&etcd, JobId(1), hints(4 * MIB), TTL).await.unwrap();
    let groups = a.blocks().await.unwrap();
    assert_eq!(groups.len(), 6);
    let per_node = |tier| {
        let mut count = std::collections::BTreeMap::new();
        for b in groups.values().flatten().filter(|b| b.tier == tier) {
            *count.entry(b.node.clone()).or_insert(0) += 1;
        }
        count
    };
    assert_eq!(per_node(Tier::Memory).values().copied().collect::<Vec<_>>(), [2, 2, 2]);
    // Growing past the memory of every node: the rest on flash, without stopping.
    a.grow(8).await.unwrap();
    let blocks: Vec<_> = a.blocks().await.unwrap().into_values().flatten().collect();
    assert_eq!(blocks.len(), 14);
    assert_eq!(blocks.iter().filter(|b| b.tier == Tier::Memory).count(), 12);
    assert_eq!(blocks.iter().filter(|b| b.tier == Tier::Flash).count(), 2);
    // Another job takes what is left (no memory is free: no headroom); then the store is
    // full, and says so.
    let b = JobSpace::open(&etcd, JobId(2), hints(10 * MIB), TTL).await.unwrap();
    let full = JobSpace::open(&etcd, JobId(3), hints(3 * MIB), TTL).await.unwrap_err();
    assert!(matches!(full, Error::NoCapacity { asked: 3, free_memory: 0, free_flash: 0, .. }), "{full}");
    let text = full.to_string();
    assert!(text.contains("asked for 3 blocks of 1048576 bytes") && text.contains("0 memory"), "{text}");
    // A refused job left nothing behind: its name opens again later.
    assert!(BlockMap::read(&etcd).await.unwrap().of(JobId(3)).is_empty());
    // Giving back two groups frees two blocks at once.
    assert!(a.shrink(&BTreeSet::from([0])).await.unwrap_err().to_string().contains("homes"));
    a.shrink(&BTreeSet::from([6, 7])).await.unwrap();
    let (memory, flash) = BlockMap::read(&etcd).await.unwrap().free_blocks();
    assert_eq!(memory + flash, 2);
    // Multiplexing: the blocks the first job frees serve the next at once.
    a.close().await.unwrap();
    let c = JobSpace::open(&etcd, JobId(3), hints(12 * MIB), TTL).await.unwrap();
    assert_eq!(c.blocks().await.unwrap().len(), 12);
    c.close().await.unwrap();
    // A job whose lease lapses (its holder gone without closing) holds nothing soon after.
    drop(b);
    let start = Instant::now();
    while !BlockMap::read(&etcd).await.unwrap().held.is_empty() {
        assert!(start.elapsed() < TTL * 4, "a lapsed job still holds blocks");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(BlockMap::read(&etcd).await.unwrap().free_blocks(), (12, 12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_go_to_distinct_nodes_and_racing_jobs_never_share_a_block() {
    let server = EtcdServer::start().await.unwrap();
    let etcd = server.client().unwrap();
    let _nodes = three_nodes(&etcd).await;
    let safe = JobSpace::open(&etcd, JobId(7), Hints { bytes: 4 * MIB, replicas: 2, latency_sensitive: true }, TTL)
        .await
        .unwrap();
    for group in safe.blocks().await.unwrap().values() {
        assert_eq!(group.len(), 2);
        assert_ne!(group[0].node, group[1].node, "both copies on one node: {group:?}");
    }
    assert!(JobSpace::open(&etcd, JobId(7), hints(MIB), TTL).await.unwrap_err().to_string().contains("already open"));
    safe.close().await.unwrap();
    // Four jobs grow at once, a block at a time, until the store is full: each holds exactly the
    // blocks it was granted, no block was granted twice, and all 24 are held.
    let mut tasks = Vec::new();
    for j in 10..14 {
        let etcd = etcd.clone();
        tasks.push(tokio::spawn(async move {
            let space = JobSpace::open(&etcd, JobId(j), hints(MIB), TTL).await.unwrap();
            let mut granted: Vec<_> = space.blocks().await.unwrap().into_values().flatten().collect();
            loop {
                match space.grow(1).await {
                    Ok(groups) => granted.extend(groups.into_iter().flatten()),
                    Err(Error::NoCapacity { .. }) => return (space, granted),
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let mut spaces = Vec::new();
    for t in tasks {
        spaces.push(t.await.unwrap());
    }
    let map = BlockMap::read(&etcd).await.unwrap();
    assert_eq!(map.held.len(), 24);
    let mut all = BTreeSet::new();
    for (space, granted) in &spaces {
        let held: BTreeSet<_> = map.of(space.job()).into_values().flatten().collect();
        assert_eq!(held, granted.iter().cloned().collect(), "{} holds other blocks than it was granted", space.job());
        for block in granted {
            assert!(all.insert(block.clone()), "{block} was granted twice");
        }
    }
    assert_eq!(all.len(), 24);
    for (s, _) in spaces {
        s.close().await.unwrap();
    }
    assert!(BlockMap::read(&etcd).await.unwrap().held.is_empty());
}
