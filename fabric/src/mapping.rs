//! Files mapped into memory and handed out as [`Bytes`] without copying.
//!
//! Objects in a node's shared-memory segments and flash files are immutable once committed, so a
//! read-only mapping is a safe view of them; the mapping lives as long as any `Bytes` slice of it.

use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};

/// How a mapping is made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prefault {
    /// Pages are faulted in on first touch.
    #[default]
    Lazy,
    /// Every page is faulted in when the file is mapped (`MAP_POPULATE`): best when the reader
    /// will touch all of it.
    Populate,
}

struct Mapped {
    /// `None` for an empty file, which cannot be mapped.
    map: Option<Mmap>,
    unlink: Option<PathBuf>,
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(path) = &self.unlink {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Maps `path` read-only. With `unlink_on_drop`, the file is removed when the last `Bytes`
/// slice of the mapping is dropped.
pub fn map_file(path: &Path, prefault: Prefault, unlink_on_drop: bool) -> Result<Bytes> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let unlink = unlink_on_drop.then(|| path.to_path_buf());
    if len == 0 {
        return Ok(Bytes::from_owner(Mapped { map: None, unlink }));
    }
    let mut options = MmapOptions::new();
    if prefault == Prefault::Populate {
        options.populate();
    }
    // SAFETY: the fabric never modifies or truncates a committed object's file; it only unlinks
    // it, which leaves existing mappings valid.
    let map = unsafe { options.map(&file) }.map_err(|e| Error::io("map", path, e))?;
    Ok(Bytes::from_owner(Mapped { map: Some(map), unlink }))
}

/// Whether `bytes` lies within `outer` (used to prove reads did not copy).
pub fn is_within(bytes: &[u8], outer: &[u8]) -> bool {
    let (start, end) = (outer.as_ptr() as usize, outer.as_ptr() as usize + outer.len());
    let p = bytes.as_ptr() as usize;
    p >= start && p + bytes.len() <= end
}
