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
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }
}

/// The SQL frontend's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
