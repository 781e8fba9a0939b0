//! The node agent: a host's store served to the functions on the host over a Unix socket.

pub mod config;
pub mod server;
pub mod wire;

pub use config::{ByteSize, NodeConfig};
pub use server::{Checks, Node};
