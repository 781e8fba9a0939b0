//! The fabric's error type: one enum whose variants a caller can act on.

use std::io;
use std::path::{Path, PathBuf};

use crate::ids::{JobId, ObjectKey};

/// Which tier of storage an error or a location refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Tier {
    /// Memory of a node (heap or shared memory).
    Memory,
    /// Files on a node's local disk.
    Flash,
    /// An object store (S3, a file system, ...).
    ObjectStore,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Memory => "memory",
            Tier::Flash => "flash",
            Tier::ObjectStore => "object store",
        })
    }
}

/// How stored or received bytes failed their checks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// A frame header did not start with the frame magic.
    #[error("bad frame magic {found:#010x}")]
    BadMagic {
        /// The four bytes found instead.
        found: u32,
    },
    /// A frame declared a format version this build does not read.
    #[error("unsupported frame version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// A frame declared a payload kind this build does not know.
    #[error("unknown payload kind {kind}")]
    UnknownKind {
        /// The kind byte found.
        kind: u8,
    },
    /// Fewer bytes were present than a header or length promised.
    #[error("truncated: needed {needed} bytes, {available} present")]
    Truncated {
        /// Bytes the header or length promised.
        needed: u64,
        /// Bytes actually present.
        available: u64,
    },
    /// The payload's CRC32C did not match the header's.
    #[error("checksum mismatch: header says {expected:#010x}, payload has {actual:#010x}")]
    Checksum {
        /// CRC32C recorded in the header.
        expected: u32,
        /// CRC32C of the bytes present.
        actual: u32,
    },
    /// The object ended without its `End` frame.
    #[error("object ends without its end frame (cut short?)")]
    MissingEnd,
    /// The `End` frame's count disagrees with the frames read.
    #[error("end frame does not count the {frames} frames before it")]
    BadEnd {
        /// Frames read before the `End` frame.
        frames: u64,
    },
    /// Bytes follow the `End` frame.
    #[error("bytes after the end frame")]
    TrailingBytes,
    /// A frame's payload kind was not the one the reader asked for.
    #[error("expected a {expected} payload, found {found}")]
    WrongKind {
        /// The kind the reader wanted.
        expected: &'static str,
        /// The kind found.
        found: &'static str,
    },
    /// A peer found the bytes corrupt and said so.
    #[error("{message}")]
    Remote {
        /// The peer's description.
        message: String,
    },
    /// The payload passed its checksum but is not a valid Arrow IPC stream.
    #[error("invalid Arrow IPC: {message}")]
    Arrow {
        /// Arrow's description of the problem.
        message: String,
    },
}

/// Errors from the fabric.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No object exists at this key.
    #[error("object {key} not found")]
    NotFound {
        /// The key asked for.
        key: ObjectKey,
    },
    /// A byte range reaches past the end of the object (or ends before it starts).
    #[error("bytes {start}..{end} of {key} asked for, but it holds {len}")]
    BadRange {
        /// The object.
        key: ObjectKey,
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The object's length.
        len: u64,
    },
    /// An object already exists at this key; the first committed write wins.
    #[error("object {key} already exists")]
    AlreadyExists {
        /// The key written.
        key: ObjectKey,
    },
    /// The job was never opened here, or it has ended.
    #[error("unknown job {job}: open it first (it may have ended)")]
    UnknownJob {
        /// The job named.
        job: JobId,
    },
    /// The job's lease lapsed; its objects have been or are being deleted.
    #[error("lease of {job} expired; its objects are gone")]
    LeaseExpired {
        /// The job named.
        job: JobId,
    },
    /// The request's token does not grant access to the job.
    #[error("access to {job} refused: {reason}")]
    Unauthorized {
        /// The job asked for.
        job: JobId,
        /// Why.
        reason: String,
    },
    /// Bytes failed their checks; they are never returned.
    #[error("corrupt data in {what} at byte {offset}: {corruption}")]
    Corrupt {
        /// What was being read (an object key, a file, a peer).
        what: String,
        /// Byte offset of the bad frame within the object.
        offset: u64,
        /// What was wrong.
        corruption: Corruption,
    },
    /// A tier cannot hold the bytes asked for.
    #[error("{tier} tier full: needed {needed} bytes, {available} available")]
    NoCapacity {
        /// The tier that is full.
        tier: Tier,
        /// Bytes the operation needed.
        needed: u64,
        /// Bytes the tier had free.
        available: u64,
    },
    /// A file system ran out of space (shared memory, a disk) before Baton's own budget did.
    #[error("no space left in {} ({free} bytes free)", dir.display())]
    NoSpace {
        /// The directory whose file system is full.
        dir: PathBuf,
        /// Bytes still free there.
        free: u64,
    },
    /// An operation did not finish in time.
    #[error("{what} timed out after {seconds} s")]
    Timeout {
        /// What was being done.
        what: String,
        /// How long was waited.
        seconds: f64,
    },
    /// A node answered, but TLS refused it or this client: not a node of this cluster, or its
    /// certificate is not for the address it was reached at, or has expired.
    #[error("{endpoint} is not trusted: {reason} (is it a node of this cluster, with a certificate for this address?)")]
    Untrusted {
        /// Who.
        endpoint: String,
        /// What TLS said.
        reason: String,
    },
    /// A node or service could not be reached.
    #[error("cannot reach {endpoint}: {source}")]
    Unreachable {
        /// Where we tried to connect.
        endpoint: String,
        /// Why it failed.
        source: io::Error,
    },
    /// A peer went away in the middle of an exchange.
    #[error("peer {endpoint} went away: {reason}")]
    PeerGone {
        /// The peer.
        endpoint: String,
        /// What was observed.
        reason: String,
    },
    /// A peer sent bytes that are not a valid message of the protocol.
    #[error("protocol error from {endpoint}: {reason}")]
    Protocol {
        /// The peer.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// An object key in text form could not be parsed.
    #[error("bad object key {key:?}: {reason}")]
    BadKey {
        /// The text given.
        key: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A configuration value is invalid.
    #[error("bad configuration: {field}: {reason}")]
    Config {
        /// The setting at fault.
        field: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (`create`, `read`, `map`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// An object store reported an error.
    #[error("object store: {source}")]
    ObjectStore {
        /// The object store's error.
        #[from]
        source: object_store::Error,
    },
    /// Arrow could not encode the batches given.
    #[error("arrow: {source}")]
    Arrow {
        /// Arrow's error.
        source: arrow_schema::ArrowError,
    },
    /// A node reported an error that has no more specific variant.
    #[error("node error: {message}")]
    Remote {
        /// The node's message.
        message: String,
    },
}

/// The fabric's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `op` on `path`, turning a full disk into [`Error::NoCapacity`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            let dir = if path.is_dir() { path } else { path.parent().map(Path::to_path_buf).unwrap_or(path) };
            let free = free_bytes(&dir);
            return Error::NoSpace { dir, free };
        }
        Error::Io { op, path, source }
    }

    /// A [`Error::Corrupt`] for `what` at `offset`.
    pub fn corrupt(what: impl std::fmt::Display, offset: u64, corruption: Corruption) -> Self {
        Error::Corrupt { what: what.to_string(), offset, corruption }
    }
}

/// Bytes free to this user on the file system holding `dir` (0 if it cannot be asked).
pub fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return 0 };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `stat` a writable statvfs; the call only fills it.
    if unsafe { libc::statvfs(c.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    // The fields' widths differ between platforms (u32 on some 32-bit targets).
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    blocks.saturating_mul(size)
}

/// What a caught panic said (its `&str` or `String` payload), for decoders that turn a
/// dependency's panic on damaged bytes into an error.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no message")
}
