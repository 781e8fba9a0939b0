//! The TPC-H peers (a build with `--features peers`, which CI's tests do not build:
//! `cargo nextest run --features peers --test peers`): `baton bench tpch --peers` runs each
//! query through datafusion-distributed and Ballista beside Baton, their results checked equal
//! to Baton's, and leaves no peer process or directory behind. Without the feature, `--peers`
//! is a clear error.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use support::baton;

#[cfg(feature = "peers")]
#[test]
fn the_peers_run_tpch_beside_baton_with_the_same_results_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = baton(
        dir.path(),
        &[
            "bench",
            "tpch",
            "--sf",
            "0.1",
            "--queries",
            "1,3,6,13,18",
            "--repeats",
            "1",
            "--workers",
            "2",
            "--peers",
            "--peer-scan-bytes",
            "1MiB",
            "--out",
            "out",
            "--work-dir",
            "work",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/tpch.json")).unwrap()).unwrap();
    let queries = report["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 5);
    for q in queries {
        let peers = q["peers"].as_array().unwrap();
        let names: Vec<&str> = peers.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["datafusion-distributed", "Ballista"], "{q}");
        for p in peers {
            assert!(p["seconds"].as_f64().unwrap() > 0.0 && p["runs"].as_array().unwrap().len() == 1, "{p}");
        }
    }
    assert_eq!(report["total_peers_s"].as_array().unwrap().len(), 2);
    // Each peer's own processes did work: the queries ran on its workers, not only in the
    // benchmark's process.
    for peer in ["datafusion-distributed", "Ballista"] {
        let cpu: f64 = queries
            .iter()
            .flat_map(|q| q["peers"].as_array().unwrap())
            .filter(|p| p["name"] == peer)
            .map(|p| p["worker_cpu_s"].as_f64().unwrap())
            .sum();
        assert!(cpu > 0.05, "{peer}'s workers used {cpu} CPU seconds");
    }
    let md = std::fs::read_to_string(dir.path().join("out/tpch.md")).unwrap();
    assert!(md.contains("datafusion-distributed s") && md.contains("faster than Ballista"), "{md}");
    // The peers' processes and their directory are gone.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("work"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("peers-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(peer_processes().is_empty(), "peer processes left: {:?}", peer_processes());
}

#[cfg(feature = "peers")]
#[test]
fn the_peers_run_tpch_on_emulated_hosts_beside_baton() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: emulated hosts need root (network namespaces)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = baton(
        dir.path(),
        &[
            "bench",
            "cluster",
            "--hosts",
            "2",
            "--size",
            "16MiB",
            "--sf",
            "0.01",
            "--queries",
            "1,3",
            "--repeats",
            "1",
            "--out",
            "out",
            "--work-dir",
            "work",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/cluster.json")).unwrap()).unwrap();
    let tpch = &report["tpch"][0];
    assert_eq!(tpch["peers"], serde_json::json!(["datafusion-distributed", "Ballista"]), "{tpch}");
    for q in tpch["queries"].as_array().unwrap() {
        let seconds = q["peer_seconds"].as_array().unwrap();
        assert!(seconds.len() == 2 && seconds.iter().all(|s| s.as_f64().unwrap() > 0.0), "{q}");
    }
    assert!(peer_processes().is_empty(), "peer processes left: {:?}", peer_processes());
}

/// Processes of the binary under test running `bench peer-serve`.
#[cfg(feature = "peers")]
fn peer_processes() -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(support::BATON) && cmdline.contains("peer-serve") {
            found.push(pid);
        }
    }
    found
}

#[cfg(not(feature = "peers"))]
#[test]
fn without_the_feature_asking_for_the_peers_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = baton(dir.path(), &["bench", "tpch", "--sf", "0.01", "--queries", "6", "--peers", "--work-dir", "work"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--features peers"), "{stderr}");
}
