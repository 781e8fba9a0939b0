//! A plan in words: for every stage its parallelism and place, for every edge the choice, the
//! alternatives' predicted time and cost, and why.

use std::fmt::Write;

use crate::plan::{Placement, Plan};
use crate::units::ByteSize;

fn secs(s: f64) -> String {
    if s >= 1.0 { format!("{s:.2} s") } else { format!("{:.1} ms", s * 1e3) }
}

fn dollars(d: f64) -> String {
    format!("${d:.6}")
}

/// How many alternatives each edge lists.
const ALTERNATIVES: usize = 4;

/// The plan as text (deterministic: the same plan gives the same text).
pub fn explain(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan · objective: {} · predicted {} and {}",
        plan.objective.describe(),
        secs(plan.time_s),
        dollars(plan.dollars)
    );
    if let Some((t, d)) = plan.object_store_only {
        let _ = writeln!(out, "  every edge through the object store instead: {} and {}", secs(t), dollars(d));
    }
    for note in &plan.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    let _ = writeln!(out, "\nstages");
    for s in &plan.stages {
        let place = match s.placement {
            Placement::Spread => "spread".to_string(),
            Placement::Host(h) => format!("on {h}"),
        };
        let _ = writeln!(
            out,
            "  {:<9} {:<24} dop {:>5}  {:<10} {:>10}  {}",
            s.id.to_string(),
            s.name,
            s.dop,
            place,
            secs(s.time_s),
            dollars(s.dollars)
        );
    }
    let _ = writeln!(out, "\nedges");
    for e in &plan.edges {
        let _ = writeln!(out, "  {} {} -> {} · {} of {}", e.id, e.from, e.to, e.kind.name(), ByteSize(e.bytes));
        for (i, a) in e.alternatives.iter().take(ALTERNATIVES).enumerate() {
            let _ = writeln!(
                out,
                "    {} {:<13} {:<11} {:>10}  {}  {} writes, {} reads{}",
                if i == 0 { "chosen" } else { "      " },
                a.path.name(),
                a.topology.name(),
                secs(a.time_s),
                dollars(a.dollars),
                a.requests.writes,
                a.requests.reads,
                if a.spilled > 0 { format!(", {} spilled", ByteSize(a.spilled)) } else { String::new() }
            );
        }
        if e.alternatives.len() > ALTERNATIVES {
            let _ = writeln!(out, "           (+{} more)", e.alternatives.len() - ALTERNATIVES);
        }
        for reason in &e.reasons {
            let _ = writeln!(out, "    why: {reason}");
        }
    }
    out
}
