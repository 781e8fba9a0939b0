//! MapReduce jobs on the runtime: sort and word count, and what they share (input files,
//! output files, the sort benchmark's records).

mod crc;
pub mod input;
pub mod output;
pub mod plan;
pub mod records;
pub mod sort;
pub mod wordcount;

use baton_planner::Topology;
use serde::Serialize;

use crate::driver::{EdgeSpec, JobSpec, StageSpec};
use crate::error::{Error, Result};
use crate::operator::Registry;
use crate::paths::PathSpec;

/// The operators and parameters of a map-shuffle-reduce job.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MapReduce<'a> {
    pub name: &'a str,
    pub map: &'a str,
    pub reduce: &'a str,
}

impl MapReduce<'_> {
    /// The job: `mappers` tasks of the map operator given `params`, `reducers` of the reduce
    /// operator given `reduce_params` (only what reducers need: every task carries its stage's
    /// parameters, so reducer-sized lists there would cost R² in all), the shuffle on `path` in
    /// `topology`.
    pub fn job<P: Serialize>(
        self,
        params: &P,
        reduce_params: &P,
        mappers: u32,
        reducers: u32,
        path: PathSpec,
        topology: Topology,
    ) -> Result<JobSpec> {
        let json = |p: &P| serde_json::to_value(p).map_err(|e| Error::BadJob { reason: e.to_string() });
        let (params, reduce_params) = (json(params)?, json(reduce_params)?);
        Ok(JobSpec {
            name: format!("{} ({mappers} mappers, {reducers} reducers)", self.name),
            stages: vec![
                StageSpec {
                    name: "map".into(),
                    op: self.map.into(),
                    params: params.clone(),
                    tasks: mappers,
                    host: None,
                },
                StageSpec {
                    name: "reduce".into(),
                    op: self.reduce.into(),
                    params: reduce_params,
                    tasks: reducers,
                    host: None,
                },
            ],
            edges: vec![EdgeSpec { from: 0, to: 1, path, topology, pipelined: false, partitions: None }],
            collect: None,
        })
    }
}

/// A registry with every built-in operator: what `baton worker` serves.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(sort::MAP, sort::SortMap)
        .register(sort::REDUCE, sort::SortReduce)
        .register(wordcount::MAP, wordcount::WordCountMap)
        .register(wordcount::REDUCE, wordcount::WordCountReduce);
    r
}
