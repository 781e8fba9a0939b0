//! Hosts reached over ssh: `baton cluster deploy --inventory FILE` copies this binary and each
//! host's TLS material to a new private directory on every host of an inventory, starts a node
//! and workers there (workers that run only what the cluster's key signed, over HTTPS), and
//! writes the cluster file; `baton cluster down` stops them, brings their logs back, and
//! removes what it made on each host. The driver runs where `deploy` ran (on EC2: the first
//! host, reaching the others by their private addresses).
//!
//! Everything started is recorded in `ssh.toml` in the deployment's directory as it starts, so
//! `down` also cleans up after a `deploy` that failed halfway. Uses the system's `ssh` and
//! `scp`, non-interactively (`BatchMode`): keys, not passwords.
//!
//! An inventory (TOML):
//!
//! ```toml
//! user = "admin"                          # optional: ssh's default
//! identity = "~/.ssh/baton.pem"           # optional
//! ssh_options = ["StrictHostKeyChecking=accept-new"]
//! remote_dir = "/var/tmp/baton-deploy"    # a run's directory is made inside it
//! objects = "s3://my-bucket/baton"        # the object store every host reaches
//! workers = 2                             # per host
//! worker_memory = "2GiB"
//! memory = "4GiB"                         # what each node lends
//! node_port = 7070                        # UDP; workers from worker_port = 7100 on (TCP)
//! [environment]                           # for every node and worker (a test S3's keys;
//! AWS_REGION = "us-east-1"                # on EC2 the instance role gives credentials)
//! [[hosts]]
//! name = "h0"
//! address = "10.0.1.10"                   # what ssh connects to
//! private_address = "10.0.1.10"           # what hosts and the driver use (default: address)
//! cores = 8
//! nic_gbps = 10.0
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_fabric::net::TlsDir;
use baton_fabric::node::ByteSize;
use serde::{Deserialize, Serialize};

use super::{ClusterFile, Host};
use crate::error::{Error, Result};

/// The hosts to deploy to, and how to reach them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// The ssh user (default: ssh's).
    #[serde(default)]
    pub user: Option<String>,
    /// The private key (`ssh -i`).
    #[serde(default)]
    pub identity: Option<PathBuf>,
    /// More `-o` options for ssh and scp.
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// The directory on each host inside which a deployment's own directory is made.
    #[serde(default = "default_remote_dir")]
    pub remote_dir: String,
    /// The object store every host reaches.
    pub objects: String,
    /// Environment for every node and worker.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Workers per host.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Each worker's memory limit.
    #[serde(default = "default_worker_memory")]
    pub worker_memory: ByteSize,
    /// What each node lends of memory.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// The port each node listens on (UDP, QUIC).
    #[serde(default = "default_node_port")]
    pub node_port: u16,
    /// The port of each host's first worker (TCP, HTTPS); the others follow.
    #[serde(default = "default_worker_port")]
    pub worker_port: u16,
    /// The hosts.
    pub hosts: Vec<InventoryHost>,
}

/// One host of an inventory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryHost {
    /// Its name, unique in the inventory.
    pub name: String,
    /// What ssh connects to.
    pub address: String,
    /// The address its node and workers listen on (default: `address`, which must then be an
    /// IP address).
    #[serde(default)]
    pub private_address: Option<IpAddr>,
    /// Its cores (default: this machine's).
    #[serde(default)]
    pub cores: Option<u32>,
    /// Its network link in Gbit/s.
    #[serde(default = "default_nic")]
    pub nic_gbps: f64,
}

fn default_remote_dir() -> String {
    "/var/tmp/baton-deploy".into()
}
fn default_workers() -> usize {
    2
}
fn default_worker_memory() -> ByteSize {
    ByteSize(2 << 30)
}
fn default_memory() -> ByteSize {
    ByteSize(4 << 30)
}
fn default_node_port() -> u16 {
    7070
}
fn default_worker_port() -> u16 {
    7100
}
fn default_nic() -> f64 {
    10.0
}

fn failed(what: &str, reason: impl std::fmt::Display) -> Error {
    Error::BadJob { reason: format!("ssh hosts: {what}: {reason}") }
}

impl Inventory {
    /// Reads and checks an inventory file.
    pub fn load(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::io("read", file, e))?;
        let inventory: Inventory =
            toml::from_str(&text).map_err(|e| failed("inventory", format!("{}: {e}", file.display())))?;
        inventory.check().map_err(|reason| failed("inventory", format!("{}: {reason}", file.display())))?;
        Ok(inventory)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.hosts.is_empty() {
            return Err("it names no hosts".into());
        }
        if !self.remote_dir.starts_with('/') || self.remote_dir.contains("..") || self.remote_dir == "/" {
            return Err(format!("remote_dir {:?} must be an absolute path, not / and without ..", self.remote_dir));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if self.hosts[..i].iter().any(|o| o.name == h.name) {
                return Err(format!("host name {:?} is used twice", h.name));
            }
            if h.name.is_empty() || !h.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("host name {:?}: use letters, digits, - and _", h.name));
            }
            if h.address.starts_with('-') || h.address.is_empty() {
                return Err(format!("host {}: address {:?} is not a host", h.name, h.address));
            }
            if h.private_address.is_none() && h.address.parse::<IpAddr>().is_err() {
                return Err(format!(
                    "host {}: address {:?} is not an IP address: give private_address",
                    h.name, h.address
                ));
            }
        }
        Ok(())
    }

    fn target(&self, host: &InventoryHost) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}", host.address),
            None => host.address.clone(),
        }
    }

    fn options(&self, command: &mut Command) {
        command.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=10"]);
        for option in &self.ssh_options {
            command.arg("-o").arg(option);
        }
        if let Some(identity) = &self.identity {
            command.arg("-i").arg(identity);
        }
    }

    /// Runs `script` (a shell command line) on `host`; its standard output.
    fn ssh(&self, host: &InventoryHost, script: &str, what: &str) -> Result<String> {
        let mut command = Command::new("ssh");
        self.options(&mut command);
        command.arg(self.target(host)).arg("--").arg(script);
        let out = within(&mut command, what, &host.name)?;
        if !out.status.success() {
            // What the script printed (a log's tail) and what ssh said.
            let said = [&out.stdout[..], &out.stderr[..]].map(|b| String::from_utf8_lossy(b).trim().to_string());
            return Err(failed(what, format!("on {} ({}): {}", host.name, host.address, said.join(" ").trim())));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Copies `from` (recursively) to `to` on `host` (`upload`), or `to` on `host` to `from`.
    fn scp(&self, host: &InventoryHost, local: &Path, remote: &str, upload: bool, what: &str) -> Result<()> {
        let mut command = Command::new("scp");
        command.args(["-q", "-r", "-p"]);
        self.options(&mut command);
        let remote = format!("{}:{remote}", self.target(host));
        if upload {
            command.arg(local).arg(&remote);
        } else {
            command.arg(&remote).arg(local);
        }
        let out = within(&mut command, what, &host.name)?;
        if !out.status.success() {
            return Err(failed(what, format!("on {}: {}", host.name, String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(())
    }
}

/// The longest one ssh or scp may take (copying the binary included).
const SSH_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `command` (ssh or scp) to its end, or kills it after [`SSH_TIMEOUT`].
fn within(command: &mut Command, what: &str, host: &str) -> Result<std::process::Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(what, format!("cannot run {:?}: {e}", command.get_program())))?;
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let read_out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = std::io::Read::read_to_end(s, &mut buf);
        }
        buf
    });
    let read_err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = std::io::Read::read_to_end(s, &mut buf);
        }
        buf
    });
    let deadline = Instant::now() + SSH_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| failed(what, e))? {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(what, format!("on {host}: no answer in {} s", SSH_TIMEOUT.as_secs())));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let stdout = read_out.join().unwrap_or_default();
    let stderr = read_err.join().unwrap_or_default();
    Ok(std::process::Output { status, stdout, stderr })
}

/// `s` quoted for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What a deployment started, for `down`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    /// The inventory it read (kept here, so that `down` reaches the same hosts).
    inventory: String,
    /// The deployment's directory on every host (each host's own is inside it, by its name,
    /// so that hosts sharing a file system do not share one).
    run_dir: String,
    /// The hosts prepared so far, and the processes started on each.
    hosts: BTreeMap<String, Vec<u32>>,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE)
}

/// The record of an ssh deployment in its directory.
pub const STATE: &str = "ssh.toml";

fn save(dir: &Path, state: &State) -> Result<()> {
    let text = toml::to_string(state).map_err(|e| failed("record what it started", e))?;
    std::fs::write(state_path(dir), text).map_err(|e| Error::io("write", state_path(dir), e))
}

/// Deploys to the hosts of `inventory_file`: this binary (`exe`), a node and workers on each;
/// writes the cluster file `cluster.toml` (and the cluster's material) in `dir`, which must be
/// new or empty. A deploy that fails undoes itself.
pub fn deploy(inventory_file: &Path, exe: &Path, dir: &Path) -> Result<ClusterFile> {
    let inventory_text = std::fs::read_to_string(inventory_file).map_err(|e| Error::io("read", inventory_file, e))?;
    let inventory = Inventory::load(inventory_file)?;
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(failed(
            "cluster deploy",
            format!("{} is not empty: give --dir a new or empty directory", dir.display()),
        ));
    }
    baton_fabric::private::ensure_dir(dir, "deployment directory")?;
    let run = format!(
        "{}/run-{:016x}",
        inventory.remote_dir,
        baton_fabric::net::token::unix_ms_now() ^ u64::from(std::process::id()) << 40
    );
    let mut state = State { inventory: inventory_text, run_dir: run.clone(), hosts: BTreeMap::new() };
    save(dir, &state)?;
    match start(&inventory, exe, dir, &mut state) {
        Ok(file) => Ok(file),
        Err(e) => {
            let _ = down(dir);
            Err(e)
        }
    }
}

fn start(inventory: &Inventory, exe: &Path, dir: &Path, state: &mut State) -> Result<ClusterFile> {
    let cluster_tls = TlsDir::new(dir.join("tls"));
    cluster_tls.generate(&[])?;
    let env: Vec<String> = std::iter::once("BATON_LOG=warn".to_string())
        .chain(inventory.environment.iter().map(|(k, v)| format!("{k}={v}")))
        .collect();
    let env = env.iter().map(|e| quote(e)).collect::<Vec<_>>().join(" ");
    let mut hosts = Vec::new();
    for host in &inventory.hosts {
        let ip = match host.private_address {
            Some(ip) => ip,
            None => host.address.parse().map_err(|e| failed("inventory", e))?,
        };
        // Recorded before anything is made there, so that down cleans it.
        state.hosts.insert(host.name.clone(), Vec::new());
        save(dir, state)?;
        let run = host_dir(&state.run_dir, &host.name);
        let shm = shm_dir(&state.run_dir, &host.name);
        inventory.ssh(
            host,
            &format!(
                "umask 077 && mkdir -p {} && mkdir {r} && mkdir {}",
                quote(&state.run_dir),
                quote(&shm),
                r = quote(&run)
            ),
            "make the deployment's directories",
        )?;
        let home = dir.join("hosts").join(&host.name);
        baton_fabric::private::create_dirs(&home)?;
        let tls = TlsDir::new(home.join("tls"));
        cluster_tls.issue_node(&tls, &[ip.to_string()])?;
        inventory.scp(host, exe, &format!("{run}/baton"), true, "copy the binary")?;
        inventory.scp(host, tls.dir(), &format!("{run}/tls"), true, "copy the host's TLS material")?;
        let node = SocketAddr::new(ip, inventory.node_port);
        let r = quote(&run);
        let mut started = |args: String, log: &str, what: &str| -> Result<u32> {
            // Only the process goes to the background (the shell stays in the foreground and
            // ends at once): its pid is `$!`, and nothing it keeps open holds ssh's session.
            let script = format!("cd {r} || exit 1; env {env} nohup ./baton {args} > {log} 2>&1 < /dev/null & echo $!");
            let pid: u32 = inventory
                .ssh(host, &script, what)?
                .trim()
                .parse()
                .map_err(|e| failed(what, format!("on {}: no pid: {e}", host.name)))?;
            state.hosts.entry(host.name.clone()).or_default().push(pid);
            save(dir, state)?;
            Ok(pid)
        };
        started(
            format!(
                "node --listen {node} --memory {} --socket {r}/node.sock --tls-dir {r}/tls --shm-dir {} --flash-dir {r}/flash",
                inventory.memory.0,
                quote(&shm)
            ),
            "node.log",
            "start a node",
        )?;
        let mut workers = Vec::new();
        for w in 0..inventory.workers {
            let listen = SocketAddr::new(ip, inventory.worker_port + w as u16);
            started(
                format!(
                    "worker --listen {listen} --memory-limit {} --tls-dir {r}/tls --https --scratch {r}/w{w}",
                    inventory.worker_memory.0
                ),
                &format!("worker-{w}.log"),
                "start a worker",
            )?;
            workers.push(format!("https://{listen}"));
        }
        // Up when the node's socket is there and every worker takes connections.
        inventory.ssh(
            host,
            &format!("for i in $(seq 1 150); do [ -S {r}/node.sock ] && exit 0; sleep 0.2; done; tail -5 {r}/node.log; exit 1"),
            "wait for the node",
        )?;
        for url in &workers {
            let addr: SocketAddr =
                url.trim_start_matches("https://").parse().map_err(|e| failed("a worker's address", e))?;
            wait_for_port(addr, &format!("a worker of {}", host.name))?;
        }
        hosts.push(Host {
            name: host.name.clone(),
            node,
            socket: Some(PathBuf::from(format!("{run}/node.sock"))),
            workers,
            worker_memory: inventory.worker_memory,
            memory: inventory.memory,
            flash: ByteSize(16 << 30),
            cores: host.cores.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32)),
            nic_gbps: host.nic_gbps,
            rdma: false,
            namespace: None,
        });
    }
    let file = ClusterFile {
        tls_dir: cluster_tls.dir().to_path_buf(),
        objects: Some(inventory.objects.clone()),
        objects_gbps: None,
        store: None,
        hosts,
    };
    std::fs::write(dir.join("cluster.toml"), file.to_toml())
        .map_err(|e| Error::io("write", dir.join("cluster.toml"), e))?;
    Ok(file)
}

/// A host's own directory in the deployment's.
fn host_dir(run: &str, host: &str) -> String {
    format!("{run}/{host}")
}

/// A host's shared-memory directory (the node's segments).
fn shm_dir(run: &str, host: &str) -> String {
    let id = run.rsplit('-').next().unwrap_or("x");
    format!("/dev/shm/baton-ssh-{id}-{host}")
}

fn wait_for_port(addr: SocketAddr, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(failed("start a worker", format!("{what} at {addr} did not come up")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Whether `dir` holds an ssh deployment.
pub fn is_deployment(dir: &Path) -> bool {
    state_path(dir).exists()
}

/// Stops what the deployment in `dir` started on every host, brings the hosts' logs back into
/// `dir/logs/<host>/`, and removes the deployment's directory and shared memory on each. A host
/// that cannot be reached is named in the error, after every other host is done.
pub fn down(dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(state_path(dir)).map_err(|e| Error::io("read", state_path(dir), e))?;
    let state: State =
        toml::from_str(&text).map_err(|e| failed("cluster down", format!("{}: {e}", state_path(dir).display())))?;
    let inventory: Inventory = toml::from_str(&state.inventory).map_err(|e| failed("cluster down", e))?;
    let mut errors = Vec::new();
    for host in inventory.hosts.iter().filter(|h| state.hosts.contains_key(&h.name)) {
        let pids: Vec<String> = state.hosts[&host.name].iter().map(u32::to_string).collect();
        let stop = if pids.is_empty() {
            String::new()
        } else {
            let pids = pids.join(" ");
            format!(
                "kill {pids} 2>/dev/null; for i in $(seq 1 50); do kill -0 {pids} 2>/dev/null || break; sleep 0.1; done; kill -9 {pids} 2>/dev/null; "
            )
        };
        if let Err(e) = inventory.ssh(host, &format!("{stop}true"), "stop the host's processes") {
            errors.push(e.to_string());
            continue;
        }
        let logs = dir.join("logs").join(&host.name);
        if baton_fabric::private::create_dirs(&logs).is_ok() {
            for log in
                std::iter::once("node.log".to_string()).chain((0..inventory.workers).map(|w| format!("worker-{w}.log")))
            {
                let from = format!("{}/{log}", host_dir(&state.run_dir, &host.name));
                let _ = inventory.scp(host, &logs.join(&log), &from, false, "bring a log back");
            }
        }
        let shm = quote(&shm_dir(&state.run_dir, &host.name));
        // Its own directory, then the deployment's if no other host's is left in it.
        let script = format!(
            "rm -rf {} {shm}; rmdir {} 2>/dev/null; true",
            quote(&host_dir(&state.run_dir, &host.name)),
            quote(&state.run_dir)
        );
        if let Err(e) = inventory.ssh(host, &script, "remove the deployment's directory") {
            errors.push(e.to_string());
        }
    }
    if !errors.is_empty() {
        return Err(failed("cluster down", errors.join("; ")));
    }
    let _ = std::fs::remove_dir_all(dir.join("tls"));
    let _ = std::fs::remove_dir_all(dir.join("hosts"));
    let _ = std::fs::remove_file(dir.join("cluster.toml"));
    let _ = std::fs::remove_file(dir.join("calibration.toml"));
    std::fs::remove_file(state_path(dir)).map_err(|e| Error::io("remove", state_path(dir), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(text: &str) -> std::result::Result<Inventory, String> {
        let inv: Inventory = toml::from_str(text).map_err(|e| e.to_string())?;
        inv.check().map(|_| inv)
    }

    #[test]
    fn inventories_are_checked_and_bad_ones_named() {
        let ok = inventory("objects = \"s3://b/p\"\n[[hosts]]\nname = \"h0\"\naddress = \"10.0.0.1\"\n").unwrap();
        assert_eq!((ok.workers, ok.remote_dir.as_str()), (2, "/var/tmp/baton-deploy"));
        for (text, says) in [
            ("objects = \"x\"\nhosts = []\n", "no hosts"),
            ("objects = \"x\"\n[[hosts]]\nname = \"h0\"\naddress = \"db.internal\"\n", "give private_address"),
            (
                "objects = \"x\"\n[[hosts]]\nname = \"h0\"\naddress = \"10.0.0.1\"\n[[hosts]]\nname = \"h0\"\naddress = \"10.0.0.2\"\n",
                "used twice",
            ),
            ("objects = \"x\"\nremote_dir = \"/\"\n[[hosts]]\nname = \"h0\"\naddress = \"10.0.0.1\"\n", "remote_dir"),
            (
                "objects = \"x\"\n[[hosts]]\nname = \"h0\"\naddress = \"-oProxyCommand=x\"\nprivate_address = \"10.0.0.1\"\n",
                "not a host",
            ),
            ("objects = \"x\"\n[[hosts]]\nname = \"h 0\"\naddress = \"10.0.0.1\"\n", "letters, digits"),
            ("objects = \"x\"\nhots = 1\n[[hosts]]\nname = \"h0\"\naddress = \"10.0.0.1\"\n", "unknown field"),
        ] {
            let err = inventory(text).map(|_| ()).unwrap_err();
            assert!(err.contains(says), "{says}: {err}");
        }
    }

    #[test]
    fn shell_quoting_keeps_every_byte() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(shm_dir("/var/tmp/x/run-00ab", "h1"), "/dev/shm/baton-ssh-00ab-h1");
    }
}
