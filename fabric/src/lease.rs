//! Jobs and their leases, as a state machine with the clock passed in.
//!
//! A job is opened with a time to live and renewed while it runs. When it ends, or when `now`
//! passes its expiry without a renewal, it is over: the owner of the table must then delete its
//! objects from every tier. The table remembers recently lapsed jobs so that a late request
//! learns its lease expired rather than that the job is unknown.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::ids::JobId;

/// How many lapsed jobs are remembered for error messages.
const REMEMBER_LAPSED: usize = 4096;

/// A source of the current time; the node uses the system clock, tests a manual one.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The system's monotonic clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Instant>);

impl Default for ManualClock {
    fn default() -> Self {
        Self(std::sync::Mutex::new(Instant::now()))
    }
}

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A job's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// How long each renewal extends the lease.
    pub ttl: Duration,
    /// When the lease lapses unless renewed.
    pub expires: Instant,
}

/// The open jobs and their leases.
#[derive(Debug, Default)]
pub struct LeaseTable {
    open: HashMap<JobId, Lease>,
    lapsed: VecDeque<JobId>,
}

/// The longest lease a job may hold: ephemeral data that must outlive a week is not ephemeral.
pub const MAX_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);

impl LeaseTable {
    /// Opens `job` with a lease of `ttl`, or renews it with that ttl if it is open. A ttl of
    /// zero or past [`MAX_LEASE`] is refused.
    pub fn open(&mut self, job: JobId, ttl: Duration, now: Instant) -> Result<Lease> {
        if ttl.is_zero() || ttl > MAX_LEASE {
            return Err(Error::Config {
                field: "lease ttl".into(),
                reason: format!("{ttl:?} asked for {job}; a lease lasts more than 0 s and at most {MAX_LEASE:?}"),
            });
        }
        self.lapsed.retain(|j| *j != job);
        let lease = Lease { ttl, expires: now + ttl };
        self.open.insert(job, lease);
        Ok(lease)
    }

    /// Extends `job`'s lease by its ttl from `now`.
    pub fn renew(&mut self, job: JobId, now: Instant) -> Result<Lease> {
        self.check(job, now)?;
        let lease = self.open.get_mut(&job).ok_or(Error::UnknownJob { job })?;
        lease.expires = now + lease.ttl;
        Ok(*lease)
    }

    /// Succeeds if `job` is open and its lease has not lapsed at `now`.
    pub fn check(&self, job: JobId, now: Instant) -> Result<()> {
        match self.open.get(&job) {
            Some(lease) if now < lease.expires => Ok(()),
            Some(_) => Err(Error::LeaseExpired { job }),
            None if self.lapsed.contains(&job) => Err(Error::LeaseExpired { job }),
            None => Err(Error::UnknownJob { job }),
        }
    }

    /// Ends `job`. Its objects must now be deleted.
    pub fn end(&mut self, job: JobId) -> Result<()> {
        self.open.remove(&job).map(drop).ok_or(Error::UnknownJob { job })
    }

    /// Removes and returns the jobs whose leases have lapsed at `now`. Their objects must now
    /// be deleted.
    pub fn take_lapsed(&mut self, now: Instant) -> Vec<JobId> {
        let mut gone: Vec<JobId> = self.open.iter().filter(|(_, l)| now >= l.expires).map(|(j, _)| *j).collect();
        gone.sort();
        for job in &gone {
            self.open.remove(job);
            self.lapsed.push_back(*job);
        }
        while self.lapsed.len() > REMEMBER_LAPSED {
            self.lapsed.pop_front();
        }
        gone
    }

    /// The open jobs, sorted.
    pub fn jobs(&self) -> Vec<(JobId, Lease)> {
        let mut jobs: Vec<_> = self.open.iter().map(|(j, l)| (*j, *l)).collect();
        jobs.sort_by_key(|(j, _)| *j);
        jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn a_renewed_lease_lives_on_and_a_lapsed_one_is_taken() {
        let t0 = Instant::now();
        let mut table = LeaseTable::default();
        table.open(JobId(1), TTL, t0).unwrap();
        table.open(JobId(2), TTL, t0).unwrap();
        table.renew(JobId(1), t0 + Duration::from_secs(8)).unwrap();
        let t1 = t0 + Duration::from_secs(12);
        assert!(matches!(table.check(JobId(2), t1), Err(Error::LeaseExpired { .. })));
        assert_eq!(table.take_lapsed(t1), vec![JobId(2)]);
        table.check(JobId(1), t1).unwrap();
        assert!(matches!(table.check(JobId(2), t1), Err(Error::LeaseExpired { .. })));
        assert!(matches!(table.renew(JobId(2), t1), Err(Error::LeaseExpired { .. })));
    }

    #[test]
    fn ended_and_unknown_jobs_are_unknown() {
        let t0 = Instant::now();
        let mut table = LeaseTable::default();
        table.open(JobId(1), TTL, t0).unwrap();
        table.end(JobId(1)).unwrap();
        assert!(matches!(table.check(JobId(1), t0), Err(Error::UnknownJob { .. })));
        assert!(matches!(table.end(JobId(7)), Err(Error::UnknownJob { .. })));
        assert!(table.take_lapsed(t0 + TTL * 2).is_empty());
    }

    #[test]
    fn reopening_a_lapsed_job_starts_it_afresh() {
        let t0 = Instant::now();
        let mut table = LeaseTable::default();
        table.open(JobId(1), TTL, t0).unwrap();
        table.take_lapsed(t0 + TTL);
        table.open(JobId(1), TTL, t0 + TTL).unwrap();
        table.check(JobId(1), t0 + TTL).unwrap();
    }

    #[test]
    fn leases_of_no_time_or_past_the_limit_are_refused() {
        let t0 = Instant::now();
        let mut table = LeaseTable::default();
        for ttl in [Duration::ZERO, MAX_LEASE + Duration::from_millis(1), Duration::from_millis(u64::MAX)] {
            let err = table.open(JobId(1), ttl, t0).unwrap_err();
            assert!(matches!(err, Error::Config { .. }) && err.to_string().contains("at most"), "{err}");
        }
        table.open(JobId(1), MAX_LEASE, t0).unwrap();
    }
}
