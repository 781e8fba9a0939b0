//! `baton sort`: a global sort of 100-byte records by their 10-byte keys.
//!
//! The driver samples the input for key boundaries, so reducer r receives only keys between
//! boundary r-1 and r. Mappers read their byte range of the input, split records by boundary
//! and write them through the shuffle library (one Arrow `FixedSizeBinary(100)` column, which
//! is the records' bytes as they are). Reducers read their partition from every mapper, sort
//! it and write `part-r-NNNNN`; the files in name order are the sorted input.

use std::io::Seek;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use baton_planner::Topology;
use baton_shuffle::Partitioner;
use serde::{Deserialize, Serialize};

use crate::driver::JobSpec;
use crate::error::{Error, Result};
use crate::mapreduce::MapReduce;
use crate::mapreduce::input::{self, Piece, Reader, Source};
use crate::mapreduce::output::{Output, part_name};
use crate::mapreduce::records::{self, Checksum, KEY, RECORD};
use crate::operator::{Operator, TaskContext};
use crate::paths::PathSpec;

/// The operator names.
pub const MAP: &str = "sort.map";
/// The reducer's operator name.
pub const REDUCE: &str = "sort.reduce";

/// Bytes a mapper reads per request.
const CHUNK: u64 = (8 << 20) / RECORD as u64 * RECORD as u64;
/// Samples taken per reducer for the boundaries.
const SAMPLES_PER_REDUCER: u64 = 200;

/// The parameters every sort task gets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SortParams {
    /// The input files.
    pub sources: Vec<Source>,
    /// Each mapper's pieces of them.
    pub splits: Vec<Vec<Piece>>,
    /// Reducer r holds keys in [boundaries[r-1], boundaries[r]), as hex.
    pub boundaries: Vec<String>,
    /// Where reducers write their files (a URL).
    pub output: String,
}

/// The schema of records in the shuffle: their bytes, as they are.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("record", DataType::FixedSizeBinary(RECORD as i32), false)]))
}

/// Checks that every source is a whole number of records; fails naming the first that is not.
pub fn check_sources(sources: &[Source]) -> Result<()> {
    for s in sources {
        if s.size % RECORD as u64 != 0 {
            return Err(Error::Input {
                file: s.name.clone(),
                reason: format!(
                    "{} bytes is not a whole number of {RECORD}-byte records (is it gensort output?)",
                    s.size
                ),
            });
        }
    }
    Ok(())
}

/// The key `r / reducers` of the way through the key space.
fn even_key(r: u32, reducers: u32) -> [u8; KEY] {
    let at = (u64::from(r) << 32) / u64::from(reducers);
    let mut key = [0u8; KEY];
    key[..4].copy_from_slice(&(at as u32).to_be_bytes());
    key
}

/// Key boundaries for `reducers` from an evenly spaced sample of the sources.
pub async fn boundaries(sources: &[Source], reducers: u32) -> Result<Vec<[u8; KEY]>> {
    let total: u64 = sources.iter().map(|s| s.size / RECORD as u64).sum();
    let want = (u64::from(reducers) * SAMPLES_PER_REDUCER).min(total);
    if reducers <= 1 {
        return Ok(Vec::new());
    }
    if want == 0 {
        // No records: any boundaries do, as long as there is one between each two reducers.
        return Ok((1..reducers).map(|r| even_key(r, reducers)).collect());
    }
    let reader = Reader::open(sources)?;
    let mut keys = Vec::with_capacity(want as usize);
    let mut base = 0;
    for (s, source) in sources.iter().enumerate() {
        let n = source.size / RECORD as u64;
        let ranges: Vec<_> = (0..want)
            .map(|i| i * total / want)
            .filter(|&g| g >= base && g < base + n)
            .map(|g| {
                let at = (g - base) * RECORD as u64;
                at..at + KEY as u64
            })
            .collect();
        if !ranges.is_empty() {
            for bytes in reader.read_ranges(s, &ranges).await? {
                let key = bytes.get(..KEY).and_then(|k| <[u8; KEY]>::try_from(k).ok()).ok_or_else(|| Error::Input {
                    file: source.name.clone(),
                    reason: format!("a read of a {KEY}-byte key returned {} bytes (did the file shrink?)", bytes.len()),
                })?;
                keys.push(key);
            }
        }
        base += n;
    }
    keys.sort_unstable();
    Ok((1..reducers as usize).map(|r| keys[r * keys.len() / reducers as usize]).collect())
}

/// The sort as a job: `mappers` map tasks and `reducers` reduce tasks, the shuffle on `path`
/// in `topology`, the result in `output` (a URL).
pub async fn job(
    sources: Vec<Source>,
    mappers: u32,
    reducers: u32,
    path: PathSpec,
    topology: Topology,
    output: String,
) -> Result<JobSpec> {
    check_sources(&sources)?;
    let boundaries = boundaries(&sources, reducers).await?;
    let params = SortParams {
        splits: input::split(&sources, mappers, RECORD as u64),
        sources,
        boundaries: boundaries.iter().map(|k| hex(k)).collect(),
        output,
    };
    // Reducers need only where to write: not the mappers' splits, not the boundaries.
    let reduce =
        SortParams { sources: Vec::new(), splits: Vec::new(), boundaries: Vec::new(), output: params.output.clone() };
    MapReduce { name: "sort", map: MAP, reduce: REDUCE }.job(&params, &reduce, mappers, reducers, path, topology)
}

/// Sorts `sources` in this process, on every core, into `output`'s `part-r-00000` (the baseline).
pub async fn single_process(sources: &[Source], output: &str) -> Result<Checksum> {
    check_sources(sources)?;
    let reader = Reader::open(sources)?;
    let mut files = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter().enumerate() {
        files.push(reader.read(sources, i, 0..s.size).await?);
    }
    let out = Output::open(output)?;
    out.clear().await?;
    let runs: Vec<&[u8]> = files.iter().map(|f| &f[..]).collect();
    let mut part = out.create(&part_name(0), runs.iter().map(|r| r.len()).sum())?;
    let sum = records::par_sort_to(&runs, &mut part).map_err(|e| Error::io("write", part_name(0), e))?;
    drop(runs);
    drop(files);
    part.finish().await?;
    Ok(sum)
}

/// What [`validate`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validation {
    /// The records' checksum.
    pub checksum: Checksum,
    /// Whether the files in name order are in key order.
    pub sorted: bool,
    /// Files read.
    pub files: usize,
}

/// Reads the `part-r-*` files of `output` in order and checks that they are sorted.
pub async fn validate(output: &str) -> Result<Validation> {
    let out = Output::open(output)?;
    let mut checksum = Checksum::default();
    let mut sorted = true;
    let mut last: Option<Vec<u8>> = None;
    let parts = out.parts().await?;
    for (name, _) in &parts {
        let bytes = out.get(name).await?;
        if bytes.len() % RECORD != 0 {
            return Err(Error::Input { file: name.clone(), reason: "not a whole number of records".into() });
        }
        if bytes.is_empty() {
            continue;
        }
        sorted &= records::is_sorted(&bytes);
        if let Some(prev) = &last {
            sorted &= prev.as_slice() <= &bytes[..RECORD];
        }
        last = Some(bytes[bytes.len() - RECORD..].to_vec());
        checksum.add(&bytes);
    }
    Ok(Validation { checksum, sorted, files: parts.len() })
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; KEY]> {
    if text.len() != 2 * KEY {
        return None;
    }
    let mut key = [0u8; KEY];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// The records column of a batch, checked: a batch of anything else is an error, not a panic.
fn records_of(batch: &RecordBatch) -> Result<&FixedSizeBinaryArray> {
    batch
        .columns()
        .first()
        .and_then(|c| c.as_fixed_size_binary_opt())
        .filter(|c| c.value_length() == RECORD as i32)
        .ok_or_else(|| Error::BadParams { op: REDUCE.into(), reason: "input rows are not 100-byte records".into() })
}

/// Routes a record by its key to the reducer whose key range holds it.
#[derive(Debug)]
pub struct KeyRangePartitioner {
    boundaries: Vec<[u8; KEY]>,
}

impl KeyRangePartitioner {
    /// A partitioner into `boundaries.len() + 1` partitions.
    pub fn new(boundaries: Vec<[u8; KEY]>) -> Self {
        Self { boundaries }
    }
}

impl Partitioner for KeyRangePartitioner {
    fn partitions(&self) -> u32 {
        self.boundaries.len() as u32 + 1
    }

    fn assign(&self, batch: &RecordBatch) -> baton_shuffle::Result<Vec<u32>> {
        let column = records_of(batch)
            .map_err(|e| baton_shuffle::Error::Unsupported { what: format!("sorting such batches: {e}") })?;
        Ok((0..column.len())
            .map(|i| {
                let key = &column.value(i)[..KEY];
                self.boundaries.partition_point(|b| b.as_slice() <= key) as u32
            })
            .collect())
    }
}

/// Reads a mapper's pieces of the input and routes its records to the reducers.
#[derive(Debug)]
pub struct SortMap;

#[async_trait]
impl Operator for SortMap {
    async fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let params: SortParams = ctx.params()?;
        let partition = ctx.task().id.partition as usize;
        let pieces = params.splits.get(partition).cloned().unwrap_or_default();
        let boundaries = params
            .boundaries
            .iter()
            .map(|h| unhex(h).ok_or_else(|| Error::BadParams { op: MAP.into(), reason: format!("bad boundary {h}") }))
            .collect::<Result<Vec<_>>>()?;
        super::input::allowed(ctx, &params.sources)?;
        let reader = Reader::open(&params.sources)?;
        let schema = schema();
        let mut writer = ctx.writer(0, schema.clone(), Box::new(KeyRangePartitioner::new(boundaries))).await?;
        let mut checksum = Checksum::default();
        for piece in pieces {
            let mut at = piece.range.start;
            while at < piece.range.end {
                let end = (at + CHUNK).min(piece.range.end);
                let bytes = reader.read(&params.sources, piece.source, at..end).await?;
                let rows = bytes.len() / RECORD;
                // Checksumming and partitioning are CPU work (and a write may spill): off the
                // async threads.
                baton_fabric::blocking::off_async(|| -> Result<()> {
                    checksum.add(&bytes);
                    let array = FixedSizeBinaryArray::try_new(RECORD as i32, bytes.clone().into(), None)?;
                    writer.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(array)])?)?;
                    Ok(())
                })?;
                ctx.count_in(rows as u64, bytes.len() as u64);
                at = end;
            }
        }
        ctx.set_extra(serde_json::json!({ "checksum": checksum }));
        ctx.commit(0, writer).await
    }
}

/// Sorts a reducer's partition and writes it as one file.
#[derive(Debug)]
pub struct SortReduce;

#[async_trait]
impl Operator for SortReduce {
    async fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let params: SortParams = ctx.params()?;
        let partition = ctx.task().id.partition;
        // The inputs stay where they arrived (mapped shared memory, on the VM-local path) and
        // are sorted from there. Past the task's memory budget, what is held is sorted into a
        // run in the scratch directory and let go; the runs are merged into the output at the
        // end (an external merge sort), so a partition of any size fits the budget.
        let hold = (ctx.task().memory_budget as usize / 4 * 3).max(MIN_RUN);
        let mut batches = Vec::new();
        let mut held = 0;
        let mut runs = Vec::new();
        let mut spilled = 0;
        let mut input = ctx.input(0)?;
        while let Some(more) = input.next().await? {
            // An input may hold a whole producer's partition: runs are cut batch by batch, so
            // each stays near the budget however the input arrives.
            for batch in more {
                held += records_of(&batch)?.len() * RECORD;
                batches.push(batch);
                if held > hold {
                    let (full, scratch) = (std::mem::take(&mut batches), ctx.scratch().to_path_buf());
                    runs.push(blocking("sort a run", move || sorted_run(&full, &scratch)).await?);
                    spilled += held as u64;
                    held = 0;
                }
            }
        }
        drop(input);
        ctx.count_spilled(spilled);
        let name = part_name(partition);
        ctx.allow(&params.output)?;
        let output = params.output.clone();
        // Sorting and writing are CPU and disk work: off the async threads, which the node's
        // service may share (tasks in process).
        let file = name.clone();
        let scratch = ctx.scratch().to_path_buf();
        let (checksum, bytes, part) = blocking("sort", move || -> Result<_> {
            let runs_in_memory = record_runs(&batches)?;
            let bytes =
                runs.iter().map(|r| r.1).sum::<u64>() + runs_in_memory.iter().map(|r| r.len() as u64).sum::<u64>();
            let mut part = Output::open(&output)?.create(&file, bytes as usize)?;
            let write_error = |e| Error::io("write", &file, e);
            let checksum = if runs.is_empty() {
                // Written as it is gathered, the disk writing each chunk while the next is gathered.
                records::sort_to(&runs_in_memory, &mut part).map_err(write_error)?
            } else {
                let mut files: Vec<std::fs::File> = runs.into_iter().map(|r| r.0).collect();
                if !runs_in_memory.is_empty() {
                    files.push(sorted_run(&batches, &scratch)?.0);
                }
                drop(batches);
                // Each run read through a buffer; together they stay within a few MiB.
                let buffer = (8 << 20) / files.len().max(1);
                let mut readers = Vec::with_capacity(files.len());
                for mut f in files {
                    f.seek(std::io::SeekFrom::Start(0)).map_err(|e| Error::io("read", &scratch, e))?;
                    readers.push(std::io::BufReader::with_capacity(buffer.clamp(64 << 10, 1 << 20), f));
                }
                records::merge_to(readers, &mut part).map_err(write_error)?
            };
            Ok((checksum, bytes, part))
        })
        .await?;
        part.finish().await?;
        ctx.count_out(checksum.records, bytes);
        ctx.set_extra(serde_json::json!({ "file": name, "checksum": checksum }));
        Ok(())
    }
}

/// The least a reducer holds before it sorts a run out to disk, whatever its budget.
const MIN_RUN: usize = 4 << 20;

/// The records of `batches`, as slices of their contiguous bytes.
fn record_runs(batches: &[RecordBatch]) -> Result<Vec<&[u8]>> {
    let mut runs = Vec::with_capacity(batches.len());
    for batch in batches {
        let column = records_of(batch)?;
        let n = column.len();
        if n > 0 {
            // The rows' bytes are contiguous.
            let data = column.value_data();
            let start = column.value(0).as_ptr() as usize - data.as_ptr() as usize;
            runs.push(&data[start..start + n * RECORD]);
        }
    }
    Ok(runs)
}

/// The records of `batches` sorted into an unnamed file in `scratch` (gone when closed), and
/// its length.
fn sorted_run(batches: &[RecordBatch], scratch: &std::path::Path) -> Result<(std::fs::File, u64)> {
    let file = tempfile::tempfile_in(scratch).map_err(|e| Error::io("create a sorted run in", scratch, e))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let checksum = records::sort_to(&record_runs(batches)?, &mut writer).map_err(|e| Error::io("write", scratch, e))?;
    let file = writer.into_inner().map_err(|e| Error::io("write", scratch, e.into_error()))?;
    Ok((file, checksum.records * RECORD as u64))
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(what: &'static str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::io(what, what, std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_route_by_boundary() {
        let p = KeyRangePartitioner::new(vec![[0x40; KEY], [0x80; KEY]]);
        let mut recs = Vec::new();
        for first in [0x00u8, 0x40, 0x7f, 0x80, 0xff] {
            let mut r = [0u8; RECORD];
            r[..KEY].fill(first);
            recs.extend_from_slice(&r);
        }
        let array = FixedSizeBinaryArray::try_new(RECORD as i32, recs.into(), None).unwrap();
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(array)]).unwrap();
        assert_eq!(p.assign(&batch).unwrap(), vec![0, 1, 1, 2, 2]);
        assert_eq!(p.partitions(), 3);
    }

    #[test]
    fn boundary_keys_survive_hex() {
        let key = [0, 1, 0xab, 0xff, 7, 8, 9, 10, 11, 12];
        assert_eq!(unhex(&hex(&key)), Some(key));
        assert_eq!(unhex("zz"), None);
    }
}
