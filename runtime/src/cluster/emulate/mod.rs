//! Hosts emulated on one machine: network namespaces joined by veth pairs to a bridge, each
//! host's link capped with a `tbf` qdisc, a node and workers in each (workers that run only what
//! the cluster's key signed), an object store directory they share, and the cluster file that
//! names them.
//!
//! Everything made is recorded in `emulation.toml` in the emulation's directory *before* it is
//! made, so [`down`] removes all of it — namespaces, links, processes, shared-memory
//! directories — also after an [`up`] that failed halfway. Names carry the emulation's id:
//! bridge `bt<id>`, namespaces `baton-<id>-h<i>`, subnet `10.77.<id>.0/24` (the bridge is `.1`,
//! host `i` is `.10+i`). Needs root.

mod elastic;

pub use elastic::MAX_NODES as MAX_STORAGE_NODES;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_fabric::net::TlsDir;
use baton_fabric::node::ByteSize;
use serde::{Deserialize, Serialize};

use super::{ClusterFile, Host};
use crate::error::{Error, Result};

/// The port every emulated host's node listens on.
pub const NODE_PORT: u16 = 7070;

/// The port of an emulated host's first worker; the others follow.
pub const WORKER_PORT: u16 = 7100;

/// The MTU between EC2 instances in one VPC (jumbo frames), which emulated links take by
/// default; 1500 is the internet's.
pub const EC2_MTU: u32 = 9001;

/// The MTUs a link may take: from the least QUIC needs (a 1200-byte datagram and its headers)
/// to the most a veth link takes.
pub const MTUS: std::ops::RangeInclusive<u32> = 1280..=65535;

/// What to emulate.
#[derive(Clone, Debug)]
pub struct EmulateOptions {
    /// The `baton` binary the nodes run.
    pub exe: PathBuf,
    /// Hosts.
    pub hosts: usize,
    /// Each host's link, as `tc` says rates: `1gbit`, `100mbit`.
    pub nic: String,
    /// Each link's MTU: [`EC2_MTU`] by default, as between EC2 instances in one VPC.
    pub mtu: u32,
    /// Memory each node lends.
    pub memory: ByteSize,
    /// Workers on each host.
    pub workers: usize,
    /// Memory limit of each worker.
    pub worker_memory: ByteSize,
    /// Give the object store a host of its own (at `.9`, its link capped like the others): an
    /// S3 server the hosts reach over their links, instead of a shared directory.
    pub s3_host: Option<S3Host>,
    /// Give the cluster a remote store: a node in a host of its own (at `.8`, its link capped
    /// like the others) that every host reaches over QUIC.
    pub store_host: bool,
    /// Give the cluster the elastic store with this many storage nodes (0: none), each a host
    /// of its own (its link capped like the others), lending `memory` and `store_flash` in
    /// blocks of `store_block`; etcd (authentication on) and the controller in one more.
    pub elastic_store: usize,
    /// Flash each storage node lends.
    pub store_flash: ByteSize,
    /// The elastic store's block size.
    pub store_block: ByteSize,
    /// The emulation's directory (made; its cluster file is `cluster.toml` there).
    pub dir: PathBuf,
}

/// The files and directories `up` makes in the emulation's directory (besides `h<i>`), which
/// `down` removes.
const MADE: [&str; 7] = ["tls", "objects", "store", elastic::DIR, "cluster.toml", "calibration.toml", "s3.log"];

/// What an emulation made, for [`down`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    id: u8,
    bridge: Option<String>,
    namespaces: Vec<String>,
    pids: Vec<u32>,
    shm_dirs: Vec<PathBuf>,
}

fn failed(what: &str, reason: impl std::fmt::Display) -> Error {
    Error::BadJob { reason: format!("cluster up: {what}: {reason}") }
}

/// Runs a command, its failure an error that says what it was doing.
fn run(what: &str, program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(what, format!("cannot run {program}: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(failed(what, format!("{program} {}: {}", args.join(" "), stderr.trim())));
    }
    Ok(())
}

/// The link rate `nic` in Gbit/s, if it is one `tc` takes (`<n>kbit`, `<n>mbit`, `<n>gbit`).
pub fn gbps(nic: &str) -> Option<f64> {
    let nic = nic.trim().to_ascii_lowercase();
    let (number, scale) = [("gbit", 1.0), ("mbit", 1e-3), ("kbit", 1e-6)]
        .iter()
        .find_map(|(unit, scale)| nic.strip_suffix(unit).map(|n| (n.to_string(), *scale)))?;
    let value: f64 = number.parse().ok().filter(|v: &f64| *v > 0.0)?;
    Some(value * scale)
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("emulation.toml")
}

fn save(dir: &Path, state: &State) -> Result<()> {
    let text = toml::to_string(state).map_err(|e| failed("record what it made", e))?;
    std::fs::write(state_path(dir), text).map_err(|e| Error::io("write", state_path(dir), e))
}

/// Starts `options.hosts` emulated hosts and writes their cluster file; returns it.
/// The address and network namespace of emulation `id`'s host `i`.
pub fn host_address(id: u8, i: usize) -> (Ipv4Addr, String) {
    (Ipv4Addr::new(10, 77, id, 10 + i as u8), format!("baton-{id}-h{i}"))
}

/// The network namespace of the emulated host at `ip`, if it is one's.
pub fn host_namespace(ip: std::net::IpAddr) -> Option<String> {
    let std::net::IpAddr::V4(v4) = ip else { return None };
    let [a, b, id, last] = v4.octets();
    (a == 10 && b == 77 && last >= 10).then(|| host_address(id, usize::from(last - 10)).1)
}

pub fn up(options: &EmulateOptions) -> Result<ClusterFile> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(failed(
            "emulated hosts",
            "needs root (it makes network namespaces, links and qdiscs); run it as root",
        ));
    }
    let gbps = gbps(&options.nic)
        .ok_or_else(|| failed("--nic", format!("{:?} is not a rate like 1gbit or 100mbit", options.nic)))?;
    if !MTUS.contains(&options.mtu) {
        return Err(failed(
            "--mtu",
            format!("{} is not an MTU a link takes: give {} to {}", options.mtu, MTUS.start(), MTUS.end()),
        ));
    }
    if options.hosts == 0 || options.hosts > 200 {
        return Err(failed("--emulate", "give 1 to 200 hosts"));
    }
    if options.elastic_store > elastic::MAX_NODES {
        return Err(failed("--elastic-store", format!("give 0 to {} storage nodes", elastic::MAX_NODES)));
    }
    if options.elastic_store > 0 && options.store_host {
        return Err(failed("--elastic-store", "a cluster has one remote store: give --store-host or --elastic-store"));
    }
    if options.workers > 64 {
        return Err(failed("--workers", "give 0 to 64 workers per host"));
    }
    if state_path(&options.dir).exists() {
        return Err(failed(
            "emulated hosts",
            format!("{} holds an emulation already: `baton cluster down` it first", options.dir.display()),
        ));
    }
    // `down` removes what `up` makes here: none of it may be there already.
    if let Some(taken) = std::fs::read_dir(&options.dir).into_iter().flatten().flatten().find(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        MADE.contains(&name.as_str()) || (name.starts_with('h') && name[1..].parse::<usize>().is_ok())
    }) {
        return Err(failed(
            "emulated hosts",
            format!(
                "{} is not Baton's to make or remove (an emulation's directory holds only what `up` \
                 makes): give --dir a new or empty directory",
                taken.path().display()
            ),
        ));
    }
    baton_fabric::private::ensure_dir(&options.dir, "emulation directory")?;
    let mut state = State::default();
    save(&options.dir, &state)?;
    match build(options, &mut state, gbps) {
        Ok(file) => Ok(file),
        Err(e) => {
            // Undo what was made; the error says why it failed.
            let _ = down(&options.dir);
            Err(e)
        }
    }
}

/// Makes the bridge of a free id (one whose bridge no other emulation has made: making it is
/// what claims the id, so emulations started at once never share one); returns the id.
fn claim_id() -> Result<u8> {
    let start = (std::process::id() % 200) as u8;
    for k in 0..200u16 {
        let id = ((u16::from(start) + k) % 200 + 1) as u8;
        let bridge = format!("bt{id}");
        if Path::new(&format!("/sys/class/net/{bridge}")).exists() {
            continue;
        }
        if run("make the bridge", "ip", &["link", "add", &bridge, "type", "bridge"]).is_ok() {
            return Ok(id);
        }
    }
    Err(failed("emulated hosts", "no free emulation id (200 bridges exist)"))
}

fn build(options: &EmulateOptions, state: &mut State, gbps: f64) -> Result<ClusterFile> {
    let dir = &options.dir;
    let id = claim_id()?;
    let bridge = format!("bt{id}");
    state.id = id;
    state.bridge = Some(bridge.clone());
    save(dir, state)?;
    run("address the bridge", "ip", &["addr", "add", &format!("10.77.{id}.1/24"), "dev", &bridge])?;
    run("raise the bridge", "ip", &["link", "set", &bridge, "up"])?;
    // The cluster's material: the CA and token key stay here; each host gets its own set.
    let cluster_tls = TlsDir::new(dir.join("tls"));
    cluster_tls.generate(&[])?;
    // The object store every host reaches: a directory they share, or an S3 server in a host
    // of its own.
    let objects = dir.join("objects");
    baton_fabric::private::ensure_dir(&objects, "object store directory")?;
    let s3 = match &options.s3_host {
        Some(host) => Some(s3_host(options, host, state, id, &bridge, &objects)?),
        None => None,
    };
    let store = if options.store_host {
        Some(store_host(options, &cluster_tls, state, id, &bridge, gbps)?)
    } else if options.elastic_store > 0 {
        Some(elastic::up(options, &cluster_tls, state, id, &bridge, gbps)?)
    } else {
        None
    };
    let mut hosts = Vec::new();
    // The hosts' processes follow the S3 and store hosts' in the record.
    let first = state.pids.len();
    for i in 0..options.hosts {
        let (ip, ns) = host_address(id, i);
        add_host(options, state, &ns, &format!("bv{id}h{i}"), ip, &bridge)?;
        // Its node, with its own certificate for its address.
        let home = dir.join(format!("h{i}"));
        baton_fabric::private::ensure_dir(&home, "host directory")?;
        let tls = TlsDir::new(home.join("tls"));
        cluster_tls.issue_node(&tls, &[ip.to_string()])?;
        let shm = PathBuf::from(format!("/dev/shm/baton-emu-{id}-h{i}"));
        state.shm_dirs.push(shm.clone());
        save(dir, state)?;
        baton_fabric::private::ensure_dir(&shm, "shm_dir")?;
        let addr = SocketAddr::from((ip, NODE_PORT));
        let pid = start_node(options, &ns, addr, &home, &tls, &shm)?;
        state.pids.push(pid);
        save(dir, state)?;
        let mut workers = Vec::new();
        for w in 0..options.workers {
            let port = WORKER_PORT + w as u16;
            let listen = SocketAddr::from((ip, port));
            let scratch = home.join(format!("w{w}"));
            baton_fabric::private::ensure_dir(&scratch, "worker scratch directory")?;
            let mut worker = in_namespace(&ns, &options.exe);
            if let Some(host) = &options.s3_host {
                worker.envs(host.environment());
            }
            worker
                .args(["worker", "--listen", &listen.to_string()])
                .arg("--memory-limit")
                .arg(options.worker_memory.0.to_string())
                // It runs only what the cluster's drivers signed, over HTTPS with the host's
                // certificate.
                .arg("--tls-dir")
                .arg(tls.dir())
                .arg("--https")
                .arg("--scratch")
                .arg(&scratch);
            let pid = spawn_logged(&mut worker, &home.join(format!("worker-{w}.log")), "start a worker")?;
            state.pids.push(pid);
            save(dir, state)?;
            workers.push((listen, pid));
        }
        hosts.push(Host {
            name: format!("h{i}"),
            node: addr,
            socket: Some(home.join("node.sock")),
            workers: workers.iter().map(|(addr, _)| format!("https://{addr}")).collect(),
            worker_memory: options.worker_memory,
            memory: options.memory,
            flash: ByteSize(16 << 30),
            cores: std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
            nic_gbps: gbps,
            rdma: false,
            namespace: Some(ns),
        });
    }
    // Every node and worker listening before the cluster is said to be up.
    let per_host = 1 + options.workers;
    for (i, host) in hosts.iter().enumerate() {
        let what = format!("{} (namespace {})", host.name, host.namespace.as_deref().unwrap_or("-"));
        wait_for_socket(&dir.join(format!("h{i}")).join("node.sock"), &what, state.pids[first + i * per_host])?;
        for (w, url) in host.workers.iter().enumerate() {
            let addr: SocketAddr =
                url.trim_start_matches("https://").parse().map_err(|e| failed("a worker's address", e))?;
            wait_for_port(addr, &format!("worker {w} of {what}"), state.pids[first + i * per_host + 1 + w])?;
        }
    }
    let file = ClusterFile {
        tls_dir: cluster_tls.dir().to_path_buf(),
        objects_gbps: s3.is_some().then_some(gbps),
        objects: Some(s3.unwrap_or_else(|| format!("file://{}", objects.display()))),
        store,
        hosts,
    };
    std::fs::write(dir.join("cluster.toml"), file.to_toml())
        .map_err(|e| Error::io("write", dir.join("cluster.toml"), e))?;
    Ok(file)
}

fn wait_for_socket(socket: &Path, host: &str, pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if !alive(pid) || Instant::now() > deadline {
            return Err(failed(
                "start a node",
                format!("the node of {host} did not come up (its log: node.log in the host's directory)"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Records namespace `ns` (so that `down` removes it, whatever happens next), then makes it:
/// linked to `bridge` by the veth pair `link` (outside) and `link` + `p` (inside), at `ip`, its
/// link capped at `options.nic`.
fn add_host(
    options: &EmulateOptions,
    state: &mut State,
    ns: &str,
    link: &str,
    ip: Ipv4Addr,
    bridge: &str,
) -> Result<()> {
    state.namespaces.push(ns.to_string());
    save(&options.dir, state)?;
    link_namespace(ns, link, &format!("{link}p"), ip, bridge, &options.nic, options.mtu)
}

/// Makes namespace `ns` with a veth pair (`outside` on the bridge, `inside` as its `eth0` at
/// `ip`), its link capped both ways with `tbf` at `nic`, both ends at `mtu` (the bridge takes
/// the least MTU of its links).
fn link_namespace(
    ns: &str,
    outside: &str,
    inside: &str,
    ip: Ipv4Addr,
    bridge: &str,
    nic: &str,
    mtu: u32,
) -> Result<()> {
    run("make a namespace", "ip", &["netns", "add", ns])?;
    let mtu = mtu.to_string();
    let veth = ["link", "add", outside, "mtu", &mtu, "type", "veth", "peer", "name", inside, "mtu", &mtu];
    run("make a link", "ip", &veth)?;
    run("move the link in", "ip", &["link", "set", inside, "netns", ns])?;
    let in_ns = |what: &str, args: &[&str]| -> Result<()> {
        let mut all = vec!["netns", "exec", ns];
        all.extend_from_slice(args);
        run(what, "ip", &all)
    };
    in_ns("name the link", &["ip", "link", "set", inside, "name", "eth0"])?;
    in_ns("address the host", &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    in_ns("raise the link", &["ip", "link", "set", "eth0", "up"])?;
    in_ns("raise loopback", &["ip", "link", "set", "lo", "up"])?;
    run("join the bridge", "ip", &["link", "set", outside, "master", bridge])?;
    run("raise the link", "ip", &["link", "set", outside, "up"])?;
    // The link capped both ways: what the host sends, and what the bridge sends it.
    let tbf = ["root", "tbf", "rate", nic, "burst", "256kb", "latency", "50ms"];
    in_ns("cap what the host sends", &[&["tc", "qdisc", "add", "dev", "eth0"][..], &tbf[..]].concat())?;
    run("cap what the host receives", "tc", &[&["qdisc", "add", "dev", outside][..], &tbf[..]].concat())
}

/// The S3 server of emulated hosts: the bucket it serves, and the credentials it takes.
#[derive(Clone, Debug)]
pub struct S3Host {
    /// The bucket.
    pub bucket: String,
    /// The access key.
    pub key: String,
    /// Its secret.
    pub secret: String,
    /// Whether it answers `503 SlowDown` past S3's documented request rates per prefix.
    pub rate_limited: bool,
}

impl S3Host {
    /// The environment of a process that reaches it (never in a URL: secrets stay out of them).
    pub fn environment(&self) -> [(&'static str, String); 2] {
        [("AWS_ACCESS_KEY_ID", self.key.clone()), ("AWS_SECRET_ACCESS_KEY", self.secret.clone())]
    }
}

/// Starts the S3 host: a namespace `baton-<id>-s3` at `.9` on the bridge, its link capped like
/// the others, serving `root` over S3 (`baton bench s3-server`); returns the store's URL.
fn s3_host(
    options: &EmulateOptions,
    host: &S3Host,
    state: &mut State,
    id: u8,
    bridge: &str,
    root: &Path,
) -> Result<String> {
    let ns = format!("baton-{id}-s3");
    let ip = Ipv4Addr::new(10, 77, id, 9);
    add_host(options, state, &ns, &format!("bv{id}s3"), ip, bridge)?;
    let addr = SocketAddr::from((ip, 9000));
    let mut server = in_namespace(&ns, &options.exe);
    server.args(["bench", "s3-server", "--listen", &addr.to_string()]).arg("--root").arg(root);
    if host.rate_limited {
        server.arg("--s3-rates");
    }
    let pid = spawn_logged(&mut server, &options.dir.join("s3.log"), "start the S3 host")?;
    state.pids.push(pid);
    save(&options.dir, state)?;
    wait_for_port(addr, "the S3 host", pid)?;
    Ok(format!(
        "s3://{}/cluster?aws_endpoint=http://{addr}&aws_allow_http=true&aws_region=us-east-1\
         &aws_virtual_hosted_style_request=false",
        host.bucket
    ))
}

/// Starts the store host: a namespace `baton-<id>-st` at `.8` on the bridge, its link capped
/// like the others, running a node that lends its tiers over QUIC; returns the cluster file's
/// `[store]`.
fn store_host(
    options: &EmulateOptions,
    cluster_tls: &TlsDir,
    state: &mut State,
    id: u8,
    bridge: &str,
    gbps: f64,
) -> Result<super::Store> {
    let ns = format!("baton-{id}-st");
    let ip = Ipv4Addr::new(10, 77, id, 8);
    add_host(options, state, &ns, &format!("bv{id}st"), ip, bridge)?;
    let home = options.dir.join("store");
    baton_fabric::private::ensure_dir(&home, "store directory")?;
    let tls = TlsDir::new(home.join("tls"));
    cluster_tls.issue_node(&tls, &[ip.to_string()])?;
    let shm = PathBuf::from(format!("/dev/shm/baton-emu-{id}-st"));
    state.shm_dirs.push(shm.clone());
    save(&options.dir, state)?;
    baton_fabric::private::ensure_dir(&shm, "shm_dir")?;
    let addr = SocketAddr::from((ip, NODE_PORT));
    let pid = start_node(options, &ns, addr, &home, &tls, &shm)?;
    state.pids.push(pid);
    save(&options.dir, state)?;
    wait_for_socket(&home.join("node.sock"), &format!("the store host (namespace {ns})"), pid)?;
    Ok(super::Store {
        node: Some(addr),
        etcd: None,
        credentials: None,
        memory: options.memory,
        // What `baton node` lends of flash by default, as the store host's node runs.
        flash: super::default_flash(),
        nic_gbps: gbps,
        namespace: Some(ns),
    })
}

/// Starts a node in namespace `ns` listening on `addr`, its socket, flash and log in `home`;
/// returns its pid.
fn start_node(
    options: &EmulateOptions,
    ns: &str,
    addr: SocketAddr,
    home: &Path,
    tls: &TlsDir,
    shm: &Path,
) -> Result<u32> {
    let mut node = in_namespace(ns, &options.exe);
    node.args(["node", "--listen", &addr.to_string(), "--memory", &options.memory.0.to_string()])
        .arg("--socket")
        .arg(home.join("node.sock"))
        .arg("--tls-dir")
        .arg(tls.dir())
        .arg("--shm-dir")
        .arg(shm)
        .arg("--flash-dir")
        .arg(home.join("flash"));
    spawn_logged(&mut node, &home.join("node.log"), "start a node")
}

/// `exe` run in network namespace `ns`; the caller adds its arguments.
fn in_namespace(ns: &str, exe: &Path) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).arg(exe);
    command
}

/// Starts `command` quietly (warnings only) with its output in a private log file made at
/// `log_path`; returns its pid.
fn spawn_logged(command: &mut Command, log_path: &Path, what: &str) -> Result<u32> {
    let log = baton_fabric::private::create_file(log_path)?;
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::io("open", log_path, e))?)
        .stderr(log)
        .env("BATON_LOG", "warn")
        .spawn()
        .map_err(|e| failed(what, e))?;
    Ok(child.id())
}

fn wait_for_port(addr: SocketAddr, what: &str, pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if !alive(pid) || Instant::now() > deadline {
            return Err(failed(
                "start a worker",
                format!("{what} did not come up (its log is in the host's directory)"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Whether `pid` runs (it is there, and not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// Removes everything the emulation in `dir` made: its nodes, namespaces, links and
/// shared-memory directories. What is already gone is not an error.
pub fn down(dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(state_path(dir)).map_err(|e| Error::io("read", state_path(dir), e))?;
    let state: State =
        toml::from_str(&text).map_err(|e| failed("cluster down", format!("{}: {e}", state_path(dir).display())))?;
    // The last started first: the hosts' processes, then the stores' nodes, then etcd.
    for &pid in state.pids.iter().rev() {
        stop(pid);
    }
    // Namespaces by record, and any of this id's left unrecorded (a crash between make and save).
    let mut namespaces = state.namespaces.clone();
    let prefix = format!("baton-{}-", state.id);
    for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && !namespaces.contains(&name) {
            namespaces.push(name);
        }
    }
    for ns in &namespaces {
        // Deleting a namespace deletes the links in it, and so their veth peers on the bridge.
        let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
    }
    for i in 0..namespaces.len().max(state.namespaces.len()) {
        let _ = Command::new("ip").args(["link", "del", &format!("bv{}h{i}", state.id)]).stderr(Stdio::null()).status();
    }
    if let Some(bridge) = &state.bridge {
        let _ = Command::new("ip").args(["link", "del", bridge]).stderr(Stdio::null()).status();
    }
    for shm in &state.shm_dirs {
        let _ = std::fs::remove_dir_all(shm);
    }
    // The files it made: the cluster's material, each host's directory, the cluster file.
    let _ = std::fs::remove_dir_all(dir.join("tls"));
    let _ = std::fs::remove_dir_all(dir.join("objects"));
    let _ = std::fs::remove_dir_all(dir.join("store"));
    let _ = std::fs::remove_dir_all(dir.join(elastic::DIR));
    let _ = std::fs::remove_file(dir.join("s3.log"));
    for i in 0..state.pids.len().max(state.namespaces.len()) {
        let _ = std::fs::remove_dir_all(dir.join(format!("h{i}")));
    }
    let _ = std::fs::remove_file(dir.join("cluster.toml"));
    let _ = std::fs::remove_file(dir.join("calibration.toml"));
    std::fs::remove_file(state_path(dir)).map_err(|e| Error::io("remove", state_path(dir), e))?;
    Ok(())
}

/// Stops a node: SIGTERM, then SIGKILL if it lingers.
fn stop(pid: u32) {
    // SAFETY: plain kill(2) of a process this emulation started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_rates_read_as_tc_writes_them() {
        assert_eq!(gbps("1gbit"), Some(1.0));
        assert_eq!(gbps("100mbit"), Some(0.1));
        assert_eq!(gbps("2.5Gbit"), Some(2.5));
        assert_eq!(gbps("fast"), None);
        assert_eq!(gbps("0gbit"), None);
    }

    #[test]
    fn a_hosts_namespace_follows_from_its_address() {
        let (ip, ns) = host_address(3, 2);
        assert_eq!((ip, ns.as_str()), (Ipv4Addr::new(10, 77, 3, 12), "baton-3-h2"));
        assert_eq!(host_namespace(ip.into()), Some(ns));
        assert_eq!(host_namespace(Ipv4Addr::new(10, 77, 3, 9).into()), None, "the S3 host is not a host");
        assert_eq!(host_namespace(Ipv4Addr::LOCALHOST.into()), None);
    }
}
