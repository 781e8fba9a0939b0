//! `baton cluster`: emulated hosts on this machine (`up`, `down`) and a cluster's nodes
//! (`status`).

use std::path::PathBuf;

use anyhow::Context;
use baton_fabric::net::TlsDir;
use baton_fabric::node::ByteSize;
use baton_fabric::path::direct::DirectPath;
use baton_runtime::cluster::ClusterFile;
use baton_runtime::cluster::emulate::{self, EmulateOptions};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Start hosts emulated on this machine (network namespaces on a bridge, each link capped
    /// with tbf, a node in each) and write their cluster file (needs root).
    Up {
        /// How many hosts.
        #[arg(long)]
        emulate: usize,
        /// Each host's link, as tc writes rates: 1gbit, 100mbit.
        #[arg(long, default_value = "1gbit")]
        nic: String,
        /// Memory each node lends.
        #[arg(long, default_value = "1GiB")]
        memory: ByteSize,
        /// The emulation's directory: its cluster file (cluster.toml), material and logs.
        #[arg(long, default_value = "baton-data/cluster")]
        dir: PathBuf,
        /// The binary the hosts' nodes run (default: this one).
        #[arg(long, env = "BATON_EMULATE_EXE")]
        node_exe: Option<PathBuf>,
    },
    /// Remove everything `up` made in DIR: nodes, namespaces, links, shared memory — also
    /// after an `up` that failed halfway.
    Down {
        /// The emulation's directory.
        #[arg(long, default_value = "baton-data/cluster")]
        dir: PathBuf,
    },
    /// Show every host's node: reachable or not, and what it speaks.
    Status {
        /// The cluster file.
        #[arg(long, default_value = "baton-data/cluster/cluster.toml")]
        cluster: PathBuf,
    },
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Up { emulate: hosts, nic, memory, dir, node_exe } => {
            let dir = std::path::absolute(&dir)?;
            let exe = match node_exe {
                Some(exe) => exe,
                None => std::env::current_exe()?,
            };
            let options = EmulateOptions { exe, hosts, nic, memory, dir: dir.clone() };
            let file = tokio::task::spawn_blocking(move || emulate::up(&options)).await??;
            for host in &file.hosts {
                println!("{:<6} node {}  namespace {}", host.name, host.node, host.namespace.as_deref().unwrap_or("-"));
            }
            println!("cluster file: {}", dir.join("cluster.toml").display());
            Ok(())
        }
        Action::Down { dir } => {
            let dir = std::path::absolute(&dir)?;
            tokio::task::spawn_blocking(move || emulate::down(&dir))
                .await?
                .context("is there an emulation there? (`baton cluster up --emulate N --dir DIR` makes one)")?;
            println!("emulated hosts removed");
            Ok(())
        }
        Action::Status { cluster } => {
            let file = ClusterFile::read(&cluster)?;
            let tls = TlsDir::new(&file.tls_dir);
            let mut down = Vec::new();
            for host in &file.hosts {
                let answer = match DirectPath::connect(host.node, &tls).await {
                    Ok(node) => {
                        node.hello().await.map(|(version, rdma)| format!("up, protocol {version}, rdma {rdma}"))
                    }
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(text) => println!("{:<6} {:<21} {text}", host.name, host.node),
                    Err(e) => {
                        println!("{:<6} {:<21} unreachable: {e}", host.name, host.node);
                        down.push(host.name.clone());
                    }
                }
            }
            if !down.is_empty() {
                anyhow::bail!("unreachable: {}", down.join(", "));
            }
            Ok(())
        }
    }
}
