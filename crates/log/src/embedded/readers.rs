//! The readers: a few threads, each with its own read-only connection, that
//! take reads from one queue several at a time.
//!
//! A read of one stream costs SQLite a few microseconds. Handing each to
//! tokio's blocking pool cost more than that: a task to allocate, the pool's
//! lock, a thread woken and put back to sleep per read. When every event is
//! a parcel heard for the first time (the morning's first scans, or any
//! start of a process), those hand-overs were most of the work and the reads
//! queued behind them. Here a busy reader takes the next reads without being
//! woken, and a reader is woken only when none is awake.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::{Error, Result};

/// Reader threads at most: reads that wait on the disk do not hold up the
/// others while fewer than this wait.
const THREADS: usize = 8;
/// Reads a reader takes from the queue at once, so that one slow read holds
/// up few others.
const TAKE: usize = 8;

type Job = Box<dyn FnOnce(Result<&Connection>, &Path) + Send>;

/// The reads of one store. Dropping it lets its threads end once the reads
/// queued are done.
#[derive(Debug)]
pub(super) struct Readers {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    queue: Mutex<Queue>,
    ready: Condvar,
    open: fn(&Path) -> Result<Connection>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("path", &self.path).finish()
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads started and not ended.
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    /// Of those, how many were woken and have not yet taken the lock: a
    /// read queued meanwhile needs no other wake.
    waking: usize,
    closed: bool,
}

impl Readers {
    /// Readers of the store at `path`; each thread opens its connection with
    /// `open` when it starts, and again after a read fails to open one.
    pub(super) fn new(path: PathBuf, open: fn(&Path) -> Result<Connection>) -> Self {
        Self {
            shared: Arc::new(Shared {
                path,
                queue: Mutex::new(Queue::default()),
                ready: Condvar::new(),
                open,
            }),
        }
    }

    /// Runs `f` on a reader's connection; its answer.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn, path| {
            let _ = reply.send(conn.and_then(|c| f(c, path)));
        });
        let spawn = {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.closed {
                return Err(Error::Closed);
            }
            q.jobs.push_back(job);
            if q.idle > q.waking {
                q.waking += 1;
                self.shared.ready.notify_one();
                false
            } else if q.idle > 0 {
                // A reader woken for an earlier read takes this one too.
                false
            } else if q.threads < THREADS {
                q.threads += 1;
                true
            } else {
                false
            }
        };
        if spawn {
            let shared = Arc::clone(&self.shared);
            let started = std::thread::Builder::new()
                .name("threshold-log-read".into())
                .spawn(move || run(&shared));
            if let Err(source) = started {
                let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                q.threads -= 1;
                if q.threads == 0 {
                    // No thread will take the reads queued: answer them.
                    let path = self.shared.path.clone();
                    for job in q.jobs.drain(..) {
                        job(
                            Err(Error::Io {
                                path: path.clone(),
                                source: std::io::Error::other(source.to_string()),
                            }),
                            &path,
                        );
                    }
                }
            }
        }
        answer.await.map_err(|_| Error::Closed)?
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.closed = true;
        self.shared.ready.notify_all();
    }
}

/// A reader thread: takes up to [`TAKE`] reads at a time until the readers
/// are dropped and nothing is queued.
fn run(shared: &Shared) {
    let mut conn: Option<Connection> = None;
    let mut taken: Vec<Job> = Vec::with_capacity(TAKE);
    loop {
        {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            while q.jobs.is_empty() {
                if q.closed {
                    q.threads -= 1;
                    return;
                }
                q.idle += 1;
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                q.idle -= 1;
                // Woken or not (a spurious wake-up), it looks at the queue
                // now, as the one woken would have.
                q.waking = q.waking.saturating_sub(1);
            }
            let n = q.jobs.len().min(TAKE);
            taken.extend(q.jobs.drain(..n));
        }
        for job in taken.drain(..) {
            if conn.is_none() {
                match (shared.open)(&shared.path) {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        job(Err(e), &shared.path);
                        continue;
                    }
                }
            }
            job(conn.as_ref().ok_or(Error::Closed), &shared.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> Result<Connection> {
        Connection::open(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })
    }

    fn unopenable(path: &Path) -> Result<Connection> {
        Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("no such store"),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_reads_at_once_are_each_answered_on_a_few_threads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES (7);")
            .unwrap();
        let readers = Arc::new(Readers::new(path, open));
        let reads: Vec<_> = (0..2_000i64)
            .map(|i| {
                let readers = Arc::clone(&readers);
                tokio::spawn(async move {
                    readers
                        .read(move |c, _| {
                            Ok(
                                c.query_row("SELECT x + ?1 FROM t", [i], |r| r.get::<_, i64>(0))
                                    .unwrap(),
                            )
                        })
                        .await
                })
            })
            .collect();
        for (i, read) in reads.into_iter().enumerate() {
            assert_eq!(read.await.unwrap().unwrap(), 7 + i as i64);
        }
        let threads = readers.shared.queue.lock().unwrap().threads;
        assert!(
            (1..=THREADS).contains(&threads),
            "{threads} reader threads for 2,000 reads"
        );
    }

    #[tokio::test]
    async fn a_store_that_does_not_open_fails_each_read_and_the_next_may_open_it() {
        let dir = tempfile::tempdir().unwrap();
        let readers = Readers::new(dir.path().join("r.db"), unopenable);
        let err = readers.read(|_, _| Ok(())).await.unwrap_err();
        assert!(err.to_string().contains("no such store"), "{err}");
        let err = readers.read(|_, _| Ok(())).await.unwrap_err();
        assert!(err.to_string().contains("no such store"), "{err}");
    }

    #[tokio::test]
    async fn dropped_readers_end_their_threads() {
        let dir = tempfile::tempdir().unwrap();
        let readers = Readers::new(dir.path().join("r.db"), open);
        readers.read(|_, _| Ok(())).await.unwrap();
        let shared = Arc::clone(&readers.shared);
        drop(readers);
        for _ in 0..500 {
            if shared.queue.lock().unwrap().threads == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("the reader thread outlived its readers");
    }
}
