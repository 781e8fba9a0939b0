//! The RDMA map path as a [`DataPath`] (feature `rdma`): objects are written into a node over
//! QUIC, as on the direct path, and read one-sidedly — the node maps an object, the reader's
//! queue pair READs it out of the node's memory, and the node unmaps it ([`crate::rdma`]).
//! Everything but reading (writes, deletes, listings, ending a job) is the direct path's.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::ids::{JobId, KeyPrefix, ObjectKey};
use crate::path::direct::{DirectPath, RdmaReader};
use crate::path::{DataPath, ObjectMeta};
use crate::rdma::{Device, RemoteRegion};

/// A node reached over QUIC whose objects are read by RDMA.
#[derive(Debug)]
pub struct RdmaMapPath {
    node: DirectPath,
    reader: RdmaReader,
}

impl RdmaMapPath {
    /// Reads `node`'s objects of `job` through a queue pair of `device` connected to it (`node`
    /// holds the job's token).
    pub async fn new(node: DirectPath, job: JobId, device: &Arc<Device>) -> Result<Self> {
        let reader = node.rdma_reader(job, device).await?;
        Ok(Self { node, reader })
    }

    /// The node, as the direct path reaches it.
    pub fn node(&self) -> &DirectPath {
        &self.node
    }
}

/// The part `range` of a mapped `region`, or an error naming the object when the range is not
/// inside it.
fn sub_region(key: &ObjectKey, region: RemoteRegion, range: &Range<u64>) -> Result<RemoteRegion> {
    if range.start > range.end || range.end > region.len {
        return Err(Error::BadRange { key: *key, start: range.start, end: range.end, len: region.len });
    }
    Ok(RemoteRegion { addr: region.addr + range.start, len: range.end - range.start, rkey: region.rkey })
}

#[async_trait]
impl DataPath for RdmaMapPath {
    async fn put(&self, key: &ObjectKey, payload: Bytes) -> Result<()> {
        self.node.put(key, payload).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.node.get_rdma(&self.reader, key).await
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes> {
        let region = self.node.map(key).await?;
        let read = match sub_region(key, region, &range) {
            Ok(part) if part.len == 0 => Ok(Bytes::new()),
            Ok(part) => self.reader.read_region(part).await,
            Err(e) => Err(e),
        };
        let unmapped = self.node.unmap(key).await;
        let bytes = read?;
        unmapped?;
        Ok(bytes)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.node.delete(key).await
    }

    async fn list(&self, prefix: &KeyPrefix) -> Result<Vec<ObjectMeta>> {
        self.node.list(prefix).await
    }

    async fn purge_job(&self, job: JobId) -> Result<u64> {
        self.node.purge_job(job).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::EdgeId;

    #[test]
    fn a_range_is_read_from_inside_the_mapped_region_only() {
        let key = ObjectKey::new(JobId(1), EdgeId(1), 0, 0);
        let region = RemoteRegion { addr: 4096, len: 100, rkey: 7 };
        assert_eq!(sub_region(&key, region, &(10..30)).ok(), Some(RemoteRegion { addr: 4106, len: 20, rkey: 7 }));
        assert_eq!(sub_region(&key, region, &(100..100)).ok().map(|r| r.len), Some(0));
        #[allow(clippy::reversed_empty_ranges)] // a reversed range is what is being refused
        let reversed = 50..40;
        for bad in [90..101, reversed] {
            assert!(matches!(sub_region(&key, region, &bad), Err(Error::BadRange { len: 100, .. })), "{bad:?}");
        }
    }
}
