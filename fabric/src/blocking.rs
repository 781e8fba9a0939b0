//! Blocking work (file I/O, CPU-heavy loops) called from async code without stalling the
//! runtime's other tasks.

/// Runs blocking `work` from async code: on a multi-threaded runtime the calling worker thread
/// becomes a blocking one for the call (its other tasks move on elsewhere); on any other, or
/// outside a runtime, it simply runs.
pub fn off_async<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
