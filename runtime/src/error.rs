//! The runtime's errors.

use std::path::PathBuf;

use baton_fabric::TaskId;

/// Why a task, a worker or a job failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input of the job is missing or malformed: the job fails before any task runs.
    #[error("input {file}: {reason}")]
    Input {
        /// The file (path or URL).
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading an input file failed (retryable unless the file is gone).
    #[error("input {file}: {cause}")]
    Source {
        /// The file.
        file: String,
        /// The store's error.
        cause: object_store::Error,
    },
    /// A task's operator failed; `retryable` says whether another attempt may succeed.
    #[error("task {task}: {message}")]
    Task {
        /// The task.
        task: TaskId,
        /// What went wrong, as the worker reported it.
        message: String,
        /// Whether a retry may help (a lost worker or a transient fault) or not (bad input).
        retryable: bool,
        /// Requests the task made on each edge before it failed.
        requests: crate::requests::EdgeRequests,
    },
    /// A task asked for an operator the worker does not have.
    #[error("no operator named {name:?} (known: {known})")]
    UnknownOperator {
        /// The name asked for.
        name: String,
        /// The names registered.
        known: String,
    },
    /// Parameters of an operator did not parse.
    #[error("bad parameters for {op}: {reason}")]
    BadParams {
        /// The operator.
        op: String,
        /// Why.
        reason: String,
    },
    /// A worker could not be reached, or died during an invocation.
    #[error("worker {endpoint} lost: {reason}")]
    WorkerLost {
        /// The worker's address or name.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// A worker refused an invocation because it is running another.
    #[error("worker {endpoint} is busy")]
    WorkerBusy {
        /// The worker's address.
        endpoint: String,
        /// How long it asked to be left alone (a gateway's `Retry-After`), if it said.
        retry_after: Option<std::time::Duration>,
    },
    /// A worker answered with something that is not the protocol.
    #[error("worker {endpoint} broke the protocol: {reason}")]
    Protocol {
        /// The worker's address.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// A task ran past its deadline.
    #[error("task {task} timed out after {seconds:.1} s")]
    Timeout {
        /// The task.
        task: TaskId,
        /// The deadline in seconds.
        seconds: f64,
    },
    /// A stage ran out of attempts for one of its tasks.
    #[error("{stage}: partition {partition} failed {attempts} times; last error: {last}")]
    Exhausted {
        /// The stage's name.
        stage: String,
        /// The partition.
        partition: u32,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: String,
    },
    /// The output location holds (or is) one of the job's inputs: writing it would destroy
    /// the input, so nothing is touched.
    #[error(
        "the output {output} overlaps the input {input}: writing it would destroy the input; choose another output"
    )]
    Overlap {
        /// The input, as the user named it.
        input: String,
        /// The output location.
        output: String,
    },
    /// A job description that cannot run.
    #[error("bad job: {reason}")]
    BadJob {
        /// Why.
        reason: String,
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
    /// The fabric failed.
    #[error(transparent)]
    Fabric(#[from] baton_fabric::Error),
    /// The shuffle library failed.
    #[error(transparent)]
    Shuffle(#[from] baton_shuffle::Error),
    /// An object store URL could not be opened.
    #[error(transparent)]
    Connector(#[from] baton_connectors::Error),
    /// An object store request failed.
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),
    /// Arrow failed.
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The planner refused the job.
    #[error(transparent)]
    Planner(#[from] baton_planner::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }

    /// What a task reports of this error as its failure: an operator's own task error by its
    /// message (the driver names the task), anything else whole.
    pub fn failure_message(&self) -> String {
        match self {
            Error::Task { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The requests a failed task made before it failed (none for other errors).
    pub fn requests(&self) -> crate::requests::EdgeRequests {
        match self {
            Error::Task { requests, .. } => requests.clone(),
            _ => Default::default(),
        }
    }

    /// Whether another attempt at the same task might succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Task { retryable, .. } => *retryable,
            Error::WorkerLost { .. } | Error::WorkerBusy { .. } | Error::Timeout { .. } | Error::Protocol { .. } => {
                true
            }
            Error::Fabric(e) => fabric_retryable(e),
            Error::Shuffle(baton_shuffle::Error::Fabric(e)) => fabric_retryable(e),
            Error::ObjectStore(e) => store_retryable(e),
            Error::Io { source, .. } => io_retryable(source),
            Error::Source { cause, .. } => {
                !matches!(cause, object_store::Error::NotFound { .. }) && store_retryable(cause)
            }
            _ => false,
        }
    }
}

/// Whether an OS error may go away by itself. A denied permission, a read-only or full file
/// system, or a full quota stay as they are however often the task is tried.
fn io_retryable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    !matches!(e.kind(), K::PermissionDenied | K::ReadOnlyFilesystem | K::StorageFull | K::QuotaExceeded)
}

fn store_retryable(e: &object_store::Error) -> bool {
    use object_store::Error as S;
    match e {
        S::PermissionDenied { .. } | S::Unauthenticated { .. } | S::NotSupported { .. } => false,
        other => {
            // A local file system's errors carry the OS error inside.
            let mut source = std::error::Error::source(other);
            while let Some(inner) = source {
                if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                    return io_retryable(io);
                }
                source = inner.source();
            }
            true
        }
    }
}

fn fabric_retryable(e: &baton_fabric::Error) -> bool {
    use baton_fabric::Error as F;
    match e {
        F::Io { source, .. } => io_retryable(source),
        F::ObjectStore { source } => store_retryable(source),
        // A full tier is final for this attempt's plan: the driver must route the edge elsewhere.
        F::NoCapacity { .. } => false,
        other => matches!(other, F::Timeout { .. } | F::Unreachable { .. } | F::PeerGone { .. }),
    }
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
