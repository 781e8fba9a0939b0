//! `baton wordcount`: how often each word occurs in a set of text files.
//!
//! Mappers read their byte range of the input (a line belongs to the range holding its first
//! byte), count words (runs of letters and digits, lower-cased) locally, and shuffle
//! `(word, count)` rows hash-partitioned by word. Reducers add the counts up and write
//! `word<TAB>count` lines, sorted by word, to `part-r-NNNNN`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use baton_planner::Topology;
use baton_shuffle::HashPartitioner;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::driver::JobSpec;
use crate::error::{Error, Result};
use crate::mapreduce::MapReduce;
use crate::mapreduce::input::{self, Piece, Reader, Source};
use crate::mapreduce::output::{Output, part_name};
use crate::operator::{Operator, TaskContext};
use crate::paths::PathSpec;

/// The mapper's operator name.
pub const MAP: &str = "wordcount.map";
/// The reducer's operator name.
pub const REDUCE: &str = "wordcount.reduce";

/// Rows per shuffled batch.
const BATCH_ROWS: usize = 64 << 10;

/// The parameters every word-count task gets.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WordCountParams {
    /// The input files.
    pub sources: Vec<Source>,
    /// Each mapper's byte ranges of them.
    pub splits: Vec<Vec<Piece>>,
    /// Where reducers write (a URL).
    pub output: String,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("word", DataType::Utf8, false), Field::new("count", DataType::UInt64, false)]))
}

/// The word count as a job.
pub fn job(
    sources: Vec<Source>,
    mappers: u32,
    reducers: u32,
    path: PathSpec,
    topology: Topology,
    output: String,
) -> Result<JobSpec> {
    let params = WordCountParams { splits: input::split(&sources, mappers, 1), sources, output };
    let reduce = WordCountParams { sources: Vec::new(), splits: Vec::new(), output: params.output.clone() };
    MapReduce { name: "wordcount", map: MAP, reduce: REDUCE }.job(&params, &reduce, mappers, reducers, path, topology)
}

/// Adds the words of `text` to `counts`.
pub fn count_words(text: &str, counts: &mut HashMap<String, u64>) {
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        if let Some(n) = counts.get_mut(word) {
            *n += 1;
        } else {
            *counts.entry(word.to_lowercase()).or_default() += 1;
        }
    }
}

/// The lines of `range` of a file of `size` bytes: those whose first byte is in the range.
async fn read_lines(reader: &Reader, sources: &[Source], source: usize, range: std::ops::Range<u64>) -> Result<Bytes> {
    let size = sources
        .get(source)
        .ok_or_else(|| Error::BadParams { op: MAP.into(), reason: format!("no input file {source}") })?
        .size;
    // Start one byte early to see whether the range begins a line.
    let start = range.start.saturating_sub(1);
    let mut window = (range.end - start) + (64 << 10);
    loop {
        let end = (start + window).min(size);
        let bytes = reader.read(sources, source, start..end).await?;
        let first = if range.start == 0 {
            0
        } else {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if end == size => return Ok(Bytes::new()),
                None => {
                    window *= 2;
                    continue;
                }
            }
        };
        // The last line is the one starting before range.end; it ends at the next newline.
        let limit = (range.end - start) as usize;
        if first >= limit {
            return Ok(Bytes::new());
        }
        match bytes[limit - 1..].iter().position(|&b| b == b'\n') {
            Some(i) => return Ok(bytes.slice(first..limit + i)),
            None if end == size => return Ok(bytes.slice(first..)),
            None => window *= 2,
        }
    }
}

/// Counts the words of a mapper's byte ranges.
#[derive(Debug)]
pub struct WordCountMap;

#[async_trait]
impl Operator for WordCountMap {
    async fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let params: WordCountParams = ctx.params()?;
        let pieces = params.splits.get(ctx.task().id.partition as usize).cloned().unwrap_or_default();
        super::input::allowed(ctx, &params.sources)?;
        let reader = Reader::open(&params.sources)?;
        let mut counts = HashMap::new();
        for piece in pieces {
            let bytes = read_lines(&reader, &params.sources, piece.source, piece.range).await?;
            count_words(&String::from_utf8_lossy(&bytes), &mut counts);
            ctx.count_in(bytes.iter().filter(|&&b| b == b'\n').count() as u64, bytes.len() as u64);
        }
        let schema = schema();
        let partitions = ctx.consumers(0)?;
        let partitioner = HashPartitioner::new(&schema, &[0], partitions)?;
        let mut writer = ctx.writer(0, schema.clone(), Box::new(partitioner)).await?;
        let counts: Vec<_> = counts.into_iter().collect();
        for chunk in counts.chunks(BATCH_ROWS) {
            let words = StringArray::from_iter_values(chunk.iter().map(|(w, _)| w.as_str()));
            let numbers = UInt64Array::from_iter_values(chunk.iter().map(|(_, n)| *n));
            writer.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(words), Arc::new(numbers)])?)?;
        }
        ctx.commit(0, writer).await
    }
}

/// Adds up a reducer's counts and writes them sorted by word.
#[derive(Debug)]
pub struct WordCountReduce;

#[async_trait]
impl Operator for WordCountReduce {
    async fn run(&self, ctx: &mut TaskContext) -> Result<()> {
        let params: WordCountParams = ctx.params()?;
        let partition = ctx.task().id.partition;
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut input = ctx.input(0)?;
        while let Some(batches) = input.next().await? {
            for batch in batches {
                let bad = || Error::BadParams { op: REDUCE.into(), reason: "input rows are not (word, count)".into() };
                let words = batch.columns().first().and_then(|c| c.as_string_opt::<i32>()).ok_or_else(bad)?;
                let numbers =
                    batch.columns().get(1).and_then(|c| c.as_primitive_opt::<UInt64Type>()).ok_or_else(bad)?;
                for (word, n) in words.iter().zip(numbers.iter()) {
                    if let (Some(word), Some(n)) = (word, n) {
                        *counts.entry(word.to_string()).or_default() += n;
                    }
                }
            }
        }
        drop(input);
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_unstable();
        let mut text = String::new();
        let mut total = 0;
        for (word, n) in &counts {
            text.push_str(word);
            text.push('\t');
            text.push_str(&n.to_string());
            text.push('\n');
            total += n;
        }
        let name = part_name(partition);
        let bytes = text.len() as u64;
        ctx.allow(&params.output)?;
        Output::open(&params.output)?.put(&name, Bytes::from(text)).await?;
        ctx.count_out(counts.len() as u64, bytes);
        ctx.set_extra(serde_json::json!({ "file": name, "words": counts.len(), "total": total }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_runs_of_letters_and_digits_lower_cased() {
        let mut counts = HashMap::new();
        count_words("The cat, the HAT — and 42 cats!\nthe end", &mut counts);
        assert_eq!(counts["the"], 3);
        assert_eq!(counts["cat"], 1);
        assert_eq!(counts["cats"], 1);
        assert_eq!(counts["42"], 1);
        assert_eq!(counts["hat"], 1);
        assert!(!counts.contains_key("—"));
    }
}
