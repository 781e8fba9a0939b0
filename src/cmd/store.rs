//! `baton store`: the elastic store's state, as its etcd holds it; its controller; drains.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use baton_fabric::net::TlsDir;
use baton_fabric::node::ByteSize;
use baton_store::alloc::{BlockMap, Tier};
use baton_store::controller::{Controller, ControllerConfig, LocalProvisioner, Provisioner};
use baton_store::etcd::Etcd;
use baton_store::member::{DRAINED, drain_key};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Show the store: each storage node, where it is and its blocks used and free per tier;
    /// each job and the blocks it holds.
    Status {
        /// The store's etcd (`http://host:2379`).
        #[arg(long, env = "BATON_ETCD")]
        etcd: String,
    },
    /// Run a controller: it drains nodes, copies anew the groups of lost nodes, and asks for
    /// nodes when free capacity runs low. Run several: one leads, the others stand by.
    Controller(ControllerArgs),
    /// Drain a storage node: its blocks move to the others while jobs keep reading and
    /// writing, then it leaves the store (and its `baton node` process exits).
    Drain {
        /// The node's name in the store.
        node: String,
        /// The store's etcd (`http://host:2379`).
        #[arg(long, env = "BATON_ETCD")]
        etcd: String,
        /// Ask for the drain and return, without waiting for it.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
}

#[derive(Debug, Args)]
struct ControllerArgs {
    /// The store's etcd (`http://host:2379`).
    #[arg(long, env = "BATON_ETCD")]
    etcd: String,
    /// The cluster's TLS material, with the key that mints tokens (`baton certs`): a move
    /// copies a job's objects with a token for that job.
    #[arg(long)]
    tls_dir: PathBuf,
    /// This controller's name (default: host and pid).
    #[arg(long)]
    name: Option<String>,
    /// How often the leader looks at the store, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    every_ms: u64,
    /// Start a storage node on this host when less than this fraction of the store's blocks
    /// is free (e.g. 0.1); never, without it.
    #[arg(long)]
    provision_below: Option<f64>,
    /// Memory each node it starts lends.
    #[arg(long, default_value = "1GiB")]
    provision_memory: ByteSize,
    /// Bytes per block of the nodes it starts (the store's block size).
    #[arg(long, default_value = "32MiB")]
    provision_block_size: ByteSize,
    /// The most nodes it starts.
    #[arg(long, default_value_t = 4)]
    provision_max: usize,
    /// Where the nodes it starts keep their files.
    #[arg(long, default_value = "baton-data/store-nodes")]
    provision_dir: PathBuf,
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Controller(args) => controller(args).await,
        Action::Drain { node, etcd, no_wait, timeout_s } => drain(&node, &etcd, no_wait, timeout_s).await,
        Action::Status { etcd } => {
            let etcd = Etcd::new(&etcd)?;
            let map = BlockMap::read(&etcd).await?;
            match Controller::leader(&etcd).await? {
                Some(leader) => println!("controller: {leader} leads"),
                None => println!("controller: none running (`baton store controller` drains and repairs)"),
            }
            if map.nodes.is_empty() {
                println!("no storage nodes in {} (`baton node --etcd URL --store-name NAME` joins one)", etcd.url());
                return Ok(());
            }
            println!("{:<12} {:<22} {:>10} {:>16} {:>16}", "node", "address", "block", "memory used", "flash used");
            let used = |node: &str, tier| map.held.keys().filter(|b| b.node == node && b.tier == tier).count();
            let (mut memory, mut flash) = (0, 0);
            for n in &map.nodes {
                let name =
                    if map.draining.contains(&n.name) { format!("{} (draining)", n.name) } else { n.name.clone() };
                println!(
                    "{:<12} {:<22} {:>10} {:>16} {:>16}",
                    name,
                    n.addr,
                    ByteSize(n.block_size).to_string(),
                    format!("{} of {}", used(&n.name, Tier::Memory), n.memory_blocks),
                    format!("{} of {}", used(&n.name, Tier::Flash), n.flash_blocks),
                );
                memory += n.memory_blocks * n.block_size;
                flash += n.flash_blocks * n.block_size;
            }
            let (free_memory, free_flash) = map.free_blocks();
            println!(
                "{} storage nodes lend {} of memory and {} of flash; free: {free_memory} memory and {free_flash} flash \
                 blocks",
                map.nodes.len(),
                ByteSize(memory),
                ByteSize(flash)
            );
            let mut jobs: BTreeMap<_, usize> = BTreeMap::new();
            for holder in map.held.values() {
                *jobs.entry(holder.job).or_default() += 1;
            }
            for (job, blocks) in &jobs {
                let groups = map.of(*job).len();
                println!(
                    "{job}: {blocks} blocks in {groups} groups ({} reserved)",
                    ByteSize(*blocks as u64 * map.block_size())
                );
            }
            Ok(())
        }
    }
}

async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let etcd = Etcd::new(&args.etcd)?;
    etcd.revision().await.context("the store's etcd does not answer")?;
    let tls = TlsDir::new(&args.tls_dir);
    let name = args.name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let provision_below = args.provision_below.unwrap_or(0.0);
    if !(0.0..1.0).contains(&provision_below) {
        anyhow::bail!("--provision-below {provision_below}: give a fraction of the store's blocks, from 0 to 1");
    }
    let provisioner: Option<Box<dyn Provisioner>> = match args.provision_below {
        Some(_) => Some(Box::new(LocalProvisioner::new(
            std::env::current_exe()?,
            etcd.url(),
            args.tls_dir.clone(),
            args.provision_dir.clone(),
            (&args.provision_memory.0.to_string(), &args.provision_block_size.0.to_string()),
            args.provision_max,
        ))),
        None => None,
    };
    let config =
        ControllerConfig { name: name.clone(), tls, every: Duration::from_millis(args.every_ms), provision_below };
    let mut controller = Controller::new(&etcd, config, provisioner).context("cannot start the controller")?;
    eprintln!("controller {name}: campaigning to lead the store in {}", etcd.url());
    controller
        .run(async {
            let signal = super::shutdown_signal().await;
            eprintln!("controller {name}: stopping ({signal}); another controller takes the lead");
        })
        .await?;
    Ok(())
}

async fn drain(node: &str, url: &str, no_wait: bool, timeout_s: u64) -> anyhow::Result<()> {
    let etcd = Etcd::new(url)?;
    let map = BlockMap::read(&etcd).await?;
    if !map.is_member(node) {
        anyhow::bail!("{node} is not a member of the store in {url} (`baton store status` lists them)");
    }
    let key = drain_key(node);
    if etcd.get(&key).await?.is_none() {
        etcd.put(&key, b"draining", 0).await?;
    }
    let blocks = |map: &BlockMap| map.held.keys().filter(|b| b.node == node).count();
    eprintln!("drain: {node} holds {} blocks; they move to the other nodes", blocks(&map));
    if Controller::leader(&etcd).await?.is_none() {
        eprintln!("drain: no controller is running: start one (`baton store controller`) to move the blocks");
    }
    if no_wait {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let mut last = usize::MAX;
    loop {
        let map = BlockMap::read(&etcd).await?;
        let left = blocks(&map);
        let done = etcd.get(&key).await?.is_some_and(|kv| kv.value == DRAINED);
        if done && !map.is_member(node) {
            // The node left: a node of that name may join again.
            etcd.delete(&key).await?;
            eprintln!("drain: {node} holds nothing and has left the store");
            return Ok(());
        }
        if left != last {
            eprintln!("drain: {node}: {left} blocks left");
            last = left;
        }
        if Instant::now() > deadline {
            anyhow::bail!("{node} still holds {left} blocks after {timeout_s} s (is a controller running?)");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
