//! One writer at a time per stream in this process: decisions on a grant or
//! a home queue instead of racing. The expected version of each append
//! still guards against other processes; this only spares the retries.
//!
//! Holds locks and nothing else: it must never decide, read the log or know
//! what the work it serialises does.

use std::collections::HashMap;
use std::sync::Arc;

use threshold_domain::StreamId;

/// The per-stream locks, dropped when their last user leaves.
#[derive(Clone, Default)]
pub(crate) struct Writers {
    locks: Arc<std::sync::Mutex<HashMap<StreamId, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Writers {
    /// Runs `work` as `stream`'s only writer in this process.
    pub(crate) async fn run<T>(&self, stream: &StreamId, work: impl Future<Output = T>) -> T {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(stream.clone()).or_default())
        };
        let out = {
            let _turn = lock.lock().await;
            work.await
        };
        // The last one out removes the stream's lock.
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) == 2 {
            locks.remove(stream);
        }
        out
    }
}
