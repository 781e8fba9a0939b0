//! Small commands on a node's objects and jobs, for users and for debugging.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use baton_fabric::frame::{decode_records, encode_records};
use baton_fabric::net::token::unix_ms_now;
use baton_fabric::net::{Audience, Scopes, TlsDir, Token};
use baton_fabric::node::ByteSize;
use baton_fabric::path::direct::DirectPath;
use baton_fabric::path::vm_local::VmLocalPath;
use baton_fabric::{DataPath, EdgeId, JobId, KeyPrefix, ObjectKey};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct NodeOpt {
    /// The node's Unix socket (a node on this host).
    #[arg(long, global = true, env = "BATON_SOCKET", default_value = "baton-data/node.sock")]
    socket: PathBuf,
    /// A node on another host, over QUIC (e.g. 127.0.0.2:7070), instead of the local socket.
    #[arg(long, global = true, env = "BATON_REMOTE")]
    remote: Option<SocketAddr>,
    /// The job's token for a remote node; minted with the token key in --tls-dir if absent.
    /// (On a shared host prefer --token-file or BATON_TOKEN: arguments are visible to others in
    /// /proc.)
    #[arg(long, global = true, env = "BATON_TOKEN")]
    token: Option<Token>,
    /// A file holding the job's token (instead of --token).
    #[arg(long, global = true, env = "BATON_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// The cluster's TLS material (its CA to trust the node; its token key to mint tokens).
    #[arg(long, global = true, env = "BATON_TLS_DIR", default_value = "baton-data/tls")]
    tls_dir: PathBuf,
}

/// A node on this host or another.
enum Client {
    Local(VmLocalPath),
    Remote(DirectPath),
}

impl NodeOpt {
    /// Connects to the node; `job` is the job the command acts on (for a remote node's token).
    async fn connect(&self, job: Option<JobId>) -> anyhow::Result<Client> {
        let tls = TlsDir::new(&self.tls_dir);
        let given = match &self.token_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read the token in {}", file.display()))?;
                Some(text.trim().parse::<Token>().with_context(|| format!("{} holds no token", file.display()))?)
            }
            None => self.token,
        };
        if let (Some(token), Some(job)) = (given, job)
            && token.job != job
        {
            bail!("the token given is for {}, not {job}", token.job);
        }
        // The token given, or one minted with the cluster's token key where there is one (a
        // node without its cluster's key checks no tokens on its socket).
        let token = match (given, job) {
            (Some(token), _) => Some(token),
            (None, Some(job)) => match tls.signer() {
                Ok(key) => Some(key.mint(job, unix_ms_now() + 3_600_000, Scopes::ALL, Audience::ANY)),
                Err(e) if self.remote.is_some() => {
                    return Err(anyhow::Error::new(e).context("no --token given, and no token key to mint one"));
                }
                Err(_) => None,
            },
            (None, None) => None,
        };
        let Some(addr) = self.remote else {
            let local = VmLocalPath::connect(&self.socket)
                .await
                .context("is `baton node` running? (start it, or pass --socket or --remote)")?;
            if let Some(token) = token {
                local.add_token(token);
            }
            return Ok(Client::Local(local));
        };
        let remote = DirectPath::connect(addr, &tls).await?;
        if let Some(token) = token {
            remote.add_token(token);
        }
        Ok(Client::Remote(remote))
    }
}

impl Client {
    fn path(&self) -> &dyn DataPath {
        match self {
            Client::Local(local) => local,
            Client::Remote(remote) => remote,
        }
    }

    async fn open_job(&self, job: JobId, ttl: Duration) -> baton_fabric::Result<()> {
        match self {
            Client::Local(local) => local.open_job(job, ttl).await,
            Client::Remote(remote) => remote.open_job(job, ttl).await,
        }
    }

    async fn renew_job(&self, job: JobId) -> baton_fabric::Result<()> {
        match self {
            Client::Local(local) => local.renew_job(job).await,
            Client::Remote(remote) => remote.renew_job(job).await,
        }
    }

    async fn end_job(&self, job: JobId) -> baton_fabric::Result<u64> {
        match self {
            Client::Local(local) => local.end_job(job).await,
            Client::Remote(remote) => remote.end_job(job).await,
        }
    }
}

#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    action: JobAction,
    #[command(flatten)]
    node: NodeOpt,
}

#[derive(Debug, Subcommand)]
enum JobAction {
    /// Open a job with a lease (or renew it with a new ttl).
    Open {
        /// The job id (decimal, 0x-hex or job-<hex>).
        job: JobId,
        /// Lease time to live: 600s, 1.5s, 200ms, 10m (plain numbers are seconds).
        #[arg(long, default_value = "600s", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Renew a job's lease.
    Renew {
        /// The job id.
        job: JobId,
    },
    /// End a job: delete all of its objects from every tier.
    End {
        /// The job id.
        job: JobId,
    },
}

pub async fn job(args: JobArgs) -> anyhow::Result<()> {
    let job = match args.action {
        JobAction::Open { job, .. } | JobAction::Renew { job } | JobAction::End { job } => job,
    };
    let node = args.node.connect(Some(job)).await?;
    match args.action {
        JobAction::Open { job, ttl } => {
            node.open_job(job, ttl).await?;
            println!("{job} open, lease {ttl:?}");
        }
        JobAction::Renew { job } => {
            node.renew_job(job).await?;
            println!("{job} renewed");
        }
        JobAction::End { job } => {
            let freed = node.end_job(job).await?;
            println!("{job} ended, {} freed", ByteSize(freed));
        }
    }
    Ok(())
}

/// Parses `600s`, `1.5s`, `200ms`, `10m`, `600`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("{text:?} is not a duration like 600s or 200ms"))?;
    let seconds = match unit {
        "" | "s" => num,
        "ms" => num / 1e3,
        "m" => num * 60.0,
        "h" => num * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The object's key: job-<hex>/edge-<n>/<producer>-<consumer>.
    key: ObjectKey,
    /// The file to store; `-` or nothing for stdin.
    file: Option<PathBuf>,
    #[command(flatten)]
    node: NodeOpt,
}

pub async fn put(args: PutArgs) -> anyhow::Result<()> {
    let mut data = Vec::new();
    match &args.file {
        Some(path) if path.as_os_str() != "-" => {
            data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        }
        _ => {
            std::io::stdin().read_to_end(&mut data).context("cannot read stdin")?;
        }
    }
    let node = args.node.connect(Some(args.key.job)).await?;
    let object = encode_records([&data[..]]);
    let len = object.len();
    node.path().put(&args.key, object).await?;
    println!("{} stored ({})", args.key, ByteSize(len as u64));
    Ok(())
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The object's key.
    key: ObjectKey,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
    #[command(flatten)]
    node: NodeOpt,
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let node = args.node.connect(Some(args.key.job)).await?;
    let object = node.path().get(&args.key).await?;
    let records = decode_records(args.key, object)?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    for record in records {
        out.write_all(&record)?;
    }
    out.flush()?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// The job.
    job: JobId,
    /// Only this edge's objects.
    #[arg(long)]
    edge: Option<u32>,
    #[command(flatten)]
    node: NodeOpt,
}

pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let node = args.node.connect(Some(args.job)).await?;
    let prefix = KeyPrefix { job: args.job, edge: args.edge.map(EdgeId) };
    for meta in node.path().list(&prefix).await? {
        println!("{}\t{}", meta.key, meta.size);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The object's key.
    key: ObjectKey,
    #[command(flatten)]
    node: NodeOpt,
}

pub async fn rm(args: RmArgs) -> anyhow::Result<()> {
    args.node.connect(Some(args.key.job)).await?.path().delete(&args.key).await?;
    Ok(())
}

pub async fn status(args: NodeOpt) -> anyhow::Result<()> {
    let status = match args.connect(None).await? {
        Client::Local(local) => local.status().await?,
        Client::Remote(remote) => {
            let (version, rdma) = remote.hello().await?;
            println!("remote node: protocol version {version}, rdma {}", if rdma { "yes" } else { "no" });
            return Ok(());
        }
    };
    println!(
        "memory {} of {} · flash {} of {} · jobs {}",
        ByteSize(status.memory_used),
        ByteSize(status.memory_budget),
        ByteSize(status.flash_used),
        ByteSize(status.flash_budget),
        status.jobs.iter().map(|j| JobId(*j).to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
