//! `baton bench`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Path throughput (4 KiB to 256 MiB) and a 256 MiB Arrow object across processes.
    Paths {
        /// Small sizes and one repetition (a smoke run).
        #[arg(long)]
        quick: bool,
        /// Directory for the JSON and Markdown reports.
        #[arg(long, default_value = "baton-data/bench")]
        out: PathBuf,
        /// Directory on local disk for the flash tier and the file:// store.
        #[arg(long, default_value = "baton-data/bench-work")]
        work_dir: PathBuf,
        /// Memory file system for shared-memory segments.
        #[arg(long, default_value = "/dev/shm")]
        shm_dir: PathBuf,
    },
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.workload {
        Workload::Paths { quick, out, work_dir, shm_dir } => {
            if cfg!(debug_assertions) && !quick {
                eprintln!("warning: this is a debug build; benchmark with `cargo run --release`");
            }
            let options = baton_bench::paths::PathsOptions {
                quick,
                exe: std::env::current_exe()?,
                work_dir: std::path::absolute(&work_dir)?,
                shm_dir,
            };
            let report = baton_bench::paths::run(&options).await?;
            let markdown = baton_bench::paths::markdown(&report);
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            std::fs::write(out.join("paths.json"), serde_json::to_string_pretty(&report)?)?;
            std::fs::write(out.join("paths.md"), &markdown)?;
            println!("{markdown}");
            println!("reports: {}/paths.json, {}/paths.md", out.display(), out.display());
            Ok(())
        }
    }
}
