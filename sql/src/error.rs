//! The SQL frontend's errors.

use std::path::PathBuf;

/// Why a SQL-side step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A scale factor that is not a positive number up to 1000.
    #[error("scale factor {sf} is not a positive number up to 1000")]
    BadScale {
        /// The scale factor given.
        sf: f64,
    },
    /// A local file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Parquet could not write or read a file.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed.
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    /// DataFusion refused the query (a syntax error, an unknown table or column, a type
    /// error) or failed to run it; its message as it gave it.
    #[error("{}", .0.find_root())]
    DataFusion(datafusion::error::DataFusionError),
    /// A table that cannot be registered.
    #[error("table {table}: {reason}")]
    BadTable {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
    /// A catalog file that cannot be read.
    #[error("catalog {}: {reason}", path.display())]
    BadCatalog {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A table's object store could not be opened.
    #[error(transparent)]
    Connector(#[from] baton_connectors::Error),
    /// The job failed (a task's error, a lost path).
    #[error(transparent)]
    Runtime(#[from] baton_runtime::Error),
    /// A stage's parameters could not be encoded.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The planner refused the job.
    #[error(transparent)]
    Planner(#[from] baton_planner::Error),
}

// By hand rather than `#[from]`: DataFusion's message already holds its causes, so the error
// names no source (a report would print them twice).
impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::DataFusion(e)
    }
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }
}

/// The SQL frontend's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
