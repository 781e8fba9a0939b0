//! MapReduce jobs on the runtime: sort and word count, and what they share (input files,
//! output files, the sort benchmark's records).

pub mod input;
pub mod output;
pub mod plan;
pub mod records;
pub mod sort;
pub mod wordcount;

use crate::operator::Registry;

/// A registry with every built-in operator: what `baton worker` serves.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(sort::MAP, sort::SortMap)
        .register(sort::REDUCE, sort::SortReduce)
        .register(wordcount::MAP, wordcount::WordCountMap)
        .register(wordcount::REDUCE, wordcount::WordCountReduce);
    r
}
