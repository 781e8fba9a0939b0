//! The shuffle library's errors.

use arrow_schema::ArrowError;

/// Why a shuffle step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A partitioner needs at least one partition.
    #[error("a shuffle needs at least one partition")]
    NoPartitions,
    /// A key column index is past the batch's columns.
    #[error("key column {index} asked for, but batches have {columns} columns")]
    BadColumn {
        /// The index given.
        index: usize,
        /// Columns in the batch.
        columns: usize,
    },
    /// A partitioner needs at least one key column.
    #[error("a partitioner needs at least one key column")]
    NoKeys,
    /// Arrow could not encode, compare or take the rows.
    #[error("arrow: {source}")]
    Arrow {
        /// Arrow's error.
        #[from]
        source: ArrowError,
    },
    /// Asked for something this version does not do yet.
    #[error("not supported yet: {what}")]
    Unsupported {
        /// What.
        what: String,
    },
    /// The fabric failed to move the bytes.
    #[error(transparent)]
    Fabric(#[from] baton_fabric::Error),
}

/// The shuffle library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
