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
    /// node: its memory and flash are lent to jobs in blocks, and it serves their objects over
    /// QUIC on --listen (needs --store-name and --tls-dir).
    #[arg(long)]
    etcd: Option<String>,
    /// This storage node's name in the store, unique among its members.
    #[arg(long)]
    store_name: Option<String>,
    /// Bytes per block of the store.
    #[arg(long, default_value = "32MiB")]
    block_size: ByteSize,
    /// A storage node whose memory blocks are all held moves the memory block nobody has read
    /// or written for longest to flash, once it has been idle this long, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    cold_after_ms: u64,
    /// A storage node serves clients on its own host (same kernel, same network namespace)
    /// over loopback TCP without TLS, each request still checked against the job's token; this
    /// keeps them on QUIC with TLS like everyone else.
    #[arg(long)]
    no_same_host: bool,
}

impl NodeArgs {
    fn config(self) -> anyhow::Result<NodeConfig> {
        let config = self.config_unchecked()?;
        config.validate()?;
        Ok(config)
    }

    /// The settings from the file and flags, not yet checked.
    fn config_unchecked(self) -> anyhow::Result<NodeConfig> {
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
        Ok(config)
    }
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    match (&args.etcd, &args.store_name) {
        (Some(_), Some(_)) => return run_storage(args).await,
        (Some(_), None) => anyhow::bail!("--etcd: a storage node needs --store-name, unique in the store"),
        (None, Some(_)) => anyhow::bail!("--store-name: give the store's etcd with --etcd"),
        (None, None) => {}
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
    super::shutdown_signal().await;
    eprintln!("node: stopping; every job's data is deleted");
    drop(node);
    Ok(())
}

/// The store role: the node lends its memory and flash to the elastic store in blocks and
/// serves jobs' objects in them over QUIC on --listen.
async fn run_storage(args: NodeArgs) -> anyhow::Result<()> {
    let (Some(url), Some(name)) = (args.etcd.clone(), args.store_name.clone()) else {
        anyhow::bail!("a storage node needs --etcd and --store-name");
    };
    let etcd = baton_store::etcd::Etcd::new(&url)?;
    keep_freed_memory();
    // Before anything starts: a store that cannot be reached is a clear error now.
    etcd.revision().await.context("the store's etcd does not answer")?;
    let block_size = args.block_size;
    let cold_after = std::time::Duration::from_millis(args.cold_after_ms);
    let same_host = !args.no_same_host;
    // A storage node serves no local socket and no shared memory: only its memory, flash and
    // QUIC settings count.
    let config = args.config_unchecked()?;
    if config.memory.0 + config.flash.0 < block_size.0 {
        anyhow::bail!("--memory and --flash: a storage node must lend at least one block of {block_size}");
    }
    let Some(listen) = config.listen else {
        anyhow::bail!("--etcd: a storage node serves jobs over QUIC; give --listen (and --tls-dir)")
    };
    let store = baton_store::node::NodeConfig {
        name,
        listen,
        tls: baton_fabric::net::TlsDir::new(&config.tls_dir),
        limits: baton_fabric::net::Limits::default(),
        block_size: block_size.0,
        memory: config.memory.0,
        flash: config.flash.0,
        flash_dir: config.flash_dir.clone(),
        sync_every: std::time::Duration::from_secs(1),
        same_host,
        cold_after,
    };
    let node = baton_store::node::StorageNode::start(&etcd, &store).await.context("cannot start the storage node")?;
    let info = node.info();
    eprintln!(
        "node: a member of the store in {} as {}, serving jobs over QUIC on {} (TLS from {}): {} memory and {} \
         flash blocks of {}",
        etcd.url(),
        info.name,
        info.addr,
        config.tls_dir.display(),
        info.memory_blocks,
        info.flash_blocks,
        block_size
    );
    tokio::select! {
        _ = super::shutdown_signal() => eprintln!("node: leaving the store; every job's data here is deleted"),
        () = node.drained() => eprintln!("node: drained (its blocks moved to other nodes); leaving the store"),
        () = node.lapsed() => {
            anyhow::bail!("the store's etcd at {} did not answer for longer than the membership's lease: \
                           this node is no longer a member, and stops (every job's data here is deleted)", etcd.url())
        }
    }
    if let Err(e) = node.leave().await {
        eprintln!("node: cannot leave the store now ({e}); its membership lapses by itself");
    }
    Ok(())
}

/// A storage node replaces objects all the time: glibc's defaults hand each freed object of a
/// megabyte or more back to the kernel and take fresh, zeroed pages for the next one (a page
/// fault per 4 KiB). The node keeps freed memory for its next objects instead, as allocators
/// built for servers do; what it holds is bounded by the blocks it lends.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters, before the node allocates much.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
