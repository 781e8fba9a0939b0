//! Generated Arrow data, and a checksum that touches every byte of it.

use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// Bytes of one generated row (an `i64` id and an `f64` value).
pub const ROW_BYTES: u64 = 16;

/// The schema of generated data.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("value", DataType::Float64, false)]))
}

/// `rows` rows in batches of at most `batch_rows`, the same every time.
pub fn batches(rows: u64, batch_rows: u64) -> Vec<RecordBatch> {
    let schema = schema();
    let batch_rows = batch_rows.max(1);
    (0..rows.div_ceil(batch_rows))
        .map(|b| {
            let start = (b * batch_rows) as i64;
            let end = rows.min((b + 1) * batch_rows) as i64;
            let ids = Int64Array::from_iter_values(start..end);
            let values = Float64Array::from_iter_values((start..end).map(|i| (i % 1000) as f64 * 0.5));
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(values)])
                .expect("columns match the schema")
        })
        .collect()
}

/// Reads every byte of every buffer of every column, folding them into a checksum.
pub fn checksum(batches: &[RecordBatch]) -> u64 {
    let mut sum = 0u64;
    for batch in batches {
        for column in batch.columns() {
            for buffer in column.to_data().buffers() {
                sum = sum.wrapping_add(fold_bytes(buffer.as_slice()));
            }
        }
    }
    sum
}

/// Wrapping sum of the bytes as little-endian `u64` words (the tail zero-padded).
pub fn fold_bytes(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut sum = 0u64;
    for c in &mut chunks {
        sum = sum.wrapping_add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    sum.wrapping_add(u64::from_le_bytes(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_sized() {
        let a = batches(2500, 1000);
        assert_eq!(a.len(), 3);
        assert_eq!(a.iter().map(|b| b.num_rows()).sum::<usize>(), 2500);
        assert_eq!(checksum(&a), checksum(&batches(2500, 1000)));
        assert_ne!(checksum(&a), checksum(&batches(2501, 1000)));
    }
}
