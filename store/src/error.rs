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
    /// The store has no room for what a job asked.
    #[error(
        "no capacity for {job}: it asked for {asked} blocks of {block_size} bytes; {free_memory} memory and \
         {free_flash} flash blocks are free"
    )]
    NoCapacity {
        /// The job.
        job: baton_fabric::JobId,
        /// Blocks it asked for (copies included).
        asked: u64,
        /// Bytes per block.
        block_size: u64,
        /// Free memory blocks across the store.
        free_memory: u64,
        /// Free flash blocks across the store.
        free_flash: u64,
    },
    /// A node's name is taken by a live node.
    #[error("storage node {name} is already a member (at {addr}); give each node a name of its own")]
    NameTaken {
        /// The name.
        name: String,
        /// Where the live node with that name is.
        addr: String,
    },
    /// A local I/O failure.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The fabric (TLS, QUIC, tokens, files) failed.
    #[error(transparent)]
    Fabric(#[from] baton_fabric::Error),
    /// No object at the key.
    #[error("{job} has no object {key:?} in the store")]
    NotFound {
        /// The job.
        job: baton_fabric::JobId,
        /// The key.
        key: String,
    },
    /// A conditional put's condition does not hold.
    #[error("{job}'s object {key:?}: the put's condition does not hold: {reason}")]
    Precondition {
        /// The job.
        job: baton_fabric::JobId,
        /// The key.
        key: String,
        /// What is there.
        reason: String,
    },
    /// An object was replaced while it was being read (read it again).
    #[error("the object was replaced while it was read")]
    Replaced,
    /// Keys were on storage nodes that are gone, with no other copy.
    #[error("{job}'s {keys:?} were on storage node {node}, which is gone ({reason}), and have no other copy")]
    Lost {
        /// The job.
        job: baton_fabric::JobId,
        /// The node.
        node: String,
        /// The keys asked for.
        keys: Vec<String>,
        /// How it was found gone.
        reason: String,
    },
    /// A storage node refused a request.
    #[error("storage node {node} refused {what}: {reason}")]
    Refused {
        /// The node.
        node: String,
        /// The request.
        what: String,
        /// Why.
        reason: String,
    },
    /// The client is not allowed to do that.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was asked.
        what: String,
        /// Why it cannot be done.
        reason: String,
    },
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
