//! A storage node: lends its memory and flash to the store in blocks, and serves the objects
//! jobs pack into them over QUIC.
//!
//! The node joins the membership ([`Membership`]) and follows the block map in etcd: which of its
//! blocks belong to which job's group ([`Holder`]). It takes a put only into a group it holds a
//! block of, and only while the block has room (a put that does not fit is refused with
//! [`Refusal::Full`], and the client places it elsewhere); a request for a group it does not
//! hold reads the map again before it is refused with [`Refusal::NotHeld`] (the client's map
//! is stale). When a job's blocks leave the map — the job ended, its lease lapsed, it gave the
//! group back — the node deletes what it held for them at its next look at the map.
//!
//! A memory block's items live in memory; a flash block's in files of their own (0600, in a
//! directory the node made, removed with it). A node whose memory blocks are all held moves its
//! coldest memory block to flash ([`demote`]).

mod demote;
mod io;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_fabric::JobId;
use baton_fabric::net::token::{Audience, Scopes, Token, TokenPublicKey, unix_ms_now};
use baton_fabric::net::transport::Limits;
use baton_fabric::net::{NetStats, TlsDir};
use baton_fabric::node::wire;
use baton_fabric::private::OwnedDir;
use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::alloc::{Block, Holder, Tier};
use crate::error::{Error, Result};
use crate::etcd::Etcd;
use crate::member::{DRAINED, MEMBER_TTL, Membership, NodeInfo, ROOT, drain_key};
use crate::proto::{Cond, MAX_KEY, MAX_REQUEST, Op, Part, Refusal, Request, Response};
use io::{Rx, Tx};

/// Bytes per QUIC write of an item sent.
const SEND_CHUNK: usize = 1 << 20;

/// A storage node's settings.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Its name in the store.
    pub name: String,
    /// Where it serves clients.
    pub listen: SocketAddr,
    /// The cluster's TLS material (its certificate, and the key that checks tokens).
    pub tls: TlsDir,
    /// Its QUIC windows and timeouts.
    pub limits: Limits,
    /// Bytes per block.
    pub block_size: u64,
    /// Memory it lends.
    pub memory: u64,
    /// Flash it lends.
    pub flash: u64,
    /// Where its flash blocks' files go (in a directory of its own there).
    pub flash_dir: PathBuf,
    /// How often it reads the block map when nothing asks it to.
    pub sync_every: Duration,
    /// Whether it also serves clients on its own host over loopback TCP, without TLS
    /// ([`crate::same_host`]).
    pub same_host: bool,
    /// How long a memory block must have gone unread and unwritten before the node may move it
    /// to flash to free memory ([`demote`]).
    pub cold_after: Duration,
}

/// A running storage node. Dropped, it stops serving and its membership lapses; [`StorageNode::leave`]
/// leaves at once.
#[derive(Debug)]
pub struct StorageNode {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    info: NodeInfo,
    membership: Option<Membership>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    etcd: Etcd,
    verifier: TokenPublicKey,
    audiences: Vec<Audience>,
    block_size: u64,
    /// Its blocks per tier.
    memory_blocks: u64,
    flash_blocks: u64,
    cold_after: Duration,
    flash: Option<OwnedDir>,
    next_file: AtomicU64,
    state: Mutex<State>,
    /// One read of the map at a time; `syncs` counts the reads finished.
    syncing: tokio::sync::Mutex<()>,
    syncs: AtomicU64,
    stats: NetStats,
    /// Requests served to clients on this host, over loopback TCP.
    same_host_requests: AtomicU64,
    /// Set once the node was drained: it holds no block and the controller said so.
    drained: tokio::sync::watch::Sender<bool>,
    /// Tokens whose signature checked, by signature: each request then checks only its claims
    /// (an Ed25519 verification costs more than a small get).
    verified: Mutex<HashMap<[u8; 64], Token>>,
}

/// Tokens a node remembers as verified (then it forgets them all and starts again).
const VERIFIED: usize = 4096;

/// What the node holds.
#[derive(Debug, Default)]
struct State {
    /// The etcd revision `held` was read at.
    revision: i64,
    /// Its blocks in the map: each (job, group) it holds a block of.
    held: HashMap<(JobId, u64), View>,
    /// Each held block's key and value in the map, and its lease (what a demotion rewrites).
    keys: HashMap<(JobId, u64), demote::MapEntry>,
    /// When each held group was last read or written (or first seen in the map).
    touched: HashMap<(JobId, u64), Instant>,
    /// What is stored in them.
    groups: HashMap<(JobId, u64), Group>,
}

/// A block as the map describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct View {
    tier: Tier,
    /// A copy of the group is being made into it.
    incoming: bool,
    /// It is moving to another node: reads only.
    leaving: bool,
}

#[derive(Debug, Default)]
struct Group {
    /// Bytes of items stored and being received.
    used: u64,
    items: HashMap<String, Item>,
    /// Keys whose home this group is, stored in another group: which, and what is there.
    links: HashMap<String, (u64, Part)>,
    /// Keys deleted while a copy of the group is being made into this block, so that the copy
    /// does not bring them back.
    deleted: std::collections::HashSet<String>,
    /// Bytes kept for the copy still to come.
    reserved: u64,
    /// Puts are refused: the job is giving the (empty) group back.
    sealed: bool,
}

#[derive(Clone, Debug)]
struct Item {
    part: Part,
    data: Data,
}

impl Item {
    fn len(&self) -> u64 {
        match &self.data {
            Data::Memory(b) => b.len() as u64,
            Data::Flash(f) => f.len,
        }
    }
}

#[derive(Clone, Debug)]
enum Data {
    Memory(Bytes),
    Flash(Arc<FlashFile>),
}

/// An item's file on flash, deleted when the last reader of it is done.
#[derive(Debug)]
struct FlashFile {
    path: PathBuf,
    len: u64,
}

impl Drop for FlashFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StorageNode {
    /// Starts serving on `config.listen`, joins the store in `etcd`, and reads its blocks.
    pub async fn start(etcd: &Etcd, config: &NodeConfig) -> Result<Self> {
        etcd.revision().await?;
        let server = config.tls.server_config(&config.limits)?;
        let verifier = config.tls.verifier()?;
        let audiences = config.tls.names()?.iter().map(|n| Audience::node(n)).collect();
        let endpoint = baton_fabric::net::transport::endpoint(config.listen, Some(server), &config.limits)
            .map_err(|e| Error::Io { what: format!("listen on {}", config.listen), source: e })?;
        let addr = endpoint.local_addr().map_err(|e| Error::Io { what: "the local address".into(), source: e })?;
        let block_size = config.block_size.max(1);
        let mut info = NodeInfo {
            name: config.name.clone(),
            addr,
            block_size,
            memory_blocks: config.memory / block_size,
            flash_blocks: config.flash / block_size,
            local: None,
        };
        info.check()?;
        // Clients on this host: loopback only, and only where the host can be named.
        let mut local = None;
        if config.same_host
            && let Some(host) = crate::same_host::this_host()
        {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(|e| Error::Io { what: "listen on 127.0.0.1 for clients on this host".into(), source: e })?;
            let port = listener
                .local_addr()
                .map_err(|e| Error::Io { what: "the same-host listener's address".into(), source: e })?
                .port();
            info.local = Some(crate::same_host::SameHost { host: host.to_string(), port });
            local = Some(listener);
        }
        let flash = if info.flash_blocks > 0 { Some(OwnedDir::create(&config.flash_dir, "flash_dir")?) } else { None };
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            etcd: etcd.clone(),
            verifier,
            audiences,
            block_size,
            memory_blocks: info.memory_blocks,
            flash_blocks: info.flash_blocks,
            cold_after: config.cold_after,
            flash,
            next_file: AtomicU64::new(0),
            state: Mutex::default(),
            syncing: tokio::sync::Mutex::new(()),
            syncs: AtomicU64::new(0),
            stats: NetStats::default(),
            same_host_requests: AtomicU64::new(0),
            drained: tokio::sync::watch::Sender::new(false),
            verified: Mutex::default(),
        });
        let membership = Membership::join(etcd, &info, MEMBER_TTL).await?;
        sync(&shared).await?;
        let follow = tokio::spawn(follow(shared.clone(), config.sync_every));
        let serve = tokio::spawn(accept(endpoint.clone(), shared.clone()));
        let mut tasks = vec![follow, serve];
        if let Some(listener) = local {
            tasks.push(tokio::spawn(io::accept_local(listener, shared.clone())));
        }
        Ok(Self { endpoint, shared, info, membership: Some(membership), tasks })
    }

    /// How it appears in the membership.
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// Bytes it holds per job and group.
    pub fn usage(&self) -> Vec<(JobId, u64, u64)> {
        let state = lock(&self.shared.state);
        let mut usage: Vec<_> = state.groups.iter().map(|((job, group), g)| (*job, *group, g.used)).collect();
        usage.sort();
        usage
    }

    /// Bytes of items it holds in memory and on flash.
    pub fn tiers(&self) -> (u64, u64) {
        let state = lock(&self.shared.state);
        let (mut memory, mut flash) = (0, 0);
        for item in state.groups.values().flat_map(|g| g.items.values()) {
            match &item.data {
                Data::Memory(b) => memory += b.len() as u64,
                Data::Flash(f) => flash += f.len,
            }
        }
        (memory, flash)
    }

    /// Resolves once the node has been drained (`baton store drain`): it holds no block, and
    /// should leave.
    pub async fn drained(&self) {
        let mut drained = self.shared.drained.subscribe();
        let _ = drained.wait_for(|d| *d).await;
    }

    /// Resolves once the node's membership has lapsed (etcd unreachable for longer than its
    /// lease): it is no longer part of the store, and should stop.
    pub async fn lapsed(&self) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if !self.membership.as_ref().is_some_and(Membership::alive) {
                return;
            }
        }
    }

    /// Requests it served to clients on its own host, over loopback TCP.
    pub fn same_host_requests(&self) -> u64 {
        self.shared.same_host_requests.load(Ordering::Relaxed)
    }

    /// Bytes received and sent.
    pub fn stats(&self) -> &NetStats {
        &self.shared.stats
    }

    /// Leaves the store now and stops serving.
    pub async fn leave(mut self) -> Result<()> {
        match self.membership.take() {
            Some(m) => m.leave().await,
            None => Ok(()),
        }
    }
}

impl Drop for StorageNode {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"storage node stopping");
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Reads the map every `every`, so that what jobs gave back (or lost with their lease) goes.
async fn follow(shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
    loop {
        tick.tick().await;
        if let Err(e) = sync(&shared).await {
            tracing::warn!("storage node {}: cannot read the block map: {e}", shared.name);
            continue;
        }
        if let Err(e) = demote::relieve(&shared).await {
            tracing::warn!("storage node {}: cannot move a cold block to flash: {e}", shared.name);
        }
        demote::sweep(&shared).await;
    }
}

/// Reads this node's blocks from the map and deletes what it holds for blocks no longer its.
async fn sync(shared: &Arc<Shared>) -> Result<()> {
    let _one = shared.syncing.lock().await;
    let prefix = format!("{ROOT}blocks/{}/", shared.name);
    let (kvs, revision) = shared.etcd.list_at(&prefix).await?;
    let mut held = HashMap::new();
    let mut keys = HashMap::new();
    for kv in kvs {
        let block = Block::parse(&kv.key)
            .ok_or_else(|| Error::Corrupt { key: kv.key.clone(), reason: "not a block's key".into() })?;
        let holder: Holder = serde_json::from_slice(&kv.value)
            .map_err(|e| Error::Corrupt { key: kv.key.clone(), reason: e.to_string() })?;
        let view = View { tier: block.tier, incoming: holder.from.is_some(), leaving: holder.moving_to.is_some() };
        held.insert((holder.job, holder.group), view);
        keys.insert((holder.job, holder.group), demote::MapEntry { block, value: kv.value, lease: kv.lease });
    }
    let gone: Vec<Group> = {
        let mut state = lock(&shared.state);
        if revision < state.revision {
            return Ok(());
        }
        state.revision = revision;
        state.held = held;
        state.keys = keys;
        let now = Instant::now();
        let State { held, touched, .. } = &mut *state;
        touched.retain(|k, _| held.contains_key(k));
        for k in held.keys() {
            touched.entry(*k).or_insert(now);
        }
        let dropped: Vec<(JobId, u64)> = state.groups.keys().filter(|k| !state.held.contains_key(k)).copied().collect();
        let gone = dropped.into_iter().filter_map(|k| state.groups.remove(&k)).collect();
        let State { held, groups, .. } = &mut *state;
        for (key, group) in groups.iter_mut() {
            if !held.get(key).is_some_and(|v| v.incoming) {
                group.deleted.clear();
                group.reserved = 0;
            }
        }
        gone
    };
    shared.syncs.fetch_add(1, Ordering::Release);
    let empty = lock(&shared.state).held.is_empty();
    if empty && shared.etcd.get(&drain_key(&shared.name)).await?.is_some_and(|kv| kv.value == DRAINED) {
        shared.drained.send_replace(true);
    }
    if !gone.is_empty() {
        let bytes: u64 = gone.iter().map(|g| g.used).sum();
        tracing::info!("storage node {}: {} groups given back, {bytes} bytes deleted", shared.name, gone.len());
        // Flash files are removed as their items drop: off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(gone)).await;
    }
    Ok(())
}

/// The node's block of `job`'s `group`, reading the map again if it holds none (a group
/// reserved since the last read).
async fn held(shared: &Arc<Shared>, job: JobId, group: u64) -> Result<View, Refusal> {
    if let Some(view) = lock(&shared.state).held.get(&(job, group)) {
        return Ok(*view);
    }
    let before = shared.syncs.load(Ordering::Acquire);
    let _wait = shared.syncing.lock().await;
    drop(_wait);
    // Another request's read may have finished while this one waited: then that read counts.
    if shared.syncs.load(Ordering::Acquire) == before
        && let Err(e) = sync(shared).await
    {
        return Err(Refusal::Failed(format!("cannot read the block map: {e}")));
    }
    lock(&shared.state).held.get(&(job, group)).copied().ok_or(Refusal::NotHeld { group })
}

async fn accept(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else { return };
            let peer = connection.remote_address().to_string();
            while let Ok((send, recv)) = connection.accept_bi().await {
                tokio::spawn(serve_stream(shared.clone(), peer.clone(), send, recv));
            }
        });
    }
}

async fn serve_stream(shared: Arc<Shared>, peer: String, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let start = Instant::now();
    let request = match wire::recv_within::<Request>(&mut recv, &peer, MAX_REQUEST).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(e) => {
            let _ = reply(&mut Tx::Quic(&mut send), &peer, &Response::Refused(Refusal::Invalid(e.to_string()))).await;
            return;
        }
    };
    let op = op_name(&request.op);
    let outcome = handle(&shared, &peer, request, &mut Tx::Quic(&mut send), &mut Rx::Quic(&mut recv)).await;
    let _ = record(&shared, &peer, op, start, outcome, &mut Tx::Quic(&mut send)).await;
}

/// Counts a request by its outcome, and answers a refusal.
async fn record(
    shared: &Shared,
    peer: &str,
    op: &'static str,
    start: Instant,
    outcome: std::result::Result<(), Refusal>,
    send: &mut Tx<'_>,
) -> std::result::Result<(), Refusal> {
    let counted = match &outcome {
        Ok(()) => "ok",
        Err(Refusal::NotFound) => "miss",
        Err(Refusal::Full { .. }) => "full",
        Err(Refusal::NotHeld { .. }) => "not_held",
        Err(_) => "error",
    };
    metrics::counter!("baton_store_node_requests_total", "op" => op, "outcome" => counted).increment(1);
    metrics::histogram!("baton_store_node_request_seconds", "op" => op).record(start.elapsed().as_secs_f64());
    if let Err(refusal) = outcome {
        if matches!(refusal, Refusal::Unauthorized(_)) {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        return reply(send, peer, &Response::Refused(refusal)).await;
    }
    Ok(())
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Put { .. } => "put",
        Op::Get { .. } => "get",
        Op::Head { .. } => "head",
        Op::Delete { .. } => "delete",
        Op::Link { .. } => "link",
        Op::List { .. } => "list",
        Op::Usage => "usage",
        Op::Dump { .. } => "dump",
        Op::Sync => "sync",
        Op::Reserve { .. } => "reserve",
        Op::Seal { .. } => "seal",
    }
}

async fn reply(send: &mut Tx<'_>, peer: &str, response: &Response) -> std::result::Result<(), Refusal> {
    send.message(peer, response).await?;
    send.finish();
    Ok(())
}

fn authorize(shared: &Shared, request: &Request, needed: Scopes) -> std::result::Result<JobId, Refusal> {
    let job = JobId(request.job);
    let token = request.token.clone().ok_or_else(|| Refusal::Unauthorized(format!("no token for {job}")))?;
    let token = Token::try_from(token).map_err(|e| Refusal::Unauthorized(e.to_string()))?;
    let known = lock(&shared.verified).get(&token.signature).is_some_and(|t| *t == token);
    if !known {
        shared.verifier.verify_signature(&token).map_err(|e| Refusal::Unauthorized(format!("{job}: {e}")))?;
        let mut verified = lock(&shared.verified);
        if verified.len() >= VERIFIED {
            verified.clear();
        }
        verified.insert(token.signature, token);
    }
    TokenPublicKey::verify_claims(&token, job, needed, &shared.audiences, unix_ms_now())
        .map_err(|e| Refusal::Unauthorized(format!("{job}: {e}")))?;
    Ok(job)
}

/// The node's block of `job`'s `group`, if it takes writes (a block moving away does not).
async fn writable(shared: &Arc<Shared>, job: JobId, group: u64) -> Result<View, Refusal> {
    let view = held(shared, job, group).await?;
    if view.leaving { Err(Refusal::NotHeld { group }) } else { Ok(view) }
}

/// A stored item's key: an object's key, or a chunk's (`key\0n`).
fn check_item_key(key: &str) -> std::result::Result<(), Refusal> {
    if key.is_empty() || key.len() > MAX_KEY + 32 {
        return Err(Refusal::Invalid(format!("a key of {} bytes", key.len())));
    }
    Ok(())
}

async fn handle(
    shared: &Arc<Shared>,
    peer: &str,
    request: Request,
    send: &mut Tx<'_>,
    recv: &mut Rx<'_>,
) -> std::result::Result<(), Refusal> {
    let response = match &request.op {
        Op::Put { group, key, len, part, cond } => {
            let job = authorize(shared, &request, Scopes::WRITE)?;
            check_item_key(key)?;
            let put = Put { job, group: *group, key, len: *len, part: *part, cond: *cond };
            receive(shared, peer, put, recv).await?
        }
        Op::Get { group, key, range } => {
            let job = authorize(shared, &request, Scopes::READ)?;
            held(shared, job, *group).await?;
            touch(shared, job, *group);
            match find(shared, job, *group, key)? {
                Found::Item(item) => return send_item(shared, peer, item, *range, send).await,
                Found::Linked(at, part) => Response::Linked { at, part },
            }
        }
        Op::Head { group, key } => {
            let job = authorize(shared, &request, Scopes::READ)?;
            held(shared, job, *group).await?;
            match find(shared, job, *group, key)? {
                Found::Item(item) => Response::Meta { part: item.part },
                Found::Linked(at, part) => Response::Linked { at, part },
            }
        }
        Op::Delete { group, key } => {
            let job = authorize(shared, &request, Scopes::WRITE)?;
            let view = writable(shared, job, *group).await?;
            let (item, link) = {
                let mut state = lock(&shared.state);
                let g = state.groups.entry((job, *group)).or_default();
                if view.incoming {
                    g.deleted.insert(key.clone());
                }
                let item = g.items.remove(key);
                if let Some(item) = &item {
                    g.used -= item.len();
                }
                (item, g.links.remove(key))
            };
            let replaced = item.as_ref().map(|i| i.part).or(link.map(|(_, part)| part));
            if replaced.is_none() {
                return Err(Refusal::NotFound);
            }
            drop_off_thread(item).await;
            Response::Done { unlinked: link.map(|(at, _)| at), replaced }
        }
        Op::Link { group, key, at, part, cond } => {
            let job = authorize(shared, &request, Scopes::WRITE)?;
            check_item_key(key)?;
            writable(shared, job, *group).await?;
            let linked = {
                let mut state = lock(&shared.state);
                let g = state.groups.entry((job, *group)).or_default();
                if admits(g, key, *cond)? {
                    let item = g.items.remove(key);
                    if let Some(item) = &item {
                        g.used -= item.len();
                    }
                    Some((item, g.links.insert(key.clone(), (*at, *part))))
                } else {
                    None
                }
            };
            let Some((item, previous)) = linked else {
                return reply(send, peer, &Response::Present).await;
            };
            let replaced = item.as_ref().map(|i| i.part).or(previous.map(|(_, part)| part));
            drop_off_thread(item).await;
            Response::Done { unlinked: previous.map(|(old, _)| old).filter(|old| old != at), replaced }
        }
        Op::List { prefix } => {
            let job = authorize(shared, &request, Scopes::READ)?;
            let state = lock(&shared.state);
            let mut objects: Vec<(String, Part)> = state
                .groups
                .iter()
                .filter(|((j, _), _)| *j == job)
                .flat_map(|(_, g)| {
                    let items = g.items.iter().map(|(k, item)| (k, item.part));
                    items.chain(g.links.iter().map(|(k, (_, part))| (k, *part)))
                })
                .filter(|(k, part)| part.index == 0 && k.starts_with(prefix.as_str()))
                .map(|(k, part)| (k.clone(), part))
                .collect();
            objects.sort_by(|a, b| a.0.cmp(&b.0));
            Response::Objects { objects }
        }
        Op::Dump { group } => {
            let job = authorize(shared, &request, Scopes::READ)?;
            held(shared, job, *group).await?;
            let state = lock(&shared.state);
            let (mut items, mut links) = (Vec::new(), Vec::new());
            if let Some(g) = state.groups.get(&(job, *group)) {
                items = g.items.iter().map(|(k, item)| (k.clone(), item.part, item.len())).collect();
                links = g.links.iter().map(|(k, (at, part))| (k.clone(), *at, *part)).collect();
            }
            Response::Dump { items, links }
        }
        Op::Sync => {
            authorize(shared, &request, Scopes::READ)?;
            sync(shared).await.map_err(|e| Refusal::Failed(format!("cannot read the block map: {e}")))?;
            Response::Synced { revision: lock(&shared.state).revision }
        }
        Op::Reserve { group, bytes } => {
            let job = authorize(shared, &request, Scopes::WRITE)?;
            if !writable(shared, job, *group).await?.incoming {
                return Err(Refusal::Invalid(format!("group {group} is not being copied into this node")));
            }
            lock(&shared.state).groups.entry((job, *group)).or_default().reserved = *bytes;
            Response::Done { unlinked: None, replaced: None }
        }
        Op::Seal { group, sealed } => {
            let job = authorize(shared, &request, Scopes::WRITE)?;
            held(shared, job, *group).await?;
            let mut state = lock(&shared.state);
            let g = state.groups.entry((job, *group)).or_default();
            if *sealed && (g.used + g.reserved > 0 || !g.items.is_empty() || !g.links.is_empty()) {
                return Err(Refusal::Precondition(format!(
                    "group {group} holds {} bytes and {} links",
                    g.used + g.reserved,
                    g.links.len()
                )));
            }
            g.sealed = *sealed;
            Response::Done { unlinked: None, replaced: None }
        }
        Op::Usage => {
            let job = authorize(shared, &request, Scopes::READ)?;
            let state = lock(&shared.state);
            let mut groups: Vec<(u64, u64)> =
                state.groups.iter().filter(|((j, _), _)| *j == job).map(|((_, g), group)| (*g, group.used)).collect();
            groups.sort();
            Response::Usage { groups }
        }
    };
    reply(send, peer, &response).await
}

/// Notes that `job`'s `group` was just read or written: it is not cold.
fn touch(shared: &Shared, job: JobId, group: u64) {
    lock(&shared.state).touched.insert((job, group), Instant::now());
}

enum Found {
    Item(Item),
    Linked(u64, Part),
}

fn find(shared: &Shared, job: JobId, group: u64, key: &str) -> std::result::Result<Found, Refusal> {
    let state = lock(&shared.state);
    let g = state.groups.get(&(job, group)).ok_or(Refusal::NotFound)?;
    if let Some(item) = g.items.get(key) {
        return Ok(Found::Item(item.clone()));
    }
    if let Some((at, part)) = g.links.get(key) {
        return Ok(Found::Linked(*at, *part));
    }
    Err(if g.deleted.contains(key) { Refusal::Deleted } else { Refusal::NotFound })
}

async fn drop_off_thread(item: Option<Item>) {
    if let Some(Item { data: Data::Flash(file), .. }) = item {
        let _ = tokio::task::spawn_blocking(move || drop(file)).await;
    }
}

/// A put's request.
struct Put<'a> {
    job: JobId,
    group: u64,
    key: &'a str,
    len: u64,
    part: Part,
    cond: Cond,
}

/// Whether a put or link of `key` under `cond` goes ahead (`false`: a copy's, skipped), or why
/// its condition does not hold.
fn admits(g: &Group, key: &str, cond: Cond) -> std::result::Result<bool, Refusal> {
    let there = g.items.get(key).map(|i| i.part).or(g.links.get(key).map(|(_, part)| *part));
    match (cond, there) {
        (Cond::Any, _) | (Cond::Absent, None) => Ok(true),
        (Cond::Absent, Some(part)) => Err(Refusal::Precondition(format!("version {:x} is there", part.version))),
        (Cond::Version(v), Some(part)) if part.version == v => Ok(true),
        (Cond::Version(_), Some(part)) => Err(Refusal::Precondition(format!("version {:x} is there", part.version))),
        (Cond::Version(v), None) => Err(Refusal::Precondition(format!("no object, not version {v:x}"))),
        (Cond::Copy, there) => Ok(there.is_none() && !g.deleted.contains(key)),
    }
}

async fn receive(
    shared: &Arc<Shared>,
    peer: &str,
    put: Put<'_>,
    recv: &mut Rx<'_>,
) -> std::result::Result<Response, Refusal> {
    let Put { job, group, key, len, part, cond } = put;
    let tier = writable(shared, job, group).await?.tier;
    touch(shared, job, group);
    if part.index >= part.count || part.chunk == 0 {
        return Err(Refusal::Invalid(format!("chunk {} of {}", part.index, part.count)));
    }
    // The room is taken before the bytes are read, so that puts racing for the last of a
    // block cannot both fit; it is given back if the bytes never arrive.
    {
        let mut state = lock(&shared.state);
        let g = state.groups.entry((job, group)).or_default();
        if !admits(g, key, cond)? {
            return Ok(Response::Present);
        }
        // A copy's items were the job's before the move: they take the room kept for them.
        if cond == Cond::Copy {
            g.reserved = g.reserved.saturating_sub(len);
        } else if g.sealed || g.used + g.reserved + len > shared.block_size {
            // A sealed group is being given back: it takes nothing more.
            return Err(Refusal::Full { group, used: g.used + g.reserved, block_size: shared.block_size });
        }
        g.used += len;
    }
    let give_back = |shared: &Shared| {
        if let Some(g) = lock(&shared.state).groups.get_mut(&(job, group)) {
            g.used -= len;
        }
    };
    let bytes = match recv.body(peer, len).await {
        Ok(bytes) => bytes,
        Err(e) => {
            give_back(shared);
            return Err(Refusal::Invalid(e.to_string()));
        }
    };
    shared.stats.bytes_received.fetch_add(len, Ordering::Relaxed);
    let data = match tier {
        Tier::Memory => Data::Memory(bytes),
        Tier::Flash => match write_flash(shared, bytes).await {
            Ok(file) => Data::Flash(Arc::new(file)),
            Err(e) => {
                give_back(shared);
                return Err(Refusal::Failed(e.to_string()));
            }
        },
    };
    let (old, unlinked) = {
        let mut state = lock(&shared.state);
        // The group may have been given back, or begun to move away, while the bytes arrived:
        // then they are not kept.
        if state.held.get(&(job, group)).is_none_or(|v| v.leaving) {
            drop(state);
            give_back(shared);
            return Err(Refusal::NotHeld { group });
        }
        let g = state.groups.entry((job, group)).or_default();
        match admits(g, key, cond) {
            Ok(true) => {}
            Ok(false) => {
                g.used -= len;
                return Ok(Response::Present);
            }
            Err(refusal) => {
                g.used -= len;
                return Err(refusal);
            }
        }
        let old = g.items.insert(key.to_string(), Item { part, data });
        if let Some(old) = &old {
            g.used -= old.len();
        }
        (old, g.links.remove(key))
    };
    let replaced = old.as_ref().map(|i| i.part).or(unlinked.map(|(_, part)| part));
    drop_off_thread(old).await;
    Ok(Response::Done { unlinked: unlinked.map(|(at, _)| at), replaced })
}

async fn write_flash(shared: &Arc<Shared>, bytes: Bytes) -> Result<FlashFile> {
    let dir = shared.flash.as_ref().ok_or_else(|| Error::Config {
        what: format!("storage node {}", shared.name),
        reason: "a flash block, but no flash directory".into(),
    })?;
    let path = dir.path().join(format!("{:016x}", shared.next_file.fetch_add(1, Ordering::Relaxed)));
    let len = bytes.len() as u64;
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut file = baton_fabric::private::create_file(&path)?;
        let written = FlashFile { path: path.clone(), len };
        file.write_all(&bytes).map_err(|e| baton_fabric::Error::io("write", &path, e))?;
        Ok::<_, baton_fabric::Error>(written)
    })
    .await
    .map_err(|e| Error::Io { what: "a flash write".into(), source: std::io::Error::other(e) })?
    .map_err(Error::from)
}

async fn send_item(
    shared: &Arc<Shared>,
    peer: &str,
    item: Item,
    range: Option<(u64, u64)>,
    send: &mut Tx<'_>,
) -> std::result::Result<(), Refusal> {
    let len = item.len();
    let (start, end) = range.unwrap_or((0, len));
    if start > end || end > len {
        return Err(Refusal::Invalid(format!("range {start}..{end} of an item of {len} bytes")));
    }
    let bytes = match item.data {
        Data::Memory(b) => b.slice(start as usize..end as usize),
        Data::Flash(file) => tokio::task::spawn_blocking(move || read_range(&file, start, end))
            .await
            .map_err(|e| Refusal::Failed(e.to_string()))?
            .map_err(|e| Refusal::Failed(e.to_string()))?,
    };
    let header = Response::Item { len: bytes.len() as u64, part: item.part };
    if matches!(send, Tx::Local(_)) && bytes.len() <= crate::same_host::ONE_WRITE {
        send.message_and(peer, &header, &bytes).await?;
        shared.stats.bytes_sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        return Ok(());
    }
    send.message(peer, &header).await?;
    let mut offset = 0;
    while offset < bytes.len() {
        let end = (offset + SEND_CHUNK).min(bytes.len());
        send.bytes(bytes.slice(offset..end)).await?;
        shared.stats.bytes_sent.fetch_add((end - offset) as u64, Ordering::Relaxed);
        offset = end;
    }
    send.finish();
    Ok(())
}

fn read_range(file: &FlashFile, start: u64, end: u64) -> std::io::Result<Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&file.path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = vec![0u8; (end - start) as usize];
    f.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}
