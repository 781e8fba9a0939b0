//! Hosts over ssh, for real: two emulated hosts each run a real `sshd` (Debian's
//! openssh-server) in its network namespace; `baton cluster deploy` reaches them with a key,
//! copies itself there and starts a node and a worker on each; a sort whose input and output
//! live on the S3 host runs its tasks on both; `baton cluster down` stops everything, brings
//! the logs back and leaves nothing on the hosts. Needs root and sshd: elsewhere it prints
//! SKIPPED.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use baton_bench::cluster::shared::at;
use baton_connectors::testing::{KEY, SECRET};
use baton_runtime::cluster::ClusterFile;
use object_store::ObjectStoreExt;
use support::{baton, ok};

const SSHD: &str = "/usr/sbin/sshd";

/// sshd in a namespace, stopped when dropped.
struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The emulation, taken down when dropped.
struct Emulation<'a>(&'a Path);

impl Drop for Emulation<'_> {
    fn drop(&mut self) {
        let _ = baton(self.0, &["cluster", "down", "--dir", "emu"]);
    }
}

fn keygen(file: &Path) {
    let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `baton` in `dir`, reaching the S3 host with its test credentials.
fn on_store(dir: &Path) -> Command {
    let mut command = Command::new(support::BATON);
    command
        .current_dir(dir)
        .env("BATON_LOG", "warn")
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET);
    command
}

#[test]
fn a_sort_runs_on_two_hosts_deployed_over_ssh_and_down_leaves_nothing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new(SSHD).exists() {
        eprintln!("SKIPPED: needs root (network namespaces) and {SSHD} (Debian: openssh-server)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two hosts (no workers of the emulation's own) and an S3 host.
    ok(&baton(
        d,
        &["cluster", "up", "--emulate", "2", "--workers", "0", "--s3-host", "--memory", "256MiB", "--dir", "emu"],
    ));
    let _emulation = Emulation(d);
    let emu = ClusterFile::read(&d.join("emu/cluster.toml")).unwrap();
    let objects = emu.objects.clone().unwrap();
    // sshd in each host, taking only the test's key.
    std::fs::create_dir_all("/run/sshd").unwrap();
    keygen(&d.join("host_key"));
    keygen(&d.join("client_key"));
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
    let mut sshds = Vec::new();
    for (i, host) in emu.hosts.iter().enumerate() {
        let config = d.join(format!("sshd-{i}.conf"));
        std::fs::write(
            &config,
            format!(
                "ListenAddress {ip}:22\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\nPidFile {d}/sshd-{i}.pid\n",
                ip = host.node.ip(),
                d = d.display()
            ),
        )
        .unwrap();
        let ns = host.namespace.clone().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, SSHD, "-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join(format!("sshd-{i}.log"))).unwrap())
            .spawn()
            .unwrap();
        sshds.push(Sshd(child));
        let addr = std::net::SocketAddr::new(host.node.ip(), 22);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "sshd on {addr} did not start: {}",
                std::fs::read_to_string(d.join(format!("sshd-{i}.log"))).unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let hosts: String = emu
        .hosts
        .iter()
        .map(|h| format!("[[hosts]]\nname = \"{}\"\naddress = \"{}\"\nnic_gbps = 1.0\n", h.name, h.node.ip()))
        .collect();
    std::fs::write(
        d.join("inventory.toml"),
        format!(
            "user = \"root\"\nidentity = \"{d}/client_key\"\n\
             ssh_options = [\"StrictHostKeyChecking=no\", \"UserKnownHostsFile=/dev/null\", \"LogLevel=ERROR\"]\n\
             remote_dir = \"{d}/remote\"\nobjects = \"{objects}\"\nworkers = 1\nworker_memory = \"512MiB\"\n\
             memory = \"256MiB\"\nnode_port = 7171\nworker_port = 7201\n\
             [environment]\nAWS_ACCESS_KEY_ID = \"{KEY}\"\nAWS_SECRET_ACCESS_KEY = \"{SECRET}\"\n{hosts}",
            d = d.display()
        ),
    )
    .unwrap();
    let deployed = ok(&baton(d, &["cluster", "deploy", "--inventory", "inventory.toml", "--dir", "dep"]));
    assert!(deployed.contains("h0") && deployed.contains("h1"), "{deployed}");
    let remote_runs: Vec<_> = std::fs::read_dir(d.join("remote")).unwrap().flatten().collect();
    assert_eq!(remote_runs.len(), 1, "one deployment directory on the hosts");
    // The sort's input, put on the S3 host; its output goes there too.
    ok(&baton(d, &["gensort", "in.bin", "--records", "200000"]));
    let (store, prefix) =
        baton_connectors::open_url_with(&objects, [("aws_access_key_id", KEY), ("aws_secret_access_key", SECRET)])
            .unwrap();
    let input = std::fs::read(d.join("in.bin")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(store.put(&prefix.clone().join("in.bin"), input.into())).unwrap();
    let sorted = on_store(d)
        .args(["sort", &at(&objects, "in.bin"), "-o", &at(&objects, "sorted"), "--cluster", "dep/cluster.toml"])
        .args(["--mappers", "4", "--reducers", "4", "--validate", "--summary-json", "summary.json"])
        .output()
        .unwrap();
    let stdout = ok(&sorted);
    assert!(stdout.contains("sorted"), "{stdout}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap();
    let mut hosts_used: Vec<String> = summary["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["hosts"].as_object().unwrap().keys().cloned())
        .collect();
    hosts_used.sort();
    hosts_used.dedup();
    assert_eq!(hosts_used, ["h0", "h1"], "tasks ran on both hosts: {summary}");
    // Down: everything stopped and removed on the hosts; the logs came back.
    let run_dir = remote_runs[0].path();
    let down = ok(&baton(d, &["cluster", "down", "--dir", "dep"]));
    assert!(down.contains("logs"), "{down}");
    assert!(!run_dir.exists(), "the deployment's directory is gone from the hosts");
    assert!(d.join("remote").exists(), "the inventory's remote_dir, not Baton's, is kept");
    for host in ["h0", "h1"] {
        let log = d.join("dep/logs").join(host).join("node.log");
        assert!(log.exists(), "{} came back", log.display());
    }
    let run = run_dir.to_string_lossy().into_owned();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&run))
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(!d.join("dep/cluster.toml").exists() && !d.join("dep/ssh.toml").exists());

    // The suite's ssh profile on the same hosts: it deploys, runs the sort and TPC-H with
    // their inputs uploaded to the inventory's store, and takes it all down again.
    let out = on_store(d)
        .args(["bench", "suite", "--quick", "--profile", "ssh", "--inventory", "inventory.toml"])
        .args(["--out", "suite", "--work-dir", "suite-work"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = baton_bench::suite::report::Report::load(&d.join("suite/report.json")).unwrap();
    assert_eq!(report.profile, "ssh");
    let count = |prefix: &str| report.figures.iter().filter(|f| f.key.starts_with(prefix)).count();
    // No remote store over ssh: planned, object store and direct.
    assert_eq!(count("cluster-sort/16 MiB/2 hosts/"), 3, "{:?}", report.figures);
    assert_eq!(count("cluster-tpch-sf0.01/2 hosts/q"), 3 * 3);
    assert_eq!(count("cluster-tpch-sf0.01/2 hosts/total/"), 3);
    let runs: Vec<_> = std::fs::read_dir(d.join("remote")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(runs.is_empty(), "the suite's deployment left {runs:?} on the hosts");
}

#[test]
fn a_bad_inventory_or_an_unreachable_host_is_a_clear_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bad.toml"), "objects = \"s3://b\"\n[[hosts]]\nname = \"h0\"\naddress = \"db.internal\"\n")
        .unwrap();
    let out = baton(d, &["cluster", "deploy", "--inventory", "bad.toml", "--dir", "dep"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give private_address"));
    // Nothing listens on 127.0.0.1:1: ssh fails, deploy says which host, and undoes itself.
    std::fs::write(
        d.join("gone.toml"),
        "objects = \"s3://b\"\nssh_options = [\"Port=1\"]\n[[hosts]]\nname = \"h0\"\naddress = \"127.0.0.1\"\n",
    )
    .unwrap();
    let out = baton(d, &["cluster", "deploy", "--inventory", "gone.toml", "--dir", "dep2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("h0") && err.contains("127.0.0.1"), "{err}");
    assert!(!d.join("dep2/cluster.toml").exists());
}
