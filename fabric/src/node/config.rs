//! A node's configuration: TOML file, flags, defaults, and their checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use baton_planner::ByteSize;

use crate::error::{Error, Result};
use crate::store::StoreConfig;

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The Unix socket functions on this host connect to.
    pub socket: PathBuf,
    /// Bytes of memory the node lends.
    pub memory: ByteSize,
    /// Directory of the flash tier.
    pub flash_dir: PathBuf,
    /// Bytes of flash the node lends.
    pub flash: ByteSize,
    /// Memory file system for shared-memory segments.
    pub shm_dir: PathBuf,
    /// How often lapsed leases are reaped, in milliseconds.
    pub reap_interval_ms: u64,
    /// Where to serve other hosts over QUIC (off when unset).
    pub listen: Option<std::net::SocketAddr>,
    /// The cluster's TLS material and token secret (`baton certs` makes it; a node that listens
    /// needs it).
    pub tls_dir: PathBuf,
    /// The largest object a remote put may carry.
    pub max_object: ByteSize,
    /// Whether to serve the RDMA map path (needs an RDMA device and the `rdma` build).
    pub rdma: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("baton-data/node.sock"),
            memory: ByteSize(2 << 30),
            flash_dir: PathBuf::from("baton-data/flash"),
            flash: ByteSize(16 << 30),
            shm_dir: PathBuf::from("/dev/shm"),
            reap_interval_ms: 1000,
            listen: None,
            tls_dir: PathBuf::from("baton-data/tls"),
            max_object: ByteSize(4 << 30),
            rdma: false,
        }
    }
}

impl NodeConfig {
    /// Reads a TOML file; keys it leaves out keep their defaults.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Config { field, reason } => Error::Config { field: format!("{}: {field}", path.display()), reason },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text)
            .map_err(|e| Error::Config { field: "node config".into(), reason: e.message().to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: &str| Err(Error::Config { field: field.into(), reason: reason.into() });
        if self.memory.0 == 0 && self.flash.0 == 0 {
            return bad("memory, flash", "the node must lend some memory or flash");
        }
        if self.reap_interval_ms == 0 {
            return bad("reap_interval_ms", "must be at least 1");
        }
        if self.socket.as_os_str().is_empty() {
            return bad("socket", "must name a path");
        }
        if !self.shm_dir.is_dir() {
            return bad("shm_dir", &format!("{} is not a directory", self.shm_dir.display()));
        }
        Ok(())
    }

    /// The store part of the configuration.
    pub fn store(&self) -> StoreConfig {
        StoreConfig {
            memory_bytes: self.memory.0,
            flash_dir: self.flash_dir.clone(),
            flash_bytes: self.flash.0,
            shm_dir: self.shm_dir.clone(),
        }
    }

    /// How often to reap lapsed leases.
    pub fn reap_interval(&self) -> Duration {
        Duration::from_millis(self.reap_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_mistakes() {
        let config = NodeConfig::from_toml("memory = \"64MiB\"\nflash = 1000000\n").unwrap();
        assert_eq!(config.memory, ByteSize(64 << 20));
        assert_eq!(config.flash, ByteSize(1_000_000));
        assert_eq!(config.reap_interval_ms, 1000);
        let err = NodeConfig::from_toml("memroy = \"1GiB\"").unwrap_err().to_string();
        assert!(err.contains("memroy"), "{err}");
        let err = NodeConfig::from_toml("memory = \"lots\"").unwrap_err().to_string();
        assert!(err.contains("lots"), "{err}");
        let err = NodeConfig::from_toml("memory = 0\nflash = 0").unwrap_err().to_string();
        assert!(err.contains("must lend"), "{err}");
    }
}
