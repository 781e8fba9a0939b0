//! Partitioners: which consumer partition each row goes to.
//!
//! Both partitioners key on columns encoded with Arrow's row format, so any column types work
//! and equal keys encode to equal bytes. [`HashPartitioner`] hashes those bytes with a fixed,
//! process-independent hash (every mapper in every process agrees); [`RangePartitioner`]
//! compares them against boundaries taken from a sample, so partition `p` holds only keys below
//! those of partition `p + 1` — what a global sort needs.

use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_row::{OwnedRow, RowConverter, Rows, SortField};
use arrow_schema::SchemaRef;

use crate::error::{Error, Result};

/// Assigns rows to partitions.
pub trait Partitioner: Send + Sync + std::fmt::Debug {
    /// How many partitions there are.
    fn partitions(&self) -> u32;

    /// The partition of every row of `batch`, each below [`Partitioner::partitions`].
    fn assign(&self, batch: &RecordBatch) -> Result<Vec<u32>>;
}

/// Key columns and the row encoder for them.
#[derive(Debug)]
struct Keys {
    columns: Vec<usize>,
    converter: RowConverter,
}

impl Keys {
    fn new(schema: &SchemaRef, columns: &[usize]) -> Result<Self> {
        if columns.is_empty() {
            return Err(Error::NoKeys);
        }
        let fields = columns
            .iter()
            .map(|&index| {
                let field =
                    schema.fields().get(index).ok_or(Error::BadColumn { index, columns: schema.fields().len() })?;
                Ok(SortField::new(field.data_type().clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Keys { columns: columns.to_vec(), converter: RowConverter::new(fields)? })
    }

    fn rows(&self, batch: &RecordBatch) -> Result<Rows> {
        let arrays = self
            .columns
            .iter()
            .map(|&index| {
                batch.columns().get(index).cloned().ok_or(Error::BadColumn { index, columns: batch.num_columns() })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        Ok(self.converter.convert_columns(&arrays)?)
    }
}

/// A 64-bit hash of `bytes` that is the same in every process and on every run.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = bytes.len() as u64 ^ K;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    // A final avalanche so that nearby keys spread over partitions.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Rows go to `hash(key) mod partitions`.
#[derive(Debug)]
pub struct HashPartitioner {
    keys: Keys,
    partitions: u32,
}

impl HashPartitioner {
    /// Partitions batches of `schema` on `columns` into `partitions`.
    pub fn new(schema: &SchemaRef, columns: &[usize], partitions: u32) -> Result<Self> {
        if partitions == 0 {
            return Err(Error::NoPartitions);
        }
        Ok(Self { keys: Keys::new(schema, columns)?, partitions })
    }
}

impl Partitioner for HashPartitioner {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn assign(&self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let rows = self.keys.rows(batch)?;
        let n = u64::from(self.partitions);
        Ok(rows.iter().map(|row| (stable_hash(row.data()) % n) as u32).collect())
    }
}

/// Rows go to the partition whose key range holds them; boundaries come from a sample.
#[derive(Debug)]
pub struct RangePartitioner {
    keys: Keys,
    /// `partitions - 1` sorted boundaries: partition `p` holds keys in
    /// `[boundaries[p - 1], boundaries[p])`.
    boundaries: Vec<OwnedRow>,
}

impl RangePartitioner {
    /// Boundaries at the quantiles of `sample`'s keys, for `partitions` partitions. An empty
    /// sample gives one partition that holds everything, whatever was asked.
    pub fn from_sample(schema: &SchemaRef, columns: &[usize], sample: &[RecordBatch], partitions: u32) -> Result<Self> {
        if partitions == 0 {
            return Err(Error::NoPartitions);
        }
        let keys = Keys::new(schema, columns)?;
        let mut sampled: Vec<OwnedRow> = Vec::new();
        for batch in sample {
            sampled.extend(keys.rows(batch)?.iter().map(|r| r.owned()));
        }
        sampled.sort();
        let boundaries = if sampled.is_empty() {
            Vec::new()
        } else {
            (1..partitions as usize).map(|p| sampled[p * sampled.len() / partitions as usize].clone()).collect()
        };
        Ok(Self { keys, boundaries })
    }
}

impl Partitioner for RangePartitioner {
    fn partitions(&self) -> u32 {
        self.boundaries.len() as u32 + 1
    }

    fn assign(&self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let rows = self.keys.rows(batch)?;
        Ok(rows.iter().map(|row| self.boundaries.partition_point(|b| b.row() <= row) as u32).collect())
    }
}

/// Splits `batch` into one batch per partition, by the partitioner's assignment (rows keep
/// their order within a partition).
pub fn split(partitioner: &dyn Partitioner, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
    let assignment = partitioner.assign(batch)?;
    let n = partitioner.partitions() as usize;
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (row, &p) in assignment.iter().enumerate() {
        indices[p as usize].push(row as u32);
    }
    indices
        .into_iter()
        .map(|rows| {
            let take = UInt32Array::from(rows);
            let columns = batch
                .columns()
                .iter()
                .map(|c| arrow_select::take::take(c.as_ref(), &take, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new(batch.schema(), columns)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn batch(keys: impl IntoIterator<Item = i64>) -> RecordBatch {
        let keys: Vec<i64> = keys.into_iter().collect();
        let names: Vec<String> = keys.iter().map(|k| format!("row {k}")).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(keys)), Arc::new(StringArray::from(names))])
            .unwrap()
    }

    fn keys_of(batch: &RecordBatch) -> Vec<i64> {
        batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec()
    }

    #[test]
    fn hashing_is_deterministic_total_and_keeps_equal_keys_together() {
        let data = batch((0..10_000).map(|i| i % 2500));
        let p = HashPartitioner::new(&data.schema(), &[0], 8).unwrap();
        let a = p.assign(&data).unwrap();
        assert_eq!(a, HashPartitioner::new(&data.schema(), &[0], 8).unwrap().assign(&data).unwrap());
        assert!(a.iter().all(|&x| x < 8));
        for (i, &x) in a.iter().enumerate() {
            assert_eq!(x, a[i % 2500], "equal keys in different partitions");
        }
        let mut counts = [0usize; 8];
        a.iter().for_each(|&x| counts[x as usize] += 1);
        assert!(counts.iter().all(|&c| c > 10_000 / 8 / 2), "badly unbalanced: {counts:?}");
    }

    #[test]
    fn ranges_order_the_partitions() {
        let sample = batch((0..1000).map(|i| i * 97 % 10_000));
        let p = RangePartitioner::from_sample(&sample.schema(), &[0], std::slice::from_ref(&sample), 4).unwrap();
        assert_eq!(p.partitions(), 4);
        let data = batch((0..20_000).map(|i| (i * 7919) % 10_000));
        let parts = split(&p, &data).unwrap();
        assert_eq!(parts.iter().map(RecordBatch::num_rows).sum::<usize>(), data.num_rows());
        for pair in parts.windows(2) {
            let (low, high) = (keys_of(&pair[0]), keys_of(&pair[1]));
            assert!(low.iter().max() < high.iter().min(), "partitions overlap");
        }
        assert!(parts.iter().all(|b| b.num_rows() > 20_000 / 4 / 2), "badly unbalanced");
    }

    #[test]
    fn split_keeps_every_row_with_its_columns() {
        let data = batch(0..1000);
        let p = HashPartitioner::new(&data.schema(), &[0, 1], 5).unwrap();
        let parts = split(&p, &data).unwrap();
        let mut keys: Vec<i64> = parts.iter().flat_map(keys_of).collect();
        keys.sort();
        assert_eq!(keys, (0..1000).collect::<Vec<_>>());
        for part in &parts {
            let names = part.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            for (i, k) in keys_of(part).iter().enumerate() {
                assert_eq!(names.value(i), format!("row {k}"));
            }
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        let data = batch(0..10);
        assert!(matches!(HashPartitioner::new(&data.schema(), &[0], 0), Err(Error::NoPartitions)));
        assert!(matches!(
            HashPartitioner::new(&data.schema(), &[5], 2),
            Err(Error::BadColumn { index: 5, columns: 2 })
        ));
        assert!(matches!(HashPartitioner::new(&data.schema(), &[], 2), Err(Error::NoKeys)));
        let one = RangePartitioner::from_sample(&data.schema(), &[0], &[], 4).unwrap();
        assert_eq!(one.partitions(), 1);
        assert!(one.assign(&data).unwrap().iter().all(|&p| p == 0));
    }
}
