//! The elastic store of emulated hosts: etcd (its authentication on) and the store's controller
//! in a host of their own (namespace `baton-<id>-etcd` at `.7`), and storage nodes each in a
//! host of its own (`baton-<id>-n<j>` at `.240+j`), every link capped like the hosts'. All of
//! it lives under `elastic/` in the emulation's directory; etcd's `user:password` is in the
//! private file `elastic/etcd.credentials`, which the cluster file names.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use baton_fabric::net::TlsDir;
use baton_store::alloc::BlockMap;
use baton_store::etcd::Etcd;

use super::{EmulateOptions, NODE_PORT, State, add_host, alive, failed, in_namespace, save, spawn_logged};
use crate::error::Result;

/// The most storage nodes an emulation has (`.240` to `.247`).
pub const MAX_NODES: usize = 8;

/// The port etcd serves clients on.
const ETCD_PORT: u16 = 2379;

/// The directory under the emulation's that holds it all.
pub(super) const DIR: &str = "elastic";

/// Runs `future` to its end from this (blocking) thread: on the runtime `up` was called from
/// (by way of `spawn_blocking`), or on one of its own.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> Result<T> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(future)),
        Err(_) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| failed("the elastic store", e))?;
            Ok(runtime.block_on(future))
        }
    }
}

/// A password no one guesses: 32 hex digits from the kernel's random source.
fn password() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").map_err(|e| failed("a password for etcd", e))?,
        &mut bytes,
    )
    .map_err(|e| failed("a password for etcd", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Starts etcd, the controller and `options.elastic_store` storage nodes; returns the
/// cluster file's `[store]`.
pub(super) fn up(
    options: &EmulateOptions,
    cluster_tls: &TlsDir,
    state: &mut State,
    id: u8,
    bridge: &str,
    gbps: f64,
) -> Result<super::super::Store> {
    let home = options.dir.join(DIR);
    baton_fabric::private::ensure_dir(&home, "elastic store directory")?;
    // etcd, in a host of its own.
    let ns = format!("baton-{id}-etcd");
    let ip = Ipv4Addr::new(10, 77, id, 7);
    add_host(options, state, &ns, &format!("bv{id}e"), ip, bridge)?;
    let url = format!("http://{ip}:{ETCD_PORT}");
    // Its peer port stays on the namespace's own loopback: this etcd is a cluster of one.
    let peer = "http://127.0.0.1:2380";
    let binary = std::env::var("BATON_ETCD").unwrap_or_else(|_| "etcd".into());
    let mut etcd_cmd = in_namespace(&ns, Path::new(&binary));
    etcd_cmd
        .arg("--data-dir")
        .arg(home.join("etcd"))
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer])
        .args(["--initial-cluster", &format!("default={peer}")]);
    let pid = spawn_logged(&mut etcd_cmd, &home.join("etcd.log"), "start etcd (Debian: apt-get install etcd-server)")?;
    state.pids.push(pid);
    save(&options.dir, state)?;
    let etcd = Etcd::new(&url).map_err(|e| failed("etcd", e))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while block_on(etcd.revision())?.is_err() {
        if !alive(pid) || Instant::now() > deadline {
            return Err(failed("start etcd", format!("it did not answer at {url} (its log: {DIR}/etcd.log)")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Reachable beyond loopback, so its authentication is on: only who has the file gets in.
    let password = password()?;
    let credentials = home.join("etcd.credentials");
    std::io::Write::write_all(
        &mut baton_fabric::private::create_file(&credentials)?,
        format!("root:{password}").as_bytes(),
    )
    .map_err(|e| crate::error::Error::io("write", &credentials, e))?;
    block_on(etcd.enable_root_auth(&password))?.map_err(|e| failed("turn etcd's authentication on", e))?;
    let etcd = etcd.with_credentials("root", &password);
    let secrets = [("BATON_ETCD_USER", "root".to_string()), ("BATON_ETCD_PASSWORD", password)];
    // The controller beside it: drains, repairs.
    let mut controller = in_namespace(&ns, &options.exe);
    controller
        .args(["store", "controller", "--etcd", &url])
        .arg("--tls-dir")
        .arg(cluster_tls.dir())
        .envs(secrets.clone());
    state.pids.push(spawn_logged(&mut controller, &home.join("controller.log"), "start the store's controller")?);
    save(&options.dir, state)?;
    // The storage nodes.
    let mut nodes = Vec::new();
    for j in 0..options.elastic_store {
        let name = format!("n{j}");
        let ns = format!("baton-{id}-{name}");
        let ip = Ipv4Addr::new(10, 77, id, 240 + j as u8);
        add_host(options, state, &ns, &format!("bv{id}n{j}"), ip, bridge)?;
        let node_home = home.join(&name);
        baton_fabric::private::ensure_dir(&node_home, "storage node directory")?;
        let tls = TlsDir::new(node_home.join("tls"));
        cluster_tls.issue_node(&tls, &[ip.to_string()])?;
        let listen = SocketAddr::from((ip, NODE_PORT));
        let mut node = in_namespace(&ns, &options.exe);
        node.args(["node", "--etcd", &url, "--store-name", &name, "--listen", &listen.to_string()])
            .args(["--memory", &options.memory.0.to_string(), "--flash", &options.store_flash.0.to_string()])
            .args(["--block-size", &options.store_block.0.to_string()])
            .arg("--flash-dir")
            .arg(node_home.join("flash"))
            .arg("--tls-dir")
            .arg(tls.dir())
            .envs(secrets.clone());
        let pid = spawn_logged(&mut node, &node_home.join("node.log"), "start a storage node")?;
        state.pids.push(pid);
        save(&options.dir, state)?;
        nodes.push((name, pid));
    }
    // Every storage node a member before the store is said to be up.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, pid) in &nodes {
        while !block_on(BlockMap::read(&etcd))?.map_err(|e| failed("read the store's members", e))?.is_member(name) {
            if !alive(*pid) || Instant::now() > deadline {
                return Err(failed(
                    "start a storage node",
                    format!("{name} did not join the store (its log: {DIR}/{name}/node.log)"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let count = options.elastic_store as u64;
    Ok(super::super::Store {
        node: None,
        etcd: Some(url),
        credentials: Some(credentials),
        memory: baton_fabric::node::ByteSize(options.memory.0 * count),
        flash: baton_fabric::node::ByteSize(options.store_flash.0 * count),
        nic_gbps: gbps * count as f64,
        namespace: Some(ns),
    })
}
