//! The node-to-node protocol over QUIC, at the edge of the crate.
//!
//! Each request has a bidirectional stream of its own. The client sends one message — a
//! [`NetRequest`], framed as on the local socket (`u32 length | u8 version | postcard`) — and,
//! for a put, exactly `len` bytes of object and the end of the stream. The server answers with a
//! [`NetResponse`] and, for a get, `len` bytes of object and the end of the stream. QUIC's
//! per-stream and per-connection windows carry the backpressure.

use serde::{Deserialize, Serialize};

pub use crate::net::token::WireToken;
use crate::node::wire::{WireError, WireKey};
use crate::rdma::{QpEndpoint, RemoteRegion};

/// What a request asks for. Every operation but `Hello` acts on the request's job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetOp {
    /// Who are you, and what can you do?
    Hello,
    /// Open the job with a lease, or renew it with a new ttl.
    OpenJob { ttl_ms: u64 },
    /// Renew the job's lease.
    RenewJob,
    /// End the job: delete its objects everywhere.
    EndJob,
    /// Store the `len` bytes that follow as the object at `key`.
    Put { key: WireKey, len: u64 },
    /// Send the object at `key`, or bytes `range` (start, end) of it.
    Get { key: WireKey, range: Option<(u64, u64)> },
    /// Delete the object at `key`.
    Delete { key: WireKey },
    /// List the job's objects (of one edge, if given).
    List { edge: Option<u32> },
    /// Make a queue pair for this connection, connected to the sender's `qp` (RDMA map path).
    RdmaConnect { qp: QpEndpoint },
    /// Register the object at `key` for this connection's queue pairs to read.
    Map { key: WireKey },
    /// Release the object at `key` registered by `Map`.
    Unmap { key: WireKey },
}

/// A request: the job it acts on, a token for that job, and the operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRequest {
    /// The job (ignored by `Hello`); an operation on a key must name the key's job.
    pub job: u64,
    /// The capability for the job (not needed for `Hello`).
    pub token: Option<WireToken>,
    /// The operation.
    pub op: NetOp,
}

/// A node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetResponse {
    /// The node's version and abilities.
    Hello { version: u8, rdma: bool },
    /// A lease.
    Lease { ttl_ms: u64 },
    /// Bytes freed.
    Freed { bytes: u64 },
    /// Done.
    Done,
    /// An object of `len` bytes follows.
    Object { len: u64 },
    /// The job's objects and their sizes.
    Objects { objects: Vec<(WireKey, u64)> },
    /// The request failed.
    Failed(WireError),
    /// The node's queue pair, connected to the one the request named.
    RdmaConnected { qp: QpEndpoint },
    /// Where the mapped object can be read.
    Mapped { region: RemoteRegion },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EdgeId, JobId, ObjectKey};
    use crate::net::token::{Audience, Scopes, TokenKey};
    use crate::node::wire::{decode, encode};

    #[test]
    fn requests_and_responses_round_trip() {
        let token: WireToken =
            TokenKey::generate().unwrap().mint(JobId(3), 99, Scopes::READ, Audience::node("n")).into();
        let key: WireKey = ObjectKey::new(JobId(3), EdgeId(1), 2, 3).into();
        let requests = [
            NetRequest { job: 0, token: None, op: NetOp::Hello },
            NetRequest { job: 3, token: Some(token.clone()), op: NetOp::Put { key, len: 1 << 40 } },
            NetRequest { job: 3, token: Some(token.clone()), op: NetOp::List { edge: Some(1) } },
            NetRequest {
                job: 3,
                token: Some(token.clone()),
                op: NetOp::RdmaConnect { qp: QpEndpoint { qpn: 9, psn: 0xabcdef, lid: 0, gid: [7; 16] } },
            },
            NetRequest { job: 3, token: Some(token.clone()), op: NetOp::Map { key } },
        ];
        for request in requests {
            let bytes = encode(&request).unwrap();
            assert_eq!(decode::<NetRequest>("t", &bytes[4..]).unwrap(), request);
        }
        for response in [
            NetResponse::Objects { objects: vec![(key, 7)] },
            NetResponse::Mapped { region: RemoteRegion { addr: 1 << 40, len: 99, rkey: 5 } },
        ] {
            let bytes = encode(&response).unwrap();
            assert_eq!(decode::<NetResponse>("t", &bytes[4..]).unwrap(), response);
        }
    }
}
