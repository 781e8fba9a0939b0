//! The elastic store's errors.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// etcd did not answer, or refused a request.
    #[error("etcd at {url}: {reason}")]
    Etcd {
        /// Its URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A setting that cannot work.
    #[error("{what}: {reason}")]
    Config {
        /// The setting.
        what: String,
        /// Why.
        reason: String,
    },
    /// What etcd holds does not decode: written by something else, or by another version.
    #[error("etcd key {key}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
    /// A node's name is taken by a live node.
    #[error("storage node {name} is already a member (at {addr}); give each node a name of its own")]
    NameTaken {
        /// The name.
        name: String,
        /// Where the live node with that name is.
        addr: String,
    },
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
