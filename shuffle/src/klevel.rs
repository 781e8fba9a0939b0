//! K-level exchange: `levels` rounds of coalesced exchange, each among at most `fanout^levels`
//! tasks, so that each task reads `fanout` objects per round instead of one from every mapper
//! (Lambada's multi-level exchange; the planner's `Topology::KLevel`).
//!
//! Write a reducer's index `r` in base `f` with `levels` digits `d₀ d₁ … d_{k-1}`. A mapper tags
//! every row with its reducer (the [`DEST_COLUMN`]) and partitions rows by `d₀`. In round `l`,
//! task `t` reads partition `digit(t, l)` from the `f` senders that agree with `t` on every
//! digit but digit `l`, and — unless it is a reducer — partitions what it read by `d_{l+1}`.
//! After `levels` rounds task `t` holds exactly the rows of reducer `t`.
//!
//! ```
//! use baton_shuffle::klevel::KLevel;
//!
//! let k = KLevel::new(2, 9, 9); // fanout 3
//! assert_eq!(k.fanout, 3);
//! // Reducer 7 = (2, 1) in base 3. In the last round it reads partition 1 from tasks 6, 7, 8.
//! assert_eq!(k.senders(7, 1).collect::<Vec<_>>(), vec![6, 7, 8]);
//! assert_eq!(k.digit(7, 1), 1);
//! ```

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt32Type;
use arrow_array::{ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::partition::Partitioner;

/// The column a k-level exchange tags rows with: the index of the row's reducer.
pub const DEST_COLUMN: &str = "__baton_dest";

/// The shape of a k-level exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KLevel {
    /// Rounds of exchange (at least 2).
    pub levels: u32,
    /// Partitions per task per round.
    pub fanout: u32,
}

impl KLevel {
    /// The exchange of `levels` rounds from `mappers` to `reducers` tasks, with the smallest
    /// fan-out that reaches every task: `f^levels ≥ max(mappers, reducers)`.
    pub fn new(levels: u32, mappers: u32, reducers: u32) -> Self {
        let p = u64::from(mappers.max(reducers).max(1));
        let fanout = baton_planner::fanout(p, levels.max(1)) as u32;
        Self { levels: levels.max(1), fanout: fanout.max(2) }
    }

    /// Checks a k-level shape that came from outside (a task description): 2 to 4 levels,
    /// a fan-out of at least 2, and a width that fits.
    pub fn check(&self) -> Result<()> {
        let ok = (2..=4).contains(&self.levels)
            && self.fanout >= 2
            && self.fanout.checked_pow(self.levels).is_some_and(|w| w <= 1 << 20);
        if ok {
            Ok(())
        } else {
            Err(Error::Unsupported {
                what: format!("a k-level exchange of {} levels and fan-out {}", self.levels, self.fanout),
            })
        }
    }

    /// Tasks in each intermediate round: `fanout^levels`.
    pub fn width(&self) -> u32 {
        self.fanout.saturating_pow(self.levels)
    }

    fn weight(&self, round: u32) -> u32 {
        self.fanout.saturating_pow(self.levels.saturating_sub(round + 1))
    }

    /// Digit `round` (most significant first) of `index` in base `fanout`.
    pub fn digit(&self, index: u32, round: u32) -> u32 {
        (index / self.weight(round).max(1)) % self.fanout.max(1)
    }

    /// The senders of round `round` that task `receiver` reads from (some may not exist when a
    /// round has fewer tasks than `width`).
    pub fn senders(&self, receiver: u32, round: u32) -> impl Iterator<Item = u32> + use<> {
        let w = self.weight(round);
        let base = receiver - self.digit(receiver, round) * w;
        (0..self.fanout).map(move |y| base + y * w)
    }

    /// `schema` with the destination column appended.
    pub fn tagged_schema(schema: &SchemaRef) -> SchemaRef {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(DEST_COLUMN, DataType::UInt32, false));
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
    }

    /// `batch` with each row's reducer appended as the destination column.
    pub fn tag(schema: &SchemaRef, batch: &RecordBatch, dests: Vec<u32>) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(UInt32Array::from(dests)));
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }

    /// `batch` without the destination column (what a reducer's operator sees).
    pub fn untag(batch: &RecordBatch) -> Result<RecordBatch> {
        let schema = batch.schema();
        let Ok(index) = schema.index_of(DEST_COLUMN) else { return Ok(batch.clone()) };
        let mut batch = batch.clone();
        batch.remove_column(index);
        Ok(batch)
    }
}

/// Partitions rows by one digit of their destination column.
#[derive(Debug)]
pub struct DigitPartitioner {
    klevel: KLevel,
    round: u32,
}

impl DigitPartitioner {
    /// Routes by digit `round` of the destination.
    pub fn new(klevel: KLevel, round: u32) -> Self {
        Self { klevel, round }
    }
}

impl Partitioner for DigitPartitioner {
    fn partitions(&self) -> u32 {
        self.klevel.fanout
    }

    fn assign(&self, batch: &RecordBatch) -> Result<Vec<u32>> {
        let index = batch.schema().index_of(DEST_COLUMN).map_err(|_| Error::Unsupported {
            what: format!("a k-level round over batches without the {DEST_COLUMN} column"),
        })?;
        let dests = batch
            .column(index)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| Error::Unsupported { what: format!("{DEST_COLUMN} that is not UInt32") })?;
        Ok(dests.values().iter().map(|&d| self.klevel.digit(d, self.round)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Follows every (mapper, reducer) pair through the rounds: the row must reach its
    /// reducer, and each receiver must read only `fanout` senders.
    #[test]
    fn every_row_reaches_its_reducer() {
        for (levels, m, r) in [(2, 8, 8), (2, 5, 11), (3, 27, 20), (3, 7, 30), (2, 100, 3)] {
            let k = KLevel::new(levels, m, r);
            assert!(k.width() >= m.max(r));
            for mapper in 0..m {
                for reducer in 0..r {
                    // The task holding the row after each round.
                    let mut at = mapper;
                    for round in 0..levels {
                        let part = k.digit(reducer, round);
                        // The receiver replaces digit `round` of the sender's index with `part`.
                        let w = k.fanout.pow(levels - round - 1);
                        let receiver = at - k.digit(at, round) * w + part * w;
                        assert!(k.senders(receiver, round).any(|s| s == at), "{levels} {m} {r}");
                        assert_eq!(k.digit(receiver, round), part);
                        at = receiver;
                    }
                    assert_eq!(at, reducer, "levels {levels}, {m}→{r}: mapper {mapper}'s row");
                }
            }
        }
    }

    #[test]
    fn tagging_round_trips() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("x", DataType::UInt32, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(UInt32Array::from(vec![1, 2, 3]))]).unwrap();
        let tagged = KLevel::tag(&KLevel::tagged_schema(&schema), &batch, vec![0, 4, 8]).unwrap();
        let k = KLevel::new(2, 9, 9);
        assert_eq!(DigitPartitioner::new(k, 0).assign(&tagged).unwrap(), vec![0, 1, 2]);
        assert_eq!(DigitPartitioner::new(k, 1).assign(&tagged).unwrap(), vec![0, 1, 2]);
        assert_eq!(KLevel::untag(&tagged).unwrap(), batch);
    }
}
