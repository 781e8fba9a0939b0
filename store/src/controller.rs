//! The store's controller (Pocket's): it keeps the store in shape while jobs run — drains the
//! nodes asked to leave, makes a new copy of each group a lost node held where another copy is
//! left, and asks a [`Provisioner`] for a node when free capacity runs low. It is not on the
//! data path (clients go straight to the nodes) nor on the allocation path (jobs reserve their
//! blocks themselves, in etcd transactions).
//!
//! Every fact it acts on is in etcd, so any number of controllers may run: one is elected leader
//! (the key `controller` under a lease of its own, taken in a transaction), the others wait for
//! the key to go. A leader killed halfway through a move leaves the move's marks in the map; the
//! next leader finds the move under way and copies again ([`crate::moves`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use baton_fabric::JobId;
use baton_fabric::net::TlsDir;
use baton_fabric::net::token::{Audience, Scopes, TokenKey, WireToken, unix_ms_now};
use futures::StreamExt;

use crate::alloc::{Block, BlockMap};
use crate::conn::{Nodes, Replica};
use crate::error::{Error, Result};
use crate::etcd::{Compare, Etcd, KeptLease, Op as EtcdOp};
use crate::member::{DRAINED, drain_key};
use crate::moves::{self, Move};
use crate::proto::{Cond, Op, Refusal, Response};

/// The leader's key.
const LEADER: &str = "/baton/store/controller";
/// How long a leader outlives its last renewal.
const LEADER_TTL: Duration = Duration::from_secs(5);
/// Items copied at once in a move.
const COPIES_AT_ONCE: usize = 8;
/// How long a provisioned node may take to join before another is asked for.
const PROVISION_GRACE: Duration = Duration::from_secs(30);

/// Something that can add a storage node to the store.
#[async_trait]
pub trait Provisioner: Send + Sync + std::fmt::Debug {
    /// Starts one more storage node: what was started, for the log; `None` when it may start
    /// no more.
    async fn provision(&self) -> Result<Option<String>>;
}

/// A controller's settings.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Its name (shown as the leader's).
    pub name: String,
    /// The cluster's TLS material with the key that mints tokens (a move copies a job's items
    /// with a token for that job).
    pub tls: TlsDir,
    /// How often the leader looks at the store.
    pub every: Duration,
    /// Ask for a node when less than this fraction of the store's blocks is free (0: never).
    pub provision_below: f64,
}

/// What one look at the store did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Blocks moved off draining nodes, or copied anew for lost ones.
    pub moved: usize,
    /// Items copied.
    pub items: usize,
    /// Nodes that finished draining.
    pub drained: Vec<String>,
    /// Whether a node was asked for.
    pub provisioned: bool,
}

/// A controller.
#[derive(Debug)]
pub struct Controller {
    etcd: Etcd,
    config: ControllerConfig,
    nodes: Nodes,
    signer: TokenKey,
    provisioner: Option<Box<dyn Provisioner>>,
    provisioned_at: Option<(Instant, usize)>,
}

impl Controller {
    /// A controller of the store in `etcd`.
    pub fn new(etcd: &Etcd, config: ControllerConfig, provisioner: Option<Box<dyn Provisioner>>) -> Result<Self> {
        let signer = config.tls.signer()?;
        let nodes = Nodes::new(&config.tls)?;
        Ok(Self { etcd: etcd.clone(), config, nodes, signer, provisioner, provisioned_at: None })
    }

    /// The current leader's name, if any.
    pub async fn leader(etcd: &Etcd) -> Result<Option<String>> {
        Ok(etcd.get(LEADER).await?.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// Campaigns, leads while elected, campaigns again when the lead is lost; until `stop`.
    pub async fn run(&mut self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        loop {
            let lease = tokio::select! {
                () = &mut stop => return Ok(()),
                lease = self.campaign() => lease?,
            };
            tracing::info!("controller {}: leading the store in {}", self.config.name, self.etcd.url());
            loop {
                if !lease.alive() {
                    tracing::warn!("controller {}: lost the lead", self.config.name);
                    break;
                }
                match self.step().await {
                    Ok(step) if step != Step::default() => tracing::info!("controller {}: {step:?}", self.config.name),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("controller {}: {e}", self.config.name),
                }
                tokio::select! {
                    () = &mut stop => {
                        let _ = lease.end().await;
                        return Ok(());
                    }
                    () = tokio::time::sleep(self.config.every) => {}
                }
            }
        }
    }

    /// Waits until this controller holds the leader's key.
    async fn campaign(&self) -> Result<KeptLease> {
        loop {
            let lease = KeptLease::start(&self.etcd, LEADER_TTL).await?;
            let put = EtcdOp::Put(LEADER.into(), self.config.name.as_bytes().to_vec(), lease.id());
            if self.etcd.txn(&[Compare::Absent(LEADER.into())], &[put]).await? {
                return Ok(lease);
            }
            let _ = lease.end().await;
            tokio::time::sleep(LEADER_TTL / 5).await;
        }
    }

    /// One look at the store: finishes the moves under way, moves the blocks of draining and
    /// lost nodes, marks the nodes drained, asks for a node when capacity runs low.
    pub async fn step(&mut self) -> Result<Step> {
        let mut step = Step::default();
        let map = BlockMap::read(&self.etcd).await?;
        for under_way in moves::under_way(&map) {
            step.items += self.copy(&map, &under_way).await?;
            moves::finish(&self.etcd, &under_way).await?;
            step.moved += 1;
        }
        let map = BlockMap::read(&self.etcd).await?;
        let to_move: Vec<Block> = map
            .held
            .iter()
            .filter(|(b, h)| {
                h.from.is_none() && h.moving_to.is_none() && (map.draining.contains(&b.node) || !map.is_member(&b.node))
            })
            .map(|(b, _)| b.clone())
            .collect();
        for block in to_move {
            let map = BlockMap::read(&self.etcd).await?;
            if let Some(started) = moves::start(&self.etcd, &map, &block).await? {
                step.items += self.copy(&map, &started).await?;
                moves::finish(&self.etcd, &started).await?;
                step.moved += 1;
            }
        }
        let map = BlockMap::read(&self.etcd).await?;
        for node in &map.draining {
            let key = drain_key(node);
            let empty = !map.held.keys().any(|b| &b.node == node);
            if empty && self.etcd.get(&key).await?.is_some_and(|kv| kv.value != DRAINED) {
                self.etcd.put(&key, DRAINED, 0).await?;
                step.drained.push(node.clone());
            }
        }
        step.provisioned = self.provision(&map).await?;
        Ok(step)
    }

    /// Asks the provisioner for a node when free blocks fall below the threshold (one at a
    /// time: the next only once the last joined, or its grace ran out).
    async fn provision(&mut self, map: &BlockMap) -> Result<bool> {
        let Some(provisioner) = &self.provisioner else { return Ok(false) };
        let total: u64 = map
            .nodes
            .iter()
            .filter(|n| !map.draining.contains(&n.name))
            .map(|n| n.memory_blocks + n.flash_blocks)
            .sum();
        let (memory, flash) = map.free_blocks();
        let free = if total == 0 { 0.0 } else { (memory + flash) as f64 / total as f64 };
        if free >= self.config.provision_below {
            return Ok(false);
        }
        if let Some((at, members)) = self.provisioned_at
            && map.nodes.len() <= members
            && at.elapsed() < PROVISION_GRACE
        {
            return Ok(false);
        }
        let Some(started) = provisioner.provision().await? else { return Ok(false) };
        tracing::info!(
            "controller {}: {:.0}% of the store's blocks free; started {started}",
            self.config.name,
            free * 100.0
        );
        self.provisioned_at = Some((Instant::now(), map.nodes.len()));
        Ok(true)
    }

    fn token(&self, job: JobId) -> WireToken {
        self.signer.mint(job, unix_ms_now() + 600_000, Scopes::ALL, Audience::ANY).into()
    }

    fn replica(map: &BlockMap, node: &str) -> Replica {
        Replica::of(node, map.nodes.iter().find(|n| n.name == node))
    }

    /// Copies what the move's source holds of the group into the new block (each item only if
    /// the new block has not got it and has not seen it deleted); how many items were copied.
    async fn copy(&self, map: &BlockMap, under_way: &Move) -> Result<usize> {
        let (job, group) = (under_way.holder.job, under_way.holder.group);
        let token = self.token(job);
        let from = Self::replica(map, &under_way.copy_from);
        let to = Self::replica(map, &under_way.to.node);
        // Both nodes see the move before anything is listed: the source refuses writes from
        // now on, the new block keeps what is deleted.
        for node in [&from, &to] {
            self.expect(node, "a sync", self.nodes.call(job, &token, node, Op::Sync, None).await?.0, |r| {
                matches!(r, Response::Synced { .. })
            })?;
        }
        let (items, links) = match self.nodes.call(job, &token, &from, Op::Dump { group }, None).await?.0 {
            Response::Dump { items, links } => (items, links),
            other => return Err(unexpected(&from, "a dump", other)),
        };
        let bytes = items.iter().map(|(_, _, len)| len).sum();
        let answer = self.nodes.call(job, &token, &to, Op::Reserve { group, bytes }, None).await?.0;
        self.expect(&to, "a reservation", answer, |r| matches!(r, Response::Done { .. }))?;
        let copied: Vec<Result<bool>> = futures::stream::iter(items)
            .map(|(key, _, _)| self.copy_item(job, &token, group, &from, &to, key))
            .buffer_unordered(COPIES_AT_ONCE)
            .collect()
            .await;
        let mut count = 0;
        for copied in copied {
            count += usize::from(copied?);
        }
        for (key, at, part) in links {
            let op = Op::Link { group, key, at, part, cond: Cond::Copy };
            let answer = self.nodes.call(job, &token, &to, op, None).await?.0;
            self.expect(&to, "a link", answer, |r| matches!(r, Response::Done { .. } | Response::Present))?;
        }
        Ok(count)
    }

    async fn copy_item(
        &self,
        job: JobId,
        token: &WireToken,
        group: u64,
        from: &Replica,
        to: &Replica,
        key: String,
    ) -> Result<bool> {
        let get = Op::Get { group, key: key.clone(), range: None };
        let (answer, body) = self.nodes.call(job, token, from, get, None).await?;
        let (len, part) = match answer {
            Response::Item { len, part } => (len, part),
            // Deleted (or replaced by a link) since the dump.
            Response::Refused(Refusal::NotFound) | Response::Linked { .. } => return Ok(false),
            other => return Err(unexpected(from, "a get", other)),
        };
        let peer = format!("storage node {}", from.node);
        let bytes = body.item(&peer, len).await?;
        let put = Op::Put { group, key, len, part, cond: Cond::Copy };
        match self.nodes.call(job, token, to, put, Some(bytes)).await?.0 {
            Response::Done { .. } => Ok(true),
            Response::Present => Ok(false),
            other => Err(unexpected(to, "a put", other)),
        }
    }

    fn expect(&self, node: &Replica, what: &str, answer: Response, ok: impl Fn(&Response) -> bool) -> Result<()> {
        if ok(&answer) { Ok(()) } else { Err(unexpected(node, what, answer)) }
    }
}

fn unexpected(node: &Replica, what: &str, answer: Response) -> Error {
    Error::Refused { node: node.node.clone(), what: format!("{what} of a move"), reason: format!("{answer:?}") }
}

/// Starts storage nodes as processes of this host (`baton node`, on 127.0.0.1), and stops them
/// when dropped or when this process dies.
#[derive(Debug)]
pub struct LocalProvisioner {
    /// The `baton` binary.
    pub exe: PathBuf,
    /// The store's etcd.
    pub etcd: String,
    /// The cluster's TLS material for the nodes.
    pub tls_dir: PathBuf,
    /// Where the nodes keep their files (a directory each).
    pub dir: PathBuf,
    /// Memory each lends, e.g. `1GiB`.
    pub memory: String,
    /// Bytes per block, e.g. `32MiB`.
    pub block_size: String,
    /// The most nodes it starts.
    pub max: usize,
    children: std::sync::Mutex<Vec<std::process::Child>>,
}

impl LocalProvisioner {
    /// At most `max` nodes of `memory` in blocks of `block_size`, their files under `dir`.
    pub fn new(
        exe: PathBuf,
        etcd: &str,
        tls_dir: PathBuf,
        dir: PathBuf,
        (memory, block_size): (&str, &str),
        max: usize,
    ) -> Self {
        Self {
            exe,
            etcd: etcd.into(),
            tls_dir,
            dir,
            memory: memory.into(),
            block_size: block_size.into(),
            max,
            children: std::sync::Mutex::default(),
        }
    }
}

#[async_trait]
impl Provisioner for LocalProvisioner {
    async fn provision(&self) -> Result<Option<String>> {
        let io = |what: &str, e: std::io::Error| Error::Io { what: what.into(), source: e };
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        if children.len() >= self.max {
            return Ok(None);
        }
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| io("a free port", e))?
            .port();
        let name = format!("auto-{port}");
        let home = self.dir.join(&name);
        baton_fabric::private::create_dirs(&home)?;
        let mut command = std::process::Command::new(&self.exe);
        // SAFETY: prctl(2) in the child before exec, async-signal-safe: the node stops when
        // this process does, so that a controller that dies leaves no node behind.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command
            .arg("node")
            .arg("--flash-dir")
            .arg(home.join("flash"))
            .arg("--tls-dir")
            .arg(&self.tls_dir)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--etcd", &self.etcd, "--store-name", &name])
            .args(["--memory", &self.memory, "--flash", "0", "--block-size", &self.block_size])
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| io(&format!("starting {}", self.exe.display()), e))?;
        let pid = child.id();
        children.push(child);
        Ok(Some(format!("storage node {name} (pid {pid}) on 127.0.0.1:{port}")))
    }
}

impl Drop for LocalProvisioner {
    fn drop(&mut self) {
        for mut child in self.children.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            // SAFETY: kill(2) of a child this provisioner started; SIGTERM lets it leave.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}
