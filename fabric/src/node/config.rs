//! A node's configuration: TOML file, flags, defaults, and their checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::store::StoreConfig;

/// A byte count written as `512MiB`, `2GiB`, `64MB`, `4096` and the like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Config { field: "size".into(), reason: format!("{s:?} is not a size like 512MiB or 2GiB") };
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        let bytes = num * scale as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0 as f64;
        match self.0 {
            n if n >= 1 << 30 => write!(f, "{:.1} GiB", b / (1u64 << 30) as f64),
            n if n >= 1 << 20 => write!(f, "{:.1} MiB", b / (1u64 << 20) as f64),
            n if n >= 1 << 10 => write!(f, "{:.1} KiB", b / 1024.0),
            n => write!(f, "{n} B"),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

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
    fn sizes_parse() {
        for (text, bytes) in
            [("4096", 4096), ("64MiB", 64 << 20), ("2 GiB", 2 << 30), ("1.5k", 1500), ("10MB", 10_000_000)]
        {
            assert_eq!(text.parse::<ByteSize>().unwrap(), ByteSize(bytes), "{text}");
        }
        for bad in ["", "MiB", "12 parsecs", "-1", "1e400"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
    }

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
