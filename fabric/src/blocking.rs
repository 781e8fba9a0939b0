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

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocking work through `off_async` leaves the runtime free for its other tasks: here the
    /// work waits for a message that only another task, on the same single worker thread, can
    /// send. Run inline on the worker, it would wait in vain.
    #[test]
    fn blocking_work_leaves_the_runtime_to_its_other_tasks() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let got = runtime.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel();
            let (started, blocking) = tokio::sync::oneshot::channel();
            let waiting = tokio::spawn(async move {
                let _ = started.send(());
                off_async(move || rx.recv_timeout(std::time::Duration::from_secs(5)))
            });
            // Once the blocking work holds the worker thread, ask another task for the message.
            blocking.await.unwrap();
            tokio::spawn(async move { tx.send(7u32) }).await.unwrap().unwrap();
            waiting.await.unwrap()
        });
        assert_eq!(got, Ok(7));
    }
}
