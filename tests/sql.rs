//! SQL on worker processes: the 22 TPC-H queries at scale factor 0.1 against single-process
//! DataFusion on the same data; a query's tasks in several processes with its exchanges'
//! bytes on the planned paths; and `baton sql`'s errors.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use baton_fabric::JobId;
use baton_planner::{Path as Route, Topology};
use baton_runtime::local::{LocalConfig, LocalEnv};
use baton_sql::compare::{self, Cell, same_rows, sorted};
use baton_sql::query::{self, QueryOptions};
use baton_sql::session;
use datafusion::execution::context::SessionContext;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, displayable};
use std::sync::Arc;
use support::{BATON, baton, ok};

const PARTITIONS: usize = 3;

/// TPC-H at scale factor 0.1, made once and shared by the tests (and later runs).
fn tpch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tpch-sf0.1-rg128k");
    baton_sql::tpch::ensure(0.1, &dir).unwrap();
    dir
}

async fn env(scratch: &Path) -> LocalEnv {
    let mut config = LocalConfig::new(scratch, Some(PathBuf::from(BATON)));
    config.workers = 2;
    config.worker_memory = 1 << 30;
    LocalEnv::start(&config).await.unwrap()
}

/// Worker processes over a scratch directory (kept while the test holds it), and a session
/// with the TPC-H tables at scale factor 0.1.
async fn workers_and_session() -> (tempfile::TempDir, LocalEnv, SessionContext) {
    let scratch = tempfile::tempdir().unwrap();
    let env = env(scratch.path()).await;
    let ctx = session(&tpch()).await;
    (scratch, env, ctx)
}

async fn session(dir: &Path) -> SessionContext {
    let ctx = SessionContext::new_with_config(session::config(PARTITIONS));
    session::register(&ctx, &session::tpch_tables(dir).unwrap()).await.unwrap();
    ctx
}

fn rows(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    compare::rows(batches).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_22_tpch_queries_match_single_process_datafusion() {
    let (_scratch, env, ctx) = workers_and_session().await;
    let mut failures = Vec::new();
    let mut multi_stage = 0;
    for (name, sql) in baton_sql::tpch::QUERIES {
        let expected = rows(&query::run_single(&ctx, sql).await.unwrap());
        let config = env.job_config().unwrap();
        let run = match query::run(&ctx, sql, &env, &QueryOptions::default(), Vec::new(), &config).await {
            Ok(run) => run,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        multi_stage += usize::from(run.summary.stages.len() > 1);
        let got = rows(&run.batches);
        let ordered = sql.to_lowercase().contains("order by");
        let result = if ordered { same_rows(&got, &expected) } else { same_rows(&sorted(got), &sorted(expected)) };
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
        for job in &run.jobs {
            assert_nothing_left(&env, *job);
        }
    }
    assert!(failures.is_empty(), "queries that differ from DataFusion:\n{}", failures.join("\n"));
    assert!(multi_stage >= 20, "only {multi_stage} of 22 queries ran as more than one stage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_runs_as_tasks_in_worker_processes_and_its_exchanges_cross_the_fabric() {
    let (_scratch, env, ctx) = workers_and_session().await;
    let (_, q3) = baton_sql::tpch::QUERIES[2];
    let forced = [
        (None, None),
        (Some(Route::RemoteStore), Some("remote-store")),
        (Some(Route::ObjectStore), Some("object-store")),
    ];
    for (forced, name) in forced {
        let options = QueryOptions { path: forced, topology: None };
        let run = query::run(&ctx, q3, &env, &options, Vec::new(), &env.job_config().unwrap()).await.unwrap();
        let summary = &run.summary;
        assert!(summary.stages.len() >= 3, "Q3 ran as {} stages", summary.stages.len());
        let pids: std::collections::BTreeSet<u32> = summary.reports.iter().flatten().map(|r| r.pid).collect();
        assert!(pids.len() >= 2, "every task ran in one process: {pids:?}");
        assert!(!pids.contains(&std::process::id()), "a task ran in the test's own process");
        assert_eq!(summary.edges.len(), run.planned.choices.len());
        for (edge, (path, _)) in summary.edges.iter().zip(&run.planned.choices) {
            assert_eq!(edge.path, env.spec(*path).unwrap().name(), "{} went another way than planned", edge.name);
            if let Some(name) = name {
                assert!(edge.path.starts_with(name), "{} was forced onto {name}: {}", edge.name, edge.path);
            }
            assert!(edge.writes > 0 && edge.reads > 0, "{} moved nothing: {edge:?}", edge.name);
        }
        let moved: u64 = summary.edges.iter().map(|e| e.bytes).sum();
        assert!(moved > 100_000, "Q3's exchanges moved only {moved} bytes");
        for job in &run.jobs {
            assert_nothing_left(&env, *job);
        }
        let got = rows(&run.batches);
        assert_eq!(got.len(), 10, "Q3 returns its top 10");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sort_larger_than_its_tasks_memory_spills_and_matches_datafusion() {
    let (_scratch, env, ctx) = workers_and_session().await;
    let sql = "SELECT l_orderkey, l_linenumber, l_comment, l_extendedprice FROM lineitem \
               ORDER BY l_comment, l_orderkey, l_linenumber";
    let expected = rows(&query::run_single(&ctx, sql).await.unwrap());
    let mut config = env.job_config().unwrap();
    // Each task sorts about 200 000 rows; the smallest pool a task gets is 16 MiB.
    config.memory_budget = 1 << 20;
    let run = query::run(&ctx, sql, &env, &QueryOptions::default(), Vec::new(), &config).await.unwrap();
    // The sort's own spills (not its output writer's, which are counted apart).
    let spilled: u64 = run.summary.reports.iter().flatten().map(|r| r.spilled_bytes).sum();
    assert!(spilled > 0, "no task's operators spilled: {}", run.summary);
    same_rows(&rows(&run.batches), &expected).unwrap();
    for job in &run.jobs {
        assert_nothing_left(&env, *job);
    }
}

/// Nothing of `job` is left on the node or in the object store.
fn assert_nothing_left(env: &LocalEnv, job: JobId) {
    let left = env.leftovers(job);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_queries_fail_with_datafusions_message_and_no_panic() {
    let data = tpch();
    let dir = tempfile::tempdir().unwrap();
    let tpch = data.display().to_string();
    for (sql, says) in [
        ("SELEC * FROM nation", "SELEC"),
        ("SELECT * FROM no_such_table", "no_such_table"),
        ("SELECT no_such_column FROM nation", "no_such_column"),
        ("SELECT n_name + 1 FROM nation", "Utf8"),
        ("SELECT n_nationkey / (n_nationkey - n_nationkey) FROM nation", "Divide by zero"),
    ] {
        let out = baton(dir.path(), &["sql", sql, "--tpch", &tpch, "--workers", "2"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sql} succeeded");
        assert!(stderr.contains(says), "{sql}: the error does not mention {says:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{sql} panicked: {stderr}");
        assert_eq!(stderr.matches(says).count(), 1, "{sql}: the message repeats: {stderr}");
    }
    // An error inside a task fails the query with the task's message, naming the task once.
    let sql = "SELECT n_nationkey / (n_nationkey - n_nationkey) FROM nation";
    let out = baton(dir.path(), &["sql", sql, "--tpch", &tpch, "--workers", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("task stage-1/p0/a0").count(), 1, "{stderr}");
    assert!(!stderr.contains("WARN"), "{stderr}");
}

#[test]
fn errors_inside_tasks_name_the_file_or_the_expression() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("t.csv"), "a,b\n1,0\n2,1\n3,0\n").unwrap();
    let t = format!("t={}", d.join("t.csv").display());
    // A division by zero after an aggregation names the expression that divided.
    let out = baton(d, &["sql", "SELECT a, sum(a) / min(b) AS q FROM t GROUP BY a", "--table", &t, "--workers", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("Divide by zero"), "{stderr}");
    assert!(stderr.contains("sum(t.a) / min(t.b)"), "the error does not name the expression: {stderr}");
    // A garbled Parquet file names the file.
    let good = d.join("good.parquet").display().to_string();
    ok(&baton(d, &["sql", "SELECT * FROM t", "--table", &t, "--format", "parquet", "-o", &good, "--in-process"]));
    let mut bytes = std::fs::read(&good).unwrap();
    for b in &mut bytes[8..48] {
        *b ^= 0x5a;
    }
    std::fs::write(d.join("garbled.parquet"), bytes).unwrap();
    let g = format!("g={}", d.join("garbled.parquet").display());
    let out = baton(d, &["sql", "SELECT sum(a) FROM g", "--table", &g, "--workers", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("garbled.parquet"), "the error does not name the file: {stderr}");
}

#[test]
fn baton_sql_prints_a_table_csv_and_parquet() {
    let data = tpch();
    let dir = tempfile::tempdir().unwrap();
    let tpch = data.display().to_string();
    let sql = "SELECT r_regionkey, r_name FROM region ORDER BY r_regionkey";
    let out = baton(dir.path(), &["sql", sql, "--tpch", &tpch, "--workers", "2"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("| 4           | MIDDLE EAST |"), "{table}");
    let out = baton(dir.path(), &["sql", sql, "--tpch", &tpch, "--format", "csv", "--in-process"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "r_regionkey,r_name\n0,AFRICA\n1,AMERICA\n2,ASIA\n3,EUROPE\n4,MIDDLE EAST\n"
    );
    let file = dir.path().join("regions.parquet");
    let f = file.display().to_string();
    let out = baton(dir.path(), &["sql", sql, "--tpch", &tpch, "--format", "parquet", "-o", &f, "--in-process"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = baton(dir.path(), &["sql", "SELECT count(*) AS n FROM r", "--table", &format!("r={f}"), "--in-process"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("| 5 |"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = baton(dir.path(), &["sql", sql, "--tpch", &tpch, "--explain", "--in-process"]);
    let explain = String::from_utf8_lossy(&out.stdout);
    assert!(explain.contains("stage-1") && explain.contains("result stage-"), "{explain}");
}

#[test]
fn an_empty_result_keeps_its_header_and_schema_and_leaves_no_keys_behind() {
    let data = tpch();
    let dir = tempfile::tempdir().unwrap();
    let tpch = data.display().to_string();
    let sql = "SELECT r_regionkey, r_name FROM region WHERE r_regionkey > 100";
    let out = baton(dir.path(), &["sql", sql, "--tpch", &tpch, "--format", "csv", "--workers", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "r_regionkey,r_name\n");
    let out = baton(dir.path(), &["sql", sql, "--tpch", &tpch, "--in-process"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("r_regionkey | r_name"), "{out:?}");
    let f = dir.path().join("none.parquet").display().to_string();
    let out = baton(dir.path(), &["sql", sql, "--tpch", &tpch, "--format", "parquet", "-o", &f, "--in-process"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let query = "SELECT count(*) AS n FROM t";
    let out = baton(dir.path(), &["sql", query, "--table", &format!("t={f}"), "--format", "csv", "--in-process"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n0\n", "{}", String::from_utf8_lossy(&out.stderr));
    // The runs kept their TLS material in their own directories, which went with them.
    let left: Vec<_> =
        std::fs::read_dir(dir.path().join("baton-data")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left in baton-data: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_and_csv_tables_on_s3_are_read_by_the_workers() {
    use baton_connectors::testing;
    let data = tpch();
    let root = tempfile::tempdir().unwrap();
    let addr = testing::start_s3(root.path()).await.unwrap();
    let bucket = root.path().join(testing::BUCKET);
    std::fs::copy(data.join("nation.parquet"), bucket.join("nation.parquet")).unwrap();
    std::fs::write(
        bucket.join("regions.csv"),
        "r_regionkey,r_name\n0,AFRICA\n1,AMERICA\n2,ASIA\n3,EUROPE\n4,MIDDLE EAST\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT r_name, count(*) AS nations FROM nation JOIN r ON n_regionkey = r_regionkey \
               GROUP BY r_name ORDER BY r_name";
    let nation = format!("nation=s3://{}/nation.parquet", testing::BUCKET);
    let regions = format!("r=s3://{}/regions.csv", testing::BUCKET);
    let out = tokio::process::Command::new(BATON)
        .args(["sql", sql, "--table", &nation, "--table", &regions, "--workers", "2", "--format", "csv"])
        .envs(testing::env(addr))
        .env("BATON_LOG", "warn")
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "r_name,nations\nAFRICA,5\nAMERICA,5\nASIA,5\nEUROPE,5\nMIDDLE EAST,5\n");
    // A table on a bucket the server does not have is an error that names it.
    let out = tokio::process::Command::new(BATON)
        .args(["sql", "SELECT * FROM t", "--table", "t=s3://no-such-bucket/t.parquet", "--in-process"])
        .envs(testing::env(addr))
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no-such-bucket"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_settings_in_a_urls_query_reach_tables_and_inputs() {
    use baton_connectors::testing;
    let data = tpch();
    let root = tempfile::tempdir().unwrap();
    let addr = testing::start_open_s3(root.path()).await.unwrap();
    let bucket = root.path().join(testing::BUCKET);
    std::fs::copy(data.join("region.parquet"), bucket.join("region.parquet")).unwrap();
    std::fs::write(bucket.join("words.txt"), "alpha beta\nbeta\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No AWS_* variables: the endpoint and the rest come from the URL alone.
    let run = |args: Vec<String>| {
        let dir = dir.path().to_path_buf();
        async move {
            tokio::process::Command::new(BATON)
                .args(&args)
                .env_remove("AWS_ENDPOINT")
                .env("BATON_LOG", "warn")
                .current_dir(dir)
                .output()
                .await
                .unwrap()
        }
    };
    let table = format!("r={}", testing::open_url(addr, "region.parquet"));
    let sql = "SELECT count(*) AS n FROM r";
    let out = run(vec![
        "sql".into(),
        sql.into(),
        "--table".into(),
        table,
        "--format".into(),
        "csv".into(),
        "--workers".into(),
        "2".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n5\n");
    let out = run(vec![
        "wordcount".into(),
        testing::open_url(addr, "words.txt"),
        "-o".into(),
        "counts".into(),
        "--reducers".into(),
        "1".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let counts = std::fs::read_to_string(dir.path().join("counts/part-r-00000")).unwrap();
    assert!(counts.contains("beta\t2") && counts.contains("alpha\t1"), "{counts}");
    // A secret in the query is refused, and not echoed.
    let leaky = format!("{}&aws_secret_access_key=hunter2", testing::open_url(addr, "words.txt"));
    let out = run(vec!["wordcount".into(), leaky, "-o".into(), "leak".into()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !stderr.contains("hunter2") && stderr.contains("secret"), "{stderr}");
}

/// Queries beyond TPC-H's shapes: set operations, windows, grouping sets, outer joins and
/// correlated subqueries (issue: each compared with single-process DataFusion).
const BEYOND_TPCH: [(&str, &str); 13] = [
    (
        "union of aggregates",
        "SELECT n_regionkey AS k, count(*) AS c FROM nation GROUP BY n_regionkey \
         UNION SELECT r_regionkey, count(*) FROM region GROUP BY r_regionkey",
    ),
    ("union all", "SELECT n_name AS name FROM nation UNION ALL SELECT r_name FROM region"),
    ("intersect", "SELECT n_regionkey FROM nation INTERSECT SELECT r_regionkey FROM region"),
    ("except", "SELECT c_nationkey FROM customer EXCEPT SELECT s_nationkey FROM supplier WHERE s_acctbal > 0"),
    ("window", "SELECT n_regionkey, n_name, rank() OVER (PARTITION BY n_regionkey ORDER BY n_name) AS r FROM nation"),
    (
        "running window over a shuffle",
        "SELECT o_custkey, o_orderdate, sum(o_totalprice) OVER (PARTITION BY o_custkey ORDER BY o_orderdate, o_orderkey) \
         AS s FROM orders WHERE o_custkey < 200",
    ),
    (
        "window over an aggregate",
        "SELECT o_orderpriority, rank() OVER (ORDER BY count(*)) AS r FROM orders GROUP BY o_orderpriority",
    ),
    (
        "rollup",
        "SELECT n_regionkey, n_nationkey % 2 AS odd, count(*) FROM nation GROUP BY ROLLUP (n_regionkey, n_nationkey % 2)",
    ),
    (
        "outer join",
        "SELECT r_name, count(n_nationkey) FROM region LEFT JOIN nation ON n_regionkey = r_regionkey AND n_nationkey < 3 \
         GROUP BY r_name",
    ),
    (
        "correlated subquery",
        "SELECT s_name FROM supplier s WHERE s_acctbal > (SELECT avg(s2.s_acctbal) FROM supplier s2 \
         WHERE s2.s_nationkey = s.s_nationkey)",
    ),
    (
        "top rows per group by rank",
        "SELECT * FROM (SELECT c_nationkey, c_custkey, rank() OVER (PARTITION BY c_nationkey ORDER BY c_acctbal DESC) \
         AS rk FROM customer) WHERE rk <= 2",
    ),
    (
        "windows of different partitionings",
        "SELECT l_orderkey, l_linenumber, avg(l_quantity) OVER (PARTITION BY l_returnflag, l_linestatus) AS a, \
         lag(l_quantity) OVER (PARTITION BY l_returnflag ORDER BY l_orderkey, l_linenumber) AS b \
         FROM lineitem WHERE l_orderkey < 100",
    ),
    (
        "window over a grouped join",
        "SELECT n_name, sum(o_totalprice) AS s, rank() OVER (ORDER BY sum(o_totalprice) DESC) AS r FROM orders \
         JOIN customer ON o_custkey = c_custkey JOIN nation ON c_nationkey = n_nationkey GROUP BY n_name",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_tpch_match_single_process_datafusion() {
    let scratch = tempfile::tempdir().unwrap();
    let env = env(scratch.path()).await;
    let mut failures = Vec::new();
    // At two partition counts, each with every edge on each of the paths the host has.
    for partitions in [2, PARTITIONS] {
        let ctx = SessionContext::new_with_config(session::config(partitions));
        session::register(&ctx, &session::tpch_tables(&tpch()).unwrap()).await.unwrap();
        for path in [None, Some(Route::VmLocal), Some(Route::RemoteStore), Some(Route::ObjectStore)] {
            let options = QueryOptions { path, ..QueryOptions::default() };
            for (name, sql) in BEYOND_TPCH {
                let expected = sorted(rows(&query::run_single(&ctx, sql).await.unwrap()));
                let config = env.job_config().unwrap();
                let case = format!("{name} ({partitions} partitions, {path:?})");
                match query::run(&ctx, sql, &env, &options, Vec::new(), &config).await {
                    Ok(run) => {
                        if let Err(e) = same_rows(&sorted(rows(&run.batches)), &expected) {
                            failures.push(format!("{case}: {e}"));
                        }
                        for job in &run.jobs {
                            assert_nothing_left(&env, *job);
                        }
                    }
                    Err(e) => failures.push(format!("{case}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "queries that differ from DataFusion:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_run_as_many_tasks_as_the_planner_chose_and_k_level_exchanges_match_datafusion() {
    let scratch = tempfile::tempdir().unwrap();
    let env = env(scratch.path()).await;
    // More partitions than the stages after the joins need: the planner sizes them down.
    let partitions = 8;
    let ctx = SessionContext::new_with_config(session::config(partitions));
    session::register(&ctx, &session::tpch_tables(&tpch()).unwrap()).await.unwrap();
    let (mut resized, mut rounds) = (0, 0);
    let mut failures = Vec::new();
    let klevel = [None, Some(Topology::KLevel { levels: 2 }), Some(Topology::KLevel { levels: 3 })];
    for (name, sql) in baton_sql::tpch::QUERIES.iter().filter(|(n, _)| ["q03", "q05", "q13", "q18"].contains(n)) {
        let expected = sorted(rows(&query::run_single(&ctx, sql).await.unwrap()));
        let datafusion = baton_sql::stages::split(query::physical_plan(&ctx, sql).await.unwrap()).unwrap();
        for topology in klevel {
            let options = QueryOptions { path: Some(Route::ObjectStore), topology };
            let run = query::run(&ctx, sql, &env, &options, Vec::new(), &env.job_config().unwrap()).await.unwrap();
            if let Err(e) = same_rows(&sorted(rows(&run.batches)), &expected) {
                failures.push(format!("{name} ({topology:?}): {e}"));
            }
            // Each stage ran as many tasks as the planner chose (merge stages aside).
            let stages: Vec<_> = run.summary.stages.iter().filter(|s| s.name.starts_with("stage-")).collect();
            assert_eq!(stages.len(), run.planned.plan.stages.len(), "{name}");
            for (ran, (planned, before)) in stages.iter().zip(run.planned.plan.stages.iter().zip(&datafusion.stages)) {
                assert_eq!(ran.tasks, planned.dop, "{name}: {} ran other than planned", ran.name);
                resized += usize::from(ran.tasks as usize != before.tasks);
            }
            let merges = run.summary.stages.iter().filter(|s| s.name.starts_with("merge")).count();
            let level_edges = run.summary.edges.iter().filter(|e| e.layout.contains("-level")).count();
            if let Some(Topology::KLevel { levels }) = topology {
                let exchanges = run.planned.choices.iter().filter(|(_, t)| *t == Topology::KLevel { levels }).count();
                assert_eq!(merges, exchanges * (levels as usize - 1), "{name}: merge stages of {levels}-level");
                assert_eq!(level_edges, exchanges * levels as usize, "{name}: rounds of {levels}-level");
                rounds += level_edges;
            } else {
                assert_eq!(merges, 0, "{name}");
            }
            for job in &run.jobs {
                assert_nothing_left(&env, *job);
            }
        }
    }
    assert!(failures.is_empty(), "queries that differ from DataFusion:\n{}", failures.join("\n"));
    assert!(resized > 0, "no stage ran with another task count than DataFusion planned");
    assert!(rounds > 0, "no k-level exchange ran");
}

/// The operators of `plan` and below, depth first.
fn operators(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn ExecutionPlan>> {
    let mut all = vec![plan.clone()];
    for child in plan.children() {
        all.extend(operators(child));
    }
    all
}

/// Rows a plan's scans produced, from their metrics.
fn scanned_rows(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = if plan.children().is_empty() { plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0) } else { 0 };
    own + plan.children().into_iter().map(scanned_rows).sum::<usize>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_narrowed_to_its_partition_prunes_by_its_join_filter_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // A large table of sorted keys in three files of small row groups, and a small one whose
    // keys sit in one of those row groups; nothing in the query bounds the large side's keys.
    let writer = SessionContext::new();
    let options = "STORED AS PARQUET OPTIONS ('format.max_row_group_size' '1000')";
    for (i, from) in [0, 100_000, 200_000].into_iter().enumerate() {
        let copy = format!(
            "COPY (SELECT value AS k, value % 7 AS v FROM generate_series({from}, {from} + 99999)) TO '{d}/big/{i}.parquet' {options}"
        );
        writer.sql(&copy).await.unwrap().collect().await.unwrap();
    }
    let copy = format!(
        "COPY (SELECT value AS k2, 'x' AS tag FROM generate_series(150000, 150010) UNION ALL \
         SELECT value, 'y' FROM generate_series(0, 10)) TO '{d}/small.parquet' {options}"
    );
    writer.sql(&copy).await.unwrap().collect().await.unwrap();
    let sql = "SELECT big.k, v FROM big JOIN small ON big.k = small.k2 WHERE small.tag = 'x'";
    // The join as a stage plans it, with its filters on (narrowed) or off (as before narrowing).
    let plan_join = |filters: bool| {
        let d = dir.path().to_path_buf();
        async move {
            let mut config = session::config(3);
            config.options_mut().optimizer.enable_join_dynamic_filter_pushdown = filters;
            let ctx = SessionContext::new_with_config(config);
            ctx.register_parquet("big", d.join("big").to_str().unwrap(), Default::default()).await.unwrap();
            ctx.register_parquet("small", d.join("small.parquet").to_str().unwrap(), Default::default()).await.unwrap();
            let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
            let join = operators(&plan).into_iter().find(|p| p.name() == "HashJoinExec").expect("a hash join");
            (ctx, join)
        }
    };
    let (ctx, join) = plan_join(true).await;
    let (plain_ctx, plain) = plan_join(false).await;
    let n = join.output_partitioning().partition_count();
    assert_eq!(n, 3, "{}", displayable(join.as_ref()).indent(true));
    let (mut narrowed_rows, mut plain_rows, mut narrowed_scans) = (Vec::new(), Vec::new(), 0);
    for p in 0..n {
        let narrowed = baton_sql::narrow::narrow(&join, p).unwrap().expect("the join narrows");
        assert_eq!(narrowed.output_partitioning().partition_count(), 1);
        let stream = narrowed.execute(0, ctx.task_ctx()).unwrap();
        narrowed_rows.extend(rows(&datafusion::physical_plan::common::collect(stream).await.unwrap()));
        narrowed_scans += scanned_rows(&narrowed);
        let stream = plain.execute(p, plain_ctx.task_ctx()).unwrap();
        plain_rows.extend(rows(&datafusion::physical_plan::common::collect(stream).await.unwrap()));
        // The filter was filled in from this task's build side.
        let shown = displayable(narrowed.as_ref()).indent(true).to_string();
        assert!(shown.contains("DynamicFilter [") && !shown.contains("DynamicFilter [ empty ]"), "{shown}");
    }
    assert_eq!(narrowed_rows.len(), 11);
    same_rows(&sorted(narrowed_rows), &sorted(plain_rows)).unwrap();
    let plain_scans = scanned_rows(&plain);
    assert!(
        narrowed_scans * 10 < plain_scans,
        "the filter pruned little: {narrowed_scans} rows scanned, {plain_scans} without"
    );
}

#[test]
fn explain_says_which_join_filters_prune_and_which_cannot_cross_a_stage() {
    let tpch = tpch().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let q18 = baton_sql::tpch::QUERIES.iter().find(|(n, _)| *n == "q18").unwrap().1;
    let explain = ok(&baton(dir.path(), &["sql", q18, "--tpch", &tpch, "--partitions", "2", "--explain"]));
    assert!(explain.contains("prunes the probe side's scan in this stage"), "{explain}");
    assert!(explain.contains("not applied: it went into a scan of stage-"), "{explain}");
}

/// Emulated hosts made by `baton cluster up` in a directory of their own; `cluster down` when
/// dropped, also when the test fails.
struct Emulation {
    dir: tempfile::TempDir,
}

impl Emulation {
    fn up(hosts: usize) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: emulated hosts need root (network namespaces)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let n = hosts.to_string();
        ok(&baton(dir.path(), &["cluster", "up", "--emulate", &n, "--memory", "512MiB", "--dir", "c"]));
        Some(Self { dir })
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("c/cluster.toml")
    }
}

impl Drop for Emulation {
    fn drop(&mut self) {
        let _ = baton(self.dir.path(), &["cluster", "down", "--dir", "c"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_22_tpch_queries_match_datafusion_across_three_emulated_hosts() {
    let Some(emulation) = Emulation::up(3) else { return };
    let file = baton_runtime::cluster::ClusterFile::read(&emulation.file()).unwrap();
    let env = baton_runtime::cluster::ClusterEnv::connect(&file, std::time::Duration::from_secs(300)).await.unwrap();
    let ctx = session(&tpch()).await;
    let (mut failures, mut hosts_used, mut local, mut direct) = (Vec::new(), std::collections::BTreeSet::new(), 0, 0);
    for (name, sql) in baton_sql::tpch::QUERIES {
        let expected = rows(&query::run_single(&ctx, sql).await.unwrap());
        let config = baton_runtime::env::Environment::job_config(&env).unwrap();
        let run = match query::run(&ctx, sql, &env, &QueryOptions::default(), Vec::new(), &config).await {
            Ok(run) => run,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let got = rows(&run.batches);
        let ordered = sql.to_lowercase().contains("order by");
        let result = if ordered { same_rows(&got, &expected) } else { same_rows(&sorted(got), &sorted(expected)) };
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
        for stage in &run.summary.stages {
            hosts_used.extend(stage.hosts.keys().cloned());
        }
        for pair in run.summary.edges.iter().flat_map(|e| &e.pairs) {
            match pair.path.as_str() {
                "vm-local" => local += pair.bytes,
                "direct" => direct += pair.bytes,
                _ => {}
            }
        }
    }
    assert!(failures.is_empty(), "queries that differ from DataFusion:\n{}", failures.join("\n"));
    assert_eq!(hosts_used.len(), 3, "tasks ran on {hosts_used:?}");
    assert!(local > 0 && direct > 0, "vm-local carried {local} bytes, direct {direct}");
}
