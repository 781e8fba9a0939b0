//! Errors that say where in a stage they happened: every operator of a task's plan is wrapped so
//! that the first operator an error passes through names itself — its expressions (a division by
//! zero names the projection that divided), or for a file scan the files of the task's partition
//! and the columns read (a garbled Parquet page names its file).

use std::fmt;
use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream, displayable,
    replace_children_if_necessary,
};
use futures::TryStreamExt;

/// How the place an error happened begins in its context (and so how it is found again).
const MARK: &str = "where: ";

/// Longest description of an operator kept in an error.
const MAX_LABEL: usize = 240;

/// `plan` with every operator wrapped (see the module's doc). Run the result once; its metrics
/// are those of the operators it wraps.
pub fn locate(plan: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    let children = plan.children().into_iter().map(|c| locate(c.clone())).collect::<DfResult<Vec<_>>>()?;
    let inner = if children.is_empty() { plan } else { replace_children_if_necessary(plan, children)? };
    Ok(Arc::new(Located { inner }))
}

/// Where the error happened, as [`locate`]'s wrappers said it (`None` if none did).
pub fn place(e: &DataFusionError) -> Option<String> {
    let text = e.to_string();
    let at = text.find(MARK)?;
    let line = text[at..].lines().next().unwrap_or_default();
    Some(line.to_string())
}

/// One wrapped operator: the same in every way but the errors of its stream.
#[derive(Debug)]
struct Located {
    inner: Arc<dyn ExecutionPlan>,
}

impl Located {
    /// What the operator was doing, for partition `partition`.
    fn label(&self, partition: usize) -> String {
        let mut label = match scanned_files(&self.inner, partition) {
            Some(files) => {
                let columns: Vec<String> = self.inner.schema().fields().iter().map(|f| f.name().clone()).collect();
                format!("{MARK}reading {} into columns [{}]", files.join(", "), columns.join(", "))
            }
            None => format!(
                "{MARK}running {}",
                without_indices(displayable(self.inner.as_ref()).one_line().to_string().trim_end())
            ),
        };
        if label.len() > MAX_LABEL {
            let mut cut = MAX_LABEL;
            while !label.is_char_boundary(cut) {
                cut -= 1;
            }
            label.truncate(cut);
            label.push('…');
        }
        label
    }
}

/// `text` without the input indices of physical columns (`sum(t.a)@1` reads as `sum(t.a)`).
pub(crate) fn without_indices(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '@' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every file the scans in `plan` (and below it) read, in all their partitions.
pub(crate) fn every_scanned_file(plan: &Arc<dyn ExecutionPlan>) -> Vec<String> {
    let mut files = Vec::new();
    if let Some(scan) =
        plan.downcast_ref::<DataSourceExec>().and_then(|e| e.data_source().downcast_ref::<FileScanConfig>())
    {
        let store = scan.object_store_url.as_str();
        for group in &scan.file_groups {
            files.extend(group.iter().map(|f| format!("{store}{}", f.object_meta.location)));
        }
    }
    for child in plan.children() {
        files.extend(every_scanned_file(child));
    }
    files
}

/// The files a file scan reads for `partition` (`None` if `plan` is not a file scan).
fn scanned_files(plan: &Arc<dyn ExecutionPlan>, partition: usize) -> Option<Vec<String>> {
    let scan = plan.downcast_ref::<DataSourceExec>()?.data_source().downcast_ref::<FileScanConfig>()?;
    let group = scan.file_groups.get(partition)?;
    let store = scan.object_store_url.as_str();
    Some(group.iter().map(|f| format!("{store}{}", f.object_meta.location)).collect())
}

/// `e`, with `label` as its context unless an operator below already named itself.
fn tag(e: DataFusionError, label: &str) -> DataFusionError {
    if place(&e).is_some() { e } else { DataFusionError::Context(label.to_string(), Box::new(e)) }
}

impl DisplayAs for Located {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_as(t, f)
    }
}

impl ExecutionPlan for Located {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn downcast_delegate(&self) -> Option<&dyn ExecutionPlan> {
        Some(self.inner.as_ref())
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inner.children()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
        ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion> {
        self.inner.apply_expressions(f)
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Located { inner: replace_children_if_necessary(self.inner.clone(), children)? }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let label = self.label(partition);
        let stream = self.inner.execute(partition, context).map_err(|e| tag(e, &label))?;
        let schema = stream.schema();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream.map_err(move |e| tag(e, &label)))))
    }

    fn metrics(&self) -> Option<datafusion::physical_plan::metrics::MetricsSet> {
        self.inner.metrics()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_indices_are_dropped_and_nothing_else() {
        assert_eq!(
            without_indices("expr=[a@0 as a, sum(t.a)@1 / min(t.b)@12 as q]"),
            "expr=[a as a, sum(t.a) / min(t.b) as q]"
        );
        assert_eq!(without_indices("x = 'me@host' @"), "x = 'me@host' @");
    }
}
