//! A real etcd for tests (feature `testing`): Debian's `etcd-server` binary started on free
//! ports of 127.0.0.1 with a data directory of its own, stopped and removed when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::etcd::Etcd;

/// An etcd process.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Config { what: "a free port for etcd".into(), reason: e.to_string() })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::Config { what: "a free port for etcd".into(), reason: e.to_string() })
}

impl EtcdServer {
    /// Starts etcd (the `etcd` on `PATH`, or `BATON_ETCD`) and waits until it answers.
    pub async fn start() -> Result<Self> {
        let binary = std::env::var("BATON_ETCD").unwrap_or_else(|_| "etcd".into());
        let dir =
            tempfile::tempdir().map_err(|e| Error::Config { what: "etcd's data dir".into(), reason: e.to_string() })?;
        let (client, peer) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(&binary)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Config {
                what: format!("starting {binary}"),
                reason: format!("{e} (tests need etcd: apt-get install etcd-server)"),
            })?;
        let mut server = Self { child, url, _dir: dir };
        let etcd = server.client()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match etcd.revision().await {
                Ok(_) => return Ok(server),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {
                    if let Ok(Some(status)) = server.child.try_wait() {
                        return Err(Error::Config { what: binary, reason: format!("etcd exited: {status}") });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Its client URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client of it.
    pub fn client(&self) -> Result<Etcd> {
        Etcd::new(&self.url)
    }

    /// Turns authentication on: a `root` user with `password` may do everything, and a client
    /// without credentials nothing.
    pub async fn enable_auth(&self, password: &str) -> Result<()> {
        self.client()?.enable_root_auth(password).await
    }

    /// Stops it at once (SIGKILL), as a crash would; its data stays until it is dropped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A store for tests: a real etcd and storage nodes serving QUIC on 127.0.0.1 in this process,
/// with blocks of 1 MiB and the cluster's TLS material in a temporary directory.
#[derive(Debug)]
pub struct TestStore {
    /// The store's etcd client.
    pub etcd: Etcd,
    /// The cluster's TLS material (with the key that mints tokens).
    pub tls: baton_fabric::net::TlsDir,
    /// The nodes (set one to `None` to stop it without a word).
    pub nodes: Vec<Option<crate::node::StorageNode>>,
    server: EtcdServer,
    _dir: tempfile::TempDir,
}

/// How a [`TestStore`]'s nodes behave.
#[derive(Clone, Copy, Debug)]
pub struct NodeOptions {
    /// A memory block cold this long moves to flash when the node's memory blocks are all held
    /// (by default a day: never, in a test).
    pub cold_after: Duration,
    /// Clients in this process reach the nodes over loopback TCP (by default not: over QUIC,
    /// as clients on other hosts do).
    pub same_host: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self { cold_after: Duration::from_secs(24 * 3600), same_host: false }
    }
}

/// Bytes per block of a [`TestStore`].
pub const TEST_BLOCK: u64 = 1 << 20;

impl TestStore {
    /// Nodes named `names`, each lending `memory` and `flash` blocks, with
    /// [`NodeOptions::default`].
    pub async fn start(names: &[&str], memory: u64, flash: u64) -> Result<Self> {
        Self::start_with(names, memory, flash, NodeOptions::default()).await
    }

    /// Nodes like [`TestStore::start`]'s, with `options`.
    pub async fn start_with(names: &[&str], memory: u64, flash: u64, options: NodeOptions) -> Result<Self> {
        let server = EtcdServer::start().await?;
        let etcd = server.client()?;
        let dir =
            tempfile::tempdir().map_err(|e| Error::Io { what: "a directory for a test store".into(), source: e })?;
        let tls = baton_fabric::net::TlsDir::new(dir.path().join("tls"));
        tls.generate(&["127.0.0.1".into()])?;
        let mut nodes = Vec::new();
        for name in names {
            let config = crate::node::NodeConfig {
                name: name.to_string(),
                listen: ([127, 0, 0, 1], 0).into(),
                tls: tls.clone(),
                limits: baton_fabric::net::Limits::default(),
                block_size: TEST_BLOCK,
                memory: memory * TEST_BLOCK,
                flash: flash * TEST_BLOCK,
                flash_dir: dir.path().join(format!("flash-{name}")),
                sync_every: Duration::from_millis(200),
                same_host: options.same_host,
                cold_after: options.cold_after,
            };
            nodes.push(Some(crate::node::StorageNode::start(&etcd, &config).await?));
        }
        Ok(Self { etcd, tls, nodes, server, _dir: dir })
    }

    /// Its etcd's URL.
    pub fn etcd_url(&self) -> &str {
        self.server.url()
    }

    /// The running node named `name`.
    pub fn node(&self, name: &str) -> Option<&crate::node::StorageNode> {
        self.nodes.iter().flatten().find(|n| n.info().name == name)
    }

    /// Bytes every running node holds for `job`.
    pub fn held(&self, job: baton_fabric::JobId) -> u64 {
        self.nodes.iter().flatten().flat_map(|n| n.usage()).filter(|(j, _, _)| *j == job).map(|(_, _, b)| b).sum()
    }
}
