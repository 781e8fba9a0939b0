//! Where a cluster run's inputs and outputs live: in the run's directory, which emulated hosts
//! share with the driver (one machine's file system), or — for hosts deployed over ssh, which
//! share nothing else — under `bench/` in the cluster's object store, where the driver uploads
//! the inputs it made and deletes the outputs after checking them.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

/// The place.
#[derive(Clone, Debug)]
pub enum Shared {
    /// The run's directory.
    Local,
    /// The cluster's object store (its URL, settings in the query).
    Objects(String),
}

impl Shared {
    /// The name tasks reach `key` by: a path relative to the run's directory, or a URL.
    pub fn name(&self, key: &str) -> String {
        match self {
            Shared::Local => key.to_string(),
            Shared::Objects(objects) => at(objects, &format!("bench/{key}")),
        }
    }

    /// Makes `file` (in `dir`) reachable as `key`: uploads it to the object store (in 64 MiB
    /// parts), or leaves it where it is.
    pub async fn publish(&self, dir: &Path, file: &str, key: &str) -> anyhow::Result<String> {
        if let Shared::Objects(objects) = self {
            let (store, prefix) = baton_connectors::open_url(objects)?;
            let location = under(&prefix, key);
            let mut input = std::fs::File::open(dir.join(file)).with_context(|| format!("cannot open {file}"))?;
            let upload = store.put_multipart(&location).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, 64 << 20);
            let mut buf = vec![0u8; 8 << 20];
            loop {
                let n = input.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                writer.wait_for_capacity(4).await?;
                writer.write(&buf[..n]);
            }
            writer.finish().await.with_context(|| format!("cannot upload {file} to {}", self.name(key)))?;
        }
        Ok(self.name(key))
    }

    /// Whether `key` was published already (a data set made once per scale factor).
    pub async fn has(&self, dir: &Path, key: &str) -> bool {
        match self {
            Shared::Local => dir.join(key).exists(),
            Shared::Objects(objects) => match baton_connectors::open_url(objects) {
                Ok((store, prefix)) => store.head(&under(&prefix, key)).await.is_ok(),
                Err(_) => false,
            },
        }
    }

    /// Removes what the run wrote at `key` (a file, a directory, or every object under the
    /// prefix).
    pub async fn remove(&self, dir: &Path, key: &str) -> anyhow::Result<()> {
        match self {
            Shared::Local => {
                let path = dir.join(key);
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else if path.exists() {
                    std::fs::remove_file(&path)?;
                }
            }
            Shared::Objects(objects) => {
                let (store, prefix) = baton_connectors::open_url(objects)?;
                let mut listed = store.list(Some(&under(&prefix, key)));
                while let Some(meta) = futures::StreamExt::next(&mut listed).await {
                    store.delete(&meta?.location).await?;
                }
            }
        }
        Ok(())
    }
}

/// `bench/KEY` under `prefix`, a segment per `/` of the key.
fn under(prefix: &object_store::path::Path, key: &str) -> object_store::path::Path {
    key.split('/').filter(|s| !s.is_empty()).fold(prefix.clone().join("bench"), |p, segment| p.join(segment))
}

/// The URL of `key` under the store at `objects` (its settings stay in the query).
pub fn at(objects: &str, key: &str) -> String {
    match objects.split_once('?') {
        Some((base, query)) => format!("{}/{key}?{query}", base.trim_end_matches('/')),
        None => format!("{}/{key}", objects.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_go_under_bench_with_the_settings_kept() {
        assert_eq!(Shared::Local.name("in.bin"), "in.bin");
        let s = Shared::Objects("s3://b/p?aws_endpoint=http://x:9000".into());
        assert_eq!(s.name("in.bin"), "s3://b/p/bench/in.bin?aws_endpoint=http://x:9000");
        assert_eq!(at("s3://b/", "k"), "s3://b/k");
    }

    #[tokio::test]
    async fn published_files_are_there_and_removed_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        std::fs::write(dir.path().join("in.bin"), vec![7u8; 100_000]).unwrap();
        let shared = Shared::Objects(format!("file://{}", store.display()));
        let name = shared.publish(dir.path(), "in.bin", "data/in.bin").await.unwrap();
        assert!(name.ends_with("/bench/data/in.bin"), "{name}");
        assert_eq!(std::fs::read(store.join("bench/data/in.bin")).unwrap().len(), 100_000);
        assert!(shared.has(dir.path(), "data/in.bin").await);
        shared.remove(dir.path(), "data").await.unwrap();
        assert!(!shared.has(dir.path(), "data/in.bin").await);
    }
}
