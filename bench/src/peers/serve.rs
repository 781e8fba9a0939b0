//! The peers' server processes (`baton bench peer-serve ROLE`): a datafusion-distributed
//! worker, a Ballista scheduler or a Ballista executor. Each prints `listening ADDR` once it
//! has its port, serves until the process that started it closes its stdin, and then exits.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;

/// What a peer process serves.
#[derive(Clone, Debug)]
pub enum Role {
    /// A datafusion-distributed worker (Arrow Flight over gRPC).
    DistributedWorker,
    /// A Ballista scheduler (in-memory cluster state, push-staged scheduling).
    BallistaScheduler,
    /// A Ballista executor registered with the scheduler at this address; its shuffle files
    /// go under `work_dir`.
    BallistaExecutor {
        /// The scheduler.
        scheduler: SocketAddr,
        /// Where its shuffle files go.
        work_dir: PathBuf,
    },
}

/// How a peer process is set up.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// What it serves.
    pub role: Role,
    /// The address it listens on (its port is chosen).
    pub ip: IpAddr,
    /// Its memory pool, bytes (spilling past it, as Baton's tasks do).
    pub memory: u64,
    /// Tasks it runs at once (Ballista's vcores).
    pub cores: usize,
}

/// Serves until stdin closes. Runs on a runtime of its own whose threads have 32 MiB stacks,
/// as Ballista's own binaries do (plans of TPC-H's deeper queries recurse deeply).
pub fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let thread = std::thread::Builder::new()
        .name("peer".into())
        .stack_size(32 << 20)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_stack_size(32 << 20)
                .build()
                .context("cannot start a runtime")?;
            runtime.block_on(async move {
                tokio::select! {
                    served = serve_role(&options) => served,
                    () = stdin_closed() => Ok(()),
                }
            })
        })
        .context("cannot start the peer's thread")?;
    thread.join().map_err(|_| anyhow::anyhow!("the peer's thread panicked"))?
}

/// Resolves when this process's stdin reaches its end (the process that started it is gone).
async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(baton_runtime::lifeline::wait_for_stdin_to_close).await;
}

/// A port free on `ip` now (the peers bind their ports themselves).
fn free_port(ip: IpAddr) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0)).with_context(|| format!("no free port on {ip}"))?.local_addr()?.port())
}

fn announce(addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

async fn serve_role(options: &ServeOptions) -> anyhow::Result<()> {
    match &options.role {
        Role::DistributedWorker => {
            let incoming = tonic::transport::server::TcpIncoming::bind(SocketAddr::new(options.ip, 0))
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", options.ip))?
                .with_nodelay(Some(true));
            let addr = incoming.local_addr()?;
            let runtime = RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(FairSpillPool::new(options.memory as usize)))
                .build_arc()?;
            let worker = datafusion_distributed::Worker::default().with_runtime_env(runtime);
            announce(addr);
            tonic::transport::Server::builder()
                .add_service(worker.into_worker_server())
                .serve_with_incoming(incoming)
                .await
                .context("the datafusion-distributed worker stopped")
        }
        Role::BallistaScheduler => {
            use ballista_scheduler::cluster::BallistaCluster;
            use ballista_scheduler::config::SchedulerConfig;
            let port = free_port(options.ip)?;
            let addr = SocketAddr::new(options.ip, port);
            // Executors report to the scheduler at its external host: its own address, not
            // `localhost`, which on another host is that host.
            let config = SchedulerConfig {
                bind_host: options.ip.to_string(),
                external_host: options.ip.to_string(),
                bind_port: port,
                grpc_server_max_decoding_message_size: super::GRPC_MAX_MESSAGE,
                grpc_server_max_encoding_message_size: super::GRPC_MAX_MESSAGE,
                grpc_client_max_message_size: super::GRPC_MAX_MESSAGE,
                ..Default::default()
            };
            let cluster = BallistaCluster::new_from_config(&config).await?;
            announce(addr);
            ballista_scheduler::scheduler_process::start_server(cluster, addr, Arc::new(config))
                .await
                .context("the Ballista scheduler stopped")
        }
        Role::BallistaExecutor { scheduler, work_dir } => {
            use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
            let (port, grpc_port) = (free_port(options.ip)?, free_port(options.ip)?);
            let config = ExecutorProcessConfig {
                bind_host: options.ip.to_string(),
                external_host: Some(options.ip.to_string()),
                port,
                grpc_port,
                scheduler_host: scheduler.ip().to_string(),
                scheduler_port: scheduler.port(),
                scheduler_connect_timeout_seconds: 20,
                vcores: options.cores.max(1),
                work_dir: Some(work_dir.display().to_string()),
                memory_pool_size: Some(options.memory),
                print_thread_info: false,
                grpc_max_decoding_message_size: super::GRPC_MAX_MESSAGE,
                grpc_max_encoding_message_size: super::GRPC_MAX_MESSAGE,
                ..Default::default()
            };
            announce(SocketAddr::new(options.ip, port));
            start_executor_process(Arc::new(config)).await.context("the Ballista executor stopped")
        }
    }
}
