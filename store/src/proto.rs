//! The protocol between the store's clients and its storage nodes, over QUIC.
//!
//! As the fabric's node protocol: each request has a bidirectional stream of its own; the
//! client sends one [`Request`] (framed `u32 length | u8 version | postcard`), and for a put
//! exactly `len` bytes and the end of the stream; the node answers with a [`Response`] and, for
//! a get, `len` bytes and the end of the stream.
//!
//! Keys are a job's object names; an object larger than a chunk travels as several chunks,
//! each a key of its own ([`chunk_key`]), placed and stored like any other.

use baton_fabric::net::token::WireToken;
use serde::{Deserialize, Serialize};

/// The longest key a node takes.
pub const MAX_KEY: usize = 1024;

/// The largest request header a node reads (object bytes follow it).
pub const MAX_REQUEST: usize = 4 << 10;

/// Which chunk of how large an object a stored item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Its number; chunk 0 is stored at the object's own key.
    pub index: u32,
    /// How many chunks the object has.
    pub count: u32,
    /// The object's length.
    pub total: u64,
    /// Bytes per chunk (the last may be shorter).
    pub chunk: u64,
    /// The object's version (its e-tag), new with every put: a version's chunks have keys of
    /// their own, so a put never mixes with the object it replaces.
    pub version: u64,
    /// When it was put, in milliseconds since the Unix epoch.
    pub modified_ms: u64,
}

impl Part {
    /// The part of a one-chunk object of `len` bytes.
    pub fn whole(len: u64, version: u64, modified_ms: u64) -> Self {
        Self { index: 0, count: 1, total: len, chunk: len.max(1), version, modified_ms }
    }
}

/// When a put or link may replace what is at its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cond {
    /// Always.
    Any,
    /// Only if nothing is there (else [`Refusal::Precondition`]).
    Absent,
    /// Only if the object there has this version (else [`Refusal::Precondition`]).
    Version(u64),
    /// A move's copy: only if nothing is there and the key was not deleted since the move
    /// began (else [`Response::Present`]); it takes the room kept for the copy.
    Copy,
}

/// What a request asks of a storage node. Every operation acts on one group of the job's
/// blocks, which the node must hold a block of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Store the `len` bytes that follow at `key` in `group`, replacing what was there if
    /// `cond` allows.
    Put { group: u64, key: String, len: u64, part: Part, cond: Cond },
    /// Send the item at `key` in `group`, or bytes `range` (start, end) of it.
    Get { group: u64, key: String, range: Option<(u64, u64)> },
    /// Say what is at `key` in `group`.
    Head { group: u64, key: String },
    /// Delete what is at `key` in `group`.
    Delete { group: u64, key: String },
    /// Record that `key`, whose home is `group`, is stored in group `at` as `part`, if `cond`
    /// allows.
    Link { group: u64, key: String, at: u64, part: Part, cond: Cond },
    /// List the objects whose first chunk this node holds for the job (with a key prefix).
    List { prefix: String },
    /// The bytes this node holds for the job, per group.
    Usage,
    /// Everything the node holds of the job's `group`: its items and links (for a copy).
    Dump { group: u64 },
    /// Read the block map now (before a copy: the node then refuses writes to a block moving
    /// away).
    Sync,
    /// Keep `bytes` of `group`'s block for a copy being made into it: other writes get only
    /// the rest (the copy's own puts, `if_absent`, are never refused for room).
    Reserve { group: u64, bytes: u64 },
    /// Refuse puts into `group` from now on (`sealed`), as a full block does — granted only
    /// while the group holds nothing, stored or being received (else
    /// [`Refusal::Precondition`]), so that the job can give the group back with no put racing
    /// into it — or take puts again (`!sealed`).
    Seal { group: u64, sealed: bool },
}

/// A request: the job, a token for it, the operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The job whose namespace it acts on.
    pub job: u64,
    /// The capability for the job.
    pub token: Option<WireToken>,
    /// The operation.
    pub op: Op,
}

/// Why a node refused or failed a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The token is missing, forged, expired, or for another job or scope.
    Unauthorized(String),
    /// The node holds no block of that group for that job (a stale map, or a lapsed job).
    NotHeld { group: u64 },
    /// The group's block has no room for `len` more bytes.
    Full { group: u64, used: u64, block_size: u64 },
    /// The put's or link's condition does not hold (what is there).
    Precondition(String),
    /// Nothing is stored at the key.
    NotFound,
    /// The key was deleted while a copy of the group is being made into this block (the block
    /// it is copied from may still hold it: it is gone all the same).
    Deleted,
    /// The request does not make sense (a bad key, a range past the end).
    Invalid(String),
    /// The node failed (its flash, say).
    Failed(String),
}

/// A node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Done; a put, link or delete that displaced a link says where the old copy was, and what
    /// object it replaced (so that its other chunks can go).
    Done { unlinked: Option<u64>, replaced: Option<Part> },
    /// An `if_absent` put or link found the key there (or deleted during the copy): nothing
    /// was stored.
    Present,
    /// An item of `len` bytes follows (the whole item, or the range asked for).
    Item { len: u64, part: Part },
    /// The key's data is in group `at`; `part` describes it.
    Linked { at: u64, part: Part },
    /// The item's description.
    Meta { part: Part },
    /// Objects whose data or link this node holds: their keys and descriptions.
    Objects { objects: Vec<(String, Part)> },
    /// Bytes held per group.
    Usage { groups: Vec<(u64, u64)> },
    /// A group's items (key, part, length) and links (key, group, part).
    Dump { items: Vec<(String, Part, u64)>, links: Vec<(String, u64, Part)> },
    /// The etcd revision the node's view of the map is now at.
    Synced { revision: i64 },
    /// The request failed.
    Refused(Refusal),
}

/// The key chunk `index` of `version` of the object at `key` is stored under (`\0` never
/// appears in an object's key).
pub fn chunk_key(key: &str, version: u64, index: u32) -> String {
    if index == 0 { key.to_string() } else { format!("{key}\0{version:x}\0{index}") }
}

/// Checks an object's key: not empty, at most [`MAX_KEY`] bytes, no `\0`.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("an empty key".into());
    }
    if key.len() > MAX_KEY {
        return Err(format!("a key of {} bytes (at most {MAX_KEY})", key.len()));
    }
    if key.contains('\0') {
        return Err("a key with a NUL byte".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_fabric::node::wire::{decode, encode};

    #[test]
    fn requests_and_responses_round_trip() {
        let requests = [
            Request {
                job: 3,
                token: None,
                op: Op::Put {
                    group: 1,
                    key: "a/b".into(),
                    len: 1 << 33,
                    part: Part::whole(1 << 33, 7, 9),
                    cond: Cond::Version(7),
                },
            },
            Request { job: 3, token: None, op: Op::Get { group: 0, key: "k".into(), range: Some((1, 9)) } },
            Request {
                job: 3,
                token: None,
                op: Op::Link { group: 0, key: "k".into(), at: 7, part: Part::whole(1, 2, 3), cond: Cond::Copy },
            },
            Request { job: 3, token: None, op: Op::Dump { group: 4 } },
        ];
        for request in requests {
            let bytes = encode(&request).unwrap_or_default();
            assert_eq!(decode::<Request>("t", &bytes[4..]).ok(), Some(request));
        }
        let refused = Response::Refused(Refusal::Full { group: 2, used: 10, block_size: 12 });
        let bytes = encode(&refused).unwrap_or_default();
        assert_eq!(decode::<Response>("t", &bytes[4..]).ok(), Some(refused));
    }

    #[test]
    fn chunk_keys_never_collide_with_object_keys() {
        assert_eq!(chunk_key("a", 5, 0), "a");
        assert!(check_key(&chunk_key("a", 5, 1)).is_err());
        assert_ne!(chunk_key("a", 5, 1), chunk_key("a", 6, 1));
        assert!(check_key("").is_err());
        assert!(check_key(&"x".repeat(MAX_KEY + 1)).is_err());
        assert!(check_key("tpch/lineitem/part-0.parquet").is_ok());
    }
}
