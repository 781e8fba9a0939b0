//! What several end-to-end test files share: running the `baton` binary, and looking at
//! processes through /proc.

// Each test file uses some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The binary under test.
pub const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// Runs `baton ARGS` in `dir`, quietly, and waits for it.
pub fn baton(dir: &Path, args: &[&str]) -> Output {
    Command::new(BATON).args(args).current_dir(dir).env("BATON_LOG", "warn").output().unwrap()
}

/// Its standard output, after checking that it succeeded.
pub fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "baton failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// `baton node` with its socket, flash and shared memory in `home` (made) and the cluster's
/// TLS material in `tls`; the caller adds the rest.
pub fn node_command(home: &Path, tls: &Path) -> Command {
    std::fs::create_dir_all(home.join("shm")).unwrap();
    let mut command = Command::new(BATON);
    command
        .arg("node")
        .arg("--socket")
        .arg(home.join("node.sock"))
        .arg("--flash-dir")
        .arg(home.join("flash"))
        .arg("--shm-dir")
        .arg(home.join("shm"))
        .arg("--tls-dir")
        .arg(tls);
    command
}

/// Processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // The parent is the second field after the command name, which ends at the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    out
}
