//! Storage nodes' membership: each node puts its description at `nodes/<name>` under an etcd
//! lease it keeps alive. A node that stops (or dies, or loses etcd for longer than the lease)
//! is gone from the membership when its lease lapses; no one else removes it.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::etcd::{Compare, Etcd, KeptLease, Op};

/// The prefix under which the store keeps its state in etcd.
pub const ROOT: &str = "/baton/store/";

/// How long a node's membership outlives its last renewal.
pub const MEMBER_TTL: Duration = Duration::from_secs(5);

/// A storage node, as the membership describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name, unique among the members.
    pub name: String,
    /// Its QUIC address, where clients reach its blocks.
    pub addr: SocketAddr,
    /// Bytes per block (the same across a store).
    pub block_size: u64,
    /// Blocks of memory it lends.
    pub memory_blocks: u64,
    /// Blocks of flash it lends.
    pub flash_blocks: u64,
    /// Where it serves clients on its own host, without TLS ([`crate::same_host`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<crate::same_host::SameHost>,
}

/// The value of a drain's key once the node holds no block: the node then leaves.
pub const DRAINED: &[u8] = b"done";

/// The key that asks for `node` to be drained (its blocks moved to others, then it leaves).
pub fn drain_key(node: &str) -> String {
    format!("{ROOT}drain/{node}")
}

fn node_key(name: &str) -> String {
    format!("{ROOT}nodes/{name}")
}

impl NodeInfo {
    /// Checks the description: a name of letters, digits, `-` and `_`; a reachable address; a
    /// block size and at least one block.
    pub fn check(&self) -> Result<()> {
        let bad = |reason: String| Error::Config { what: format!("storage node {}", self.name), reason };
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(bad("its name must be letters, digits, - and _".into()));
        }
        if self.addr.ip().is_unspecified() || self.addr.port() == 0 {
            return Err(bad(format!("{} is not an address clients can reach", self.addr)));
        }
        if self.block_size == 0 || self.memory_blocks + self.flash_blocks == 0 {
            return Err(bad("it lends no blocks (memory or flash smaller than one block)".into()));
        }
        Ok(())
    }
}

/// A node's membership, kept while this lives; [`Membership::leave`] ends it at once.
#[derive(Debug)]
pub struct Membership {
    lease: KeptLease,
    key: String,
}

impl Membership {
    /// Joins the store in `etcd` as `info`: refused when a live node has the name.
    pub async fn join(etcd: &Etcd, info: &NodeInfo, ttl: Duration) -> Result<Self> {
        info.check()?;
        let key = node_key(&info.name);
        let value = serde_json::to_vec(info).map_err(|e| Error::Corrupt { key: key.clone(), reason: e.to_string() })?;
        let lease = KeptLease::start(etcd, ttl).await?;
        if !etcd.txn(&[Compare::Absent(key.clone())], &[Op::Put(key.clone(), value, lease.id())]).await? {
            let holder = members(etcd).await?.into_iter().find(|n| n.name == info.name);
            let _ = lease.end().await;
            return Err(Error::NameTaken {
                name: info.name.clone(),
                addr: holder.map_or_else(|| "?".into(), |n| n.addr.to_string()),
            });
        }
        Ok(Self { lease, key })
    }

    /// Whether its lease is still renewed.
    pub fn alive(&self) -> bool {
        self.lease.alive()
    }

    /// Leaves the store now (the key goes with the lease).
    pub async fn leave(self) -> Result<()> {
        tracing::debug!("leaving the store: {}", self.key);
        self.lease.end().await
    }
}

/// The live members, by name.
pub async fn members(etcd: &Etcd) -> Result<Vec<NodeInfo>> {
    etcd.list(&node_key(""))
        .await?
        .into_iter()
        .map(|kv| serde_json::from_slice(&kv.value).map_err(|e| Error::Corrupt { key: kv.key, reason: e.to_string() }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_description_is_checked() {
        let good = NodeInfo {
            name: "s1".into(),
            addr: "127.0.0.1:7070".parse().unwrap_or_else(|e| panic!("{e}")),
            block_size: 32 << 20,
            memory_blocks: 4,
            flash_blocks: 0,
            local: None,
        };
        assert!(good.check().is_ok());
        for (bad, says) in [
            (NodeInfo { name: "a b".into(), ..good.clone() }, "letters"),
            (NodeInfo { addr: "0.0.0.0:7070".parse().unwrap_or_else(|e| panic!("{e}")), ..good.clone() }, "reach"),
            (NodeInfo { memory_blocks: 0, ..good.clone() }, "no blocks"),
        ] {
            let error = bad.check().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(says), "{says}: {error}");
        }
    }
}
