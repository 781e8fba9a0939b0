//! Requests counted where they happen: [`Counted`] wraps any [`DataPath`] and counts each
//! request it makes — puts, gets (whole and ranges), misses (a get of a key not there yet, as a
//! consumer polling for a committed output makes), lists, deletes and failures — with the bytes
//! that moved. Summaries report these counts, not counts inferred from partition numbers.

use std::ops::{AddAssign, Range};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{JobId, KeyPrefix, ObjectKey};
use crate::path::{DataPath, ObjectMeta, ObjectWriter};

/// Requests made on a path, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    /// Objects written.
    pub puts: u64,
    /// Objects (or ranges of them) read.
    pub gets: u64,
    /// Reads of keys that were not there (polls for an output not yet committed).
    pub misses: u64,
    /// Listings.
    pub lists: u64,
    /// Deletions.
    pub deletes: u64,
    /// Requests that failed otherwise.
    pub errors: u64,
    /// Bytes written.
    pub bytes_put: u64,
    /// Bytes read.
    pub bytes_got: u64,
    /// Microseconds from the start of the first request to the end of the last: how long the
    /// transfer took its task. Adding counts keeps the longest.
    #[serde(default)]
    pub span_us: u64,
    /// Microseconds during which at least one request was in flight: the time the transfer
    /// kept its task busy, the waits between requests (a consumer's pauses between polls for
    /// an output not yet there) left out. Adding counts keeps the longest.
    #[serde(default)]
    pub busy_us: u64,
}

impl Requests {
    /// Every request, of any kind.
    pub fn total(&self) -> u64 {
        self.puts + self.gets + self.misses + self.lists + self.deletes + self.errors
    }
}

impl AddAssign for Requests {
    fn add_assign(&mut self, o: Self) {
        self.puts += o.puts;
        self.gets += o.gets;
        self.misses += o.misses;
        self.lists += o.lists;
        self.deletes += o.deletes;
        self.errors += o.errors;
        self.bytes_put += o.bytes_put;
        self.bytes_got += o.bytes_got;
        self.span_us = self.span_us.max(o.span_us);
        self.busy_us = self.busy_us.max(o.busy_us);
    }
}

/// [`Requests`] counted by many tasks at once.
#[derive(Debug)]
pub struct RequestCounter {
    /// When the counter was made: spans are measured from it.
    origin: std::time::Instant,
    /// Microseconds after `origin` of the first request's start (`u64::MAX`: none yet) and of
    /// the last request's end.
    first_us: AtomicU64,
    last_us: AtomicU64,
    busy: std::sync::Mutex<Busy>,
    puts: AtomicU64,
    gets: AtomicU64,
    misses: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    errors: AtomicU64,
    bytes_put: AtomicU64,
    bytes_got: AtomicU64,
}

impl Default for RequestCounter {
    fn default() -> Self {
        Self {
            origin: std::time::Instant::now(),
            first_us: AtomicU64::new(u64::MAX),
            last_us: AtomicU64::new(0),
            busy: std::sync::Mutex::default(),
            puts: AtomicU64::default(),
            gets: AtomicU64::default(),
            misses: AtomicU64::default(),
            lists: AtomicU64::default(),
            deletes: AtomicU64::default(),
            errors: AtomicU64::default(),
            bytes_put: AtomicU64::default(),
            bytes_got: AtomicU64::default(),
        }
    }
}

/// Requests in flight, and the time some were.
#[derive(Debug, Default)]
struct Busy {
    in_flight: u32,
    /// When the requests now in flight began to be (µs after `origin`).
    since_us: u64,
    /// Time with requests in flight before that.
    busy_us: u64,
}

impl RequestCounter {
    fn busy(&self) -> std::sync::MutexGuard<'_, Busy> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Requests {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Requests {
            puts: load(&self.puts),
            gets: load(&self.gets),
            misses: load(&self.misses),
            lists: load(&self.lists),
            deletes: load(&self.deletes),
            errors: load(&self.errors),
            bytes_put: load(&self.bytes_put),
            bytes_got: load(&self.bytes_got),
            span_us: load(&self.last_us).saturating_sub(load(&self.first_us)),
            busy_us: {
                let busy = self.busy();
                let open = if busy.in_flight > 0 { self.now_us().saturating_sub(busy.since_us) } else { 0 };
                busy.busy_us + open
            },
        }
    }

    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Marks a request's start.
    fn start(&self) {
        let now = self.now_us();
        self.first_us.fetch_min(now, Ordering::Relaxed);
        let mut busy = self.busy();
        if busy.in_flight == 0 {
            busy.since_us = now;
        }
        busy.in_flight += 1;
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a request's outcome: `ok` on success, as a miss if the key was not there, as an
    /// error otherwise.
    fn outcome<T>(&self, result: &Result<T>, ok: &AtomicU64) {
        let now = self.now_us();
        self.last_us.fetch_max(now, Ordering::Relaxed);
        {
            let mut busy = self.busy();
            busy.in_flight = busy.in_flight.saturating_sub(1);
            if busy.in_flight == 0 {
                busy.busy_us += now.saturating_sub(busy.since_us);
            }
        }
        match result {
            Ok(_) => Self::add(ok, 1),
            Err(Error::NotFound { .. }) => Self::add(&self.misses, 1),
            Err(_) => Self::add(&self.errors, 1),
        }
    }
}

/// A path whose requests are counted: into a [`RequestCounter`] (a task's, per edge) and into
/// the process's metrics under the path's name ([`crate::metrics`]).
#[derive(Debug, Clone)]
pub struct Counted {
    inner: Arc<dyn DataPath>,
    counter: Arc<RequestCounter>,
    name: &'static str,
}

impl Counted {
    /// `inner`, counting into `counter` and the metrics as path `name` (`vm-local`, `direct`).
    pub fn new(inner: Arc<dyn DataPath>, counter: Arc<RequestCounter>, name: &'static str) -> Self {
        Self { inner, counter, name }
    }

    /// Counts `result` of operation `op`, begun at `start`.
    fn observe<T>(&self, op: &'static str, result: &Result<T>, ok: &AtomicU64, start: std::time::Instant) {
        self.counter.outcome(result, ok);
        let outcome = match result {
            Ok(_) => "ok",
            Err(Error::NotFound { .. }) => "miss",
            Err(_) => "error",
        };
        crate::metrics::request(self.name, op, outcome, start.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl DataPath for Counted {
    async fn put(&self, key: &ObjectKey, payload: Bytes) -> Result<()> {
        self.counter.start();
        let start = std::time::Instant::now();
        let len = payload.len() as u64;
        let result = self.inner.put(key, payload).await;
        self.observe("put", &result, &self.counter.puts, start);
        if result.is_ok() {
            RequestCounter::add(&self.counter.bytes_put, len);
            crate::metrics::bytes(self.name, "put", len);
        }
        result
    }

    async fn put_with(&self, key: &ObjectKey, size_hint: u64, write: ObjectWriter) -> Result<u64> {
        self.counter.start();
        let start = std::time::Instant::now();
        let result = self.inner.put_with(key, size_hint, write).await;
        self.observe("put", &result, &self.counter.puts, start);
        if let Ok(len) = result {
            RequestCounter::add(&self.counter.bytes_put, len);
            crate::metrics::bytes(self.name, "put", len);
        }
        result
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.counter.start();
        let start = std::time::Instant::now();
        let result = self.inner.get(key).await;
        self.observe("get", &result, &self.counter.gets, start);
        if let Ok(bytes) = &result {
            RequestCounter::add(&self.counter.bytes_got, bytes.len() as u64);
            crate::metrics::bytes(self.name, "get", bytes.len() as u64);
        }
        result
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        self.counter.start();
        let start = std::time::Instant::now();
        let result = self.inner.get_range(key, range).await;
        self.observe("get", &result, &self.counter.gets, start);
        if let Ok(bytes) = &result {
            RequestCounter::add(&self.counter.bytes_got, bytes.len() as u64);
            crate::metrics::bytes(self.name, "get", bytes.len() as u64);
        }
        result
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.counter.start();
        let start = std::time::Instant::now();
        let result = self.inner.delete(key).await;
        self.observe("delete", &result, &self.counter.deletes, start);
        result
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>> {
        self.counter.start();
        let start = std::time::Instant::now();
        let result = self.inner.list(prefix).await;
        self.observe("list", &result, &self.counter.lists, start);
        result
    }

    async fn purge_job(&self, job: JobId) -> Result<u64> {
        self.counter.start();
        let start = std::time::Instant::now();
        let result = self.inner.purge_job(job).await;
        self.observe("delete", &result, &self.counter.deletes, start);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::EdgeId;
    use crate::tier::memory::MemoryTier;

    #[tokio::test]
    async fn every_request_is_counted_by_its_outcome() {
        let inner: Arc<dyn DataPath> = Arc::new(MemoryTier::new(1 << 20));
        let counter = Arc::new(RequestCounter::default());
        let path = Counted::new(inner, counter.clone(), "memory");
        let key = ObjectKey::new(JobId(1), EdgeId(1), 0, 0);
        assert!(path.get(&key).await.is_err());
        path.put(&key, Bytes::from_static(b"hello")).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(path.put(&key, Bytes::from_static(b"again")).await.is_err(), "a second put of a key fails");
        assert_eq!(path.get_range(&key, 1..3).await.ok(), Some(Bytes::from_static(b"el")));
        assert!(path.get_range(&key, 1..30).await.is_err());
        path.list(&KeyPrefix::job(JobId(1))).await.unwrap_or_else(|e| panic!("{e}"));
        path.delete(&key).await.unwrap_or_else(|e| panic!("{e}"));
        let got = counter.snapshot();
        assert!(got.span_us > 0 && got.span_us < 10_000_000, "{got:?}");
        let want = Requests {
            puts: 1,
            gets: 1,
            misses: 1,
            lists: 1,
            deletes: 1,
            errors: 2,
            bytes_put: 5,
            bytes_got: 2,
            span_us: got.span_us,
            busy_us: got.busy_us,
        };
        assert_eq!(got, want);
        assert_eq!(got.total(), 7);
        // A pause between requests is in the span, not in the busy time.
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        assert!(path.get(&key).await.is_err());
        let later = counter.snapshot();
        assert!(later.span_us >= got.span_us + 60_000, "{later:?}");
        assert!(later.busy_us <= later.span_us - 50_000 && later.busy_us >= got.busy_us, "{later:?}");
    }
}
