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
