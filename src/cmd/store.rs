//! `baton store`: the elastic store's state, as its etcd holds it.

use baton_fabric::node::ByteSize;
use baton_store::etcd::Etcd;
use baton_store::member;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Show the store's storage nodes: where each is and what it lends.
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
            let nodes = member::members(&etcd).await?;
            if nodes.is_empty() {
                println!("no storage nodes in {} (`baton node --etcd URL --store-name NAME` joins one)", etcd.url());
                return Ok(());
            }
            println!("{:<12} {:<22} {:>10} {:>16} {:>16}", "node", "address", "block", "memory blocks", "flash blocks");
            let (mut memory, mut flash) = (0, 0);
            for n in &nodes {
                println!(
                    "{:<12} {:<22} {:>10} {:>16} {:>16}",
                    n.name,
                    n.addr,
                    ByteSize(n.block_size).to_string(),
                    n.memory_blocks,
                    n.flash_blocks
                );
                memory += n.memory_blocks * n.block_size;
                flash += n.flash_blocks * n.block_size;
            }
            println!(
                "{} storage nodes lend {} of memory and {} of flash",
                nodes.len(),
                ByteSize(memory),
                ByteSize(flash)
            );
            Ok(())
        }
    }
}
