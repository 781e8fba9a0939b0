//! Storage tiers of a node: memory (heap or shared memory) and flash (files on local disk).
//!
//! Each tier is a budgeted store of whole objects with a synchronous core, which the node's
//! [`TieredStore`](crate::store::TieredStore) composes, and a [`DataPath`](crate::DataPath)
//! implementation so that each runs the conformance suite on its own.

pub mod flash;
pub mod memory;

pub use flash::FlashTier;
pub use memory::MemoryTier;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

use crate::buffers::Pool;
use crate::error::{Error, Result};

/// `len` bytes from `offset` of a committed object's `file` (`committed` bytes long), read
/// with `pread` into a buffer of the process's [`Pool`].
///
/// The node never maps a file that a producer wrote: the producer could still truncate it,
/// and touching a mapping past a file's end raises SIGBUS, which would take down every job the
/// node holds. A file found shorter than committed is an error for that object alone.
fn read_piece(file: &File, path: &Path, offset: u64, len: usize, committed: u64) -> Result<Bytes> {
    let mut pooled = Pool::global().take(len);
    let out = pooled.vec();
    // Reused buffers come back empty; zeroing warm memory costs far less than the page
    // faults of a fresh allocation.
    out.resize(len, 0);
    let mut at = 0;
    while at < len {
        match file.read_at(&mut out[at..], offset + at as u64) {
            Ok(0) => {
                return Err(Error::Protocol {
                    endpoint: "producer".into(),
                    reason: format!(
                        "{} holds {} bytes, fewer than the {committed} committed: it was changed after commit",
                        path.display(),
                        offset + at as u64,
                    ),
                });
            }
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    Ok(pooled.freeze())
}
