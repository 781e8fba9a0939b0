//! Baton across hosts: QUIC between nodes and remote functions, TLS from a cluster CA, and job
//! capability tokens.

pub mod protocol;
pub mod server;
pub mod tls;
pub mod token;
pub mod transport;

pub use server::{NetConfig, NetServer, NetStats};
pub use tls::{NODE_NAME, TlsDir};
pub use token::{Audience, InvocationError, Scopes, Token, TokenError, TokenKey, TokenPublicKey};
pub use transport::Limits;
