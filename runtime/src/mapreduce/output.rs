//! Where a job writes its result: `part-r-NNNNN` files in a directory or object-store prefix.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

/// The URL of an output location given as a local directory or a URL.
pub fn output_url(location: &str) -> Result<String> {
    if location.contains("://") {
        return Ok(location.to_string());
    }
    std::fs::create_dir_all(location).map_err(|e| Error::io("create", location, e))?;
    let abs = std::path::absolute(location).map_err(|e| Error::io("resolve", location, e))?;
    Ok(format!("file://{}", abs.display()))
}

/// The name of reducer `partition`'s file.
pub fn part_name(partition: u32) -> String {
    format!("part-r-{partition:05}")
}

/// An output location, opened.
#[derive(Debug)]
pub struct Output {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

impl Output {
    /// Opens the output at `url`.
    pub fn open(url: &str) -> Result<Self> {
        let (store, prefix) = baton_connectors::open_url(url)?;
        Ok(Self { store, prefix })
    }

    /// Writes file `name` (atomically: a retry that writes it again replaces it whole).
    pub async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.store.put(&self.prefix.clone().join(name), bytes.into()).await?;
        Ok(())
    }

    /// The `part-r-*` files, sorted by name, with their sizes.
    pub async fn parts(&self) -> Result<Vec<(String, u64)>> {
        let mut parts: Vec<(String, u64)> = self
            .store
            .list(Some(&self.prefix))
            .try_filter_map(|m| async move {
                let name = m.location.filename().unwrap_or_default().to_string();
                Ok(name.starts_with("part-r-").then_some((name, m.size)))
            })
            .try_collect()
            .await?;
        parts.sort();
        Ok(parts)
    }

    /// Reads file `name`.
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        Ok(self.store.get(&self.prefix.clone().join(name)).await?.bytes().await?)
    }

    /// Deletes the `part-r-*` files already there (a rerun into the same place).
    pub async fn clear(&self) -> Result<()> {
        for (name, _) in self.parts().await? {
            self.store.delete(&self.prefix.clone().join(name.as_str())).await?;
        }
        Ok(())
    }
}
