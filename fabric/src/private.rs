//! Files and directories private to this user, and directories Baton owns.
//!
//! Everything Baton makes on a shared host is its user's alone: directories 0700, files 0600,
//! created exclusively and never through a symlink. A directory a user names (a flash
//! directory, the socket's directory) is used as given if it is a real directory of this user;
//! Baton keeps its own data in an [`OwnedDir`] inside it, `baton-<pid>-<n>`, which it made itself
//! and is the only thing it ever removes there. A process that dies without cleaning up leaves
//! its owned directory behind; [`sweep`] removes those of dead processes when the next store
//! opens in the same place.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// This process's effective user.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates a new file at `path`, 0600, failing if anything (a file, a symlink) is there.
pub fn create_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("create", path, e))
}

/// Creates a new directory at `path`, 0700, failing if anything is there.
pub fn create_dir(path: &Path) -> Result<()> {
    DirBuilder::new().mode(0o700).create(path).map_err(|e| Error::io("create directory", path, e))
}

/// Creates `path` and any missing parents, each 0700 (for directories inside an owned one).
pub fn create_dirs(path: &Path) -> Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(|e| Error::io("create directory", path, e))
}

/// Makes sure `dir` is a directory this user may keep private data in: creates it (and missing
/// parents) 0700 when absent; refuses a symlink, a non-directory, or another user's directory.
pub fn ensure_dir(dir: &Path, field: &str) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::io("create directory", dir, e))
        }
        Err(e) => Err(Error::io("inspect", dir, e)),
        Ok(meta) => {
            let refuse = |reason: String| Err(Error::Config { field: field.into(), reason });
            if meta.file_type().is_symlink() {
                return refuse(format!("{} is a symlink; name the directory itself", dir.display()));
            }
            if !meta.is_dir() {
                return refuse(format!("{} exists and is not a directory", dir.display()));
            }
            let (owner, me) = (meta.uid(), euid());
            // A sticky world-writable directory (/tmp, /dev/shm) is fine: what Baton keeps there
            // sits in an owned directory of its own, and nobody else can remove or replace that.
            let shared_sticky = meta.mode() & 0o1000 != 0;
            if owner != me && !shared_sticky {
                return refuse(format!("{} belongs to user {owner}, not to this user ({me})", dir.display()));
            }
            Ok(())
        }
    }
}

/// A directory `baton-<pid>-<n>` that this process made, 0700, inside a parent directory; it is
/// removed with everything in it when dropped.
#[derive(Debug)]
pub struct OwnedDir {
    path: PathBuf,
}

const PREFIX: &str = "baton-";

impl OwnedDir {
    /// Makes a fresh owned directory in `parent` (created 0700 if missing), after sweeping the
    /// owned directories of dead processes there. `field` names the setting `parent` came from.
    pub fn create(parent: &Path, field: &str) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        ensure_dir(parent, field)?;
        sweep(parent);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("{PREFIX}{}-{n}", std::process::id()));
        // Not recursive: an existing directory (a leftover, or one planted by someone else) is
        // refused rather than adopted.
        DirBuilder::new().mode(0o700).create(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Config {
                    field: field.into(),
                    reason: format!("{} already exists; Baton uses only directories it made itself", path.display()),
                }
            } else {
                Error::io("create directory", &path, e)
            }
        })?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The pid in an owned directory's name, if `name` is one.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok().filter(|&p: &i32| p > 0)
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes, from `parent`, the owned directories of this user's processes that are gone; returns
/// how many. Anything else there — other users' directories, live processes', files — is left.
pub fn sweep(parent: &Path) -> usize {
    let Ok(entries) = fs::read_dir(parent) else { return 0 };
    let me = euid();
    let mut swept = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(owner_pid) else { continue };
        // symlink_metadata: a symlink named like an owned directory is not one.
        let Ok(meta) = fs::symlink_metadata(entry.path()) else { continue };
        if !meta.is_dir() || meta.uid() != me || pid == std::process::id() as i32 || alive(pid) {
            continue;
        }
        match fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                swept += 1;
                tracing::info!(dir = %entry.path().display(), "removed what a dead Baton process left");
            }
            Err(e) => tracing::warn!(dir = %entry.path().display(), "cannot remove a dead process's directory: {e}"),
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn owned_dirs_are_private_and_go_when_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let owned = OwnedDir::create(parent.path(), "dir").unwrap();
        let mode = fs::metadata(owned.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let file = owned.path().join("f");
        drop(create_file(&file).unwrap());
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let path = owned.path().to_path_buf();
        drop(owned);
        assert!(!path.exists());
    }

    #[test]
    fn create_file_refuses_symlinks_and_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"precious").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_file(&link).is_err());
        assert!(create_file(&target).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn sweep_removes_only_dead_processes_owned_dirs() {
        let parent = tempfile::tempdir().unwrap();
        // A pid that cannot be alive (above the kernel's pid_max limit of 2^22).
        let dead = parent.path().join("baton-4999999-0");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("seg-0"), b"x").unwrap();
        let live = parent.path().join(format!("baton-{}-99", std::process::id()));
        fs::create_dir(&live).unwrap();
        let unrelated = parent.path().join("baton-data");
        fs::create_dir(&unrelated).unwrap();
        let file = parent.path().join("baton-4999998-0");
        fs::write(&file, b"not a directory").unwrap();
        assert_eq!(sweep(parent.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists() && unrelated.exists() && file.exists());
    }

    #[test]
    fn ensure_dir_refuses_symlinks_and_files() {
        let parent = tempfile::tempdir().unwrap();
        let real = parent.path().join("real");
        ensure_dir(&real, "dir").unwrap();
        assert_eq!(fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o700);
        let link = parent.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = ensure_dir(&link, "flash_dir").unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
        let file = parent.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(ensure_dir(&file, "flash_dir").unwrap_err().to_string().contains("not a directory"));
    }
}
