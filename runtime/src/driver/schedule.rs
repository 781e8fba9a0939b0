//! One stage's task state machine, without I/O: which attempts to launch, which attempt's
//! output is committed, when to retry and when to give up.
//!
//! The rule that keeps retries safe: each attempt writes objects under its own keys, and the
//! first attempt to succeed is committed; a later success of another attempt of the same
//! partition (a straggler that was presumed lost) is superseded, and its objects are never
//! handed to consumers.

use std::collections::VecDeque;

use crate::task::TaskReport;

/// What to do after an attempt ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Its output is the partition's: hand it to consumers.
    Committed,
    /// Another attempt was committed first: ignore this one's output.
    Superseded,
    /// It failed; another attempt is queued.
    Retry,
    /// It failed and the partition has no attempts left (or the error cannot be retried): the
    /// job fails.
    GiveUp {
        /// Attempts made.
        attempts: u32,
    },
}

#[derive(Debug)]
struct Partition {
    attempts: u32,
    /// Attempts it may make in all: `max_attempts`, and that many more each time its committed
    /// output is lost ([`StageSchedule::reopen`]).
    budget: u32,
    running: u32,
    committed: Option<(u32, TaskReport)>,
    last_error: Option<String>,
}

/// The attempts of one stage's partitions.
#[derive(Debug)]
pub struct StageSchedule {
    partitions: Vec<Partition>,
    queue: VecDeque<u32>,
    max_attempts: u32,
    /// Partitions with a committed attempt, and with at least one attempt: counted as they
    /// change, so that asking costs nothing however many partitions there are (a stage of
    /// thousands of tasks asks after every task).
    committed: usize,
    launched: usize,
}

impl StageSchedule {
    /// A stage of `partitions` tasks, each tried at most `max_attempts` times.
    pub fn new(partitions: u32, max_attempts: u32) -> Self {
        let max_attempts = max_attempts.max(1);
        let parts = (0..partitions)
            .map(|_| Partition { attempts: 0, budget: max_attempts, running: 0, committed: None, last_error: None })
            .collect();
        Self { partitions: parts, queue: (0..partitions).collect(), max_attempts, committed: 0, launched: 0 }
    }

    /// The next (partition, attempt) to launch, if any is waiting.
    pub fn launch(&mut self) -> Option<(u32, u32)> {
        let p = self.queue.pop_front()?;
        let part = &mut self.partitions[p as usize];
        let attempt = part.attempts;
        if attempt == 0 {
            self.launched += 1;
        }
        part.attempts += 1;
        part.running += 1;
        Some((p, attempt))
    }

    /// Attempt `attempt` of `partition` succeeded with `report`.
    pub fn succeeded(&mut self, partition: u32, attempt: u32, report: TaskReport) -> Outcome {
        let part = &mut self.partitions[partition as usize];
        part.running = part.running.saturating_sub(1);
        if part.committed.is_some() {
            return Outcome::Superseded;
        }
        part.committed = Some((attempt, report));
        self.committed += 1;
        Outcome::Committed
    }

    /// Attempt `attempt` of `partition` failed with `error`; `retryable` says whether another
    /// attempt may succeed.
    pub fn failed(&mut self, partition: u32, _attempt: u32, error: String, retryable: bool) -> Outcome {
        let part = &mut self.partitions[partition as usize];
        part.running = part.running.saturating_sub(1);
        part.last_error = Some(error);
        if part.committed.is_some() {
            return Outcome::Superseded;
        }
        if retryable && part.attempts < part.budget {
            self.queue.push_back(partition);
            return Outcome::Retry;
        }
        if part.running > 0 {
            // Another attempt is still running; it may yet succeed.
            return Outcome::Superseded;
        }
        Outcome::GiveUp { attempts: part.attempts }
    }

    /// Forgets `partition`'s committed output (it was lost with its host) and queues it again,
    /// with a fresh allowance of attempts. Returns whether it had one.
    pub fn reopen(&mut self, partition: u32) -> bool {
        let max = self.max_attempts;
        let Some(part) = self.partitions.get_mut(partition as usize) else { return false };
        if part.committed.take().is_none() {
            return false;
        }
        part.budget = part.attempts + max;
        self.committed -= 1;
        self.queue.push_back(partition);
        true
    }

    /// The committed report of `partition`, if it has one.
    pub fn report(&self, partition: u32) -> Option<&TaskReport> {
        self.partitions.get(partition as usize)?.committed.as_ref().map(|(_, r)| r)
    }

    /// Whether `partition` has a committed attempt.
    pub fn is_committed(&self, partition: u32) -> bool {
        self.partitions.get(partition as usize).is_some_and(|p| p.committed.is_some())
    }

    /// Whether an attempt waits to be launched.
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether every partition has been launched and none waits for a retry.
    pub fn all_launched(&self) -> bool {
        self.queue.is_empty() && self.launched == self.partitions.len()
    }

    /// The last error of `partition`.
    pub fn last_error(&self, partition: u32) -> Option<&str> {
        self.partitions.get(partition as usize)?.last_error.as_deref()
    }

    /// Whether every partition has a committed attempt.
    pub fn is_done(&self) -> bool {
        self.committed == self.partitions.len()
    }

    /// Partitions committed so far.
    pub fn committed(&self) -> usize {
        self.committed
    }

    /// Attempts launched in all.
    pub fn attempts(&self) -> u32 {
        self.partitions.iter().map(|p| p.attempts).sum()
    }

    /// The committed (attempt, report) of each partition, in partition order, once done.
    pub fn into_committed(self) -> Option<Vec<(u32, TaskReport)>> {
        self.partitions.into_iter().map(|p| p.committed).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(pid: u32) -> TaskReport {
        TaskReport { pid, ..TaskReport::default() }
    }

    #[test]
    fn every_partition_is_launched_once_and_committed() {
        let mut s = StageSchedule::new(3, 2);
        let launched: Vec<_> = std::iter::from_fn(|| s.launch()).collect();
        assert_eq!(launched, vec![(0, 0), (1, 0), (2, 0)]);
        for (p, a) in launched {
            assert_eq!(s.succeeded(p, a, report(p)), Outcome::Committed);
        }
        assert!(s.is_done());
        let committed = s.into_committed().unwrap();
        assert_eq!(committed.iter().map(|(a, r)| (*a, r.pid)).collect::<Vec<_>>(), vec![(0, 0), (0, 1), (0, 2)]);
    }

    #[test]
    fn a_retry_is_queued_and_the_first_success_wins() {
        let mut s = StageSchedule::new(1, 3);
        let (p, a0) = s.launch().unwrap();
        assert_eq!(s.failed(p, a0, "worker lost".into(), true), Outcome::Retry);
        let (_, a1) = s.launch().unwrap();
        assert_eq!(a1, 1);
        // The retry succeeds; then the first attempt, presumed lost, reports success too.
        assert_eq!(s.succeeded(p, a1, report(11)), Outcome::Committed);
        assert_eq!(s.succeeded(p, a0, report(10)), Outcome::Superseded);
        let committed = s.into_committed().unwrap();
        assert_eq!((committed[0].0, committed[0].1.pid), (1, 11), "the first committed attempt wins");
    }

    #[test]
    fn attempts_run_out() {
        let mut s = StageSchedule::new(1, 2);
        let (p, a) = s.launch().unwrap();
        assert_eq!(s.failed(p, a, "lost".into(), true), Outcome::Retry);
        let (p, a) = s.launch().unwrap();
        assert_eq!(s.failed(p, a, "lost again".into(), true), Outcome::GiveUp { attempts: 2 });
        assert_eq!(s.last_error(0), Some("lost again"));
        assert!(s.launch().is_none());
    }

    #[test]
    fn a_lost_output_is_run_again_under_a_new_attempt_with_a_fresh_allowance() {
        let mut s = StageSchedule::new(2, 2);
        for _ in 0..2 {
            let (p, a) = s.launch().unwrap();
            assert_eq!(s.succeeded(p, a, report(p)), Outcome::Committed);
        }
        assert!(s.is_done());
        assert!(s.reopen(1));
        assert!(!s.reopen(1), "only a committed output can be lost");
        assert!(!s.is_done() && s.is_committed(0) && !s.is_committed(1));
        let (p, a) = s.launch().unwrap();
        assert_eq!((p, a), (1, 1), "a new attempt number: its objects never mix with the lost ones");
        assert_eq!(s.failed(p, a, "lost".into(), true), Outcome::Retry, "the allowance starts again");
        let (p, a) = s.launch().unwrap();
        assert_eq!(s.succeeded(p, a, report(21)), Outcome::Committed);
        assert!(s.is_done());
        assert_eq!(s.attempts(), 4);
    }

    #[test]
    fn an_error_that_cannot_be_retried_gives_up_at_once() {
        let mut s = StageSchedule::new(2, 5);
        let (p, a) = s.launch().unwrap();
        assert_eq!(s.failed(p, a, "malformed input".into(), false), Outcome::GiveUp { attempts: 1 });
    }
}
