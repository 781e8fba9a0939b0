//! Emulated hosts: `baton cluster up --emulate N` makes network namespaces on a bridge with a
//! node in each; data crosses between them over QUIC; `baton cluster down` leaves nothing.
//! Needs root (network namespaces): elsewhere each test prints SKIPPED and returns.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::path::Path;
use std::process::Command;

use support::{BATON, ok};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED: emulated hosts need root (network namespaces)");
    }
    root
}

fn baton(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BATON).args(args).current_dir(dir).env("BATON_LOG", "warn").output().unwrap()
}

/// What is left of emulation `id` on the machine: namespaces, links, shared memory.
fn remains(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("baton-{id}-")) {
            left.push(format!("namespace {name}"));
        }
    }
    for entry in std::fs::read_dir("/sys/class/net").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == format!("bt{id}") || name.starts_with(&format!("bv{id}h")) {
            left.push(format!("link {name}"));
        }
    }
    for entry in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("baton-emu-{id}-")) {
            left.push(format!("/dev/shm/{name}"));
        }
    }
    left
}

#[test]
fn two_emulated_hosts_pass_data_over_quic_and_go_without_a_trace() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = ok(&baton(d, &["cluster", "up", "--emulate", "2", "--nic", "1gbit", "--memory", "256MiB", "--dir", "c"]));
    assert!(up.contains("h0") && up.contains("h1"), "{up}");
    let file = std::fs::read_to_string(d.join("c/cluster.toml")).unwrap();
    let ns0 = file.lines().find_map(|l| l.strip_prefix("namespace = ")).unwrap().trim_matches('"').to_string();
    let id = ns0.trim_start_matches("baton-").split('-').next().unwrap().to_string();
    let addr = |i: u8| format!("10.77.{id}.{}:7070", 10 + i);
    // Every node answers.
    let status = ok(&baton(d, &["cluster", "status", "--cluster", "c/cluster.toml"]));
    assert_eq!(status.matches("up, protocol").count(), 2, "{status}");
    // Each host's link is capped.
    let qdisc = Command::new("tc").args(["qdisc", "show", "dev", &format!("bv{id}h0")]).output().unwrap();
    assert!(String::from_utf8_lossy(&qdisc.stdout).contains("tbf"), "{qdisc:?}");
    // A producer outside pushes into host 0's node; a consumer on host 1 pulls it from there.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(d.join("data.bin"), &data).unwrap();
    ok(&baton(d, &["job", "open", "9", "--remote", &addr(0), "--tls-dir", "c/tls"]));
    ok(&baton(d, &["put", "job-9/edge-1/0-0", "data.bin", "--remote", &addr(0), "--tls-dir", "c/tls"]));
    let pulled = Command::new("ip")
        .args(["netns", "exec", &format!("baton-{id}-h1"), BATON])
        .args(["get", "job-9/edge-1/0-0", "--out", "pulled.bin", "--remote", &addr(0), "--tls-dir", "c/tls"])
        .current_dir(d)
        .output()
        .unwrap();
    ok(&pulled);
    assert!(std::fs::read(d.join("pulled.bin")).unwrap() == data, "the bytes differ after crossing hosts");
    // The object went through host 0's capped link, both ways.
    let stats = Command::new("tc").args(["-s", "qdisc", "show", "dev", &format!("bv{id}h0")]).output().unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    let sent: u64 = stats.split("Sent ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(sent >= data.len() as u64, "host 0's tbf passed only {sent} bytes: {stats}");
    // The probe measures each host's node from here (figures in the closing note, not here).
    let probe = ok(&baton(d, &["cluster", "probe", "--cluster", "c/cluster.toml", "--size", "1MiB"]));
    assert_eq!(probe.matches("MB/s").count(), 4, "{probe}");
    // A host's own material checks tokens and cannot mint one.
    let minted = baton(d, &["token", "9", "--tls-dir", "c/h1/tls"]);
    assert!(!minted.status.success(), "{minted:?}");
    // Down: no namespace, link, node or shared memory of it is left.
    let pids: Vec<u32> = std::fs::read_to_string(d.join("c/emulation.toml"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("pids = "))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap();
    assert_eq!(pids.len(), 2);
    ok(&baton(d, &["cluster", "down", "--dir", "c"]));
    assert_eq!(remains(&id), Vec::<String>::new());
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "node {pid} still runs: {stat}");
    }
    assert!(!d.join("c/cluster.toml").exists() && !d.join("c/tls").exists());
}

#[test]
fn an_up_that_fails_halfway_removes_what_it_made() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A "baton" whose nodes exit at once: up fails waiting for them, after making the bridge,
    // the namespaces and the links.
    let out = Command::new(BATON)
        .args(["cluster", "up", "--emulate", "2", "--dir", "c"])
        .current_dir(d)
        .env("BATON_LOG", "warn")
        .env("BATON_EMULATE_EXE", "/bin/false")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not come up"), "{stderr}");
    let id = stderr.split("namespace baton-").nth(1).and_then(|s| s.split('-').next()).unwrap();
    assert_eq!(remains(id), Vec::<String>::new());
    assert!(!d.join("c/emulation.toml").exists(), "the record of a removed emulation stays");
    // A bad rate is refused before anything is made.
    let out = baton(d, &["cluster", "up", "--emulate", "2", "--nic", "fast", "--dir", "c2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"fast\""), "{out:?}");
    assert!(!d.join("c2/emulation.toml").exists());
}
