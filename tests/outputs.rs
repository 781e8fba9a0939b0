//! What a MapReduce job leaves behind, through the `baton` binary: a finished output holds its
//! parts and `_SUCCESS`, and nothing else; an output that overlaps the input is refused before
//! anything is touched; bad flags create nothing; empty inputs give empty outputs; a stopped or
//! killed driver leaves no workers, no shared memory and no output that looks finished.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;
use support::{BATON, baton, children, ok};

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "baton should have failed: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_finished_output_holds_exactly_its_parts_and_a_success_manifest() {
    let dir = tempfile::tempdir().unwrap();
    ok(&baton(dir.path(), &["gensort", "in.bin", "--records", "50000", "--seed", "2"]));
    ok(&baton(dir.path(), &["sort", "in.bin", "-o", "out", "--mappers", "3", "--reducers", "3", "--workers", "2"]));
    let out = dir.path().join("out");
    assert_eq!(names(&out), ["_SUCCESS", "part-r-00000", "part-r-00001", "part-r-00002"]);
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    let listed: u64 = manifest["parts"].as_array().unwrap().iter().map(|p| p["size"].as_u64().unwrap()).sum();
    assert_eq!(listed, 50_000 * 100, "{manifest}");
    // A rerun into the same place replaces the output whole; the single-process sort commits too.
    ok(&baton(dir.path(), &["sort", "in.bin", "-o", "out", "--single-process"]));
    assert_eq!(names(&out), ["_SUCCESS", "part-r-00000"]);
}

#[test]
fn an_output_that_overlaps_the_input_is_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    ok(&baton(dir.path(), &["gensort", "data/in.bin", "--records", "1000", "--seed", "2"]));
    let before = std::fs::read(dir.path().join("data/in.bin")).unwrap();
    for output in ["data", "data/", "./data", "data/in.bin"] {
        let stderr = failed(&baton(dir.path(), &["sort", "data", "-o", output]));
        assert!(stderr.contains("overlaps") && stderr.contains("in.bin"), "{output}: {stderr}");
    }
    // An earlier run's output sorted again into itself: the parts are its input.
    ok(&baton(dir.path(), &["sort", "data", "-o", "sorted", "--single-process"]));
    let stderr = failed(&baton(dir.path(), &["sort", "sorted", "-o", "sorted"]));
    assert!(stderr.contains("part-r-00000"), "{stderr}");
    assert_eq!(names(&dir.path().join("sorted")), ["_SUCCESS", "part-r-00000"]);
    assert_eq!(std::fs::read(dir.path().join("data/in.bin")).unwrap(), before);
    // The same through a symlink to the input's directory.
    std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("alias")).unwrap();
    failed(&baton(dir.path(), &["sort", "data", "-o", "alias"]));
    assert_eq!(names(&dir.path().join("data")), ["in.bin"]);
}

#[test]
fn bad_flags_are_refused_before_the_output_is_created() {
    let dir = tempfile::tempdir().unwrap();
    ok(&baton(dir.path(), &["gensort", "in.bin", "--records", "1000"]));
    for (flag, value) in [("--workers", "0"), ("--max-attempts", "0"), ("--mappers", "0"), ("--path", "teleport")] {
        let stderr = failed(&baton(dir.path(), &["sort", "in.bin", "-o", "out", flag, value]));
        assert!(stderr.contains(flag.trim_start_matches('-')), "{flag} {value}: {stderr}");
        assert!(!dir.path().join("out").exists(), "{flag} {value} created the output");
    }
}

#[test]
fn an_empty_input_sorts_to_an_empty_output_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.bin"), b"").unwrap();
    for path in ["vm-local", "remote-store", "object-store", "direct"] {
        let out = format!("out-{path}");
        let args = ["sort", "empty.bin", "-o", &out, "--path", path, "--workers", "2", "--validate"];
        let stdout = ok(&baton(dir.path(), &args));
        assert!(stdout.contains("0 records"), "{path}: {stdout}");
        let output = dir.path().join(&out);
        assert!(output.join("_SUCCESS").exists(), "{path}");
        let bytes: u64 = names(&output)
            .iter()
            .filter(|n| n.starts_with("part-r-"))
            .map(|n| std::fs::metadata(output.join(n)).unwrap().len())
            .sum();
        assert_eq!(bytes, 0, "{path}");
    }
}

#[test]
fn wordcount_runs_on_a_k_level_topology() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..3000).map(|i| format!("w{} common\n", i % 50)).collect();
    std::fs::write(dir.path().join("words.txt"), text).unwrap();
    let args = ["wordcount", "words.txt", "-o", "counts", "--topology", "2-level", "--mappers", "4", "--reducers", "4"];
    ok(&baton(dir.path(), &args));
    let mut counts = std::collections::BTreeMap::new();
    for r in 0..4 {
        let text = std::fs::read_to_string(dir.path().join(format!("counts/part-r-{r:05}"))).unwrap();
        for line in text.lines() {
            let (w, n) = line.split_once('\t').unwrap();
            assert!(counts.insert(w.to_string(), n.parse::<u64>().unwrap()).is_none(), "{w} counted twice");
        }
    }
    assert_eq!(counts.len(), 51);
    assert_eq!(counts["common"], 3000);
    assert_eq!(counts["w7"], 60);
}

fn running(pid: u32) -> bool {
    // A zombie has exited; only its entry is left until its (new) parent reaps it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// Starts a sort big enough to be stopped halfway, its shared memory in `shm`; returns it once
/// its workers are up, with their pids.
#[allow(clippy::zombie_processes)] // the caller waits for it
fn start_stoppable_sort(dir: &Path, shm: &Path) -> (std::process::Child, Vec<u32>) {
    ok(&baton(dir, &["gensort", "in.bin", "--records", "3000000", "--seed", "4"]));
    let child = Command::new(BATON)
        .args(["sort", "in.bin", "-o", "out", "--workers", "2", "--mappers", "16", "--reducers", "16"])
        .args(["--path", "vm-local", "--shm-dir", shm.to_str().unwrap()])
        .current_dir(dir)
        .env("BATON_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the workers did not start");
        let workers = children(child.id());
        // The node's owned directory holds segments once mappers have written.
        let segments: usize = std::fs::read_dir(shm)
            .unwrap()
            .flatten()
            .map(|d| std::fs::read_dir(d.path()).map_or(0, |s| s.count()))
            .sum();
        if workers.len() == 2 && segments > 0 {
            return (child, workers);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_driver_leaves_no_workers_and_the_next_run_sweeps_its_memory() {
    let dir = tempfile::tempdir().unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let (mut driver, workers) = start_stoppable_sort(dir.path(), shm.path());
    driver.kill().unwrap();
    driver.wait().unwrap();
    wait_until("workers outlived their killed driver", || !workers.iter().any(|&w| running(w)));
    assert!(!dir.path().join("out/_SUCCESS").exists());
    let out = dir.path().join("out");
    assert!(
        !out.exists() || !names(&out).iter().any(|n| n.starts_with("part-r-")),
        "a killed job's parts look like an output"
    );
    let left = names(shm.path());
    assert_eq!(left.len(), 1, "the killed driver's shared memory: {left:?}");
    // The next run into the same places sweeps what the dead one left, and finishes the output.
    let shm_dir = shm.path().to_str().unwrap();
    ok(&baton(dir.path(), &["sort", "in.bin", "-o", "out", "--workers", "2", "--shm-dir", shm_dir]));
    assert!(names(shm.path()).is_empty(), "left in shared memory: {:?}", names(shm.path()));
    let runs = names(&dir.path().join("baton-data"));
    assert!(runs.is_empty(), "run directories left: {runs:?}");
    assert!(dir.path().join("out/_SUCCESS").exists());
    assert!(!dir.path().join("out/_temporary").exists());
}

#[test]
fn sigterm_stops_a_job_and_removes_its_workers_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let (driver, workers) = start_stoppable_sort(dir.path(), shm.path());
    assert!(Command::new("kill").arg("-TERM").arg(driver.id().to_string()).status().unwrap().success());
    let out = driver.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("SIGTERM"), "{stderr}");
    wait_until("workers outlived their stopped driver", || !workers.iter().any(|&w| running(w)));
    assert!(names(shm.path()).is_empty(), "left in shared memory: {:?}", names(shm.path()));
    let runs = names(&dir.path().join("baton-data"));
    assert!(runs.is_empty(), "run directories left: {runs:?}");
    assert!(!dir.path().join("out/_SUCCESS").exists());
}

#[test]
fn an_output_that_cannot_be_written_fails_before_any_task_runs() {
    if unsafe_is_root() {
        // Root writes through permission bits; a read-only bind mount would need a namespace.
        let dir = tempfile::tempdir().unwrap();
        let readonly = dir.path().join("ro");
        std::fs::create_dir(&readonly).unwrap();
        let mounted = Command::new("mount").args(["--bind", "-o", "ro"]).arg(&readonly).arg(&readonly).status();
        if !mounted.is_ok_and(|s| s.success()) {
            println!("SKIPPED: cannot make a read-only bind mount here");
            return;
        }
        let _ = Command::new("mount").args(["-o", "remount,bind,ro"]).arg(&readonly).status();
        check_unwritable(dir.path(), "ro");
        let _ = Command::new("umount").arg(&readonly).status();
    } else {
        let dir = tempfile::tempdir().unwrap();
        let readonly = dir.path().join("ro");
        std::fs::create_dir(&readonly).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o555)).unwrap();
        check_unwritable(dir.path(), "ro");
    }
}

fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
}

fn check_unwritable(dir: &Path, output: &str) {
    ok(&baton(dir, &["gensort", "in.bin", "--records", "20000"]));
    let start = Instant::now();
    let stderr = failed(&baton(dir, &["sort", "in.bin", "-o", output, "--workers", "2"]));
    assert!(stderr.contains("cannot write the output"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(20), "it failed only after running tasks: {stderr}");
}

#[test]
fn direct_is_reported_as_direct_and_says_when_it_cannot_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    ok(&baton(dir.path(), &["gensort", "in.bin", "--records", "20000"]));
    let out = baton(dir.path(), &["sort", "in.bin", "-o", "a", "--path", "direct", "--workers", "2"]);
    let stdout = ok(&out);
    assert!(
        stdout.contains("shuffle via direct (QUIC)") && stdout.contains("reducers start as mappers end"),
        "{stdout}"
    );
    let args = ["sort", "in.bin", "-o", "b", "--path", "direct", "--topology", "2-level", "--workers", "2"];
    let out = baton(dir.path(), &args);
    let stdout = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("reducers start as mappers end"), "{stdout}");
    assert!(stderr.contains("one after another"), "{stderr}");
}

#[test]
fn a_task_that_does_not_fit_its_workers_memory_fails_once_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    ok(&baton(dir.path(), &["gensort", "in.bin", "--records", "2000000"]));
    let args = ["sort", "in.bin", "-o", "out", "--worker-memory", "64MiB", "--workers", "2", "--mappers", "2"];
    let stderr = failed(&baton(dir.path(), &args));
    assert!(stderr.contains("ran out of memory") && stderr.contains("64.0 MiB"), "{stderr}");
    assert!(stderr.contains("failed 1 times"), "an out-of-memory task is not retried: {stderr}");
    assert!(!dir.path().join("out/_SUCCESS").exists());
}

#[test]
fn gensort_ranges_concatenate_into_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    ok(&baton(dir.path(), &["gensort", "all.bin", "--records", "2500"]));
    ok(&baton(dir.path(), &["gensort", "a.bin", "--records", "1000"]));
    ok(&baton(dir.path(), &["gensort", "b.bin", "--records", "1500", "--begin", "1000"]));
    let all = std::fs::read(dir.path().join("all.bin")).unwrap();
    let parts = [std::fs::read(dir.path().join("a.bin")).unwrap(), std::fs::read(dir.path().join("b.bin")).unwrap()];
    assert!(all == parts.concat(), "gensort -b ranges differ from the whole file");
    // Record 1000 carries its number, as gensort's does.
    assert_eq!(&all[100_000 + 12..100_000 + 44], b"000000000000000000000000000003E8");
}

#[test]
fn calibrate_measures_this_machines_paths_and_later_jobs_plan_with_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&baton(dir.path(), &["calibrate", "--size", "2MiB"]));
    for path in ["vm-local", "remote-store", "object-store"] {
        assert_eq!(out.lines().filter(|l| l.starts_with(path)).count(), 2, "{path}: {out}");
    }
    let file = dir.path().join("baton-data/calibration.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.matches("[[sample]]").count(), 6, "{text}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // A later job plans with them, and a calibration that does not parse is named.
    ok(&baton(dir.path(), &["gensort", "in.bin", "--records", "10000"]));
    ok(&baton(dir.path(), &["sort", "in.bin", "-o", "out", "--in-process", "--validate"]));
    std::fs::write(&file, "sample = 1").unwrap();
    let stderr = failed(&baton(dir.path(), &["sort", "in.bin", "-o", "out", "--in-process"]));
    assert!(stderr.contains("calibration.toml"), "{stderr}");
}
