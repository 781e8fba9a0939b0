//! Reused memory for large objects.
//!
//! An object received from the network or encoded in memory needs one contiguous buffer. glibc
//! takes allocations of more than 32 MiB straight from the kernel and gives them back on free,
//! so every such buffer used to start as untouched pages: one page fault and one zeroed page per
//! 4 KiB written. On loopback that cost more than moving the bytes (a 64 MiB get ran at about
//! half the rate it reaches with warm memory).
//!
//! A [`Pool`] keeps released buffers of at least [`MIN_POOLED`] bytes, up to a limit in bytes,
//! and hands them out again. A buffer goes back when the last [`Bytes`] made from it is dropped,
//! so an object stored in a tier, or held by the record batches decoded from it, keeps its
//! buffer for as long as it lives. The process-wide pool is [`Pool::global`]; it holds at most
//! [`DEFAULT_LIMIT`] bytes unless [`Pool::set_limit`] says otherwise (a worker with a memory
//! limit gives the pool a share of it).
//!
//! Reused buffers are not zeroed: a buffer is handed out empty (`len() == 0`) and only the
//! bytes written into it can be read.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

/// Buffers smaller than this are left to the allocator, which reuses them well by itself.
pub const MIN_POOLED: usize = 4 << 20;

/// How many bytes of idle buffers the process-wide pool keeps by default.
pub const DEFAULT_LIMIT: usize = 256 << 20;

/// A bounded store of released buffers.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Idle>,
    limit: AtomicUsize,
}

#[derive(Debug)]
struct Idle {
    /// Oldest first.
    buffers: VecDeque<Vec<u8>>,
    bytes: usize,
}

static GLOBAL: Pool = Pool::new(DEFAULT_LIMIT);

impl Pool {
    /// An empty pool that keeps at most `limit` bytes of idle buffers.
    pub const fn new(limit: usize) -> Self {
        Self { idle: Mutex::new(Idle { buffers: VecDeque::new(), bytes: 0 }), limit: AtomicUsize::new(limit) }
    }

    /// The process-wide pool.
    pub fn global() -> &'static Pool {
        &GLOBAL
    }

    /// Changes how many bytes of idle buffers the pool keeps, releasing the oldest beyond it.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        let mut idle = self.lock();
        idle.shrink_to(limit);
    }

    /// Keeps idle buffers to an eighth of `memory` (a process's memory limit or budget that
    /// the pool's bytes would otherwise eat into unseen), and never more than [`DEFAULT_LIMIT`].
    pub fn set_share_of(&self, memory: u64) {
        self.set_limit((memory / 8).min(DEFAULT_LIMIT as u64) as usize);
    }

    /// Bytes of idle buffers held now.
    pub fn idle_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// An empty buffer with room for at least `capacity` bytes: an idle one if one fits (no
    /// more than a quarter larger than asked), else a new allocation.
    pub fn take(&'static self, capacity: usize) -> PooledVec {
        let reused = if capacity >= MIN_POOLED { self.lock().take_fitting(capacity) } else { None };
        let vec = reused.unwrap_or_else(|| Vec::with_capacity(capacity));
        PooledVec { vec, pool: self }
    }

    fn give_back(&self, mut vec: Vec<u8>) {
        let limit = self.limit.load(Ordering::Relaxed);
        if vec.capacity() < MIN_POOLED || vec.capacity() > limit {
            return;
        }
        vec.clear();
        let mut idle = self.lock();
        idle.shrink_to(limit - vec.capacity());
        idle.bytes += vec.capacity();
        idle.buffers.push_back(vec);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Idle {
    /// The smallest idle buffer of at least `capacity` bytes and at most a quarter more.
    fn take_fitting(&mut self, capacity: usize) -> Option<Vec<u8>> {
        let most = capacity.saturating_add(capacity / 4);
        let (at, _) = self
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| (capacity..=most).contains(&b.capacity()))
            .min_by_key(|(_, b)| b.capacity())?;
        let vec = self.buffers.remove(at)?;
        self.bytes -= vec.capacity();
        Some(vec)
    }

    /// Releases the oldest buffers until at most `bytes` are held.
    fn shrink_to(&mut self, bytes: usize) {
        while self.bytes > bytes {
            let Some(oldest) = self.buffers.pop_front() else { break };
            self.bytes -= oldest.capacity();
        }
    }
}

/// A buffer on loan from a [`Pool`]: write into [`PooledVec::vec`], then [`PooledVec::freeze`]
/// it. It returns to the pool when dropped, or when the last `Bytes` made from it is.
#[derive(Debug)]
pub struct PooledVec {
    vec: Vec<u8>,
    pool: &'static Pool,
}

impl PooledVec {
    /// The bytes written so far, and room for more.
    pub fn vec(&mut self) -> &mut Vec<u8> {
        &mut self.vec
    }

    /// The written bytes, shared; the buffer goes back to the pool when the last clone drops.
    pub fn freeze(mut self) -> Bytes {
        if self.vec.capacity() < MIN_POOLED {
            return Bytes::from(std::mem::take(&mut self.vec));
        }
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledVec {
    fn as_ref(&self) -> &[u8] {
        &self.vec
    }
}

impl Drop for PooledVec {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.vec));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(limit: usize) -> &'static Pool {
        Box::leak(Box::new(Pool::new(limit)))
    }

    #[test]
    fn a_released_buffer_is_handed_out_again_and_empty() {
        let pool = pool(64 << 20);
        let mut first = pool.take(MIN_POOLED);
        first.vec().extend_from_slice(b"secret");
        let address = first.vec().as_ptr();
        let bytes = first.freeze();
        let slice = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(pool.idle_bytes(), 0, "a live slice keeps the buffer");
        assert_eq!(&slice[..], b"ec");
        drop(slice);
        assert!(pool.idle_bytes() >= MIN_POOLED);

        let mut second = pool.take(MIN_POOLED);
        assert_eq!(second.vec().as_ptr(), address);
        assert!(second.vec().is_empty());
        assert_eq!(pool.idle_bytes(), 0);
    }

    #[test]
    fn buffers_that_would_waste_memory_are_not_reused() {
        let pool = pool(1 << 30);
        drop(pool.take(64 << 20));
        let held = pool.idle_bytes();
        assert!(held >= 64 << 20);
        let mut small = pool.take(8 << 20);
        assert!(small.vec().capacity() < 64 << 20, "an 8 MiB ask must not get the 64 MiB buffer");
        assert_eq!(pool.idle_bytes(), held);
        drop(small);
        let tiny = pool.take(1024);
        drop(tiny);
        assert_eq!(pool.idle_bytes(), held + (8 << 20), "buffers under MIN_POOLED are not kept");
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_limit_and_releases_the_oldest() {
        let pool = pool(20 << 20);
        let a = pool.take(8 << 20);
        let b = pool.take(8 << 20);
        let c = pool.take(8 << 20);
        let newest = [b.vec.as_ptr(), c.vec.as_ptr()];
        drop((a, b, c));
        assert_eq!(pool.idle_bytes(), 16 << 20, "the oldest was released to stay within 20 MiB");
        let (d, e) = (pool.take(8 << 20), pool.take(8 << 20));
        assert_eq!(pool.idle_bytes(), 0);
        let mut taken = [d.vec.as_ptr(), e.vec.as_ptr()];
        taken.sort();
        let mut newest = newest;
        newest.sort();
        assert_eq!(taken, newest, "the two newest buffers were the ones kept");
        drop((d, e));
        pool.set_limit(0);
        assert_eq!(pool.idle_bytes(), 0);
        drop(pool.take(8 << 20));
        assert_eq!(pool.idle_bytes(), 0, "a zero limit keeps nothing");
    }

    #[test]
    fn a_memory_limit_leaves_the_pool_an_eighth_of_it() {
        let pool = pool(DEFAULT_LIMIT);
        pool.set_share_of(64 << 20);
        drop((pool.take(8 << 20), pool.take(8 << 20)));
        assert_eq!(pool.idle_bytes(), 8 << 20);
        pool.set_share_of(u64::MAX);
        drop((pool.take(200 << 20), pool.take(200 << 20)));
        assert!(pool.idle_bytes() <= DEFAULT_LIMIT, "never more than the default");
        assert!(pool.idle_bytes() >= 200 << 20);
    }
}
