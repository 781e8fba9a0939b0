//! What every invoker must do, as plain async functions that panic on a violation: each
//! invoker's tests call [`run_all`] (the in-process and HTTP invokers in this crate's tests, the
//! local pool in the binary's, where the `baton` executable exists).

use std::path::Path;

use baton_fabric::{JobId, StageId, TaskId};

use crate::driver::{self, DriverConfig};
use crate::error::Error;
use crate::invoker::Invoker;
use crate::local::LocalEnv;
use crate::mapreduce::{input, output, records, sort};
use crate::task::Task;

/// Runs every check against `invoker`, with `env`'s paths and `dir` for files.
pub async fn run_all(invoker: &dyn Invoker, env: &LocalEnv, dir: &Path) {
    assert!(invoker.slots() >= 1, "{invoker:?}: no slots");
    a_job_runs_on_it(invoker, env, dir).await;
    an_unknown_operator_is_a_task_error(invoker).await;
}

/// A small sort through the driver gives the records sorted.
pub async fn a_job_runs_on_it(invoker: &dyn Invoker, env: &LocalEnv, dir: &Path) {
    let file = dir.join("conformance-input.bin");
    records::write_file(&file, 5, 5_000).expect("gensort");
    let sources = input::resolve(&[file.display().to_string()]).await.expect("resolve");
    let url = output::output_url(&dir.join("conformance-out").display().to_string()).expect("output");
    let spec = env.spec(baton_planner::Path::VmLocal).expect("vm-local");
    let job = sort::job(sources, 3, 2, spec, baton_planner::Topology::Coalesced, url.clone()).await.expect("job");
    let id = JobId(0xc0f0);
    let mut config = DriverConfig::new(id);
    config.token = Some(env.token(id).expect("token"));
    driver::run(&job, invoker, &config).await.unwrap_or_else(|e| panic!("{invoker:?}: {e}"));
    let out = output::Output::open(&url).expect("open output");
    let mut got = Vec::new();
    for (name, _) in out.parts().await.expect("parts") {
        got.extend_from_slice(&out.get(&name).await.expect("part"));
    }
    let input = std::fs::read(&file).expect("read input");
    assert!(got == records::sort(&input), "{invoker:?}: the sort's output is wrong");
}

/// A task naming no registered operator fails as a task, not retryably, naming the operator.
pub async fn an_unknown_operator_is_a_task_error(invoker: &dyn Invoker) {
    let task = Task {
        job: JobId(1),
        token: None,
        id: TaskId { stage: StageId(1), partition: 0, attempt: 0 },
        partitions: 1,
        op: "no.such.operator".into(),
        params: serde_json::Value::Null,
        inputs: vec![],
        outputs: vec![],
        memory_budget: 1 << 20,
    };
    match invoker.invoke(task).await {
        Err(Error::Task { message, retryable: false, .. }) => {
            assert!(message.contains("no.such.operator"), "{invoker:?}: {message}")
        }
        other => panic!("{invoker:?}: an unknown operator gave {other:?}"),
    }
}
