//! Writing a mapper's partitions and reading a reducer's, in the planner's layouts.
//!
//! - [`Layout::AllToAll`]: one Arrow object per (mapper, reducer) — M×R writes, M×R reads.
//! - [`Layout::Coalesced`]: one object per mapper holding every reducer's partition as a
//!   complete Arrow object, back to back; the writer reports each partition's byte range, and a
//!   reducer reads only its range — M writes, M×R ranged reads.
//!
//! The writer returns a [`MapOutput`] (rows, bytes and, when coalesced, the byte range of every
//! partition) that the driver hands to the reducers; empty partitions are neither written nor
//! read. A writer given a memory budget spills its buffered partitions to a local file when
//! they outgrow it; a partition is then several Arrow objects back to back, which the reader
//! splits apart. K-level exchanges are rounds of coalesced exchange ([`crate::klevel`]).

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use arrow_select::coalesce::BatchCoalescer;
use baton_fabric::arrow::{ArrowFrameWriter, BatchAssembler, append_batches, encoded_len_estimate, read_batches};
use baton_fabric::buffers::Pool;
use baton_fabric::frame::split_objects;
use baton_fabric::path::ObjectWriter;
use baton_fabric::{DataPath, EdgeId, JobId, ObjectKey};
use baton_planner::Topology;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::partition::{Partitioner, split};

/// The consumer field of a coalesced object's key: it belongs to every reducer.
pub const COALESCED: u32 = u32::MAX;

/// The consumer field of the key under which a driver publishes a producer's committed
/// [`MapOutput`] (as JSON), for consumers that started before the producer ended.
pub const COMMITTED: u32 = u32::MAX - 1;

/// How a mapper's partitions are laid out in objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    fn key(&self, producer: u32, attempt: u32, consumer: u32) -> ObjectKey {
        ObjectKey::new(self.job, self.edge, producer, consumer).with_attempt(attempt)
    }
}

/// What one partition of a mapper's output holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    /// Rows.
    pub rows: u64,
    /// Bytes of its Arrow object.
    pub bytes: u64,
    /// Its byte range within the mapper's coalesced object.
    pub range: Option<Range<u64>>,
}

/// What a mapper wrote: the driver passes it to the reducers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapOutput {
    /// The mapper (producer partition).
    pub mapper: u32,
    /// The mapper's attempt whose objects these are.
    pub attempt: u32,
    /// Bytes the writer spilled to its local file on the way (0 if it stayed within budget).
    pub spilled_bytes: u64,
    /// The layout it wrote in.
    pub layout: Layout,
    /// One entry per reducer, from reducer `first` on.
    pub partitions: Vec<PartitionInfo>,
    /// The reducer `partitions[0]` is for: 0 for a whole output, the reader's own partition
    /// for one trimmed with [`MapOutput::only`].
    #[serde(default)]
    pub first: u32,
}

impl MapOutput {
    /// What reducer `partition` needs of this output: its own entry alone. A task gets its
    /// inputs trimmed so, so that R tasks do not each carry R entries per mapper.
    pub fn only(&self, partition: u32) -> MapOutput {
        let info = self.partition(partition).cloned();
        MapOutput {
            mapper: self.mapper,
            attempt: self.attempt,
            spilled_bytes: self.spilled_bytes,
            layout: self.layout,
            partitions: info.into_iter().collect(),
            first: partition,
        }
    }

    /// Reducer `partition`'s entry, if this output holds it.
    pub fn partition(&self, partition: u32) -> Option<&PartitionInfo> {
        self.partitions.get(partition.checked_sub(self.first)? as usize)
    }
}

/// Splits a mapper's batches by partition and writes them out.
#[derive(Debug)]
pub struct ShuffleWriter {
    target: Target,
    mapper: u32,
    attempt: u32,
    schema: SchemaRef,
    partitioner: Box<dyn Partitioner>,
    layout: Layout,
    /// Per partition, rows gathered into batches of [`batch_rows`] (compacting string views, so a
    /// partition never drags along the buffers of the batches its rows were split from).
    coalescers: Vec<BatchCoalescer>,
    /// Per partition, its full batches.
    buffers: Vec<Vec<RecordBatch>>,
    /// Bytes of the full batches.
    buffered: usize,
    budget: Option<(usize, PathBuf)>,
    spill: Option<Spill>,
}

/// A writer's spill file: runs of complete Arrow objects, per partition.
#[derive(Debug)]
struct Spill {
    file: File,
    len: u64,
    /// For each partition, (offset, length, rows) of its runs in the file.
    runs: Vec<Vec<(u64, u64, u64)>>,
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
        let partitions = partitioner.partitions() as usize;
        let rows = batch_rows(partitions);
        // Small pieces are gathered into batches of `rows`; a piece at least that big is already
        // one and passes through uncopied — unless it may hold views, which point into the
        // buffers of the whole batch it was cut from until the coalescer compacts them.
        let bypass = schema.fields().iter().all(|f| !may_hold_views(f.data_type())).then_some(rows);
        let coalescers = (0..partitions)
            .map(|_| BatchCoalescer::new(schema.clone(), rows).with_biggest_coalesce_batch_size(bypass))
            .collect();
        let buffers = vec![Vec::new(); partitions];
        Self {
            target,
            mapper,
            attempt: 0,
            schema,
            partitioner,
            layout,
            coalescers,
            buffers,
            buffered: 0,
            budget: None,
            spill: None,
        }
    }

    /// Writes as attempt `attempt` of the mapper: its objects get keys of their own, so a
    /// retry never collides with an earlier attempt's objects (the driver picks the winner).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Keeps at most `bytes` of partitioned batches in memory; beyond that they are spilled to
    /// an unnamed file in `dir` (the function's local disk), which disappears with the writer.
    pub fn with_memory_budget(mut self, bytes: usize, dir: impl Into<PathBuf>) -> Self {
        self.budget = Some((bytes, dir.into()));
        self
    }

    /// Adds a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        for (p, part) in split(self.partitioner.as_ref(), batch)?.into_iter().enumerate() {
            if part.num_rows() > 0 {
                self.coalescers[p].push_batch(part)?;
                self.take_completed(p);
            }
        }
        if let Some((bytes, _)) = &self.budget {
            let pending: usize = self.coalescers.iter().map(BatchCoalescer::size).sum();
            if self.buffered + pending > *bytes {
                // File I/O: off the async threads (writers are driven from async tasks).
                baton_fabric::blocking::off_async(|| self.spill_buffers())?;
            }
        }
        Ok(())
    }

    /// Moves partition `p`'s full batches out of its coalescer.
    fn take_completed(&mut self, p: usize) {
        while let Some(batch) = self.coalescers[p].next_completed_batch() {
            self.buffered += batch.get_array_memory_size();
            self.buffers[p].push(batch);
        }
    }

    /// Ends every partition's partial batch.
    fn flush_coalescers(&mut self) -> Result<()> {
        for p in 0..self.coalescers.len() {
            self.coalescers[p].finish_buffered_batch()?;
            self.take_completed(p);
        }
        Ok(())
    }

    fn spill_buffers(&mut self) -> Result<()> {
        self.flush_coalescers()?;
        let Some((_, dir)) = &self.budget else { return Ok(()) };
        if self.spill.is_none() {
            let file = tempfile::tempfile_in(dir).map_err(|e| spill_error(dir, e))?;
            self.spill = Some(Spill { file, len: 0, runs: vec![Vec::new(); self.buffers.len()] });
        }
        let dir = dir.clone();
        let Some(spill) = self.spill.as_mut() else { return Ok(()) };
        for (p, batches) in self.buffers.iter_mut().enumerate() {
            if batches.is_empty() {
                continue;
            }
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
            // Encoded straight into the file, a batch at a time: spilling needs no room for
            // an encoded copy of what it spills.
            let mut file = &spill.file;
            file.seek(SeekFrom::Start(spill.len)).map_err(|e| spill_error(&dir, e))?;
            let mut writer = ArrowFrameWriter::try_new(file, &self.schema)?;
            for batch in batches.iter() {
                writer.write(batch)?;
            }
            let (_, len) = writer.finish()?;
            spill.runs[p].push((spill.len, len, rows));
            spill.len += len;
            batches.clear();
        }
        self.buffered = 0;
        Ok(())
    }

    /// Appends partition `p`'s spilled runs and buffered batches to `out`, as Arrow objects back
    /// to back; returns its rows.
    fn append_partition(&self, p: usize, out: &mut Vec<u8>) -> Result<u64> {
        let mut rows = 0;
        if let (Some(spill), Some((_, dir))) = (&self.spill, &self.budget) {
            for &(offset, len, run_rows) in &spill.runs[p] {
                let start = out.len();
                out.resize(start + len as usize, 0);
                spill.file.read_exact_at(&mut out[start..], offset).map_err(|e| spill_error(dir, e))?;
                rows += run_rows;
            }
        }
        let batches = &self.buffers[p];
        if !batches.is_empty() {
            rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            append_batches(&self.schema, batches, out)?;
        }
        Ok(rows)
    }

    /// About how many bytes partition `p` takes as objects.
    fn partition_len_estimate(&self, p: usize) -> usize {
        let spilled: u64 = self.spill.as_ref().map_or(0, |s| s.runs[p].iter().map(|&(_, len, _)| len).sum());
        spilled as usize + if self.buffers[p].is_empty() { 0 } else { encoded_len_estimate(&self.buffers[p]) }
    }

    /// Writes the objects and says what they hold.
    ///
    /// Each partition is encoded straight into the buffer that is put: its own, or for the
    /// coalesced layout one shared by all, sized once from the partitions' estimates.
    pub async fn finish(mut self) -> Result<MapOutput> {
        self.flush_coalescers()?;
        let parts = self.buffers.len();
        // A writer that spilled spills the rest too, and streams its objects from the file:
        // its peak stays its budget, however big its output.
        if self.spill.is_some() {
            baton_fabric::blocking::off_async(|| self.spill_buffers())?;
        }
        let mut partitions = Vec::with_capacity(parts);
        if let (Some(spill), Some((_, dir))) = (self.spill.take(), &self.budget) {
            let spilled_bytes = spill.len;
            let spill = Arc::new(spill);
            let part = |p: usize| PartitionInfo {
                rows: spill.runs[p].iter().map(|r| r.2).sum(),
                bytes: spill.runs[p].iter().map(|r| r.1).sum(),
                range: None,
            };
            match self.layout {
                Layout::AllToAll => {
                    for p in 0..parts {
                        let info = part(p);
                        if info.rows > 0 {
                            let key = self.target.key(self.mapper, self.attempt, p as u32);
                            let write = copy_runs(spill.clone(), dir.clone(), p..p + 1);
                            self.target.path.put_with(&key, info.bytes, write).await?;
                        }
                        partitions.push(info);
                    }
                }
                Layout::Coalesced => {
                    let mut at = 0;
                    for p in 0..parts {
                        let mut info = part(p);
                        if info.rows > 0 {
                            info.range = Some(at..at + info.bytes);
                            at += info.bytes;
                        }
                        partitions.push(info);
                    }
                    if at > 0 {
                        let key = self.target.key(self.mapper, self.attempt, COALESCED);
                        let written =
                            self.target.path.put_with(&key, at, copy_runs(spill, dir.clone(), 0..parts)).await?;
                        if written != at {
                            return Err(spill_error(
                                dir,
                                std::io::Error::other(format!("wrote {written} of {at} bytes")),
                            ));
                        }
                    }
                }
            }
            return Ok(self.output(partitions, spilled_bytes));
        }
        match self.layout {
            Layout::AllToAll => {
                for p in 0..parts {
                    let mut object = Pool::global().take(self.partition_len_estimate(p));
                    let rows = self.append_partition(p, object.vec())?;
                    if rows == 0 {
                        partitions.push(PartitionInfo::default());
                        continue;
                    }
                    let bytes = object.vec().len() as u64;
                    let key = self.target.key(self.mapper, self.attempt, p as u32);
                    self.target.path.put(&key, object.freeze()).await?;
                    partitions.push(PartitionInfo { rows, bytes, range: None });
                }
            }
            Layout::Coalesced => {
                let estimate = (0..parts).map(|p| self.partition_len_estimate(p)).sum();
                let mut coalesced = Pool::global().take(estimate);
                for p in 0..parts {
                    let start = coalesced.vec().len() as u64;
                    let rows = self.append_partition(p, coalesced.vec())?;
                    let end = coalesced.vec().len() as u64;
                    partitions.push(match rows {
                        0 => PartitionInfo::default(),
                        _ => PartitionInfo { rows, bytes: end - start, range: Some(start..end) },
                    });
                }
                if !coalesced.vec().is_empty() {
                    let key = self.target.key(self.mapper, self.attempt, COALESCED);
                    self.target.path.put(&key, coalesced.freeze()).await?;
                }
            }
        }
        let spilled_bytes = self.spill.as_ref().map_or(0, |s| s.len);
        Ok(self.output(partitions, spilled_bytes))
    }

    /// What this writer wrote: `partitions`, after spilling `spilled_bytes`.
    fn output(&self, partitions: Vec<PartitionInfo>, spilled_bytes: u64) -> MapOutput {
        MapOutput {
            mapper: self.mapper,
            attempt: self.attempt,
            spilled_bytes,
            layout: self.layout,
            partitions,
            first: 0,
        }
    }
}

/// A writer of partitions `parts`' spilled runs, in order, copied from the spill file a
/// piece at a time.
fn copy_runs(spill: Arc<Spill>, dir: PathBuf, parts: Range<usize>) -> ObjectWriter {
    Arc::new(move |sink: &mut dyn Write| {
        let mut piece = vec![0u8; 1 << 20];
        let mut written = 0;
        for runs in &spill.runs[parts.clone()] {
            for &(offset, len, _) in runs {
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(piece.len() as u64) as usize;
                    spill
                        .file
                        .read_exact_at(&mut piece[..n], offset + done)
                        .map_err(|e| baton_fabric::Error::io("read back a spill from", &dir, e))?;
                    sink.write_all(&piece[..n]).map_err(|e| baton_fabric::Error::io("write", &dir, e))?;
                    done += n as u64;
                }
                written += len;
            }
        }
        Ok(written)
    })
}

/// Whether arrays of `data_type` may share buffers with the batch a piece was taken from
/// (string and binary views, or anything nested, to be safe).
fn may_hold_views(data_type: &DataType) -> bool {
    data_type.is_nested() || matches!(data_type, DataType::Utf8View | DataType::BinaryView)
}

/// Rows per batch a writer gathers for each partition: Arrow's usual 8192, fewer when there are
/// many partitions, so that the partial batches of all of them stay small.
fn batch_rows(partitions: usize) -> usize {
    const ROWS: usize = 8192;
    (ROWS * 64 / partitions.max(1)).clamp(256, ROWS)
}

/// Bytes a reader asks for in one request by default: a larger partition is read in ranges of
/// this size (large enough that a partition of a 1 GiB shuffle 8 × 8 is one request, small enough
/// that two in flight stay well inside a function's memory).
pub const READ_PIECE: u64 = 64 << 20;

/// Reads one reducer's partition from every mapper.
#[derive(Debug)]
pub struct ShuffleReader {
    target: Target,
    reducer: u32,
    piece: u64,
}

impl ShuffleReader {
    /// A reader for `reducer`'s partition.
    pub fn new(target: Target, reducer: u32) -> Self {
        Self { target, reducer, piece: READ_PIECE }
    }

    /// The same reader, asking for at most `bytes` in one request (at least 1).
    pub fn with_read_piece(mut self, bytes: u64) -> Self {
        self.piece = bytes.max(1);
        self
    }

    /// The reducer's batches from one mapper (none if its partition is empty): read one mapper
    /// at a time to hold only that much.
    pub async fn read_mapper(&self, output: &MapOutput) -> Result<Vec<RecordBatch>> {
        self.stream_mapper(output)?.try_collect().await
    }

    /// The reducer's batches from one mapper as a stream. A partition of up to the read piece
    /// ([`READ_PIECE`] by default) is read in one request; a larger one in ranges of that size, two in flight, each
    /// decoded as it arrives: the reader holds about two pieces and the batches not yet taken,
    /// never the whole object.
    pub fn stream_mapper(&self, output: &MapOutput) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let Some(info) = output.partition(self.reducer) else {
            return Err(Error::Unsupported {
                what: format!("reducer {} of a mapper with {} partitions", self.reducer, output.partitions.len()),
            });
        };
        if info.rows == 0 {
            return Ok(futures::stream::empty().boxed());
        }
        let (key, range) = match (output.layout, &info.range) {
            (Layout::AllToAll, _) => (self.target.key(output.mapper, output.attempt, self.reducer), None),
            (Layout::Coalesced, Some(range)) => {
                (self.target.key(output.mapper, output.attempt, COALESCED), Some(range.clone()))
            }
            (Layout::Coalesced, None) => {
                return Err(Error::Unsupported { what: "a coalesced partition without its byte range".into() });
            }
        };
        let path = self.target.path.clone();
        let whole = range.clone().unwrap_or(0..info.bytes);
        let piece = self.piece;
        if whole.end - whole.start <= piece {
            return Ok(futures::stream::once(async move {
                let object = match range {
                    None => path.get(&key).await?,
                    Some(range) => path.get_range(&key, range).await?,
                };
                // A writer that spilled left several objects back to back.
                let mut batches = Vec::new();
                for piece in split_objects(key, object)? {
                    batches.extend(read_batches(key, piece)?.1);
                }
                Ok::<_, Error>(futures::stream::iter(batches.into_iter().map(Ok)))
            })
            .try_flatten()
            .boxed());
        }
        let pieces = (whole.start..whole.end).step_by(piece as usize).map(move |at| at..(at + piece).min(whole.end));
        let fetches = futures::stream::iter(pieces)
            .map(move |piece| {
                let path = path.clone();
                async move { path.get_range(&key, piece).await.map_err(Error::from) }
            })
            .buffered(2)
            .boxed();
        let state = (fetches, Some(BatchAssembler::new(key)), std::collections::VecDeque::new());
        Ok(futures::stream::try_unfold(state, |(mut fetches, mut assembler, mut ready)| async move {
            loop {
                if let Some(batch) = ready.pop_front() {
                    return Ok(Some((batch, (fetches, assembler, ready))));
                }
                let Some(decoding) = assembler.as_mut() else { return Ok(None) };
                match fetches.next().await {
                    Some(piece) => ready.extend(decoding.push(piece?)?),
                    None => {
                        assembler.take().map(BatchAssembler::finish).transpose()?;
                        return Ok(None);
                    }
                }
            }
        })
        .boxed())
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

fn spill_error(dir: &std::path::Path, e: std::io::Error) -> Error {
    Error::Fabric(baton_fabric::Error::io("spill to", dir, e))
}
