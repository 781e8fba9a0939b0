//! `baton store`: the elastic store's state, as its etcd holds it.

use std::collections::BTreeMap;

use baton_fabric::node::ByteSize;
use baton_store::alloc::{BlockMap, Tier};
use baton_store::etcd::Etcd;
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
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Status { etcd } => {
            let etcd = Etcd::new(&etcd)?;
            let map = BlockMap::read(&etcd).await?;
            if map.nodes.is_empty() {
                println!("no storage nodes in {} (`baton node --etcd URL --store-name NAME` joins one)", etcd.url());
                return Ok(());
            }
            println!("{:<12} {:<22} {:>10} {:>16} {:>16}", "node", "address", "block", "memory used", "flash used");
            let used = |node: &str, tier| map.held.keys().filter(|b| b.node == node && b.tier == tier).count();
            let (mut memory, mut flash) = (0, 0);
            for n in &map.nodes {
                println!(
                    "{:<12} {:<22} {:>10} {:>16} {:>16}",
                    n.name,
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
