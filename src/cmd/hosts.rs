//! `baton cluster`: emulated hosts on this machine (`up`, `down`) and a cluster's nodes
//! (`status`).

use std::path::PathBuf;

use anyhow::Context;
use baton_fabric::net::TlsDir;
use baton_fabric::node::ByteSize;
use baton_fabric::path::direct::DirectPath;
use baton_runtime::cluster::ClusterFile;
use baton_runtime::cluster::calibrate::{self, Stored};
use baton_runtime::cluster::emulate::{self, EmulateOptions, S3Host};
use baton_runtime::cluster::ssh;
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
        /// Each host's link MTU: 9001 as between EC2 instances in one VPC (jumbo frames), 1500
        /// as on the internet.
        #[arg(long, default_value_t = emulate::EC2_MTU)]
        mtu: u32,
        /// Memory each node lends.
        #[arg(long, default_value = "1GiB")]
        memory: ByteSize,
        /// Workers on each host (`baton worker`, running only what the cluster's key signed).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Memory limit of each worker.
        #[arg(long, default_value = "1GiB")]
        worker_memory: ByteSize,
        /// Give the object store a host of its own: an S3 server (s3s-fs) the hosts reach
        /// over their capped links, instead of a directory they share. Drivers reach it with
        /// the test credentials `cluster up` prints.
        #[arg(long)]
        s3_host: bool,
        /// Make the S3 host enforce S3's documented request rates per key prefix (3,500
        /// writes and 5,500 reads a second), answering `503 SlowDown` past them as S3 does.
        #[arg(long, requires = "s3_host")]
        s3_rate_limit: bool,
        /// Give the cluster a remote store: a node in a host of its own that every host
        /// reaches over its capped link (the remote-store path).
        #[arg(long)]
        store_host: bool,
        /// Give the cluster the elastic store (the remote-store path) with this many storage
        /// nodes, each a host of its own lending --memory (and --store-flash), with etcd
        /// (authentication on, its credentials in a private file the cluster file names) and
        /// the store's controller in one more host.
        #[arg(long, default_value_t = 0)]
        elastic_store: usize,
        /// Flash each storage node of the elastic store lends.
        #[arg(long, default_value = "0")]
        store_flash: ByteSize,
        /// The elastic store's block size.
        #[arg(long, default_value = "32MiB")]
        store_block: ByteSize,
        /// The emulation's directory: its cluster file (cluster.toml), material and logs.
        #[arg(long, default_value = "baton-data/cluster")]
        dir: PathBuf,
        /// The binary the hosts' nodes run (default: this one).
        #[arg(long, env = "BATON_EMULATE_EXE")]
        node_exe: Option<PathBuf>,
    },
    /// Deploy to hosts over ssh: copy this binary and each host's TLS material into a new
    /// private directory on every host of the inventory, start a node and workers there
    /// (HTTPS, running only what the cluster's key signed), and write the cluster file.
    Deploy {
        /// The inventory (TOML): the hosts, how to reach them, the object store they share.
        #[arg(long)]
        inventory: PathBuf,
        /// The deployment's directory: its cluster file (cluster.toml), material and, after
        /// `down`, the hosts' logs. New or empty.
        #[arg(long, default_value = "baton-data/cluster")]
        dir: PathBuf,
    },
    /// Remove everything `up` or `deploy` made in DIR: nodes, workers, namespaces, links,
    /// shared memory, the hosts' directories (their logs come back to DIR/logs) — also after
    /// one that failed halfway.
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
        Action::Up {
            emulate: hosts,
            nic,
            mtu,
            memory,
            workers,
            worker_memory,
            s3_host,
            s3_rate_limit,
            store_host,
            elastic_store,
            store_flash,
            store_block,
            dir,
            node_exe,
        } => {
            let dir = std::path::absolute(&dir)?;
            let exe = match node_exe {
                Some(exe) => exe,
                None => std::env::current_exe()?,
            };
            let s3 = s3_host.then(|| S3Host { rate_limited: s3_rate_limit, ..baton_bench::cluster::s3_host() });
            let options = EmulateOptions {
                exe,
                hosts,
                nic,
                mtu,
                memory,
                workers,
                worker_memory,
                s3_host: s3.clone(),
                store_host,
                elastic_store,
                store_flash,
                store_block,
                dir: dir.clone(),
            };
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
            if let Some(store) = &file.store {
                let at = match (&store.node, &store.etcd) {
                    (_, Some(etcd)) => format!("etcd {etcd}"),
                    (Some(node), None) => format!("node {node}"),
                    (None, None) => "-".into(),
                };
                println!("store  {at}  namespace {}", store.namespace.as_deref().unwrap_or("-"));
                if let Some(credentials) = &store.credentials {
                    println!(
                        "store  etcd's user:password is in {} (for `baton store`: export BATON_ETCD_USER=root BATON_ETCD_PASSWORD=...)",
                        credentials.display()
                    );
                }
            }
            println!("cluster file: {}", dir.join("cluster.toml").display());
            let objects = match &s3 {
                Some(host) => {
                    let env: Vec<String> = host.environment().iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("object store: an S3 host; drivers reach it with: export {}", env.join(" "));
                    host.environment().iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect()
                }
                None => Vec::new(),
            };
            // The planner starts from what the hosts' paths really do.
            probe_and_store(&file, &dir.join("cluster.toml"), 8 << 20, &objects).await
        }
        Action::Deploy { inventory, dir } => {
            let dir = std::path::absolute(&dir)?;
            let exe = std::env::current_exe()?;
            let at = dir.clone();
            let file = tokio::task::spawn_blocking(move || ssh::deploy(&inventory, &exe, &at)).await??;
            for host in &file.hosts {
                println!("{:<6} node {}  {} workers", host.name, host.node, host.workers.len());
            }
            println!("cluster file: {}", dir.join("cluster.toml").display());
            Ok(())
        }
        Action::Down { dir } if ssh::is_deployment(&std::path::absolute(&dir)?) => {
            let dir = std::path::absolute(&dir)?;
            let at = dir.clone();
            tokio::task::spawn_blocking(move || ssh::down(&at)).await??;
            println!("stopped and removed from every host; their logs are in {}", dir.join("logs").display());
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
            probe_and_store(&file, &cluster, size.0, &[]).await
        }
        Action::Status { cluster } => {
            let file = ClusterFile::read(&cluster)?;
            let tls = TlsDir::new(&file.tls_dir);
            // Workers show their metrics to holders of the cluster's key.
            let signer = tls.signer().ok();
            let client = baton_runtime::http::HttpClient::new(Some(&file.tls_dir))?;
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
                // Its tiers and jobs, through its socket when that is on this machine.
                if let Some(socket) = host.socket.as_ref().filter(|s| s.exists()) {
                    let status =
                        async { baton_fabric::path::vm_local::VmLocalPath::connect(socket).await?.status().await };
                    match status.await {
                        Ok(s) => println!(
                            "       tiers: memory {} of {}, flash {} of {}; {} jobs open",
                            ByteSize(s.memory_used),
                            ByteSize(s.memory_budget),
                            ByteSize(s.flash_used),
                            ByteSize(s.flash_budget),
                            s.jobs.len()
                        ),
                        Err(e) => println!("       tiers: cannot ask its socket: {e}"),
                    }
                }
                if let Some(socket) = host.socket.as_ref().filter(|s| s.exists()) {
                    let text =
                        async { baton_fabric::path::vm_local::VmLocalPath::connect(socket).await?.metrics().await };
                    if let Ok(text) = text.await {
                        println!(
                            "       node served: {}, sent {} over QUIC",
                            requests(&text, "baton_node_requests_total"),
                            ByteSize(total(&text, "baton_node_bytes_sent_total") as u64)
                        );
                    }
                }
                let (mut up, mut made) = (0, 0.0);
                for url in &host.workers {
                    match worker_metrics(url, &client, signer.as_ref()).await {
                        Ok(text) => {
                            up += 1;
                            made += total(&text, "baton_requests_total");
                        }
                        Err(e) => println!("       worker {url}: {e}"),
                    }
                }
                if !host.workers.is_empty() {
                    println!("       workers: {up} of {} answer; {made} path requests made", host.workers.len());
                }
            }
            if let Some(store) = &file.store {
                let answer =
                    match (&store.node, &store.etcd) {
                        (_, Some(_)) => async {
                            let etcd = store.etcd_client()?.context("the store's etcd")?;
                            let map = baton_store::alloc::BlockMap::read(&etcd).await?;
                            let (memory, flash) = map.free_blocks();
                            Ok::<_, anyhow::Error>(format!(
                                "up: {} storage nodes, {memory} memory and {flash} flash blocks free (elastic store)",
                                map.nodes.len()
                            ))
                        }
                        .await,
                        (Some(node), None) => {
                            async {
                                let (version, _) = DirectPath::connect(*node, &tls).await?.hello().await?;
                                Ok::<_, anyhow::Error>(format!("up, protocol {version} (remote store)"))
                            }
                            .await
                        }
                        (None, None) => Err(anyhow::anyhow!("it names neither a node nor an etcd")),
                    };
                let name = store.node.map_or_else(|| store.etcd.clone().unwrap_or_default(), |n| n.to_string());
                match answer {
                    Ok(text) => println!("{:<6} {:<21} {text}", "store", name),
                    Err(e) => {
                        println!("{:<6} {:<21} unreachable: {e}", "store", name);
                        down.push("the store".into());
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

/// A worker's metrics, asked with a request signed by the cluster's key.
async fn worker_metrics(
    url: &str,
    client: &baton_runtime::http::HttpClient,
    signer: Option<&baton_fabric::net::TokenKey>,
) -> anyhow::Result<String> {
    use baton_runtime::http::{EXPIRES_HEADER, SIGNATURE_HEADER};
    use baton_runtime::worker::METRICS_PATH;
    let endpoint = baton_runtime::http::Endpoint::parse(url)?.with_client(client.clone());
    let mut headers = Vec::new();
    if let Some(key) = signer {
        let expires = baton_fabric::net::token::unix_ms_now() + 60_000;
        headers.push((SIGNATURE_HEADER, key.sign_invocation(METRICS_PATH.as_bytes(), expires)));
        headers.push((EXPIRES_HEADER, expires.to_string()));
    }
    let (status, body) = endpoint.get_with(METRICS_PATH, &headers, std::time::Duration::from_secs(2)).await?;
    anyhow::ensure!(status.is_success(), "answers {status}: {}", String::from_utf8_lossy(&body));
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The sum of the samples of counter `name` in Prometheus text.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Counter `name`'s total, for a line of status.
fn requests(text: &str, name: &str) -> String {
    format!("{} requests", total(text, name))
}

/// Probes every host of the cluster in `path`, prints what it measured, and keeps the samples
/// beside the cluster file for the planner.
async fn probe_and_store(
    file: &ClusterFile,
    path: &std::path::Path,
    size: u64,
    objects: &[(String, String)],
) -> anyhow::Result<()> {
    let (hosts, samples) = calibrate::probe(file, size, objects).await?;
    println!("{:<6} {:<21} {:>12} {:>14} {:>14} {:>16}", "host", "node", "round trip", "put", "get", "via its socket");
    let rate = |s: f64| size as f64 / s / 1e6;
    for (host, probe) in file.hosts.iter().zip(&hosts) {
        let local = probe.local.map_or("-".to_string(), |l| format!("{:.1} MB/s get", rate(l.get_s)));
        println!(
            "{:<6} {:<21} {:>9.2} ms {:>9.1} MB/s {:>9.1} MB/s {:>16}",
            host.name,
            host.node,
            probe.quic.round_trip_s * 1e3,
            rate(probe.quic.put_s),
            rate(probe.quic.get_s),
            local
        );
    }
    let mut stored = Stored::load(path)?;
    stored.add(samples);
    stored.save(path)?;
    println!("calibration: {} samples in {}", stored.samples.len(), Stored::location(path).display());
    Ok(())
}
