//! Workers as AWS Lambda functions, under a real emulator of the Lambda runtime and Invoke
//! APIs (`cargo lambda watch --only-lambda-apis`; CI installs it from PyPI's `cargo-lambda`):
//! `baton lambda` processes take invocations from it, and the Lambda invoker drives a sort and
//! a TPC-H query through it to the right answers; invocations the function's cluster did not
//! sign are refused and run nothing. Where `cargo lambda` is missing each test prints SKIPPED.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{BATON, ok};

/// Whether `cargo lambda` is here (where CI installs it, it must be).
fn emulator_present() -> bool {
    let present = Command::new("cargo").args(["lambda", "--version"]).output().is_ok_and(|o| o.status.success());
    if !present {
        // CI installs it: there, a missing emulator is a failure, not a skip.
        assert!(std::env::var_os("BATON_REQUIRE_LAMBDA").is_none(), "`cargo lambda` is not installed");
        eprintln!("SKIPPED: `cargo lambda` (pip install cargo-lambda) is not installed");
    }
    present
}

/// `baton` in `d` with test AWS credentials (the emulator checks none; the invoker signs with
/// them all the same).
fn baton(d: &Path, args: &[&str]) -> Output {
    Command::new(BATON)
        .args(args)
        .current_dir(d)
        .env("BATON_LOG", "warn")
        .env("AWS_ACCESS_KEY_ID", "baton-test-key")
        .env("AWS_SECRET_ACCESS_KEY", "baton-test-secret")
        .output()
        .unwrap()
}

#[test]
fn a_sort_and_a_tpch_query_run_on_lambda_functions_and_unsigned_work_is_refused() {
    if !emulator_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&baton(d, &["certs", "--out", "tls"]));
    let functions = baton_bench::invokers::lambda_functions(Path::new(BATON), &d.join("tls"), d, 2).unwrap().unwrap();
    let endpoint = functions.endpoint.clone();
    let lambda = ["--lambda", "_", "--lambda-endpoint", &endpoint, "--lambda-concurrency", "2"];
    // A sort: the same bytes as one process's.
    ok(&baton(d, &["gensort", "in.dat", "--records", "100000", "--seed", "9"]));
    ok(&baton(d, &["sort", "in.dat", "--output", "single", "--single-process"]));
    let mut sort = vec!["sort", "in.dat", "--output", "out", "--mappers", "3", "--reducers", "2", "--validate"];
    sort.extend_from_slice(&lambda);
    sort.extend_from_slice(&["--endpoints-tls-dir", "tls", "--summary-json", "first.json"]);
    let out = ok(&baton(d, &sort));
    assert!(out.contains("on Lambda function _ (2 at once)"), "{out}");
    assert!(out.contains("globally sorted"), "{out}");
    // The functions' first invocations were cold starts, and the summary says so; a second job
    // finds them warm.
    let cold = |file: &str| -> (u64, bool) {
        let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join(file)).unwrap()).unwrap();
        let stages = summary["stages"].as_array().unwrap();
        let cold = stages.iter().map(|s| s["cold"].as_u64().unwrap()).sum();
        (cold, stages.iter().any(|s| s["cold_start_ms"].as_f64().is_some()))
    };
    let (first, timed) = cold("first.json");
    assert!((1..=2).contains(&first) && timed, "cold starts: {first}");
    assert!(out.contains("starting in"), "{out}");
    let mut again = sort.clone();
    again[3] = "out2";
    *again.last_mut().unwrap() = "second.json";
    ok(&baton(d, &again));
    assert_eq!(cold("second.json").0, 0);
    let parts: Vec<u8> = {
        let mut names: Vec<_> = std::fs::read_dir(d.join("out"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-"))
            .collect();
        names.sort();
        names.iter().flat_map(|p| std::fs::read(p).unwrap()).collect()
    };
    assert_eq!(parts, std::fs::read(d.join("single/part-r-00000")).unwrap());
    // A TPC-H query: the same rows as DataFusion alone.
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tpch-sf0.01-lambda");
    baton_sql::tpch::ensure(0.01, &data).unwrap();
    let tpch = data.display().to_string();
    let (_, q3) = baton_sql::tpch::QUERIES[2];
    let alone = ok(&baton(d, &["sql", q3, "--tpch", &tpch, "--single-process", "--format", "csv"]));
    let mut query = vec!["sql", q3, "--tpch", &tpch, "--format", "csv", "--partitions", "2"];
    query.extend_from_slice(&lambda);
    query.extend_from_slice(&["--endpoints-tls-dir", "tls"]);
    let on_lambda = ok(&baton(d, &query));
    assert!(alone.lines().count() > 1, "{alone}");
    assert_eq!(
        on_lambda.lines().filter(|l| l.contains(',')).collect::<Vec<_>>(),
        alone.lines().filter(|l| l.contains(',')).collect::<Vec<_>>()
    );
    // Signed with another cluster's key: the functions refuse it, and nothing is written.
    ok(&baton(d, &["certs", "--out", "other"]));
    let mut forged = vec!["sort", "in.dat", "--output", "forged", "--max-attempts", "1"];
    forged.extend_from_slice(&lambda);
    forged.extend_from_slice(&["--endpoints-tls-dir", "other"]);
    let refused = baton(d, &forged);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("refused the invocation (403"), "{err}");
    assert!(!d.join("forged").exists() || std::fs::read_dir(d.join("forged")).unwrap().next().is_none());
    // Unsigned: refused as well (401).
    let mut unsigned = vec!["sort", "in.dat", "--output", "unsigned", "--max-attempts", "1"];
    unsigned.extend_from_slice(&lambda);
    let refused = baton(d, &unsigned);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("refused the invocation (401"), "{err}");
}

#[test]
fn baton_lambda_outside_lambda_says_what_is_missing() {
    let out = Command::new(BATON)
        .args(["lambda", "--insecure-unsigned-invocations"])
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS_LAMBDA_RUNTIME_API") && !err.contains("panicked"), "{err}");
    // Without its cluster's key it runs nothing at all.
    let out = Command::new(BATON).args(["lambda"]).env_remove("BATON_WORKER_VERIFY_KEY").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("BATON_WORKER_VERIFY_KEY"));
    // A driver without AWS credentials is told so.
    let dir = tempfile::tempdir().unwrap();
    ok(&baton(dir.path(), &["gensort", "in.dat", "--records", "1000"]));
    let out = Command::new(BATON)
        .args(["sort", "in.dat", "--output", "o", "--lambda", "f"])
        .current_dir(dir.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_ACCESS_KEY_ID"), "{out:?}");
}
