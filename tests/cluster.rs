//! Three nodes as separate processes on 127.0.0.1, 127.0.0.2 and 127.0.0.3, talking QUIC with
//! TLS from one cluster CA; data moves among them by push and pull, under job tokens.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::BATON;

struct RemoteNode {
    child: Child,
    addr: String,
    socket: PathBuf,
}

impl Drop for RemoteNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

fn baton(args: &[&str], tls: &std::path::Path) -> Output {
    Command::new(BATON).args(args).env("BATON_TLS_DIR", tls).output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn start(dir: &std::path::Path, ip: &str, tls: &std::path::Path) -> RemoteNode {
    let home = dir.join(ip);
    let addr = format!("{ip}:{}", free_udp_port(ip));
    let socket = home.join("node.sock");
    let child = support::node_command(&home, tls)
        .args(["--memory", "64MiB", "--listen", &addr])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !baton(&["status", "--remote", &addr], tls).status.success() {
        assert!(Instant::now() < deadline, "node on {addr} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    RemoteNode { child, addr, socket }
}

#[test]
fn three_nodes_on_three_addresses_pass_data_among_them() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    ok(baton(&["certs", "--out", tls.to_str().unwrap(), "--name", "127.0.0.2", "--name", "127.0.0.3"], &tls));
    let nodes: Vec<RemoteNode> =
        ["127.0.0.1", "127.0.0.2", "127.0.0.3"].iter().map(|ip| start(dir.path(), ip, &tls)).collect();
    for node in &nodes {
        ok(baton(&["job", "open", "5", "--remote", &node.addr], &tls));
    }

    // A producer next to node 1 pushes its output to node 1 (remote put).
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let input = dir.path().join("input.bin");
    std::fs::write(&input, &data).unwrap();
    ok(baton(&["put", "job-5/edge-1/0-0", input.to_str().unwrap(), "--remote", &nodes[0].addr], &tls));

    // A consumer on host 2 pulls it from node 1, and pushes its own result to node 3.
    let pulled = dir.path().join("pulled.bin");
    ok(baton(&["get", "job-5/edge-1/0-0", "--out", pulled.to_str().unwrap(), "--remote", &nodes[0].addr], &tls));
    assert!(std::fs::read(&pulled).unwrap() == data, "pulled bytes differ");
    ok(baton(&["put", "job-5/edge-2/0-0", pulled.to_str().unwrap(), "--remote", &nodes[2].addr], &tls));

    // A function on host 3 reads it through its own node's local socket (VM-local), with the
    // job's token as over QUIC: without one it is refused; a read-only token reads.
    let local = dir.path().join("local.bin");
    let get = || {
        let mut get = Command::new(BATON);
        get.args(["get", "job-5/edge-2/0-0", "--out", local.to_str().unwrap()]).env("BATON_SOCKET", &nodes[2].socket);
        get
    };
    let refused = get().output().unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no token"), "{refused:?}");
    let reader = ok(baton(&["token", "5", "--scope", "read", "--tls-dir", tls.to_str().unwrap()], &tls));
    ok(get().env("BATON_TOKEN", reader.trim()).output().unwrap());
    assert!(std::fs::read(&local).unwrap() == data, "bytes differ after two hops");

    // Each node lists what it holds.
    assert_eq!(ok(baton(&["ls", "5", "--remote", &nodes[0].addr], &tls)).lines().count(), 1);
    assert_eq!(ok(baton(&["ls", "5", "--remote", &nodes[1].addr], &tls)).lines().count(), 0);
    assert_eq!(ok(baton(&["ls", "5", "--remote", &nodes[2].addr], &tls)).lines().count(), 1);

    // A token for job 6 opens nothing of job 5.
    let token6 = ok(baton(&["token", "6", "--tls-dir", tls.to_str().unwrap()], &tls));
    let out = baton(&["get", "job-5/edge-1/0-0", "--remote", &nodes[0].addr, "--token", token6.trim()], &tls);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is for job-0000000000000006, not job-0000000000000005"), "{err}");
    // A token in a file (not on the command line, where /proc shows it to everyone) works.
    let file = dir.path().join("token6");
    std::fs::write(&file, &token6).unwrap();
    ok(baton(&["job", "open", "6", "--remote", &nodes[0].addr, "--token-file", file.to_str().unwrap()], &tls));

    // Ending the job on every node leaves nothing.
    for node in &nodes {
        ok(baton(&["job", "end", "5", "--remote", &node.addr], &tls));
        let out = baton(&["ls", "5", "--remote", &node.addr], &tls);
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown job"));
    }
}

#[test]
fn a_cluster_file_with_an_unreachable_node_or_no_workers_is_refused_naming_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    ok(baton(&["certs", "--out", tls.to_str().unwrap()], &tls));
    let input = dir.path().join("in.dat");
    ok(baton(&["gensort", input.to_str().unwrap(), "--records", "1000"], &tls));
    let live = start(dir.path(), "127.0.0.1", &tls);
    let silent = format!("127.0.0.9:{}", free_udp_port("127.0.0.9"));
    let file = dir.path().join("cluster.toml");
    let sort = |hosts: &str| {
        std::fs::write(&file, format!("tls_dir = {:?}\n{hosts}", tls.to_str().unwrap())).unwrap();
        let mut cmd = Command::new(BATON);
        cmd.args(["sort", input.to_str().unwrap(), "-o"]).arg(dir.path().join("out")).arg("--cluster").arg(&file);
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let worker = "workers = [\"http://127.0.0.1:9\"]\n";
    let err = sort(&format!(
        "[[host]]\nname = \"up\"\nnode = \"{}\"\n{worker}[[host]]\nname = \"gone\"\nnode = \"{silent}\"\n{worker}",
        live.addr
    ));
    assert!(err.contains("host gone") && err.contains(&silent) && err.contains("does not answer"), "{err}");
    let err = sort(&format!("[[host]]\nname = \"idle\"\nnode = \"{}\"\n", live.addr));
    assert!(err.contains("host idle names no workers"), "{err}");
    let err = sort(&format!(
        "[[host]]\nname = \"a\"\nnode = \"{0}\"\n[[host]]\nname = \"a\"\nnode = \"127.0.0.2:1\"\n",
        live.addr
    ));
    assert!(err.contains("host a is named twice"), "{err}");
    let err = sort("[[host]]\nname = \"a\"\nnode = \"localhost:7070\"\n");
    assert!(err.contains("cluster.toml") && err.contains("node"), "{err}");
}
