//! `baton bench suite` end to end at its smallest sizes: the local profile (and, as root, the
//! emulated one on 2 hosts) writes a report that loads, has every part's figures with their
//! samples, its limits, its dollars and non-empty plots; `bench compare` of a report with
//! itself shows no change.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::path::Path;
use std::process::Command;

use baton_bench::suite::report::Report;
use support::BATON;

fn suite(dir: &Path, args: &[&str]) -> Report {
    let out = Command::new(BATON)
        .args(["bench", "suite", "--quick", "--out", "out", "--work-dir", "work"])
        .args(args)
        .current_dir(dir)
        .env("BATON_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[1/") && stderr.contains("so far)"), "progress is shown: {stderr}");
    let report = Report::load(&dir.join("out/report.json")).unwrap();
    assert!(report.failed.is_empty(), "parts failed: {:?}", report.failed);
    report
}

fn assert_plots(dir: &Path, charts: &[&str]) {
    for chart in charts {
        let png = std::fs::read(dir.join(format!("out/plots/{chart}.png"))).unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "{chart}.png");
        assert!(png.len() > 5_000, "{chart}.png is {} bytes", png.len());
        let svg = std::fs::read_to_string(dir.join(format!("out/plots/{chart}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.matches("<text").count() > 5, "{chart}.svg");
    }
}

fn keys(report: &Report, prefix: &str) -> usize {
    report.figures.iter().filter(|f| f.key.starts_with(prefix)).count()
}

#[test]
fn the_local_suite_reports_every_part_with_limits_dollars_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let report = suite(dir.path(), &[]);
    assert_eq!(report.profile, "local");
    for limit in ["limits/memcpy", "limits/loopback-tcp"] {
        let f = report.limits.iter().find(|f| f.key == limit).unwrap_or_else(|| panic!("{limit} missing"));
        assert!(f.value > 0.0 && !f.samples.is_empty(), "{f:?}");
    }
    for part in ["paths/", "direct/", "sort/", "wordcount/", "tpch-sf0.01/", "dollars/"] {
        assert!(keys(&report, part) > 0, "no {part} figures");
    }
    // Each sort variant ran, with a sample per run, and the throughput figures are related
    // to their limit.
    let sort: Vec<_> = report.figures.iter().filter(|f| f.key.starts_with("sort/")).collect();
    assert_eq!(sort.len(), 5, "{sort:?}");
    assert!(sort.iter().all(|f| f.samples.len() == 1 && f.value > 0.0));
    let vm = report.figures.iter().find(|f| f.key.starts_with("paths/vm-local/")).unwrap();
    assert!(vm.of_limit.as_ref().is_some_and(|(l, x)| l == "limits/memcpy" && *x > 0.0), "{vm:?}");
    // Object-store requests cost more than VM-local passing does.
    let dollars =
        |name: &str| report.figures.iter().find(|f| f.key == format!("dollars/sort 16 MiB/{name}")).unwrap().value;
    assert!(dollars("object-store only (file://)") > dollars("planned"));
    // TPC-H's three queries in three variants.
    assert_eq!(keys(&report, "tpch-sf0.01/q"), 9);
    assert!(report.skipped.iter().any(|s| s.what.contains("peers")), "what did not run is said");
    // The runs' own files are gone; what stays is the inputs, kept for the next run (and the
    // empty directories the jobs ran in).
    let left: Vec<String> = std::fs::read_dir(dir.path().join("work"))
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_dir(e.path()).map_or(true, |mut d| d.next().is_some()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !(name.starts_with("sort-") || name.starts_with("text-") || name.starts_with("tpch-sf")))
        .collect();
    assert!(left.is_empty(), "left in the work directory: {left:?}");
    let md = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    assert!(md.contains("## This machine's limits") && md.contains("## sort"), "{md}");
    assert_plots(dir.path(), &["path-throughput", "sort-size", "tpch-sf0.01", "dollars"]);
    let compare = Command::new(BATON)
        .args(["bench", "compare", "out/report.json", "out/report.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&compare.stdout);
    assert!(compare.status.success() && text.contains(" 0 better, 0 worse"), "{text}");
    let plot = Command::new(BATON)
        .args(["bench", "plot", "out/report.json", "--out", "again"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(plot.status.success(), "{}", String::from_utf8_lossy(&plot.stderr));
    assert_eq!(
        std::fs::read(dir.path().join("again/sort-size.svg")).unwrap(),
        std::fs::read(dir.path().join("out/plots/sort-size.svg")).unwrap(),
        "the same report draws the same chart"
    );
}

#[test]
fn the_emulated_suite_runs_on_two_hosts() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the emulated profile needs root (network namespaces)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = suite(dir.path(), &["--profile", "emulated", "--hosts", "2", "--instance", "m6i.4xlarge"]);
    assert_eq!(report.profile, "emulated");
    assert!(report.settings["instance"].contains("m6i.4xlarge"));
    // Four variants of the sort on 2 hosts, and TPC-H's queries in each.
    assert_eq!(keys(&report, "cluster-sort/16 MiB/2 hosts/"), 4);
    assert_eq!(keys(&report, "cluster-tpch-sf0.01/2 hosts/q"), 3 * 4);
    assert_eq!(keys(&report, "cluster-tpch-sf0.01/2 hosts/total/"), 4);
    assert!(keys(&report, "edges/") > 0, "predicted against measured");
    assert_plots(dir.path(), &["sort-hosts", "edges"]);
}

#[test]
fn bad_suite_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BATON).args(args).current_dir(dir.path()).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["bench", "suite", "--quick", "--instance", "m9.huge", "--out", "o", "--work-dir", "w"]);
    assert!(err.contains("unknown instance type \"m9.huge\"") && err.contains("c5n.2xlarge"), "{err}");
    let err = run(&["bench", "suite", "--profile", "moon"]);
    assert!(err.contains("moon"), "{err}");
    let err = run(&["bench", "suite", "--quick", "--queries", "1,23", "--out", "o", "--work-dir", "w"]);
    assert!(err.contains("there is no TPC-H query 23 (1 to 22)"), "{err}");
    let err = run(&["bench", "tpch", "--queries", "0", "--work-dir", "w"]);
    assert!(err.contains("there is no TPC-H query 0"), "{err}");
    std::fs::write(dir.path().join("bad.json"), "{\"schema\": 99}").unwrap();
    let err = run(&["bench", "compare", "bad.json", "bad.json"]);
    assert!(err.contains("schema 99"), "{err}");
}
