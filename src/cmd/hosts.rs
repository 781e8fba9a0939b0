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
    /// with tbf, a node and workers in each) and write their cluster file (needs root).
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
        /// Workers on each host (`baton worker`, running only what the cluster's key signed).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Memory limit of each worker.
        #[arg(long, default_value = "1GiB")]
        worker_memory: ByteSize,
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
    /// Measure each host's node from here over QUIC: the round trip of a small object, and the
    /// throughput of a large one each way.
    Probe {
        /// The cluster file.
        #[arg(long, default_value = "baton-data/cluster/cluster.toml")]
        cluster: PathBuf,
        /// The large object's size.
        #[arg(long, default_value = "32MiB")]
        size: ByteSize,
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
        Action::Up { emulate: hosts, nic, memory, workers, worker_memory, dir, node_exe } => {
            let dir = std::path::absolute(&dir)?;
            let exe = match node_exe {
                Some(exe) => exe,
                None => std::env::current_exe()?,
            };
            let options = EmulateOptions { exe, hosts, nic, memory, workers, worker_memory, dir: dir.clone() };
            let file = tokio::task::spawn_blocking(move || emulate::up(&options)).await??;
            for host in &file.hosts {
                println!(
                    "{:<6} node {}  {} workers  namespace {}",
                    host.name,
                    host.node,
                    host.workers.len(),
                    host.namespace.as_deref().unwrap_or("-")
                );
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
        Action::Probe { cluster, size } => {
            let file = ClusterFile::read(&cluster)?;
            let tls = TlsDir::new(&file.tls_dir);
            let key = tls.signer().context("probing writes objects: it needs the cluster's token key")?;
            println!("{:<6} {:<21} {:>12} {:>14} {:>14}", "host", "node", "round trip", "put", "get");
            for host in &file.hosts {
                let probe =
                    probe(host.node, &tls, &key, size.0).await.with_context(|| format!("probing {}", host.name))?;
                println!(
                    "{:<6} {:<21} {:>9.2} ms {:>9.1} MB/s {:>9.1} MB/s",
                    host.name,
                    host.node,
                    probe.round_trip_s * 1e3,
                    size.0 as f64 / probe.put_s / 1e6,
                    size.0 as f64 / probe.get_s / 1e6,
                );
            }
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

/// What a probe of one node measured.
struct Probe {
    /// Median seconds of a small object's put and get.
    round_trip_s: f64,
    /// Seconds of the large object's put, and its get.
    put_s: f64,
    get_s: f64,
}

/// Probes the node at `addr` in a job of its own, which it ends.
async fn probe(
    addr: std::net::SocketAddr,
    tls: &TlsDir,
    key: &baton_fabric::net::TokenKey,
    size: u64,
) -> anyhow::Result<Probe> {
    use baton_fabric::net::{Audience, Scopes};
    use baton_fabric::{DataPath, EdgeId, JobId, ObjectKey};
    use std::time::Instant;
    let job = JobId(0xb0b0_0000_0000 | u64::from(std::process::id()));
    let node = DirectPath::connect(addr, tls).await?;
    node.add_token(key.mint(job, baton_fabric::net::token::unix_ms_now() + 600_000, Scopes::ALL, Audience::ANY));
    node.open_job(job, std::time::Duration::from_secs(600)).await?;
    let result = async {
        let small = bytes::Bytes::from(vec![1u8; 1024]);
        let mut trips = Vec::new();
        for i in 0..20 {
            let key = ObjectKey::new(job, EdgeId(0), i, 0);
            let start = Instant::now();
            node.put(&key, small.clone()).await?;
            node.get(&key).await?;
            trips.push(start.elapsed().as_secs_f64() / 2.0);
        }
        trips.sort_by(f64::total_cmp);
        let large = bytes::Bytes::from(vec![7u8; size as usize]);
        let key = ObjectKey::new(job, EdgeId(1), 0, 0);
        let start = Instant::now();
        node.put(&key, large).await?;
        let put_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let got = node.get(&key).await?;
        let get_s = start.elapsed().as_secs_f64();
        anyhow::ensure!(got.len() as u64 == size, "the node gave back {} of {size} bytes", got.len());
        Ok(Probe { round_trip_s: trips[trips.len() / 2], put_s, get_s })
    }
    .await;
    let _ = node.end_job(job).await;
    result
}
