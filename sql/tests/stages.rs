//! How the 22 TPC-H queries are cut into stages (golden files in `tests/golden/`; run with
//! `BATON_BLESS=1` to rewrite them after a deliberate change), and each stage's plan surviving
//! the trip through bytes.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};

use baton_sql::{codec, query, session, stages, tpch};
use std::sync::Arc;

use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionContext;
use datafusion::physical_plan::ExecutionPlan;

/// TPC-H at scale factor 0.01, made once per test binary run.
fn data() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tpch-sf0.01-rg128k");
    tpch::ensure(0.01, &dir).unwrap();
    dir
}

async fn session() -> SessionContext {
    let ctx = SessionContext::new_with_config(session::config(4));
    session::register(&ctx, &session::tpch_tables(&data()).unwrap()).await.unwrap();
    ctx
}

#[tokio::test]
async fn the_22_queries_split_into_the_golden_stages() {
    let ctx = session().await;
    let golden = Path::new(&manifest_dir()).join("tests/golden");
    let bless = std::env::var_os("BATON_BLESS").is_some();
    let mut differ = Vec::new();
    for (name, sql) in tpch::QUERIES {
        let plan = query::physical_plan(&ctx, sql).await.unwrap();
        let got = query::display_stages(plan.clone()).unwrap();
        let file = golden.join(format!("{name}.txt"));
        if bless {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&file, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file).unwrap_or_default();
        if got != want {
            differ.push(format!("{name}:\n--- want\n{want}\n--- got\n{got}"));
        }
        // Edges go forward, from a stage to a later one.
        let (main, _) = query::detach_subqueries(plan).unwrap();
        let split = stages::split(main).unwrap();
        for e in &split.edges {
            assert!(e.from < e.to && e.to < split.stages.len(), "{name}: edge {e:?}");
        }
    }
    assert!(differ.is_empty(), "stages differ from the golden files:\n{}", differ.join("\n"));
}

#[tokio::test]
async fn every_stage_plan_survives_encoding() {
    let ctx = session().await;
    let task_ctx = ctx.task_ctx();
    for (name, sql) in tpch::QUERIES {
        let (main, subqueries) = query::detach_subqueries(query::physical_plan(&ctx, sql).await.unwrap()).unwrap();
        // Subqueries run first; DataFusion runs them here, and their values travel as literals.
        // As in a query, a plan is encoded before it runs (running it fills its join filters).
        for s in &subqueries {
            round_trip(name, s.plan.clone(), &task_ctx);
            s.resolve(&datafusion::physical_plan::collect(s.plan.clone(), task_ctx.clone()).await.unwrap()).unwrap();
        }
        round_trip(name, main, &task_ctx);
    }
}

/// Checks that every stage of `plan` comes back from bytes as it went.
fn round_trip(name: &str, plan: Arc<dyn ExecutionPlan>, task_ctx: &TaskContext) {
    for (i, stage) in stages::split(plan).unwrap().stages.into_iter().enumerate() {
        let bytes = codec::encode(stage.plan.clone()).unwrap();
        let back = codec::decode(&bytes, task_ctx, Vec::new()).unwrap_or_else(|e| panic!("{name} stage {i}: {e}"));
        let again = codec::encode(back.clone()).unwrap();
        assert_eq!(bytes, again, "{name} stage {i}: the plan changed on the way through bytes");
        assert!(back.is::<baton_sql::exchange::ExchangeWriter>(), "{name} stage {i}: {}", back.name());
    }
}

#[tokio::test]
async fn undecodable_plans_are_errors() {
    let ctx = session().await;
    for bytes in [&b""[..], b"\xff\xff\xff", b"\x0a\x03abc"] {
        assert!(codec::decode(bytes, &ctx.task_ctx(), Vec::new()).is_err());
    }
    // Plans damaged in transit (bytes flipped, cut short) decode to an error or to some plan,
    // never to a panic: 3000 seeded mutations of a real stage.
    let plan = query::physical_plan(&ctx, tpch::QUERIES[2].1).await.unwrap();
    let stage = stages::split(plan).unwrap().stages[0].plan.clone();
    let good = codec::encode(stage).unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // datafusion-proto panics on some damaged plans; decode catches those (quietly, here).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut errors = 0;
    for _ in 0..3000 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] ^= 1 << (next() % 8);
        }
        if next() % 4 == 0 {
            bytes.truncate((next() % bytes.len() as u64) as usize);
        }
        errors += usize::from(codec::decode(&bytes, &ctx.task_ctx(), Vec::new()).is_err());
    }
    std::panic::set_hook(hook);
    assert!(errors > 100, "only {errors} of 3000 damaged plans were refused");
}

#[tokio::test]
async fn bad_tables_and_catalogs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = session::Table::parse("lineitem").unwrap_err().to_string();
    assert!(err.contains("NAME=LOCATION"), "{err}");
    let err = session::Table::parse("t=/no/such/file.parquet").unwrap_err().to_string();
    assert!(err.contains("/no/such/file.parquet"), "{err}");
    let err = session::Table::parse("bad name=/tmp").unwrap_err().to_string();
    assert!(err.contains("bad name"), "{err}");
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(&catalog, "[tables]\nregion = \"region.csv\"\n").unwrap();
    std::fs::write(dir.path().join("region.csv"), "r_regionkey,r_name\n0,AFRICA\n1,AMERICA\n").unwrap();
    let tables = session::read_catalog(&catalog).unwrap();
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].format, session::Format::Csv);
    let ctx = SessionContext::new();
    session::register(&ctx, &tables).await.unwrap();
    let batches = query::run_single(&ctx, "SELECT count(*) FROM region").await.unwrap();
    assert_eq!(batches[0].num_rows(), 1);
    std::fs::write(&catalog, "[tables]\nregion = 3\n").unwrap();
    let err = session::read_catalog(&catalog).unwrap_err().to_string();
    assert!(err.contains("catalog.toml"), "{err}");
}

/// The package's directory: as the test runner says when it runs the test (a test binary
/// reused from a build of another checkout, as a shared target directory allows, would carry
/// that checkout's path), else as it was when compiled.
fn manifest_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
