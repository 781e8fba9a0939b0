//! S3's request rates, enforced (feature `testing`): a token bucket per key prefix and kind of
//! request, refilled at S3's documented rates (3,500 writes and 5,500 reads per second per
//! prefix) and holding one second's worth; a request that finds its bucket empty is answered
//! `503 SlowDown`, as S3 answers it. A prefix is the key up to its last `/` (path-style
//! requests: `/bucket/a/b/key` is in `/bucket/a/b`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Requests per second per prefix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimits {
    /// PUT, POST and DELETE.
    pub writes_per_s: f64,
    /// GET and HEAD (listings included).
    pub reads_per_s: f64,
}

impl RateLimits {
    /// S3's documented rates.
    pub const S3: RateLimits = RateLimits { writes_per_s: 3500.0, reads_per_s: 5500.0 };
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets, and counts of what was let through and what was refused.
#[derive(Debug)]
pub struct Limiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(String, bool), Bucket>>,
    admitted: AtomicU64,
    refused: AtomicU64,
}

impl Limiter {
    /// Buckets filled at `limits`.
    pub fn new(limits: RateLimits) -> Self {
        Limiter { limits, buckets: Mutex::new(HashMap::new()), admitted: AtomicU64::new(0), refused: AtomicU64::new(0) }
    }

    /// Whether a request of `method` to `path` may go on now (and takes its token if so).
    pub fn admit(&self, method: &str, path: &str) -> bool {
        let write = matches!(method, "PUT" | "POST" | "DELETE");
        let rate = if write { self.limits.writes_per_s } else { self.limits.reads_per_s };
        let prefix = path.rsplit_once('/').map_or(path, |(p, _)| p).to_string();
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry((prefix, write)).or_insert(Bucket { tokens: rate, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            self.admitted.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Requests let through.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Requests answered `503 SlowDown`.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// S3's answer to a request past the rate.
pub fn slow_down(path: &str) -> hyper::Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><Resource>{}</Resource></Error>",
        path.replace('&', "&amp;").replace('<', "&lt;")
    );
    let mut response = hyper::Response::new(s3s::Body::from(body));
    *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/xml"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_prefix_and_kind_has_its_own_second_of_requests() {
        let l = Limiter::new(RateLimits { writes_per_s: 10.0, reads_per_s: 20.0 });
        let writes = (0..15).filter(|_| l.admit("PUT", "/b/job/edge1/k")).count();
        assert_eq!(writes, 10, "a second's worth, then refused");
        assert!(l.admit("PUT", "/b/job/edge2/k"), "another prefix has its own bucket");
        assert!(l.admit("GET", "/b/job/edge1/k"), "reads have their own");
        assert_eq!((l.admitted(), l.refused()), (12, 5));
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert!(l.admit("PUT", "/b/job/edge1/k"), "refilled at the rate");
    }
}
