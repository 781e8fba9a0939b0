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

/// Whether `dir` is on tmpfs or ramfs (unknown counts as yes: nothing to warn about).
fn in_memory(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return true };
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and `stat` writable; statfs only fills it.
    if unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return true;
    }
    // SAFETY: statfs returned 0, so it filled the struct.
    // `f_type`'s width differs between platforms; the magic numbers fit every one.
    #[allow(clippy::unnecessary_cast)]
    let kind = unsafe { stat.assume_init() }.f_type as i64;
    kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
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
        // Unlike flash_dir, which is made if missing, shm_dir must already be a mounted memory
        // file system: made on the fly it would be a directory on disk, and "shared memory"
        // would quietly be disk writes.
        if !self.shm_dir.is_dir() {
            return bad(
                "shm_dir",
                &format!(
                    "{} is not a directory: it must be a mounted memory file system such as /dev/shm \
                     (mount one with `mount -t tmpfs -o size=8G tmpfs DIR`)",
                    self.shm_dir.display()
                ),
            );
        }
        if !in_memory(&self.shm_dir) {
            tracing::warn!(
                "shm_dir {} is not on a memory file system (tmpfs): VM-local objects there are written to disk",
                self.shm_dir.display()
            );
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

    #[test]
    fn a_missing_shm_dir_is_explained_not_made() {
        let err = NodeConfig::from_toml("shm_dir = \"/nonexistent-baton-shm\"").unwrap_err().to_string();
        assert!(err.contains("/nonexistent-baton-shm") && err.contains("memory file system"), "{err}");
        assert!(!std::path::Path::new("/nonexistent-baton-shm").exists());
    }
}
