//! `baton node`.

use std::path::PathBuf;

use anyhow::Context;
use baton_fabric::node::{ByteSize, Node, NodeConfig};
use clap::Args;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// A TOML file of node settings; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Unix socket to serve local functions on.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Memory to lend, e.g. 2GiB.
    #[arg(long)]
    memory: Option<ByteSize>,
    /// Directory of the flash tier (the node keeps its files in a directory of its own inside
    /// it, and touches nothing else there).
    #[arg(long)]
    flash_dir: Option<PathBuf>,
    /// Flash to lend, e.g. 16GiB.
    #[arg(long)]
    flash: Option<ByteSize>,
    /// Memory file system for shared-memory segments.
    #[arg(long)]
    shm_dir: Option<PathBuf>,
    /// How often lapsed leases are reaped, in milliseconds.
    #[arg(long)]
    reap_interval_ms: Option<u64>,
    /// Serve other hosts over QUIC on this address, e.g. 127.0.0.2:7070.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// The cluster's TLS material: its CA, this node's certificate and the token public key
    /// (`baton certs`; needed with --listen).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Join the elastic store whose state is in this etcd (`http://host:2379`) as a storage
    /// node: its memory and flash are lent in blocks (needs --listen and --store-name).
    #[arg(long)]
    etcd: Option<String>,
    /// This storage node's name in the store, unique among its members.
    #[arg(long)]
    store_name: Option<String>,
    /// Bytes per block of the store.
    #[arg(long, default_value = "32MiB")]
    block_size: ByteSize,
}

impl NodeArgs {
    fn config(self) -> anyhow::Result<NodeConfig> {
        let mut config = match &self.config {
            Some(path) => NodeConfig::from_toml_file(path)?,
            None => NodeConfig::default(),
        };
        config.socket = self.socket.unwrap_or(config.socket);
        config.memory = self.memory.unwrap_or(config.memory);
        config.flash_dir = self.flash_dir.unwrap_or(config.flash_dir);
        config.flash = self.flash.unwrap_or(config.flash);
        config.shm_dir = self.shm_dir.unwrap_or(config.shm_dir);
        config.reap_interval_ms = self.reap_interval_ms.unwrap_or(config.reap_interval_ms);
        config.listen = self.listen.or(config.listen);
        config.tls_dir = self.tls_dir.unwrap_or(config.tls_dir);
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let store = match (&args.etcd, &args.store_name) {
        (Some(url), Some(name)) => Some((baton_store::etcd::Etcd::new(url)?, name.clone(), args.block_size)),
        (Some(_), None) => anyhow::bail!("--etcd: a storage node needs --store-name, unique in the store"),
        (None, Some(_)) => anyhow::bail!("--store-name: give the store's etcd with --etcd"),
        (None, None) => None,
    };
    if let Some((etcd, _, _)) = &store {
        // Before anything starts: a store that cannot be reached is a clear error now.
        etcd.revision().await.context("the store's etcd does not answer")?;
    }
    let config = args.config()?;
    let node = Node::start(&config).await.context("cannot start the node")?;
    if let Some(net) = node.net() {
        eprintln!(
            "node: serving other hosts over QUIC on {} (TLS from {})",
            net.local_addr()?,
            config.tls_dir.display()
        );
    }
    eprintln!(
        "node: serving {} · memory {} · flash {} at {} · shared memory {}",
        config.socket.display(),
        config.memory,
        config.flash,
        config.flash_dir.display(),
        node.store().shm_dir().display()
    );
    let membership = match store {
        Some((etcd, name, block_size)) => {
            let Some(net) = node.net() else {
                anyhow::bail!("--etcd: a storage node serves clients over QUIC; give --listen and --tls-dir")
            };
            let info = baton_store::member::NodeInfo {
                name,
                addr: net.local_addr()?,
                block_size: block_size.0,
                memory_blocks: config.memory.0 / block_size.0.max(1),
                flash_blocks: config.flash.0 / block_size.0.max(1),
            };
            let joined = baton_store::member::Membership::join(&etcd, &info, baton_store::member::MEMBER_TTL).await?;
            eprintln!(
                "node: a member of the store in {} as {} ({} memory and {} flash blocks of {})",
                etcd.url(),
                info.name,
                info.memory_blocks,
                info.flash_blocks,
                block_size
            );
            Some(joined)
        }
        None => None,
    };
    super::shutdown_signal().await;
    eprintln!("node: stopping; every job's data is deleted");
    if let Some(membership) = membership
        && let Err(e) = membership.leave().await
    {
        eprintln!("node: cannot leave the store now ({e}); its membership lapses by itself");
    }
    drop(node);
    Ok(())
}
