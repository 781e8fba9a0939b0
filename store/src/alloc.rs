//! Blocks for jobs (Pocket's rightsizing from hints, Jiffy's blocks): a job opens its namespace
//! with hints of what it will hold; blocks are reserved for it across the storage nodes and
//! their tiers, more when it fills them, fewer when it gives some back, none once it ends or its
//! lease lapses.
//!
//! The block map lives in etcd: `blocks/<node>/<tier><index>` names the job that holds a block,
//! and its key is attached to the job's etcd lease, so that a lapsed lease frees every block of
//! the job at once, with no one to clean up after it. Reserving is one transaction that holds
//! only if every block it takes is still free: two allocators racing never hand one block to two
//! jobs (the loser reads the map again and retries).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use baton_fabric::JobId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::etcd::{Compare, Etcd, KeptLease, Op};
use crate::member::{NodeInfo, ROOT, members};

/// How many times a reservation that lost a race reads the map again (after a pause that
/// grows, with jitter, so that racing allocators spread out).
const ATTEMPTS: u32 = 32;

/// What a job expects of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hints {
    /// Bytes it expects to hold at its peak.
    pub bytes: u64,
    /// Copies of each block on distinct nodes (1 or 2).
    pub replicas: u8,
    /// Whether its reads wait on the store (memory first) or not (flash first).
    pub latency_sensitive: bool,
}

impl Default for Hints {
    fn default() -> Self {
        Self { bytes: 0, replicas: 1, latency_sensitive: true }
    }
}

/// A storage tier of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tier {
    /// DRAM.
    Memory,
    /// Flash.
    Flash,
}

impl Tier {
    fn letter(self) -> char {
        match self {
            Tier::Memory => 'm',
            Tier::Flash => 'f',
        }
    }
}

/// One block of one node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Block {
    /// The node.
    pub node: String,
    /// Its tier.
    pub tier: Tier,
    /// Its number within the node's tier.
    pub index: u64,
}

impl Block {
    /// Its key in the block map.
    pub fn key(&self) -> String {
        format!("{ROOT}blocks/{}/{}{:06}", self.node, self.tier.letter(), self.index)
    }

    /// The block a key of the map names.
    pub(crate) fn parse(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(&format!("{ROOT}blocks/"))?;
        let (node, block) = rest.split_once('/')?;
        let tier = match block.chars().next()? {
            'm' => Tier::Memory,
            'f' => Tier::Flash,
            _ => return None,
        };
        Some(Self { node: node.to_string(), tier, index: block[1..].parse().ok()? })
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.node, self.tier.letter(), self.index)
    }
}

/// What a held block's key says: whose it is and what it is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The job.
    pub job: JobId,
    /// Which group of copies it belongs to (the same data on distinct nodes).
    pub group: u64,
    /// Whether the group is one of the job's homes: the groups reserved when it opened, over
    /// which its keys are spread by hash. A home keeps each of its keys' data, or where the
    /// data went when the home was full; the job's later groups hold data only.
    pub home: bool,
    /// A copy being made: the node whose block of the group its items are copied from. The
    /// block takes writes meanwhile, and remembers deletes so that the copy does not bring
    /// them back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A block being moved away, to this node: it serves reads of what it holds until the
    /// move ends, and refuses writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<String>,
}

impl Holder {
    /// A plain holder of `job`'s `group`.
    pub fn new(job: JobId, group: u64, home: bool) -> Self {
        Self { job, group, home, from: None, moving_to: None }
    }
}

/// A job's record, at `jobs/<job>` under the job's lease.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct JobRecord {
    hints: Hints,
}

pub(crate) fn job_key(job: JobId) -> String {
    format!("{ROOT}jobs/{job}")
}

/// The number the job's next group takes, at `groups/<job>` under the job's lease: a group
/// given back never lends its number to a later one (a node that has not yet let the old one
/// go, or a client that remembers it full, would take one for the other).
fn next_group_key(job: JobId) -> String {
    format!("{ROOT}groups/{job}")
}

/// The store's blocks as the map says now: who holds what, what is free.
#[derive(Clone, Debug, Default)]
pub struct BlockMap {
    /// The members.
    pub nodes: Vec<NodeInfo>,
    /// Each held block's holder.
    pub held: BTreeMap<Block, Holder>,
    /// Nodes being drained: they take no new blocks.
    pub draining: BTreeSet<String>,
}

impl BlockMap {
    /// Reads the members and the map.
    pub async fn read(etcd: &Etcd) -> Result<Self> {
        let nodes = members(etcd).await?;
        let mut held = BTreeMap::new();
        for kv in etcd.list(&format!("{ROOT}blocks/")).await? {
            let block = Block::parse(&kv.key)
                .ok_or_else(|| Error::Corrupt { key: kv.key.clone(), reason: "not a block's key".into() })?;
            let holder: Holder = serde_json::from_slice(&kv.value)
                .map_err(|e| Error::Corrupt { key: kv.key.clone(), reason: e.to_string() })?;
            held.insert(block, holder);
        }
        let draining = etcd
            .list(&format!("{ROOT}drain/"))
            .await?
            .into_iter()
            .filter_map(|kv| kv.key.strip_prefix(&format!("{ROOT}drain/")).map(str::to_string))
            .collect();
        Ok(Self { nodes, held, draining })
    }

    /// The free blocks of `node` in `tier`, lowest numbers first.
    fn free(&self, node: &NodeInfo, tier: Tier) -> impl Iterator<Item = Block> + '_ {
        let total = match tier {
            Tier::Memory => node.memory_blocks,
            Tier::Flash => node.flash_blocks,
        };
        let total = if self.draining.contains(&node.name) { 0 } else { total };
        let name = node.name.clone();
        (0..total).map(move |index| Block { node: name.clone(), tier, index }).filter(|b| !self.held.contains_key(b))
    }

    /// A free block for another copy of `job`'s `group`: on a member that is not draining and
    /// holds no copy of the group yet, in `tier` if one has room (else the other tier), on the
    /// node with the most free blocks.
    pub fn replacement(&self, job: JobId, group: u64, tier: Tier) -> Option<Block> {
        let taken: BTreeSet<&str> =
            self.held.iter().filter(|(_, h)| h.job == job && h.group == group).map(|(b, _)| b.node.as_str()).collect();
        let other = match tier {
            Tier::Memory => Tier::Flash,
            Tier::Flash => Tier::Memory,
        };
        [tier, other].into_iter().find_map(|tier| {
            self.nodes
                .iter()
                .filter(|n| !taken.contains(n.name.as_str()))
                .map(|n| self.free(n, tier).collect::<Vec<_>>())
                .max_by_key(Vec::len)
                .and_then(|free| free.into_iter().next())
        })
    }

    /// Whether `node` is a member.
    pub fn is_member(&self, node: &str) -> bool {
        self.nodes.iter().any(|n| n.name == node)
    }

    /// Free blocks per tier, over every member.
    pub fn free_blocks(&self) -> (u64, u64) {
        let count = |tier| self.nodes.iter().map(|n| self.free(n, tier).count() as u64).sum();
        (count(Tier::Memory), count(Tier::Flash))
    }

    /// The blocks `job` holds, by group.
    pub fn of(&self, job: JobId) -> BTreeMap<u64, Vec<Block>> {
        let mut groups: BTreeMap<u64, Vec<Block>> = BTreeMap::new();
        for (block, holder) in &self.held {
            if holder.job == job {
                groups.entry(holder.group).or_default().push(block.clone());
            }
        }
        groups
    }

    /// The job's home groups, in order.
    pub fn homes(&self, job: JobId) -> Vec<u64> {
        let homes: BTreeSet<u64> = self.held.values().filter(|h| h.job == job && h.home).map(|h| h.group).collect();
        homes.into_iter().collect()
    }

    /// The store's block size (every member's; the first's if they differ).
    pub fn block_size(&self) -> u64 {
        self.nodes.first().map_or(0, |n| n.block_size)
    }

    /// `groups` new groups of `replicas` blocks each, each group's copies on distinct nodes,
    /// spread over the nodes (the one with the most free blocks of the tier first), in the
    /// tiers `hints` prefer; `None` if they do not fit. Which of a node's free blocks are taken
    /// turns with `seed`, so that allocators racing for the same node mostly take different
    /// blocks.
    fn choose(&self, groups: u64, hints: &Hints, seed: u64) -> Option<Vec<Vec<Block>>> {
        let tiers = if hints.latency_sensitive { [Tier::Memory, Tier::Flash] } else { [Tier::Flash, Tier::Memory] };
        // Free blocks per node, the preferred tier's first.
        let mut free: BTreeMap<String, Vec<Block>> = BTreeMap::new();
        for node in &self.nodes {
            let mut blocks: Vec<Block> = Vec::new();
            for tier in tiers {
                let mut free: Vec<Block> = self.free(node, tier).collect();
                if !free.is_empty() {
                    let turn = (seed % free.len() as u64) as usize;
                    free.rotate_left(turn);
                }
                blocks.extend(free);
            }
            // Taken from the end: the preferred tier last in, so reverse.
            blocks.reverse();
            free.insert(node.name.clone(), blocks);
        }
        let replicas = usize::from(hints.replicas.max(1));
        let mut chosen = Vec::new();
        for _ in 0..groups {
            // The nodes with the most free blocks in the preferred tier, then the most free.
            let mut order: Vec<&String> = free.keys().collect();
            order.sort_by_key(|n| {
                let blocks = &free[*n];
                let preferred = blocks.iter().filter(|b| b.tier == tiers[0]).count();
                (std::cmp::Reverse(preferred), std::cmp::Reverse(blocks.len()))
            });
            let names: Vec<String> = order.into_iter().take(replicas).cloned().collect();
            if names.len() < replicas {
                return None;
            }
            let mut group = Vec::new();
            for name in names {
                group.push(free.get_mut(&name)?.pop()?);
            }
            chosen.push(group);
        }
        Some(chosen)
    }
}

/// A job's namespace in the store: its lease kept alive, its blocks reserved. Dropped without
/// [`JobSpace::close`], its lease lapses and etcd frees its blocks. The job's other processes
/// [`JobSpace::attach`] to it: they can reserve more blocks under its lease, but do not keep it.
#[derive(Debug)]
pub struct JobSpace {
    etcd: Etcd,
    job: JobId,
    hints: Hints,
    lease: JobLease,
}

/// The job's lease: kept alive by the process that opened the job, borrowed by the others.
#[derive(Debug)]
enum JobLease {
    Kept(KeptLease),
    Borrowed(i64),
}

impl JobLease {
    fn id(&self) -> i64 {
        match self {
            JobLease::Kept(l) => l.id(),
            JobLease::Borrowed(id) => *id,
        }
    }

    fn alive(&self) -> bool {
        match self {
            JobLease::Kept(l) => l.alive(),
            // A lapsed lease makes the reservation's transaction fail instead.
            JobLease::Borrowed(_) => true,
        }
    }
}

/// The groups a job opened with `hints` reserves as its homes, in blocks of `size` with
/// `free_memory` blocks of memory free in the store.
///
/// Keys spread over the homes by their hash, so homes fill unevenly: with exactly enough homes
/// for the hinted bytes, about one key in twelve finds its home full (one block of 1 MiB objects
/// holds 32, and hashing 512 keys over 16 homes fills some past that), and each put of such a
/// key costs extra requests (placed in a later group, then linked at its home). A
/// latency-sensitive job of two homes or more therefore gets half as many again, where free
/// memory allows, and about one key in 500 overflows; a job of one home (its keys cannot spread
/// unevenly), or not latency-sensitive, gets exactly what it hinted (at least one group).
fn homes(hints: &Hints, size: u64, free_memory: u64) -> u64 {
    let exact = hints.bytes.div_ceil(size).max(1);
    if !hints.latency_sensitive {
        return exact;
    }
    let spare = (free_memory / u64::from(hints.replicas.max(1))).saturating_sub(exact);
    exact + (exact / 2).min(spare)
}

impl JobSpace {
    /// Opens `job`'s namespace with `hints` and reserves its homes: groups for `hints.bytes`
    /// (at least one), with headroom for a latency-sensitive job (see `homes`); its lease
    /// lapses `ttl` after the last renewal.
    pub async fn open(etcd: &Etcd, job: JobId, hints: Hints, ttl: Duration) -> Result<Self> {
        if !(1..=2).contains(&hints.replicas) {
            return Err(Error::Config { what: format!("job {job}'s hints"), reason: "replicas must be 1 or 2".into() });
        }
        let lease = KeptLease::start(etcd, ttl).await?;
        let record = serde_json::to_vec(&JobRecord { hints })
            .map_err(|e| Error::Corrupt { key: job_key(job), reason: e.to_string() })?;
        if !etcd.txn(&[Compare::Absent(job_key(job))], &[Op::Put(job_key(job), record, lease.id())]).await? {
            let _ = lease.end().await;
            return Err(Error::Config { what: format!("job {job}"), reason: "it is already open in the store".into() });
        }
        let space = Self { etcd: etcd.clone(), job, hints, lease: JobLease::Kept(lease) };
        let map = BlockMap::read(etcd).await?;
        let groups = homes(&hints, map.block_size().max(1), map.free_blocks().0);
        if let Err(e) = space.reserve(groups, true).await {
            let _ = space.close().await;
            return Err(e);
        }
        Ok(space)
    }

    /// Opens `job` like [`JobSpace::open`], but with a lease that only [`JobSpace::renew`]
    /// renews: for a driver that keeps its jobs alive from a loop of its own (and whose jobs
    /// lapse when it dies). Its homes are spread over every member when the hints ask for less.
    pub async fn open_renewed(etcd: &Etcd, job: JobId, mut hints: Hints, ttl: Duration) -> Result<()> {
        let map = BlockMap::read(etcd).await?;
        hints.bytes = hints.bytes.max(map.nodes.len() as u64 * map.block_size());
        let space = Self::open(etcd, job, hints, ttl).await?;
        if let JobLease::Kept(lease) = space.lease {
            // The lease outlives the renewals it had: the caller renews it from now on.
            lease.detach();
        }
        Ok(())
    }

    /// Renews `job`'s lease; `false` if the job is not open (never opened, ended, lapsed).
    pub async fn renew(etcd: &Etcd, job: JobId) -> Result<bool> {
        match etcd.get(&job_key(job)).await? {
            Some(kv) => etcd.keep_alive(kv.lease).await,
            None => Ok(false),
        }
    }

    /// Ends `job` wherever it was opened: its record and blocks go now. `false` if it was not
    /// open.
    pub async fn end(etcd: &Etcd, job: JobId) -> Result<bool> {
        match etcd.get(&job_key(job)).await? {
            Some(kv) => etcd.revoke(kv.lease).await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Attaches to `job`, opened elsewhere: its hints and lease are read from the store.
    pub async fn attach(etcd: &Etcd, job: JobId) -> Result<Self> {
        let kv = etcd.get(&job_key(job)).await?.ok_or_else(|| Error::Config {
            what: format!("job {job}"),
            reason: "it is not open in the store (never opened, ended, or its lease lapsed)".into(),
        })?;
        let record: JobRecord = serde_json::from_slice(&kv.value)
            .map_err(|e| Error::Corrupt { key: kv.key.clone(), reason: e.to_string() })?;
        Ok(Self { etcd: etcd.clone(), job, hints: record.hints, lease: JobLease::Borrowed(kv.lease) })
    }

    /// The job's hints.
    pub fn hints(&self) -> Hints {
        self.hints
    }

    /// The etcd the store keeps its state in.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// The job.
    pub fn job(&self) -> JobId {
        self.job
    }

    /// Its blocks, by group, as the map says now.
    pub async fn blocks(&self) -> Result<BTreeMap<u64, Vec<Block>>> {
        Ok(BlockMap::read(&self.etcd).await?.of(self.job))
    }

    /// Reserves `groups` more groups of blocks (more room while the job runs); the new ones.
    pub async fn grow(&self, groups: u64) -> Result<Vec<Vec<Block>>> {
        self.reserve(groups, false).await
    }

    async fn reserve(&self, groups: u64, home: bool) -> Result<Vec<Vec<Block>>> {
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let ceiling_ms = 1u64 << attempt.min(7);
                tokio::time::sleep(Duration::from_millis(rand::random_range(0..=ceiling_ms))).await;
            }
            let map = BlockMap::read(&self.etcd).await?;
            let counter_key = next_group_key(self.job);
            let counter = self.etcd.get(&counter_key).await?;
            let numbered = match &counter {
                None => 0,
                Some(kv) => std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| Error::Corrupt { key: counter_key.clone(), reason: "not a group number".into() })?,
            };
            let first = map.of(self.job).keys().next_back().map_or(0, |g| g + 1).max(numbered);
            let Some(chosen) = map.choose(groups, &self.hints, rand::random()) else {
                let (memory, flash) = map.free_blocks();
                return Err(Error::NoCapacity {
                    job: self.job,
                    asked: groups * u64::from(self.hints.replicas.max(1)),
                    block_size: map.block_size(),
                    free_memory: memory,
                    free_flash: flash,
                });
            };
            let mut compare = Vec::new();
            let mut ops = Vec::new();
            for (g, group) in chosen.iter().enumerate() {
                for block in group {
                    let holder = Holder::new(self.job, first + g as u64, home);
                    let value = serde_json::to_vec(&holder)
                        .map_err(|e| Error::Corrupt { key: block.key(), reason: e.to_string() })?;
                    compare.push(Compare::Absent(block.key()));
                    ops.push(Op::Put(block.key(), value, self.lease.id()));
                }
            }
            compare.push(match &counter {
                Some(kv) => Compare::ModRevision(counter_key.clone(), kv.mod_revision),
                None => Compare::Absent(counter_key.clone()),
            });
            let next = first + chosen.len() as u64;
            ops.push(Op::Put(counter_key, next.to_string().into_bytes(), self.lease.id()));
            // The job must still be open: a lapsed lease cannot take blocks.
            if !self.lease.alive() {
                return Err(Error::Config { what: format!("job {}", self.job), reason: "its lease lapsed".into() });
            }
            if self.etcd.txn(&compare, &ops).await? {
                return Ok(chosen);
            }
            tracing::debug!("job {}: another reservation took blocks first; reading the map again", self.job);
        }
        Err(Error::Etcd {
            url: self.etcd.url().into(),
            reason: format!("{ATTEMPTS} reservations in a row lost a race"),
        })
    }

    /// Gives back the groups `groups` (their blocks are free for other jobs at once).
    /// A job's homes stay until it ends (they say where its keys are).
    pub async fn shrink(&self, groups: &BTreeSet<u64>) -> Result<()> {
        let map = BlockMap::read(&self.etcd).await?;
        if let Some(home) = map.homes(self.job).into_iter().find(|g| groups.contains(g)) {
            return Err(Error::Config {
                what: format!("giving back group {home} of job {}", self.job),
                reason: "it is one of the job's homes, which stay until it ends".into(),
            });
        }
        let ops: Vec<Op> = map
            .of(self.job)
            .into_iter()
            .filter(|(g, _)| groups.contains(g))
            .flat_map(|(_, blocks)| blocks.into_iter().map(|b| Op::Delete(b.key())))
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        // One transaction: every block of the groups is given back at once (deleting a key a
        // lapsed lease already took is harmless).
        self.etcd.txn(&[], &ops).await.map(drop)
    }

    /// Ends the job: its record and every block go now. A process attached to the job ends
    /// nothing: it only lets go.
    pub async fn close(self) -> Result<()> {
        match self.lease {
            JobLease::Kept(lease) => lease.end().await,
            JobLease::Borrowed(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, memory: u64, flash: u64) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            addr: "127.0.0.1:7070".parse().unwrap_or_else(|e| panic!("{e}")),
            block_size: 1 << 20,
            memory_blocks: memory,
            flash_blocks: flash,
            local: None,
        }
    }

    #[test]
    fn latency_sensitive_jobs_get_homes_with_headroom_where_memory_is_free() {
        let fast = Hints { bytes: 512 << 20, replicas: 1, latency_sensitive: true };
        let size = 32 << 20;
        assert_eq!(homes(&fast, size, 100), 24);
        // Only what memory has free beyond the exact count.
        assert_eq!(homes(&fast, size, 20), 20);
        assert_eq!(homes(&fast, size, 10), 16);
        // Two copies of each group take twice the blocks.
        assert_eq!(homes(&Hints { replicas: 2, ..fast }, size, 40), 20);
        // Bulk jobs and jobs that gave no size get what they hinted.
        assert_eq!(homes(&Hints { latency_sensitive: false, ..fast }, size, 100), 16);
        assert_eq!(homes(&Hints { bytes: 0, ..fast }, size, 100), 1);
        assert_eq!(homes(&Hints { bytes: size, ..fast }, size, 100), 1);
        assert_eq!(homes(&Hints { bytes: 2 * size, ..fast }, size, 100), 3);
    }

    #[test]
    fn blocks_round_trip_their_keys() {
        let block = Block { node: "s-1".into(), tier: Tier::Flash, index: 12 };
        assert_eq!(Block::parse(&block.key()), Some(block));
        assert_eq!(Block::parse("/baton/store/blocks/s1/x1"), None);
    }

    #[test]
    fn groups_spread_over_nodes_prefer_a_tier_and_keep_copies_apart() {
        let mut map = BlockMap { nodes: vec![node("a", 2, 2), node("b", 2, 2), node("c", 2, 2)], ..Default::default() };
        let fast = Hints { bytes: 0, replicas: 1, latency_sensitive: true };
        let chosen = map.choose(3, &fast, 0).unwrap_or_default();
        let nodes: BTreeSet<&str> = chosen.iter().map(|g| g[0].node.as_str()).collect();
        assert_eq!(nodes.len(), 3, "{chosen:?}");
        assert!(chosen.iter().all(|g| g[0].tier == Tier::Memory));
        // Past the memory, flash.
        let more = map.choose(8, &fast, 1).unwrap_or_default();
        assert_eq!(more.iter().filter(|g| g[0].tier == Tier::Flash).count(), 2);
        assert!(map.choose(13, &fast, 2).is_none());
        // Two copies: never on one node.
        let safe = Hints { replicas: 2, ..fast };
        for group in map.choose(6, &safe, 3).unwrap_or_default() {
            assert_ne!(group[0].node, group[1].node);
        }
        // Not latency-sensitive: flash first.
        let bulk = Hints { latency_sensitive: false, ..fast };
        assert!(map.choose(6, &bulk, 4).unwrap_or_default().iter().all(|g| g[0].tier == Tier::Flash));
        // Held blocks are not free.
        map.held.insert(Block { node: "a".into(), tier: Tier::Memory, index: 0 }, Holder::new(JobId(9), 0, true));
        assert_eq!(map.free_blocks(), (5, 6));
    }
}
