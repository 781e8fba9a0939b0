//! `baton worker`: serve task invocations over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
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
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    if let Some(limit) = args.memory_limit {
        limit_memory(limit.0)?;
    }
    std::fs::create_dir_all(&args.scratch).with_context(|| format!("cannot create {}", args.scratch.display()))?;
    let worker = Worker::new(baton_sql::registry(), &args.scratch);
    if args.exit_with_stdin {
        exit_when_stdin_closes();
    }
    listen_and_serve(worker, args.listen).await?;
    Ok(())
}

/// Ends this process once standard input reaches its end (the parent closed or died).
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin().lock();
        loop {
            match std::io::Read::read(&mut stdin, &mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        tracing::info!("the process that started this worker is gone; exiting");
        std::process::exit(0);
    });
}
