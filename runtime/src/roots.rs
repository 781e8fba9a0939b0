//! The places a worker's tasks may read and write: directories and object-store prefixes it
//! was started with (`baton worker --root`), and its scratch directory. A task that names
//! anything else — an input, an output, an object store, a node's socket — fails before it
//! touches it, with an error naming what it named.
//!
//! A directory root holds what lies under it once symbolic links are followed (so a link in it
//! cannot lead out). A URL root (`s3://bucket/prefix`) holds the keys under that prefix with
//! the same settings: a URL's query (`?aws_endpoint=…`) says where the store is, so a location
//! whose query differs from the root's is another store, and outside.

use std::path::{Component, Path, PathBuf};

/// A worker's roots.
#[derive(Clone, Debug)]
pub struct Roots {
    dirs: Vec<PathBuf>,
    urls: Vec<(String, String)>,
}

/// A location's local path, if it is one (`/a/b`, `file:///a/b`).
fn local(location: &str) -> Option<PathBuf> {
    match location.strip_prefix("file://") {
        Some(path) => Some(PathBuf::from(path)),
        None if !location.contains("://") => Some(PathBuf::from(location)),
        None => None,
    }
}

/// `path` absolute, with `.` and `..` resolved as names (not following links).
fn lexical(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// `path` with the links of its longest existing ancestor followed: where it really is.
fn real(path: &Path) -> Option<PathBuf> {
    let path = lexical(path)?;
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return Some(out);
        }
        rest.push(existing.file_name()?.to_os_string());
        existing = existing.parent()?;
    }
}

/// A URL split at its query, the path part without a trailing slash.
fn split(url: &str) -> (String, String) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    (base.trim_end_matches('/').to_string(), query.to_string())
}

impl Roots {
    /// Roots from `roots` (directories, `file://` and object-store URLs), with `scratch`.
    pub fn new(roots: &[String], scratch: &Path) -> std::result::Result<Self, String> {
        let mut dirs = vec![real(scratch).ok_or_else(|| format!("scratch {} is not a path", scratch.display()))?];
        let mut urls = Vec::new();
        for root in roots {
            match local(root) {
                Some(path) => dirs.push(real(&path).ok_or_else(|| format!("root {root:?} is not a path"))?),
                None => {
                    let (base, query) = split(root);
                    if base.split("://").nth(1).is_none_or(str::is_empty) {
                        return Err(format!("root {root:?} names no bucket"));
                    }
                    urls.push((base, query));
                }
            }
        }
        Ok(Self { dirs, urls })
    }

    /// Whether `location` (a path or URL) is under a root; the refusal names it.
    pub fn check(&self, location: &str) -> std::result::Result<(), String> {
        let inside = match local(location) {
            Some(path) => real(&path).is_some_and(|p| self.dirs.iter().any(|d| p.starts_with(d))),
            None => {
                let (base, query) = split(location);
                self.urls.iter().any(|(root, root_query)| {
                    *root_query == query
                        && (base == *root || base.strip_prefix(root.as_str()).is_some_and(|r| r.starts_with('/')))
                })
            }
        };
        if inside {
            Ok(())
        } else {
            Err(format!("{location} is outside the roots this worker may read and write ({})", self.describe()))
        }
    }

    /// The roots, for messages (URLs without their queries: those may carry settings).
    pub fn describe(&self) -> String {
        let dirs = self.dirs.iter().map(|d| d.display().to_string());
        dirs.chain(self.urls.iter().map(|(u, _)| u.clone())).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_under_a_root_passes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        std::fs::create_dir_all(d.join("data/in")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(d.join("scratch")).unwrap_or_else(|e| panic!("{e}"));
        let roots = Roots::new(
            &[d.join("data").display().to_string(), "s3://bucket/jobs?aws_region=eu-west-1".into()],
            &d.join("scratch"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ok = |l: &str| roots.check(l).is_ok();
        assert!(ok(&d.join("data/in/a.dat").display().to_string()));
        assert!(ok(&format!("file://{}", d.join("data/out/new").display())));
        assert!(ok(&d.join("scratch/spill-1").display().to_string()));
        assert!(ok("s3://bucket/jobs/7/part-0?aws_region=eu-west-1"));
        assert!(!ok("/etc/passwd"));
        assert!(!ok(&d.join("data/../elsewhere").display().to_string()));
        assert!(!ok(&d.join("database").display().to_string()), "a sibling that shares the prefix's letters");
        assert!(!ok("s3://bucket/jobs2/x?aws_region=eu-west-1"));
        assert!(!ok("s3://bucket/jobs/x?aws_region=eu-west-1&aws_endpoint=http://elsewhere"));
        assert!(!ok("s3://other/jobs/x"));
        // A link inside a root that leads out does not make its target inside.
        std::os::unix::fs::symlink("/etc", d.join("data/etc")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!ok(&d.join("data/etc/passwd").display().to_string()));
        let refused = roots.check("/etc/passwd").unwrap_err();
        assert!(refused.contains("/etc/passwd") && !refused.contains("aws_region"), "{refused}");
    }
}
