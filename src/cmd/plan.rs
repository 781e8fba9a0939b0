//! `baton plan`: plan a DAG described in TOML and explain the decisions.

use std::path::PathBuf;

use anyhow::Context;
use baton_planner::spec::PlanSpec;
use clap::Args;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The plan file: a DAG, a cluster and an objective in TOML.
    file: PathBuf,
    /// Print, for every edge, the choice, the alternatives and the reasons.
    #[arg(long)]
    explain: bool,
}

pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let spec = PlanSpec::from_toml(&text).with_context(|| format!("in {}", args.file.display()))?;
    let plan = baton_planner::plan(&spec.dag, &spec.cluster, spec.objective)?;
    if args.explain {
        print!("{}", baton_planner::explain(&plan));
    } else {
        for e in &plan.edges {
            println!("{}\t{}\t{}", e.id, e.chosen.path.name(), e.chosen.topology.name());
        }
        println!("predicted {:.3} s, ${:.6}", plan.time_s, plan.dollars);
    }
    Ok(())
}
