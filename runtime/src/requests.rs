//! Requests a task makes on each edge's path, counted where they happen
//! ([`baton_fabric::path::counted`]), for its report and the job's summary.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use baton_fabric::path::counted::{Counted, RequestCounter, Requests};
use baton_fabric::{DataPath, EdgeId};

/// Requests per edge, by the edge's number.
pub type EdgeRequests = BTreeMap<u32, Requests>;

/// Adds `more` into `into`, edge by edge.
pub fn merge(into: &mut EdgeRequests, more: &EdgeRequests) {
    for (edge, r) in more {
        *into.entry(*edge).or_default() += *r;
    }
}

/// A counter per edge, shared by a task's readers and writers.
#[derive(Debug, Default)]
pub struct EdgeCounters(Mutex<BTreeMap<u32, Arc<RequestCounter>>>);

impl EdgeCounters {
    /// `path` (of kind `name`), its requests counted as edge `edge`'s.
    pub fn count(&self, edge: EdgeId, path: Arc<dyn DataPath>, name: &'static str) -> Arc<dyn DataPath> {
        let counter = match self.0.lock() {
            Ok(mut map) => map.entry(edge.0).or_default().clone(),
            // A poisoned map only loses counts, never data.
            Err(_) => Arc::default(),
        };
        Arc::new(Counted::new(path, counter, name))
    }

    /// The counts so far.
    pub fn snapshot(&self) -> EdgeRequests {
        match self.0.lock() {
            Ok(map) => map.iter().map(|(e, c)| (*e, c.snapshot())).collect(),
            Err(_) => EdgeRequests::new(),
        }
    }
}
