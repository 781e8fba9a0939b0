//! `baton calibrate`: measure this machine's paths for the planner of the embedded default.

use anyhow::Context;
use baton_planner::ByteSize;
use baton_runtime::cluster::calibrate::Stored;
use baton_runtime::local::{LocalConfig, LocalEnv};
use clap::Args;

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// The large object's size.
    #[arg(long, default_value = "32MiB")]
    size: ByteSize,
    /// Where the embedded node keeps VM-local objects (as `sort` and `sql` take it).
    #[arg(long, env = "BATON_SHM_DIR")]
    shm_dir: Option<std::path::PathBuf>,
}

pub async fn run(args: CalibrateArgs) -> anyhow::Result<()> {
    let root = super::data_dir();
    let mut local = LocalConfig::new(&root, None);
    local.workers = 1;
    local.shm_dir = args.shm_dir;
    let env = LocalEnv::start(&local).await?;
    let samples = env.probe(args.size.0).await?;
    println!("{:<14} {:>10} {:>12} {:>12}", "path", "bytes", "seconds", "MB/s");
    for s in &samples {
        println!(
            "{:<14} {:>10} {:>12.6} {:>12.1}",
            s.path,
            ByteSize(s.bytes).to_string(),
            s.seconds,
            s.bytes as f64 / s.seconds / 1e6
        );
    }
    let anchor = LocalEnv::calibration_anchor(&root);
    let mut stored = Stored::load(&anchor)?;
    stored.add(samples);
    stored.save(&anchor).with_context(|| format!("cannot keep the calibration in {}", root.display()))?;
    println!(
        "calibration: {} samples in {}; sort, wordcount and sql plan with them",
        stored.samples.len(),
        Stored::location(&anchor).display()
    );
    Ok(())
}
