//! `baton tpch gen`: TPC-H tables as Parquet.

use std::path::PathBuf;
use std::time::Instant;

use baton_planner::ByteSize;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct TpchArgs {
    #[command(subcommand)]
    command: TpchCommand,
}

#[derive(Debug, Subcommand)]
enum TpchCommand {
    /// Write the eight TPC-H tables at a scale factor as Parquet files, <table>.parquet.
    Gen {
        /// Scale factor (1 is about 1 GB of data).
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: TpchArgs) -> anyhow::Result<()> {
    match args.command {
        TpchCommand::Gen { sf, out } => {
            let start = Instant::now();
            let tables = baton_sql::tpch::generate(sf, &out)?;
            for t in &tables {
                println!(
                    "{:<9} {:>10} rows {:>11}  {}",
                    t.table,
                    t.rows,
                    ByteSize(t.bytes).to_string(),
                    t.path.display()
                );
            }
            println!("TPC-H at scale factor {sf} in {:.2} s", start.elapsed().as_secs_f64());
            Ok(())
        }
    }
}
