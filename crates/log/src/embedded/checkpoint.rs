//! The checkpointer: copies committed WAL frames into the database file on
//! its own thread and connection, so the writer never stalls on it.
//!
//! SQLite can only start the WAL over from its beginning when every frame has
//! been copied and a writer begins. Under constant load that moment may not
//! come, so the checkpointer reports the WAL's length and the writer restarts
//! it itself when it has grown past a limit (by then nearly all of it has
//! been copied here, so the restart is short).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::watch;

/// How often the checkpointer looks for new frames.
const INTERVAL: Duration = Duration::from_millis(50);

/// The running checkpointer, for the writer to stop before its last
/// checkpoint: SQLite answers a checkpoint BUSY, without waiting, while
/// another connection's is running, and a clean close must fold the whole
/// WAL into the database file.
pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Stops the thread and waits until its connection is closed.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Starts the checkpointer. It ends when stopped or when the writer drops
/// the head channel.
pub(super) fn spawn(
    path: PathBuf,
    mut head: watch::Receiver<u64>,
    wal_frames: Arc<AtomicU64>,
) -> std::io::Result<Checkpointer> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("threshold-log-checkpoint".into())
        .spawn(move || {
            let Ok(conn) = Connection::open(&path) else {
                // Without it the writer still checkpoints when the WAL grows.
                return;
            };
            let _ = conn.execute_batch("PRAGMA busy_timeout = 1000;");
            loop {
                std::thread::sleep(INTERVAL);
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                match head.has_changed() {
                    Err(_) => return,
                    Ok(false) => continue,
                    Ok(true) => {
                        head.borrow_and_update();
                    }
                }
                // (busy, frames in the WAL, frames copied)
                if let Ok((_, log, _)) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                }) {
                    wal_frames.store(log.max(0) as u64, Ordering::Relaxed);
                }
            }
        })?;
    Ok(Checkpointer { stop, thread })
}
