//! Typed identifiers and object keys.
//!
//! Every object the fabric holds belongs to a job and is addressed by an [`ObjectKey`]:
//! (job, edge, producer partition, consumer partition or chunk) and the producer's attempt.
//! Keys have one canonical relative-path form, `job-<hex>/edge-<n>/<producer>-<consumer>` (with
//! `.<attempt>` after the producer for a retry's objects: `3.1-0`), shared by every tier and
//! path, and [`ObjectKey::from_str`] is its checked inverse. Because each attempt writes its own
//! keys, a retried task never collides with the objects of the attempt it replaces, and the
//! driver tells consumers which attempt won.
//!
//! ```
//! use baton_fabric::{EdgeId, JobId, ObjectKey};
//!
//! let key: ObjectKey = "job-2a/edge-0/3-1".parse().unwrap();
//! assert_eq!(key, ObjectKey::new(JobId(42), EdgeId(0), 3, 1));
//! assert_eq!(key.to_string(), "job-000000000000002a/edge-0/3-1");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A job: the unit of ownership and lifetime of objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u64);

pub use baton_planner::{EdgeId, StageId};

/// One attempt at one partition of one stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId {
    /// The stage the task belongs to.
    pub stage: StageId,
    /// The partition of the stage the task computes.
    pub partition: u32,
    /// Which attempt this is (0 for the first).
    pub attempt: u32,
}

/// The address of one object: which job, which edge, from which producer partition (and which
/// attempt of it) to which consumer partition (or chunk).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    /// The job that owns the object.
    pub job: JobId,
    /// The edge the object travels on.
    pub edge: EdgeId,
    /// The producing partition.
    pub producer: u32,
    /// The consuming partition, or a chunk number when an edge is not partitioned.
    pub consumer: u32,
    /// The producer's attempt (0 for the first).
    pub attempt: u32,
}

/// A selection of objects for listing: all of a job's, or those of one edge of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyPrefix {
    /// The job whose objects are listed.
    pub job: JobId,
    /// Only this edge's objects, when set.
    pub edge: Option<EdgeId>,
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{:016x}", self.0)
    }
}

impl FromStr for JobId {
    type Err = Error;

    /// Accepts the display form (`job-00000000000000ff`), `0x`-prefixed hex or plain decimal.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadKey { key: s.to_string(), reason: "not a job id" };
        if let Some(hex) = s.strip_prefix("job-").or_else(|| s.strip_prefix("0x")) {
            u64::from_str_radix(hex, 16).map(JobId).map_err(|_| bad())
        } else {
            s.parse().map(JobId).map_err(|_| bad())
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/p{}/a{}", self.stage, self.partition, self.attempt)
    }
}

impl ObjectKey {
    /// A key from its four parts.
    pub fn new(job: JobId, edge: EdgeId, producer: u32, consumer: u32) -> Self {
        Self { job, edge, producer, consumer, attempt: 0 }
    }

    /// The same key for attempt `attempt` of its producer.
    pub fn with_attempt(self, attempt: u32) -> Self {
        Self { attempt, ..self }
    }

    /// Whether `prefix` selects this key.
    pub fn matches(&self, prefix: &KeyPrefix) -> bool {
        self.job == prefix.job && prefix.edge.is_none_or(|e| e == self.edge)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.job, self.edge, self.producer)?;
        if self.attempt > 0 {
            write!(f, ".{}", self.attempt)?;
        }
        write!(f, "-{}", self.consumer)
    }
}

impl FromStr for ObjectKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason| Error::BadKey { key: s.to_string(), reason };
        let mut parts = s.split('/');
        let (Some(job), Some(edge), Some(leaf), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected job-<hex>/edge-<n>/<producer>-<consumer>"));
        };
        let job = job
            .strip_prefix("job-")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad("bad job part"))?;
        let edge = edge.strip_prefix("edge-").and_then(|e| e.parse().ok()).ok_or_else(|| bad("bad edge part"))?;
        let number = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<u32>().ok()).flatten();
        let (producer, attempt, consumer) = leaf
            .split_once('-')
            .and_then(|(p, c)| {
                let (p, a) = match p.split_once('.') {
                    Some((p, a)) => (p, number(a).filter(|&a| a > 0)?),
                    None => (p, 0),
                };
                Some((number(p)?, a, number(c)?))
            })
            .ok_or_else(|| bad("bad <producer>[.<attempt>]-<consumer> part"))?;
        Ok(Self::new(JobId(job), EdgeId(edge), producer, consumer).with_attempt(attempt))
    }
}

impl KeyPrefix {
    /// Every object of `job`.
    pub fn job(job: JobId) -> Self {
        Self { job, edge: None }
    }

    /// Every object of one edge of `job`.
    pub fn edge(job: JobId, edge: EdgeId) -> Self {
        Self { job, edge: Some(edge) }
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.edge {
            Some(edge) => write!(f, "{}/{}", self.job, edge),
            None => write!(f, "{}", self.job),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_its_path_form() {
        let key = ObjectKey::new(JobId(0xfeed), EdgeId(3), 7, 11);
        assert_eq!(key.to_string(), "job-000000000000feed/edge-3/7-11");
        assert_eq!(key.to_string().parse::<ObjectKey>().unwrap(), key);
        let retry = key.with_attempt(2);
        assert_eq!(retry.to_string(), "job-000000000000feed/edge-3/7.2-11");
        assert_eq!(retry.to_string().parse::<ObjectKey>().unwrap(), retry);
    }

    #[test]
    fn malformed_keys_are_rejected_with_the_reason() {
        for bad in [
            "",
            "job-zz/edge-1/1-1",
            "job-1/edge-x/1-1",
            "job-1/edge-1/1",
            "job-1/edge-1/1-1/x",
            "job-1/edge-1/1.0-1",
            "job-1/edge-1/1.-1",
            "job-1/edge-1/+1-1",
        ] {
            let err = bad.parse::<ObjectKey>().unwrap_err();
            assert!(matches!(err, Error::BadKey { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn job_ids_parse_in_every_form() {
        assert_eq!("job-00000000000000ff".parse::<JobId>().unwrap(), JobId(255));
        assert_eq!("0xff".parse::<JobId>().unwrap(), JobId(255));
        assert_eq!("255".parse::<JobId>().unwrap(), JobId(255));
        assert!("nope".parse::<JobId>().is_err());
    }

    #[test]
    fn prefixes_select_by_job_and_edge() {
        let key = ObjectKey::new(JobId(1), EdgeId(2), 0, 0);
        assert!(key.matches(&KeyPrefix::job(JobId(1))));
        assert!(key.matches(&KeyPrefix::edge(JobId(1), EdgeId(2))));
        assert!(!key.matches(&KeyPrefix::edge(JobId(1), EdgeId(3))));
        assert!(!key.matches(&KeyPrefix::job(JobId(2))));
    }
}
