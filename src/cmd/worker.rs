//! `baton worker`: serve task invocations over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use baton_fabric::net::{TlsDir, TokenPublicKey};
use baton_planner::ByteSize;
use baton_runtime::worker::{Worker, limit_memory, listen_and_serve};
use clap::Args;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Address to serve on (port 0: the OS picks one; the worker prints it).
    #[arg(long, env = "BATON_WORKER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for spills and temporary files.
    #[arg(long, env = "BATON_WORKER_SCRATCH", default_value = "/tmp")]
    scratch: PathBuf,
    /// Memory limit of this worker (its heap), like a function's memory size.
    #[arg(long, env = "BATON_WORKER_MEMORY")]
    memory_limit: Option<ByteSize>,
    /// Exit when standard input closes: a pool that starts workers holds their stdin, so they
    /// end with it however it ends (even SIGKILL) and never outlive the job.
    #[arg(long)]
    exit_with_stdin: bool,
    #[command(flatten)]
    key: KeyArgs,
    /// Run unsigned invocations on an address beyond loopback: anyone who reaches the port can
    /// make this worker read and write what it can. For a network you fully trust only.
    #[arg(long)]
    insecure_unsigned_invocations: bool,
    /// Serve HTTPS with the host's certificate in --tls-dir (node.pem, node.key: `baton certs
    /// --from CLUSTER_TLS --name ADDRESS --out DIR`).
    #[arg(long, requires = "tls_dir")]
    https: bool,
    /// Serve plain HTTP on an address beyond loopback: tasks and their tokens cross the
    /// network in clear text. Only behind a gateway that terminates TLS next to the worker
    /// (Knative's queue proxy, OpenFaaS's watchdog).
    #[arg(long, conflicts_with = "https")]
    insecure_plain_http: bool,
    /// Let tasks read and write only under these directories and object-store prefixes
    /// (s3://bucket/prefix; with the same ?settings), and the scratch directory: a task that
    /// names anything else fails naming it. Repeat, or separate with commas.
    #[arg(long = "root", env = "BATON_WORKER_ROOTS", value_delimiter = ',')]
    roots: Vec<String>,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    if let Some(limit) = args.memory_limit {
        limit_memory(limit.0)?;
    }
    std::fs::create_dir_all(&args.scratch).with_context(|| format!("cannot create {}", args.scratch.display()))?;
    let verifier = verifier(args.key.verify_key.as_deref(), args.key.tls_dir.as_deref())?;
    if verifier.is_none() && !args.listen.ip().is_loopback() && !args.insecure_unsigned_invocations {
        anyhow::bail!(
            "a worker listening on {} would run anyone's invocations: give it its cluster's key \
             (--tls-dir DIR or --verify-key HEX), or listen on 127.0.0.1",
            args.listen
        );
    }
    if verifier.is_none() && !args.listen.ip().is_loopback() {
        tracing::warn!("running UNSIGNED invocations on {}: anyone who reaches it controls this worker", args.listen);
    }
    let tls = match (&args.key.tls_dir, args.https) {
        (Some(dir), true) => Some(std::sync::Arc::new(
            TlsDir::new(dir).https_server_config().context("--https: the host's certificate in --tls-dir")?,
        )),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() {
        if !args.insecure_plain_http {
            anyhow::bail!(
                "a worker listening on {} over plain HTTP shows its tasks and their tokens to anyone on the \
                 network: give --https (with the host's certificate in --tls-dir), listen on 127.0.0.1, or, \
                 behind a gateway that terminates TLS, --insecure-plain-http",
                args.listen
            );
        }
        tracing::warn!("serving PLAIN HTTP on {}: tasks and tokens cross the network in clear text", args.listen);
    }
    let worker = match verifier {
        Some(key) => Worker::verifying(baton_sql::registry(), &args.scratch, key),
        None => Worker::new(baton_sql::registry(), &args.scratch),
    };
    let worker = if args.roots.is_empty() {
        if !args.listen.ip().is_loopback() {
            tracing::warn!("no --root: tasks may read and write anything this worker's user may");
        }
        worker
    } else {
        worker.within(&args.roots)?
    };
    if args.exit_with_stdin {
        exit_when_stdin_closes();
    }
    listen_and_serve(worker, args.listen, tls).await?;
    Ok(())
}

/// The key a worker's invocations must be signed with.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Run only invocations signed with the key whose public half this is (hex, a cluster's
    /// token.pub).
    #[arg(long, env = "BATON_WORKER_VERIFY_KEY", conflicts_with = "tls_dir")]
    verify_key: Option<String>,
    /// Run only invocations signed with this cluster's key (its token.pub).
    #[arg(long, env = "BATON_WORKER_TLS_DIR")]
    tls_dir: Option<PathBuf>,
}

/// The key invocations must be signed with: from hex (`--verify-key`), or a cluster's
/// `token.pub` (`--tls-dir`); none if neither is given.
fn verifier(hex: Option<&str>, tls_dir: Option<&std::path::Path>) -> anyhow::Result<Option<TokenPublicKey>> {
    Ok(match (hex, tls_dir) {
        (Some(hex), _) => Some(hex.parse::<TokenPublicKey>().map_err(|e| anyhow::anyhow!("--verify-key: {e}"))?),
        (None, Some(dir)) => Some(TlsDir::new(dir).verifier()?),
        (None, None) => None,
    })
}

/// Ends this process once standard input reaches its end (the parent closed or died).
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        baton_runtime::lifeline::wait_for_stdin_to_close();
        tracing::info!("the process that started this worker is gone; exiting");
        std::process::exit(0);
    });
}

#[derive(Debug, Args)]
pub struct LambdaArgs {
    /// Directory for spills and temporary files (Lambda's is /tmp).
    #[arg(long, env = "BATON_WORKER_SCRATCH", default_value = "/tmp")]
    scratch: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    /// Run unsigned invocations: anyone allowed to invoke the function can make it read and
    /// write what its role allows.
    #[arg(long)]
    insecure_unsigned_invocations: bool,
    /// Let tasks read and write only under these directories and object-store prefixes, and
    /// the scratch directory (as `baton worker --root`).
    #[arg(long = "root", env = "BATON_WORKER_ROOTS", value_delimiter = ',')]
    roots: Vec<String>,
}

/// `baton lambda`: the worker as an AWS Lambda function (a `provided.al2023` runtime's
/// bootstrap runs it), serving invocations from the Lambda runtime API.
pub async fn lambda(args: LambdaArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.scratch).with_context(|| format!("cannot create {}", args.scratch.display()))?;
    let verifier = verifier(args.key.verify_key.as_deref(), args.key.tls_dir.as_deref())?;
    let worker = match verifier {
        Some(key) => Worker::verifying(baton_sql::registry(), &args.scratch, key),
        None if args.insecure_unsigned_invocations => {
            tracing::warn!("running UNSIGNED invocations: whoever may invoke this function controls it");
            Worker::new(baton_sql::registry(), &args.scratch)
        }
        None => anyhow::bail!(
            "a Lambda worker runs only invocations its cluster's key signed: give BATON_WORKER_VERIFY_KEY (the \
             cluster's token.pub in hex) or --tls-dir"
        ),
    };
    let worker = if args.roots.is_empty() { worker } else { worker.within(&args.roots)? };
    baton_runtime::lambda::serve(worker).await?;
    Ok(())
}
