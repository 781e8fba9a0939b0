//! Writing a mapper's partitions and reading a reducer's, in the planner's layouts.
//!
//! - [`Layout::AllToAll`]: one Arrow object per (mapper, reducer) — M×R writes, M×R reads.
//! - [`Layout::Coalesced`]: one object per mapper holding every reducer's partition as a
//!   complete Arrow object, back to back; the writer reports each partition's byte range, and a
//!   reducer reads only its range — M writes, M×R ranged reads.
//!
//! The writer returns a [`MapOutput`] (rows, bytes and, when coalesced, the byte range of every
//! partition) that the driver hands to the reducers; empty partitions are neither written nor
//! read. Not yet here: spilling a writer's buffers past a memory budget, and k-level merges.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use baton_fabric::arrow::{encode_batches, read_batches};
use baton_fabric::{DataPath, EdgeId, JobId, ObjectKey};
use baton_planner::Topology;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::partition::{Partitioner, split};

/// The consumer field of a coalesced object's key: it belongs to every reducer.
pub const COALESCED: u32 = u32::MAX;

/// How a mapper's partitions are laid out in objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One object per (mapper, reducer).
    AllToAll,
    /// One object per mapper, read by byte ranges.
    Coalesced,
}

impl TryFrom<Topology> for Layout {
    type Error = Error;

    fn try_from(t: Topology) -> Result<Self> {
        match t {
            Topology::AllToAll | Topology::PerTask => Ok(Layout::AllToAll),
            Topology::Coalesced => Ok(Layout::Coalesced),
            other => Err(Error::Unsupported { what: format!("the {} topology", other.name()) }),
        }
    }
}

/// Where an edge's objects go.
#[derive(Clone, Debug)]
pub struct Target {
    /// The path that carries them (the plan chose it).
    pub path: Arc<dyn DataPath>,
    /// The job they belong to.
    pub job: JobId,
    /// The edge.
    pub edge: EdgeId,
}

impl Target {
    fn key(&self, producer: u32, consumer: u32) -> ObjectKey {
        ObjectKey::new(self.job, self.edge, producer, consumer)
    }
}

/// What one partition of a mapper's output holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Rows.
    pub rows: u64,
    /// Bytes of its Arrow object.
    pub bytes: u64,
    /// Its byte range within the mapper's coalesced object.
    pub range: Option<Range<u64>>,
}

/// What a mapper wrote: the driver passes it to the reducers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapOutput {
    /// The mapper (producer partition).
    pub mapper: u32,
    /// The layout it wrote in.
    pub layout: Layout,
    /// One entry per reducer.
    pub partitions: Vec<PartitionInfo>,
}

/// Splits a mapper's batches by partition and writes them out.
#[derive(Debug)]
pub struct ShuffleWriter {
    target: Target,
    mapper: u32,
    schema: SchemaRef,
    partitioner: Box<dyn Partitioner>,
    layout: Layout,
    buffers: Vec<Vec<RecordBatch>>,
}

impl ShuffleWriter {
    /// A writer for `mapper`'s output of batches of `schema`.
    pub fn new(
        target: Target,
        mapper: u32,
        schema: SchemaRef,
        partitioner: Box<dyn Partitioner>,
        layout: Layout,
    ) -> Self {
        let buffers = vec![Vec::new(); partitioner.partitions() as usize];
        Self { target, mapper, schema, partitioner, layout, buffers }
    }

    /// Adds a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        for (p, part) in split(self.partitioner.as_ref(), batch)?.into_iter().enumerate() {
            if part.num_rows() > 0 {
                self.buffers[p].push(part);
            }
        }
        Ok(())
    }

    /// Writes the objects and says what they hold.
    pub async fn finish(self) -> Result<MapOutput> {
        let mut partitions = Vec::with_capacity(self.buffers.len());
        let mut coalesced = Vec::new();
        for (p, batches) in self.buffers.iter().enumerate() {
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
            if rows == 0 {
                partitions.push(PartitionInfo::default());
                continue;
            }
            let object = encode_batches(&self.schema, batches)?;
            let bytes = object.len() as u64;
            match self.layout {
                Layout::AllToAll => {
                    self.target.path.put(&self.target.key(self.mapper, p as u32), object).await?;
                    partitions.push(PartitionInfo { rows, bytes, range: None });
                }
                Layout::Coalesced => {
                    let start = coalesced.len() as u64;
                    coalesced.extend_from_slice(&object);
                    partitions.push(PartitionInfo { rows, bytes, range: Some(start..start + bytes) });
                }
            }
        }
        if self.layout == Layout::Coalesced && !coalesced.is_empty() {
            self.target.path.put(&self.target.key(self.mapper, COALESCED), Bytes::from(coalesced)).await?;
        }
        Ok(MapOutput { mapper: self.mapper, layout: self.layout, partitions })
    }
}

/// Reads one reducer's partition from every mapper.
#[derive(Debug)]
pub struct ShuffleReader {
    target: Target,
    reducer: u32,
}

impl ShuffleReader {
    /// A reader for `reducer`'s partition.
    pub fn new(target: Target, reducer: u32) -> Self {
        Self { target, reducer }
    }

    /// The reducer's batches from one mapper (none if its partition is empty): read one mapper
    /// at a time to hold only that much.
    pub async fn read_mapper(&self, output: &MapOutput) -> Result<Vec<RecordBatch>> {
        let Some(info) = output.partitions.get(self.reducer as usize) else {
            return Err(Error::Unsupported {
                what: format!("reducer {} of a mapper with {} partitions", self.reducer, output.partitions.len()),
            });
        };
        if info.rows == 0 {
            return Ok(Vec::new());
        }
        let (key, object) = match (output.layout, &info.range) {
            (Layout::AllToAll, _) => {
                let key = self.target.key(output.mapper, self.reducer);
                (key, self.target.path.get(&key).await?)
            }
            (Layout::Coalesced, Some(range)) => {
                let key = self.target.key(output.mapper, COALESCED);
                (key, self.target.path.get_range(&key, range.clone()).await?)
            }
            (Layout::Coalesced, None) => {
                return Err(Error::Unsupported { what: "a coalesced partition without its byte range".into() });
            }
        };
        let (_, batches) = read_batches(key, object)?;
        Ok(batches)
    }

    /// The reducer's batches from every mapper, in mapper order.
    pub async fn read_all(&self, outputs: &[MapOutput]) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for output in outputs {
            out.extend(self.read_mapper(output).await?);
        }
        Ok(out)
    }
}
