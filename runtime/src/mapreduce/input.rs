//! A job's input files: resolving names (local paths or URLs), checking them before any task
//! runs, splitting them among mappers, and reading byte ranges of them in tasks.

use std::ops::Range;
use std::path::Path;

use baton_fabric::buffers::Pool;
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One input file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The name the user gave (for messages).
    pub name: String,
    /// The object store holding it (`file:///dir`, `s3://bucket`).
    pub store: String,
    /// Its path within that store.
    pub object: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Source {
    /// Where it is, as one path or URL (its store's location joined with its path; the
    /// store's settings, a URL's query, kept at the end).
    pub fn location(&self) -> String {
        let (store, query) = self.store.split_once('?').map_or((self.store.as_str(), ""), |(s, q)| (s, q));
        let joined = format!("{}/{}", store.trim_end_matches('/'), self.object.trim_start_matches('/'));
        if query.is_empty() { joined } else { format!("{joined}?{query}") }
    }
}

/// Asks `ctx` whether its task may read every one of `sources`.
pub fn allowed(ctx: &crate::operator::TaskContext, sources: &[Source]) -> crate::error::Result<()> {
    sources.iter().try_for_each(|s| ctx.allow(&s.location()))
}

/// A byte range of one source, read by one mapper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Index into the job's sources.
    pub source: usize,
    /// The bytes.
    pub range: Range<u64>,
}

/// Whether a file in an input directory is left out: names starting with `.` or `_` (Hadoop's
/// convention: `_SUCCESS`, `_temporary`), so another job's output reads as its parts alone.
fn hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// Resolves `names` — local files, local directories (their files, sorted, but for hidden ones), or `file://` and
/// `s3://` URLs of objects — and checks that each exists. A missing file fails here, naming it.
pub async fn resolve(names: &[String]) -> Result<Vec<Source>> {
    if names.is_empty() {
        return Err(Error::Input { file: "(none)".into(), reason: "no input files given".into() });
    }
    let mut sources = Vec::new();
    for name in names {
        if name.contains("://") {
            sources.push(resolve_url(name).await?);
            continue;
        }
        let path = Path::new(name);
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Input { file: name.clone(), reason: format!("cannot open: {e}") })?;
        if meta.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| Error::Input { file: name.clone(), reason: format!("cannot list: {e}") })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| hidden(&n.to_string_lossy())))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(Error::Input { file: name.clone(), reason: "the directory has no files".into() });
            }
            for f in files {
                sources.push(local(&f)?);
            }
        } else {
            sources.push(local(path)?);
        }
    }
    Ok(sources)
}

fn local(path: &Path) -> Result<Source> {
    let name = path.display().to_string();
    let abs = std::path::absolute(path).map_err(|e| Error::Input { file: name.clone(), reason: e.to_string() })?;
    let meta = std::fs::metadata(&abs).map_err(|e| Error::Input { file: name.clone(), reason: e.to_string() })?;
    let (Some(dir), Some(file)) = (abs.parent(), abs.file_name()) else {
        return Err(Error::Input { file: name, reason: "not a file".into() });
    };
    Ok(Source {
        name,
        store: format!("file://{}", dir.display()),
        object: file.to_string_lossy().into_owned(),
        size: meta.len(),
    })
}

async fn resolve_url(url: &str) -> Result<Source> {
    // The store's settings (`?aws_endpoint=…`) belong to the store, not to the object's name;
    // messages show the object without them.
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let bad = |reason: String| Error::Input { file: base.to_string(), reason };
    let (scheme, rest) = base.split_once("://").ok_or_else(|| bad("not a URL".into()))?;
    let (store, object) = match scheme {
        "file" => {
            let path = Path::new(rest);
            return local(path).map(|s| Source { name: base.to_string(), ..s });
        }
        _ => match rest.split_once('/') {
            Some((bucket, key)) if !key.is_empty() => {
                let store = format!("{scheme}://{bucket}");
                (query.map_or_else(|| store.clone(), |q| format!("{store}?{q}")), key.to_string())
            }
            _ => return Err(bad("expected <scheme>://<bucket>/<key>".into())),
        },
    };
    let (s, prefix) = baton_connectors::open_url(&store)?;
    let location = join(&prefix, &object);
    let meta = s.head(&location).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => bad("no such object".into()),
        other => bad(other.to_string()),
    })?;
    Ok(Source { name: base.to_string(), store, object, size: meta.size })
}

/// Reads `range` of a local file into a pooled buffer (fewer bytes if the file is shorter).
fn read_local(file: &Path, range: Range<u64>) -> std::io::Result<Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let len = range.end.saturating_sub(range.start);
    let mut f = std::fs::File::open(file)?;
    f.seek(SeekFrom::Start(range.start))?;
    let mut buf = Pool::global().take(usize::try_from(len).unwrap_or(usize::MAX));
    f.take(len).read_to_end(buf.vec())?;
    Ok(buf.freeze())
}

fn join(prefix: &ObjectPath, object: &str) -> ObjectPath {
    let mut path = prefix.clone();
    for part in object.split('/').filter(|p| !p.is_empty()) {
        path = path.join(part);
    }
    path
}

/// Splits the sources' bytes among `mappers`, in units of `unit` bytes (100 for sort
/// records, 1 for text), as evenly as possible: mapper m gets units [N·m/M, N·(m+1)/M) of the
/// sources laid end to end.
pub fn split(sources: &[Source], mappers: u32, unit: u64) -> Vec<Vec<Piece>> {
    let total: u64 = sources.iter().map(|s| s.size / unit).sum();
    let m = u64::from(mappers.max(1));
    (0..m)
        .map(|i| {
            let (lo, hi) = (total * i / m, total * (i + 1) / m);
            let mut pieces = Vec::new();
            let mut base = 0;
            for (s, source) in sources.iter().enumerate() {
                let units = source.size / unit;
                let (a, b) = (lo.max(base), hi.min(base + units));
                if a < b {
                    pieces.push(Piece { source: s, range: (a - base) * unit..(b - base) * unit });
                }
                base += units;
            }
            pieces
        })
        .collect()
}

/// Opened sources, for reading ranges in a task.
///
/// Ranges of local files are read into buffers from the fabric's pool, which a mapper reuses
/// chunk after chunk; an object store's reader would give each chunk fresh memory, whose first
/// touch costs more than the copy on a VM that hands freed pages back to its host.
#[derive(Debug)]
pub struct Reader {
    stores: Vec<(std::sync::Arc<dyn ObjectStore>, ObjectPath)>,
    /// Per source, the file's path when it is local.
    local: Vec<Option<std::path::PathBuf>>,
}

impl Reader {
    /// Opens the stores of `sources`.
    pub fn open(sources: &[Source]) -> Result<Self> {
        let stores = sources
            .iter()
            .map(|s| {
                let (store, prefix) = baton_connectors::open_url(&s.store)?;
                Ok((store, join(&prefix, &s.object)))
            })
            .collect::<Result<_>>()?;
        let local = sources.iter().map(|s| baton_connectors::local_dir(&s.store).map(|d| d.join(&s.object))).collect();
        Ok(Self { stores, local })
    }

    /// Bytes `range` of source `index`; a short read names the file.
    pub async fn read(&self, sources: &[Source], index: usize, range: Range<u64>) -> Result<Bytes> {
        let (Some(source), Some((store, path))) = (sources.get(index), self.stores.get(index)) else {
            return Err(Error::BadParams { op: "input".into(), reason: format!("no input file {index}") });
        };
        let bytes = match self.local.get(index).cloned().flatten() {
            Some(file) => {
                let range = range.clone();
                tokio::task::spawn_blocking(move || read_local(&file, range))
                    .await
                    .map_err(|e| Error::Input { file: source.name.clone(), reason: e.to_string() })?
                    .map_err(|e| Error::Input { file: source.name.clone(), reason: format!("cannot read: {e}") })?
            }
            None => store
                .get_range(path, range.clone())
                .await
                .map_err(|cause| Error::Source { file: source.name.clone(), cause })?,
        };
        if bytes.len() as u64 != range.end - range.start {
            return Err(Error::Input {
                file: source.name.clone(),
                reason: format!(
                    "expected bytes {}..{} but read {} (did the file change?)",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            });
        }
        Ok(bytes)
    }

    /// Reads bytes at each of `ranges` of source `index` (samples).
    pub async fn read_ranges(&self, index: usize, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let Some((store, path)) = self.stores.get(index) else {
            return Err(Error::BadParams { op: "input".into(), reason: format!("no input file {index}") });
        };
        Ok(store.get_ranges(path, ranges).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(size: u64) -> Source {
        Source { name: "x".into(), store: "memory://".into(), object: "x".into(), size }
    }

    #[test]
    fn splits_cover_every_unit_once_in_order() {
        let sources = [source(1000), source(250), source(0), source(1750)];
        let splits = split(&sources, 4, 100);
        let total: u64 = splits.iter().flatten().map(|p| p.range.end - p.range.start).sum();
        assert_eq!(total, 2900, "the 50-byte tail of source 1 is not a whole record and is left out");
        assert!(splits.iter().flatten().all(|p| p.range.start % 100 == 0 && p.range.end % 100 == 0));
        assert_eq!(splits[0], vec![Piece { source: 0, range: 0..700 }]);
        assert_eq!(
            splits[1],
            vec![
                Piece { source: 0, range: 700..1000 },
                Piece { source: 1, range: 0..200 },
                Piece { source: 3, range: 0..200 }
            ]
        );
    }
}
