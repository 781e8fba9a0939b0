//! Baton's shuffle library: partitioners, writers that stay within a memory budget, readers that
//! stream, and the planner's topologies (all-to-all, coalesced, k-level) on top of the fabric's
//! paths — usable directly by MapReduce code.
//!
//! The partitioners ([`partition`]); a writer that spills past a memory budget and a reader, for
//! the all-to-all and coalesced layouts ([`exchange`]); and the routing of k-level exchanges
//! ([`klevel`]), whose intermediate rounds the runtime's driver runs as merge stages.
//!
//! A word count's shuffle by hand: two mappers write their rows hash-partitioned by word into
//! one coalesced object each; each of three reducers reads its byte range of both.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use arrow_array::{RecordBatch, StringArray, UInt64Array};
//! use arrow_schema::{DataType, Field, Schema};
//! use baton_shuffle::fabric::tier::memory::MemoryTier;
//! use baton_shuffle::fabric::{EdgeId, JobId};
//! use baton_shuffle::{HashPartitioner, Layout, ShuffleReader, ShuffleWriter, Target};
//!
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("word", DataType::Utf8, false),
//!     Field::new("count", DataType::UInt64, false),
//! ]));
//! // Any path works: the node over its socket, the remote store over QUIC, S3...
//! let target = Target { path: Arc::new(MemoryTier::new(1 << 20)), job: JobId(1), edge: EdgeId(1) };
//!
//! let mut outputs = Vec::new();
//! for (mapper, words) in [["a", "b", "c"], ["b", "c", "d"]].iter().enumerate() {
//!     let batch = RecordBatch::try_new(schema.clone(), vec![
//!         Arc::new(StringArray::from(words.to_vec())),
//!         Arc::new(UInt64Array::from(vec![1u64; 3])),
//!     ])?;
//!     let partitioner = HashPartitioner::new(&schema, &[0], 3)?;
//!     let mut writer =
//!         ShuffleWriter::new(target.clone(), mapper as u32, schema.clone(), Box::new(partitioner), Layout::Coalesced);
//!     writer.write(&batch)?;
//!     // What the mapper wrote; a driver hands these to the reducers.
//!     outputs.push(writer.finish().await?);
//! }
//! let mut rows = 0;
//! for reducer in 0..3 {
//!     let batches = ShuffleReader::new(target.clone(), reducer).read_all(&outputs).await?;
//!     rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
//! }
//! assert_eq!(rows, 6, "every row reached exactly one reducer");
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod exchange;
pub mod klevel;
pub mod partition;

pub use baton_fabric as fabric;
pub use error::{Error, Result};
pub use exchange::{Layout, MapOutput, PartitionInfo, ShuffleReader, ShuffleWriter, Target};
pub use partition::{HashPartitioner, Partitioner, RangePartitioner, split, stable_hash};
