//! `baton demo`: an embedded node, and generated Arrow data passed between two worker
//! processes over each path.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use baton_bench::data::ROW_BYTES;
use baton_bench::worker::{PathSpec, Role, WorkerArgs, spawn};
use baton_fabric::node::{ByteSize, Node, NodeConfig};
use baton_fabric::store::TieredStore;
use baton_fabric::{EdgeId, JobId, ObjectKey};
use clap::Args;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Rows of generated data (16 bytes each).
    #[arg(long, default_value_t = 4_000_000)]
    rows: u64,
    /// Size of the MapReduce sort that follows.
    #[arg(long, default_value = "512MiB")]
    sort_size: ByteSize,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let root = super::data_dir();
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let root = root.canonicalize()?;
    let config = NodeConfig {
        socket: root.join("demo-node.sock"),
        flash_dir: root.join("flash"),
        memory: ByteSize(2 << 30),
        ..NodeConfig::default()
    };
    config.validate()?;
    let store = Arc::new(TieredStore::open(&config.store())?);
    let node = Node::serve(store.clone(), &config.socket, config.reap_interval()).await?;
    let job = JobId(std::process::id().into());
    store.open_job(job, Duration::from_secs(600))?;
    let objects = root.join("objects");
    let exe = std::env::current_exe()?;
    println!(
        "node: embedded (memory {}, flash {}) · 2 worker processes per path · {} rows ({})",
        config.memory,
        config.flash_dir.display(),
        args.rows,
        ByteSize(args.rows * ROW_BYTES)
    );
    let paths = [
        PathSpec::VmLocal { socket: config.socket.clone() },
        PathSpec::ObjectStore { url: format!("file://{}", objects.display()) },
    ];
    for (i, path) in paths.into_iter().enumerate() {
        let key = ObjectKey::new(job, EdgeId(i as u32), 0, 0);
        let produce = WorkerArgs { role: Role::Produce, path: path.clone(), key, rows: args.rows };
        let producer = spawn(&exe, &produce, Duration::from_secs(300))?;
        let consumer = spawn(&exe, &WorkerArgs { role: Role::Consume, ..produce }, Duration::from_secs(300))?;
        ensure!(consumer.checksum == producer.checksum, "{}: the consumer read different data", path.name());
        let total = producer.seconds + consumer.seconds;
        println!(
            "{:<9} producer pid {} wrote {} in {:.1} ms · consumer pid {} read {} rows in {:.1} ms{} · {:.0} MB/s end to end · checksum ok",
            path.name(),
            producer.pid,
            ByteSize(producer.bytes),
            producer.seconds * 1e3,
            consumer.pid,
            consumer.rows,
            consumer.seconds * 1e3,
            if consumer.zero_copy == Some(true) { " (zero-copy)" } else { "" },
            producer.bytes as f64 / total / 1e6
        );
    }
    // Ending the job deletes its objects from memory, flash and the object store.
    let file = Arc::new(baton_connectors::object_store_path(&format!("file://{}", objects.display()))?);
    baton_fabric::DataPath::purge_job(&*file, job).await?;
    let freed = store.end_job(job).await?;
    println!("job ended: {} freed from the node; nothing left behind", ByteSize(freed));
    drop(node);

    // A MapReduce job: gensort input, sorted by worker processes on the planned path.
    println!();
    let input = root.join("demo-sort").join("input.bin");
    let records = (args.sort_size.0 / 100).to_string();
    run_baton(&exe, &["gensort", &input.display().to_string(), "--records", &records, "--seed", "1"])?;
    let output = root.join("demo-sort").join("sorted").display().to_string();
    run_baton(&exe, &["sort", &input.display().to_string(), "--output", &output, "--validate"])?;
    Ok(())
}

/// Runs `baton ARGS`, its output going to ours.
fn run_baton(exe: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new(exe).args(args).status()?;
    ensure!(status.success(), "baton {} failed ({status})", args.join(" "));
    Ok(())
}
