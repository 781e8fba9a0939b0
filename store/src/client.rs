//! A job's client of the store: it caches the job's block map and talks to the storage nodes
//! straight over QUIC; etcd is asked only when the job needs more blocks or the map is stale.
//!
//! **Placement.** Each key has a *home*: one of the groups the job reserved when it opened,
//! chosen by a hash of the key. A put goes to its home's copies; a home that is full refuses it
//! ([`Refusal::Full`]), and the client puts the bytes into one of the job's later groups —
//! reserving one more when all are full — and then *links* the key at its home. A get asks the
//! home, which answers with the data or with the group the data is in. So growing never moves
//! data, a put or get is one request while the homes have room and two after, and a map gone
//! stale (a group the node no longer holds) is refused with [`Refusal::NotHeld`], re-read and
//! retried — never answered with wrong data.
//!
//! **Chunks.** An object larger than a chunk (a quarter of a block, at most 16 MiB) is stored
//! as several chunks, each placed by its own key, so that one object's bytes spread over the
//! nodes; its first chunk, written last, says how many there are, so that a reader never sees
//! part of an object.
//!
//! **Copies.** A job with two replicas writes each item to both copies of its group and is
//! answered only when both hold it; a read falls back to the other copy when a node is gone.
//! With one copy, a read from a node that is gone is an error naming the node and the keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use baton_fabric::JobId;
use baton_fabric::net::TlsDir;
use baton_fabric::net::token::{Audience, Scopes, Token, WireToken, unix_ms_now};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::alloc::{BlockMap, Hints, JobSpace};
use crate::conn::{Body, Nodes, Replica, lost};
use crate::error::{Error, Result};
use crate::etcd::Etcd;
use crate::member::NodeInfo;
pub use crate::proto::Cond;
use crate::proto::{Op, Part, Refusal, Response, check_key, chunk_key};
use crate::put::PutStream;

/// Tries of one operation that meet a stale map or full groups.
const ATTEMPTS: u32 = 16;
/// Chunks of one object moved at once.
const CHUNKS_AT_ONCE: usize = 8;
/// How long a token the client mints itself lasts.
const TOKEN_LIFE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The job's part of the block map.
#[derive(Debug, Default)]
struct JobMap {
    homes: Vec<u64>,
    /// Each group's copies that take writes; a copy still being made comes last.
    groups: BTreeMap<u64, Vec<Replica>>,
    /// Blocks moving away: read when a copy being made does not have an item yet.
    leaving: BTreeMap<u64, Vec<Replica>>,
    block_size: u64,
}

impl JobMap {
    fn of(map: &BlockMap, job: JobId) -> Self {
        let infos: HashMap<&str, &NodeInfo> = map.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut groups: BTreeMap<u64, Vec<(bool, Replica)>> = BTreeMap::new();
        let mut leaving: BTreeMap<u64, Vec<Replica>> = BTreeMap::new();
        for (block, holder) in map.held.iter().filter(|(_, h)| h.job == job) {
            let replica = Replica::of(&block.node, infos.get(block.node.as_str()).copied());
            if holder.moving_to.is_some() {
                leaving.entry(holder.group).or_default().push(replica);
            } else {
                groups.entry(holder.group).or_default().push((holder.from.is_some(), replica));
            }
        }
        let groups = groups
            .into_iter()
            .map(|(g, mut replicas)| {
                replicas.sort_by_key(|(incoming, _)| *incoming);
                (g, replicas.into_iter().map(|(_, r)| r).collect())
            })
            .collect();
        Self { homes: map.homes(job), groups, leaving, block_size: map.block_size() }
    }

    fn home_of(&self, job: JobId, key: &str) -> Result<u64> {
        if self.homes.is_empty() {
            return Err(Error::Invalid {
                what: format!("{job}'s key {key:?}"),
                reason: "the job holds no blocks in the store (it ended, or its lease lapsed)".into(),
            });
        }
        Ok(self.homes[(fnv1a(key.as_bytes()) % self.homes.len() as u64) as usize])
    }

    fn replicas(&self, job: JobId, group: u64) -> Result<&[Replica]> {
        self.groups.get(&group).map(Vec::as_slice).ok_or_else(|| Error::Invalid {
            what: format!("{job}'s group {group}"),
            reason: "the job holds no such group (it ended, or gave the group back)".into(),
        })
    }
}

/// FNV-1a: a hash that is the same in every process and build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A new version for an object being put, and the time it is put.
fn new_version() -> (u64, u64) {
    (rand::random::<u64>().max(1), unix_ms_now())
}

/// What a put to a group came to.
enum Placed {
    Done { unlinked: Option<u64>, replaced: Option<Part> },
    Full,
    Stale,
    Refused(String),
}

/// What the store says of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Its length.
    pub len: u64,
    /// Its version, new with every put (its e-tag).
    pub version: u64,
    /// When it was put, in milliseconds since the Unix epoch.
    pub modified_ms: u64,
}

impl From<Part> for Meta {
    fn from(part: Part) -> Self {
        Self { len: part.total, version: part.version, modified_ms: part.modified_ms }
    }
}

/// What a read from a group came to.
enum Read {
    Item(Part, Bytes),
    Meta(Part),
    Linked(u64),
    Missing,
    /// Deleted while the group is being moved: not to be read from the old block.
    Deleted,
    Stale,
}

/// A job's handle on the store.
#[derive(Debug)]
pub struct StoreClient {
    space: JobSpace,
    token: WireToken,
    nodes: Nodes,
    map: RwLock<Arc<JobMap>>,
    /// Later groups a put found full.
    full: Mutex<BTreeSet<u64>>,
    growing: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StoreClient {
    /// Opens `job` in the store in `etcd` with `hints` (its lease lapses `ttl` after this client
    /// stops renewing it), with a token minted from the cluster's key in `tls`.
    pub async fn open(etcd: &Etcd, tls: &TlsDir, job: JobId, hints: Hints, ttl: Duration) -> Result<Self> {
        let token = tls.signer()?.mint(job, unix_ms_now() + TOKEN_LIFE.as_millis() as u64, Scopes::ALL, Audience::ANY);
        let space = JobSpace::open(etcd, job, hints, ttl).await?;
        Self::with(space, tls, token).await
    }

    /// Attaches to `job`, opened by another process, with a token for it.
    pub async fn attach(etcd: &Etcd, tls: &TlsDir, job: JobId, token: Token) -> Result<Self> {
        if token.job != job {
            return Err(Error::Invalid {
                what: format!("attaching to {job}"),
                reason: "the token is another job's".into(),
            });
        }
        Self::with(JobSpace::attach(etcd, job).await?, tls, token).await
    }

    async fn with(space: JobSpace, tls: &TlsDir, token: Token) -> Result<Self> {
        let client = Self {
            space,
            token: token.into(),
            nodes: Nodes::new(tls)?,
            map: RwLock::default(),
            full: Mutex::default(),
            growing: tokio::sync::Mutex::new(()),
        };
        client.refresh().await?;
        Ok(client)
    }

    /// Talks to storage nodes on this host over loopback TCP (`true`, the default: the bytes
    /// never leave the host, and the job's token is checked all the same) or over QUIC with TLS,
    /// as to any other node (`false`).
    pub fn set_same_host(&self, on: bool) {
        self.nodes.set_same_host(on);
    }

    /// The job.
    pub fn job(&self) -> JobId {
        self.space.job()
    }

    /// The job's namespace (its blocks).
    pub fn space(&self) -> &JobSpace {
        &self.space
    }

    /// Ends the job (if this client opened it): every block it holds is given back.
    pub async fn close(self) -> Result<()> {
        self.nodes.close();
        self.space.close().await
    }

    fn map(&self) -> Arc<JobMap> {
        self.map.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the job's block map again.
    pub async fn refresh(&self) -> Result<()> {
        let map = JobMap::of(&BlockMap::read(self.space.etcd()).await?, self.job());
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
        Ok(())
    }

    /// Bytes per chunk of an object.
    fn chunk(&self) -> u64 {
        (self.map().block_size / 4).clamp(1, 16 << 20)
    }

    // ---- objects ----

    /// Stores `bytes` at `key`, replacing what was there.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<Meta> {
        self.put_if(key, bytes, Cond::Any).await
    }

    /// Stores `bytes` at `key` if `cond` holds ([`Cond::Absent`]: nothing is there;
    /// [`Cond::Version`]: that version is), else [`Error::Precondition`]. The object appears
    /// whole or not at all: its chunks go first, under keys of this version's own, and its
    /// first chunk, which names the version, last.
    pub async fn put_if(&self, key: &str, bytes: Bytes, cond: Cond) -> Result<Meta> {
        check_key(key).map_err(|reason| Error::Invalid { what: "a put".into(), reason })?;
        let chunk = self.chunk();
        let total = bytes.len() as u64;
        let count = u32::try_from(total.div_ceil(chunk).max(1)).map_err(|_| Error::Invalid {
            what: format!("a put of {key:?}"),
            reason: format!("an object of {total} bytes is too large"),
        })?;
        let (version, modified_ms) = new_version();
        let part = |index| Part { index, count, total, chunk, version, modified_ms };
        let slice = |index: u32| {
            let start = u64::from(index) * chunk;
            bytes.slice(start as usize..(start + chunk).min(total) as usize)
        };
        let rest = (1..count).map(|i| (part(i), slice(i))).collect();
        if let Err(e) = self.put_chunks(key, rest, CHUNKS_AT_ONCE).await {
            self.drop_chunks(key, part(0)).await;
            return Err(e);
        }
        self.commit(key, part(0), slice(0), cond).await
    }

    /// An object written in pieces (a multipart upload), which appears when it is finished.
    pub fn put_stream(self: &Arc<Self>, key: &str) -> Result<PutStream> {
        let (version, modified_ms) = new_version();
        PutStream::new(self.clone(), key, self.chunk(), version, modified_ms)
    }

    /// Stores chunks past the first of an object, `at_once` at a time.
    pub(crate) async fn put_chunks(&self, key: &str, chunks: Vec<(Part, Bytes)>, at_once: usize) -> Result<()> {
        let results: Vec<_> = futures::stream::iter(chunks)
            .map(|(part, bytes)| self.put_item(chunk_key(key, part.version, part.index), part, bytes, Cond::Any))
            .buffer_unordered(at_once)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<_>>>().map(drop)
    }

    /// Stores the first chunk of an object whose other chunks are stored, if `cond` holds: the
    /// object appears, and the chunks of the version it replaced go. On an error its own
    /// chunks go instead.
    pub(crate) async fn commit(&self, key: &str, first: Part, bytes: Bytes, cond: Cond) -> Result<Meta> {
        match self.put_item(key.to_string(), first, bytes, cond).await {
            Ok(replaced) => {
                if let Some(old) = replaced.filter(|old| old.version != first.version) {
                    self.drop_chunks(key, old).await;
                }
                Ok(Meta::from(first))
            }
            Err(e) => {
                self.drop_chunks(key, first).await;
                Err(e)
            }
        }
    }

    /// Deletes the chunks past the first of one version of an object (what fails leaves
    /// bytes no key names, given back with the job).
    pub(crate) async fn drop_chunks(&self, key: &str, part: Part) {
        for i in 1..part.count {
            let _ = self.delete_item(&chunk_key(key, part.version, i)).await;
        }
    }

    /// The object at `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self.get_with_meta(key).await?.1)
    }

    /// The object at `key` and its description.
    pub async fn get_with_meta(&self, key: &str) -> Result<(Meta, Bytes)> {
        check_key(key).map_err(|reason| Error::Invalid { what: "a get".into(), reason })?;
        for _ in 0..ATTEMPTS {
            let (part, first) = self.get_item(key, None).await?;
            if part.count <= 1 {
                return Ok((Meta::from(part), first));
            }
            let wanted = (1..part.count).map(|i| (i, None)).collect();
            // A chunk gone: the object was replaced meanwhile; read the new one.
            let rest = match self.get_chunks(key, part.version, wanted).await {
                Err(Error::NotFound { .. }) => continue,
                other => other?,
            };
            let mut whole = BytesMut::with_capacity(part.total as usize);
            whole.extend_from_slice(&first);
            for bytes in rest {
                whole.extend_from_slice(&bytes);
            }
            if whole.len() as u64 != part.total {
                return Err(Error::Invalid {
                    what: format!("{}'s object {key:?}", self.job()),
                    reason: format!("its chunks hold {} of its {} bytes", whole.len(), part.total),
                });
            }
            return Ok((Meta::from(part), whole.freeze()));
        }
        Err(self.too_many(key))
    }

    /// Bytes `start..end` of the object at `key`, and its description.
    pub async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        Ok(self.get_range_with_meta(key, range).await?.1)
    }

    /// Bytes `start..end` of the object at `key`, and its description.
    pub async fn get_range_with_meta(&self, key: &str, range: std::ops::Range<u64>) -> Result<(Meta, Bytes)> {
        for _ in 0..ATTEMPTS {
            let part = self.head_part(key).await?;
            if range.start > range.end || range.end > part.total {
                return Err(Error::Invalid {
                    what: format!("bytes {}..{} of {key:?}", range.start, range.end),
                    reason: format!("the object has {} bytes", part.total),
                });
            }
            if range.is_empty() {
                return Ok((Meta::from(part), Bytes::new()));
            }
            let first = (range.start / part.chunk) as u32;
            let last = ((range.end - 1) / part.chunk) as u32;
            let wanted = (first..=last)
                .map(|i| {
                    let base = u64::from(i) * part.chunk;
                    let start = range.start.max(base) - base;
                    let end = range.end.min(base + part.chunk) - base;
                    (i, Some((start, end)))
                })
                .collect();
            let pieces = match self.get_chunks(key, part.version, wanted).await {
                // Replaced meanwhile: read the new one.
                Err(Error::NotFound { .. }) | Err(Error::Replaced) => continue,
                other => other?,
            };
            let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
            for piece in pieces {
                out.extend_from_slice(&piece);
            }
            return Ok((Meta::from(part), out.freeze()));
        }
        Err(self.too_many(key))
    }

    /// The description of the object at `key`.
    pub async fn head(&self, key: &str) -> Result<Meta> {
        Ok(Meta::from(self.head_part(key).await?))
    }

    /// Deletes the object at `key` ([`Error::NotFound`] if there is none).
    pub async fn delete(&self, key: &str) -> Result<()> {
        check_key(key).map_err(|reason| Error::Invalid { what: "a delete".into(), reason })?;
        let part = self.delete_item(key).await?.ok_or_else(|| self.not_found(key))?;
        self.drop_chunks(key, part).await;
        Ok(())
    }

    /// The job's objects whose keys start with `prefix`, and their descriptions, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Meta)>> {
        let mut objects = BTreeMap::new();
        for replica in self.nodes() {
            match self.call(&replica, Op::List { prefix: prefix.to_string() }, None).await?.0 {
                Response::Objects { objects: some } => {
                    objects.extend(some.into_iter().map(|(key, part)| (key, Meta::from(part))));
                }
                other => return Err(self.unexpected(&replica, "a list", other)),
            }
        }
        Ok(objects.into_iter().collect())
    }

    /// Bytes the job holds on each node (by node name), as the nodes count them.
    pub async fn usage(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self.usage_by_group().await?.into_iter().map(|(node, groups)| (node, groups.values().sum())).collect())
    }

    /// Gives back the job's later groups that hold nothing on any copy (after deletes): their
    /// blocks serve other jobs at once. The homes stay, and so do groups being moved. Returns
    /// how many groups went. Each group is first sealed on every copy — a node grants that only
    /// while the group holds nothing, stored or arriving, and then refuses puts into it as a full
    /// block does — so a put racing the give-back, from this process or another of the job,
    /// lands in another group and is never lost with the block.
    pub async fn give_back_empty(&self) -> Result<usize> {
        let _one = self.growing.lock().await;
        self.refresh().await?;
        let map = self.map();
        let mut sealed: Vec<(u64, &[Replica])> = Vec::new();
        let candidates = map.groups.iter().filter(|(g, _)| !map.homes.contains(g) && !map.leaving.contains_key(g));
        for (group, replicas) in candidates {
            match self.seal_all(*group, replicas).await {
                Ok(true) => sealed.push((*group, replicas)),
                Ok(false) => {}
                Err(e) => {
                    self.unseal(&sealed).await;
                    return Err(e);
                }
            }
        }
        if sealed.is_empty() {
            return Ok(0);
        }
        let empty: BTreeSet<u64> = sealed.iter().map(|(g, _)| *g).collect();
        if let Err(e) = self.space.shrink(&empty).await {
            self.unseal(&sealed).await;
            return Err(e);
        }
        lock(&self.full).retain(|g| !empty.contains(g));
        self.refresh().await?;
        Ok(empty.len())
    }

    /// Seals `group` on every copy if it is empty on all: `false` (and nothing left sealed) if
    /// one holds something.
    async fn seal_all(&self, group: u64, replicas: &[Replica]) -> Result<bool> {
        for (i, replica) in replicas.iter().enumerate() {
            let refused = match self.call(replica, Op::Seal { group, sealed: true }, None).await {
                Ok((Response::Done { .. }, _)) => continue,
                Ok((Response::Refused(Refusal::Precondition(_)), _)) => None,
                Ok((other, _)) => Some(self.unexpected(replica, "a seal", other)),
                Err(e) => Some(e),
            };
            self.unseal(&[(group, &replicas[..i])]).await;
            return refused.map_or(Ok(false), Err);
        }
        Ok(true)
    }

    /// Lets sealed groups take puts again (best effort: a node that does not answer keeps its
    /// copy sealed, which only makes the group look full).
    async fn unseal(&self, groups: &[(u64, &[Replica])]) {
        for (group, replicas) in groups {
            for replica in *replicas {
                let _ = self.call(replica, Op::Seal { group: *group, sealed: false }, None).await;
            }
        }
    }

    // ---- items ----

    /// Puts one item at its home, or elsewhere with a link at its home when the home is full;
    /// what it replaced.
    async fn put_item(&self, key: String, part: Part, bytes: Bytes, cond: Cond) -> Result<Option<Part>> {
        for attempt in 0..ATTEMPTS {
            let map = self.map();
            let home = map.home_of(self.job(), &key)?;
            match self.put_to(&map, home, &key, part, &bytes, cond).await? {
                Placed::Done { unlinked, replaced } => {
                    if let Some(old) = unlinked {
                        self.forget_copy(&map, old, &key).await;
                    }
                    return Ok(replaced);
                }
                Placed::Full => return self.put_elsewhere(&key, part, &bytes, home, cond).await,
                Placed::Stale => self.stale(attempt).await?,
                Placed::Refused(reason) => return Err(self.precondition(&key, reason)),
            }
        }
        Err(self.too_many(&key))
    }

    /// Puts an item whose home is full into a later group, and links it at its home.
    async fn put_elsewhere(&self, key: &str, part: Part, bytes: &Bytes, home: u64, cond: Cond) -> Result<Option<Part>> {
        for attempt in 0..ATTEMPTS {
            let map = self.map();
            let full = lock(&self.full).clone();
            let Some(at) = map.groups.keys().rev().copied().find(|g| !map.homes.contains(g) && !full.contains(g))
            else {
                self.grow(&full).await?;
                continue;
            };
            match self.put_to(&map, at, key, part, bytes, Cond::Any).await? {
                Placed::Done { .. } => {
                    let linked = self.link(key, home, at, part, cond).await;
                    if linked.is_err() {
                        self.forget_copy(&map, at, key).await;
                    }
                    return linked;
                }
                Placed::Full => {
                    lock(&self.full).insert(at);
                }
                Placed::Stale => self.stale(attempt).await?,
                Placed::Refused(reason) => return Err(self.precondition(key, reason)),
            }
        }
        Err(self.too_many(key))
    }

    /// Reserves one more group, unless another put did since `full` was read.
    async fn grow(&self, full: &BTreeSet<u64>) -> Result<()> {
        let _one = self.growing.lock().await;
        let map = self.map();
        let now = lock(&self.full).clone();
        let fresh = map.groups.keys().any(|g| !map.homes.contains(g) && !now.contains(g) && !full.contains(g));
        if !fresh {
            self.space.grow(1).await?;
        }
        self.refresh().await
    }

    async fn link(&self, key: &str, home: u64, at: u64, part: Part, cond: Cond) -> Result<Option<Part>> {
        for attempt in 0..ATTEMPTS {
            let map = self.map();
            let replicas = map.replicas(self.job(), home)?;
            let op = Op::Link { group: home, key: key.to_string(), at, part, cond };
            let answers = futures::future::join_all(replicas.iter().map(|r| self.call(r, op.clone(), None))).await;
            let mut stale = false;
            let (mut unlinked, mut replaced) = (None, None);
            for (replica, answer) in replicas.iter().zip(answers) {
                match answer.map_err(|e| with_keys(e, key))?.0 {
                    Response::Done { unlinked: u, replaced: r } => {
                        unlinked = unlinked.or(u);
                        replaced = replaced.or(r);
                    }
                    Response::Refused(Refusal::NotHeld { .. }) => stale = true,
                    Response::Refused(Refusal::Precondition(reason)) => return Err(self.precondition(key, reason)),
                    other => return Err(self.unexpected(replica, "a link", other)),
                }
            }
            if !stale {
                if let Some(old) = unlinked.filter(|old| *old != at) {
                    self.forget_copy(&map, old, key).await;
                }
                return Ok(replaced);
            }
            self.stale(attempt).await?;
        }
        Err(self.too_many(key))
    }

    /// Deletes a copy of `key` a put or link displaced from group `at` (what fails leaves only
    /// unreachable bytes, given back with the job).
    async fn forget_copy(&self, map: &JobMap, at: u64, key: &str) {
        if let Ok(replicas) = map.replicas(self.job(), at) {
            for r in replicas {
                let _ = self.call(r, Op::Delete { group: at, key: key.to_string() }, None).await;
            }
            lock(&self.full).remove(&at);
        }
    }

    async fn put_to(
        &self,
        map: &JobMap,
        group: u64,
        key: &str,
        part: Part,
        bytes: &Bytes,
        cond: Cond,
    ) -> Result<Placed> {
        let replicas = map.replicas(self.job(), group)?;
        let op = Op::Put { group, key: key.to_string(), len: bytes.len() as u64, part, cond };
        let answers =
            futures::future::join_all(replicas.iter().map(|r| self.call(r, op.clone(), Some(bytes.clone())))).await;
        let mut placed = Placed::Done { unlinked: None, replaced: None };
        for (replica, answer) in replicas.iter().zip(answers) {
            match answer.map_err(|e| with_keys(e, key))?.0 {
                Response::Done { unlinked: u, replaced: r } => {
                    if let Placed::Done { unlinked, replaced } = &mut placed {
                        *unlinked = unlinked.or(u);
                        *replaced = replaced.or(r);
                    }
                }
                Response::Refused(Refusal::Full { .. }) => placed = Placed::Full,
                Response::Refused(Refusal::Precondition(reason)) => return Ok(Placed::Refused(reason)),
                Response::Refused(Refusal::NotHeld { .. }) => {
                    if !matches!(placed, Placed::Full) {
                        placed = Placed::Stale;
                    }
                }
                other => return Err(self.unexpected(replica, "a put", other)),
            }
        }
        Ok(placed)
    }

    async fn get_item(&self, key: &str, range: Option<(u64, u64)>) -> Result<(Part, Bytes)> {
        match self.find(key, |group| Op::Get { group, key: key.to_string(), range }).await? {
            Read::Item(part, bytes) => Ok((part, bytes)),
            _ => Err(self.not_found(key)),
        }
    }

    async fn head_part(&self, key: &str) -> Result<Part> {
        check_key(key).map_err(|reason| Error::Invalid { what: "a head".into(), reason })?;
        match self.find(key, |group| Op::Head { group, key: key.to_string() }).await? {
            Read::Meta(part) => Ok(part),
            _ => Err(self.not_found(key)),
        }
    }

    /// Asks `key`'s home, and the group its link names.
    async fn find(&self, key: &str, op: impl Fn(u64) -> Op) -> Result<Read> {
        for attempt in 0..ATTEMPTS {
            let map = self.map();
            let home = map.home_of(self.job(), key)?;
            let read = match self.read_group(&map, home, key, op(home)).await? {
                Read::Linked(at) => self.read_group(&map, at, key, op(at)).await?,
                read => read,
            };
            match read {
                Read::Stale => self.stale(attempt).await?,
                // A link to a group that had no such key: a put or delete raced this read.
                Read::Linked(_) => self.stale(attempt).await?,
                read => return Ok(read),
            }
        }
        Err(self.too_many(key))
    }

    /// Chunks of `version` of the object at `key`; [`Error::Replaced`] if one is of another
    /// version (the object was replaced meanwhile).
    async fn get_chunks(&self, key: &str, version: u64, wanted: Vec<(u32, Option<(u64, u64)>)>) -> Result<Vec<Bytes>> {
        let results: Vec<Result<Bytes>> = futures::stream::iter(wanted)
            .map(|(i, range)| async move {
                let (part, bytes) = self.get_item(&chunk_key(key, version, i), range).await?;
                if part.version == version { Ok(bytes) } else { Err(Error::Replaced) }
            })
            .buffered(CHUNKS_AT_ONCE)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// One group's answer. While a copy of the group is being moved, what the new block does
    /// not have yet is read from the old one — and then from the new one again, in case the
    /// copy moved it in between.
    async fn read_group(&self, map: &JobMap, group: u64, key: &str, op: Op) -> Result<Read> {
        let replicas = map.replicas(self.job(), group)?;
        let Some(leaving) = map.leaving.get(&group) else {
            return self.read_from(replicas, key, op).await;
        };
        match self.read_from(replicas, key, op.clone()).await {
            Ok(Read::Missing) | Err(Error::Lost { .. }) => {}
            Ok(Read::Deleted) => return Ok(Read::Missing),
            other => return other,
        }
        match self.read_from(leaving, key, op.clone()).await? {
            Read::Missing | Read::Stale | Read::Deleted => match self.read_from(replicas, key, op).await? {
                Read::Deleted => Ok(Read::Missing),
                read => Ok(read),
            },
            read => Ok(read),
        }
    }

    /// An answer from the first of `replicas` that answers.
    async fn read_from(&self, replicas: &[Replica], key: &str, op: Op) -> Result<Read> {
        let mut replicas: Vec<&Replica> = replicas.iter().collect();
        // Stable: a copy still being made stays behind the whole ones.
        replicas.sort_by_key(|r| r.addr.is_none() || self.nodes.is_dead(&r.node));
        let mut lost = None;
        for replica in replicas {
            let (response, body) = match self.call(replica, op.clone(), None).await {
                Ok(answer) => answer,
                Err(e @ Error::Lost { .. }) => {
                    lost = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            return Ok(match response {
                Response::Item { len, part } => {
                    let peer = format!("storage node {}", replica.node);
                    match body.item(&peer, len).await {
                        Ok(bytes) => Read::Item(part, bytes),
                        Err(e) => {
                            lost = Some(self.lost(replica, e.to_string()));
                            continue;
                        }
                    }
                }
                Response::Meta { part } => Read::Meta(part),
                Response::Linked { at, part } => match op {
                    // A head needs no more than the link says.
                    Op::Head { .. } => Read::Meta(part),
                    _ => Read::Linked(at),
                },
                Response::Refused(Refusal::NotFound) => Read::Missing,
                Response::Refused(Refusal::Deleted) => Read::Deleted,
                Response::Refused(Refusal::NotHeld { .. }) => Read::Stale,
                other => return Err(self.unexpected(replica, "a read", other)),
            });
        }
        Err(with_keys(lost.unwrap_or_else(|| self.not_found(key)), key))
    }

    /// Deletes an item at its home (and where its link points); what was there, or `None` if
    /// nothing was.
    async fn delete_item(&self, key: &str) -> Result<Option<Part>> {
        for attempt in 0..ATTEMPTS {
            let map = self.map();
            let home = map.home_of(self.job(), key)?;
            let replicas = map.replicas(self.job(), home)?;
            // A home moving away may hold the key (or a link) the new block has not got yet:
            // the delete counts there too (the new block remembers it, so the copy skips it).
            let mut moving: Option<(Part, Option<u64>)> = None;
            if let Some(leaving) = map.leaving.get(&home) {
                let op = Op::Get { group: home, key: key.to_string(), range: Some((0, 0)) };
                moving = match self.read_from(leaving, key, op).await {
                    Ok(Read::Item(part, _)) => Some((part, None)),
                    Ok(Read::Linked(at)) => {
                        let head = Op::Head { group: at, key: key.to_string() };
                        match self.read_from(map.replicas(self.job(), at)?, key, head).await {
                            Ok(Read::Meta(part)) => Some((part, Some(at))),
                            _ => None,
                        }
                    }
                    _ => None,
                };
            }
            let op = Op::Delete { group: home, key: key.to_string() };
            let answers = futures::future::join_all(replicas.iter().map(|r| self.call(r, op.clone(), None))).await;
            let (mut stale, mut unlinked, mut replaced) = (false, None, None);
            for (replica, answer) in replicas.iter().zip(answers) {
                match answer.map_err(|e| with_keys(e, key))?.0 {
                    Response::Done { unlinked: u, replaced: r } => {
                        unlinked = unlinked.or(u);
                        replaced = replaced.or(r);
                    }
                    Response::Refused(Refusal::NotFound) => {}
                    Response::Refused(Refusal::NotHeld { .. }) => stale = true,
                    other => return Err(self.unexpected(replica, "a delete", other)),
                }
            }
            if stale {
                self.stale(attempt).await?;
                continue;
            }
            if let Some(at) = unlinked.or(moving.and_then(|(_, at)| at)) {
                self.forget_copy(&map, at, key).await;
            }
            return Ok(replaced.or(moving.map(|(part, _)| part)));
        }
        Err(self.too_many(key))
    }

    async fn usage_by_group(&self) -> Result<BTreeMap<String, BTreeMap<u64, u64>>> {
        let mut usage = BTreeMap::new();
        for replica in self.nodes() {
            match self.call(&replica, Op::Usage, None).await?.0 {
                Response::Usage { groups } => {
                    usage.insert(replica.node.clone(), groups.into_iter().collect());
                }
                other => return Err(self.unexpected(&replica, "a usage", other)),
            }
        }
        Ok(usage)
    }

    /// Each node the job has a block on, once.
    fn nodes(&self) -> Vec<Replica> {
        let mut nodes: BTreeMap<String, Replica> = BTreeMap::new();
        let map = self.map();
        for replica in map.groups.values().chain(map.leaving.values()).flatten() {
            nodes.entry(replica.node.clone()).or_insert_with(|| replica.clone());
        }
        nodes.into_values().collect()
    }

    /// After a stale answer: reads the map again, after a pause that grows.
    async fn stale(&self, attempt: u32) -> Result<()> {
        if attempt > 0 {
            let ceiling = 5u64 << attempt.min(6);
            tokio::time::sleep(Duration::from_millis(rand::random_range(1..=ceiling))).await;
        }
        self.refresh().await
    }

    async fn call(&self, replica: &Replica, op: Op, body: Option<Bytes>) -> Result<(Response, Body)> {
        self.nodes.call(self.job(), &self.token, replica, op, body).await
    }

    fn lost(&self, replica: &Replica, reason: String) -> Error {
        lost(self.job(), replica, reason)
    }

    fn unexpected(&self, replica: &Replica, what: &str, response: Response) -> Error {
        let reason = match response {
            Response::Refused(r) => format!("{r:?}"),
            other => format!("unexpected answer {other:?}"),
        };
        Error::Refused { node: replica.node.clone(), what: format!("{what} for {}", self.job()), reason }
    }

    fn precondition(&self, key: &str, reason: String) -> Error {
        Error::Precondition { job: self.job(), key: key.to_string(), reason }
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound { job: self.job(), key: key.split('\0').next().unwrap_or(key).to_string() }
    }

    fn too_many(&self, key: &str) -> Error {
        Error::Invalid {
            what: format!("{}'s key {key:?}", self.job()),
            reason: format!("{ATTEMPTS} tries met a map that kept changing"),
        }
    }
}

/// Names `key` in a lost-node error.
fn with_keys(e: Error, key: &str) -> Error {
    match e {
        Error::Lost { job, node, mut keys, reason } => {
            let key = key.split('\0').next().unwrap_or(key).to_string();
            if !keys.contains(&key) {
                keys.push(key);
            }
            Error::Lost { job, node, keys, reason }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_are_chosen_by_a_stable_hash() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let map = JobMap { homes: vec![0, 1, 2], ..JobMap::default() };
        let homes: BTreeSet<u64> = (0..64).filter_map(|i| map.home_of(JobId(1), &format!("k{i}")).ok()).collect();
        assert_eq!(homes.len(), 3, "64 keys use every home");
        let none = JobMap::default();
        assert!(none.home_of(JobId(1), "k").unwrap_err().to_string().contains("holds no blocks"));
    }
}
