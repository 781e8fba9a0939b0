//! Baton's data plane.
//!
//! Everything that passes between the stages of a job is carried here: typed ids and object
//! keys ([`ids`]), checksummed frames ([`frame`]) and Arrow IPC payloads read without copying
//! ([`arrow`]), storage tiers ([`tier`]) composed into a node's store with job leases
//! ([`store`], [`lease`]), the node agent ([`node`]) and the paths that carry bytes
//! ([`path`]), all behind one trait, [`DataPath`].

pub mod arrow;
pub mod blocking;
pub mod buffers;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod frame;
pub mod frame_stream;
pub mod ids;
pub mod lease;
pub mod mapping;
pub mod metrics;
pub mod net;
pub mod node;
pub mod path;
pub mod private;
pub mod rdma;
pub mod store;
pub mod tier;
pub mod uncached;

pub use error::{Corruption, Error, Result, Tier};
pub use ids::{EdgeId, JobId, KeyPrefix, ObjectKey, StageId, TaskId};
pub use path::{DataPath, ObjectMeta};
