//! The embedded backend: SQLite (bundled) in WAL mode, in `DIR/events.db`.
//!
//! One writer thread owns the only write connection. Appends queue to it; it
//! takes everything queued (up to a batch limit), applies it in one
//! transaction and commits with `synchronous = FULL`, so one fsync of the WAL
//! covers the whole group. Only then are the appends answered: an
//! acknowledged event is on disk. Readers use their own read-only connections
//! and never block the writer.
//!
//! This module must never acknowledge before the commit returned, and never
//! return a row whose checksum does not match.
//!
//! The files are the owner's only: a directory the log makes is 0700 and
//! `events.db`, its `-wal` and `-shm` (which SQLite gives the database's
//! mode) and `LOCK` are 0600 on unix; older files open to others are
//! narrowed at open. A new store is made whole under another name and then
//! renamed into place, so `events.db` is never an empty file of ours, and
//! an empty one is refused at open (see `check`).

mod check;
mod checkpoint;
mod private;
mod readers;
mod recent;
mod seen;
mod tail;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, Row, params};
use threshold_domain::{Country, EventId, StreamId};

use self::recent::Recent;
use self::tail::Tail;
use tokio::sync::{mpsc, oneshot, watch};

use crate::event::{AppendOutcome, ExpectedVersion, NewEvent, Position, RecordedEvent};
use crate::{Error, EventLog, Result, Subscription};

pub use writer::Conditional;
pub(crate) use writer::Request;

/// The file the events live in, inside the data directory.
pub const DB_FILE: &str = "events.db";
/// Marks a SQLite file as a Threshold event log (`PRAGMA application_id`).
const APPLICATION_ID: i32 = 0x5448_4c47; // "THLG"
/// The schema this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i32 = 1;

/// How much the store checks when it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// File header and size, then SQLite's `quick_check` of every page's
    /// structure: seconds per GiB. The default.
    Quick,
    /// File header and size only.
    Header,
}

/// Tuning for the embedded backend. The defaults are what the benchmarks use.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// What to check at open.
    pub verify: Verify,
    /// Most events one group commit takes.
    pub max_batch_events: usize,
    /// Appends that may wait for the writer before callers wait too.
    pub queue_depth: usize,
    /// Page cache of the writer connection, in MiB.
    pub cache_mib: u32,
    /// Page size of a new store, in bytes (a power of two, 512..=65536).
    pub page_size: u32,
    /// Events held in memory before they are folded into the stream and id
    /// indexes (in sorted slices, over the following commits).
    pub index_generation: usize,
    /// While a generation is being indexed, each group commit writes twice
    /// its own events' worth of its index entries (at least 256), but not
    /// more than this or its own events, whichever is more.
    pub index_slice: usize,
    /// The last events committed, kept in memory for subscribers close
    /// behind the head and for `read_versions`: a subscriber further
    /// behind reads the database, 1,024 events a read, until it is close
    /// again. It must hold more than a read model takes in one gather, or
    /// at the maximum rate the read models fall off it and read the
    /// database for good.
    pub recent_events: usize,
    /// The most memory those events take (each its fields and what they
    /// hold, roughly), however few: large events are held fewer.
    pub recent_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            verify: Verify::Quick,
            max_batch_events: 16_384,
            queue_depth: 65_536,
            cache_mib: 256,
            page_size: 4096,
            index_generation: 65_536,
            index_slice: 4_096,
            // About a second at the maximum of `make load` (two events to
            // an attempt reported), and at most ~64 MiB.
            recent_events: 65_536,
            recent_bytes: 64 << 20,
        }
    }
}

/// What an append would do, as [`EmbeddedLog::plan`] decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The stream's version now.
    pub current: u64,
    /// The id of the stream's event at `current`; `None` when it is empty.
    pub last: Option<EventId>,
    /// Per event id asked about: `Some(Ack::Duplicate)` where it is stored
    /// already, `None` where it is new.
    pub stored: Vec<Option<crate::Ack>>,
}

/// The embedded event log. Clones share one store.
#[derive(Clone, Debug)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    path: PathBuf,
    requests: mpsc::Sender<Request>,
    head: watch::Receiver<u64>,
    readers: readers::Readers,
    tail: Arc<RwLock<Tail>>,
    /// The last events committed, for subscribers close behind and
    /// `read_versions`.
    recent: Arc<Mutex<Recent>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    seen: seen::Stats,
}

impl EmbeddedLog {
    /// Opens (or creates) the store in `dir`, checking its files first.
    pub fn open(dir: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        private::dir(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let lock = lock_dir(&dir)?;
        let path = dir.join(DB_FILE);
        if !path.exists() {
            create(&path, &options)?;
        }
        private::narrow(&path)?;
        check::file_header(&path)?;

        let conn = Connection::open(&path).map_err(|e| storage(&path, e))?;
        configure_writer(&conn, &path, &options)?;
        if options.verify == Verify::Quick {
            check::quick_check(&conn, &path)?;
        }
        let head: u64 = conn
            .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
                r.get(0)
            })
            .map_err(|e| storage(&path, e))?;

        let (tail, _indexed) = writer::recover_tail(&conn).map_err(|e| classify(&path, e))?;
        let tail = Arc::new(RwLock::new(tail));
        let recent = Arc::new(Mutex::new(Recent::new(
            options.recent_events,
            options.recent_bytes,
        )));

        let seen = seen::Stats::default();
        let (head_tx, head_rx) = watch::channel(head);
        let (tx, rx) = mpsc::channel(options.queue_depth.max(1));
        let wal_frames = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let checkpointer =
            checkpoint::spawn(path.clone(), head_rx.clone(), Arc::clone(&wal_frames)).map_err(
                |source| Error::Io {
                    path: path.clone(),
                    source,
                },
            )?;
        // The writer thread holds the directory lock until its connection is
        // closed, so a reopen never races a writer that is still checkpointing.
        let writer = writer::spawn(
            writer::Start {
                conn,
                lock,
                path: path.clone(),
                head,
                head_tx,
                tail: Arc::clone(&tail),
                recent: Arc::clone(&recent),
                wal_frames,
                checkpointer,
                seen: seen.clone(),
                config: writer::Config {
                    max_batch_events: options.max_batch_events.max(1),
                    seal_after: options.index_generation.max(1),
                    flush_slice: options.index_slice.max(1),
                },
            },
            rx,
        )?;
        let readers = readers::Readers::new(path.clone(), open_reader);
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                path,
                requests: tx,
                head: head_rx,
                readers,
                tail,
                recent,
                writer: Mutex::new(Some(writer)),
                seen,
            }),
        })
    }

    /// Whether the writer's event-id filter answers yet: from open until it
    /// has read the ids already indexed (a thread of its own reads them),
    /// every new id is looked up in the index.
    pub fn id_filter_ready(&self) -> bool {
        self.inner
            .seen
            .ready
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Index lookups the event-id filter spared: new ids it knew were
    /// never stored.
    pub fn lookups_spared(&self) -> u64 {
        self.inner
            .seen
            .spared
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stops the writer once everything queued before is committed, folds the
    /// WAL into the database file and waits for it. Appends after this fail
    /// with [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        let (reply, done) = oneshot::channel();
        if self
            .inner
            .requests
            .send(Request::Close { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
        let handle = self.inner.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        Ok(())
    }

    /// Decides what appending events with `ids` to `stream` would do, after
    /// every write queued before this call (with the writes it is committed
    /// with, and answered once they are durable), and writes nothing: the
    /// stream's version and which ids are stored already, or the refusal
    /// ([`Error::Conflict`], [`Error::EventIdReused`]) the append would get.
    /// A backend that stores its events elsewhere first (Kafka) decides with
    /// this, then records what it stored with [`EventLog::append`].
    pub async fn plan(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        ids: Vec<EventId>,
    ) -> Result<Planned> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(Request::Plan {
                stream: stream.clone(),
                expected,
                ids,
                reply,
            })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Takes in records of a log kept elsewhere (Kafka), each stream's in
    /// their order, by one rule: a record goes in when its version is its
    /// stream's next and it follows the stream's last event; otherwise
    /// another writer's record came first and it is left out. Every stream
    /// of the call goes in one transaction (with anything queued beside
    /// it). Per stream, per record: `Ack::Appended` where it went in,
    /// `Ack::Duplicate` where its event was stored already, `None` where
    /// it was left out.
    pub async fn replicate(
        &self,
        streams: Vec<(StreamId, Vec<Conditional>)>,
    ) -> Result<Vec<Vec<Option<crate::Ack>>>> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(Request::Replicate { streams, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// The tail's entries of `stream` after `after_version`: (version,
    /// position).
    fn tail_after(&self, stream: &StreamId, after_version: u64) -> Vec<(u64, u64)> {
        self.inner
            .tail
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .stream_after(&stream.to_string(), after_version)
    }

    /// The event at each (stream, version) asked for, if the stream has
    /// one there: many streams' single events at once, for a reader that
    /// would otherwise read them one by one. Those the last commits still
    /// hold in memory are taken from there; the rest in one read.
    pub async fn read_versions(
        &self,
        wanted: Vec<(StreamId, u64)>,
    ) -> Result<Vec<Option<RecordedEvent>>> {
        let from_tail: Vec<Vec<(u64, u64)>> = wanted
            .iter()
            .map(|(stream, version)| self.tail_after(stream, version.saturating_sub(1)))
            .collect();
        // Those still in memory (a reader close behind the head, such as a
        // publisher, finds most there) need no read of the database.
        // Shared under the lock (the writer takes it on every commit),
        // copied once it is let go.
        let held: Vec<Option<Arc<RecordedEvent>>> = {
            let recent = self.inner.recent.lock().unwrap_or_else(|p| p.into_inner());
            wanted
                .iter()
                .zip(&from_tail)
                .map(|((_, version), tail)| {
                    let (_, position) = tail.iter().find(|(v, _)| v == version)?;
                    recent.at(Position(*position))
                })
                .collect()
        };
        let mut found: Vec<Option<RecordedEvent>> = held
            .into_iter()
            .zip(&wanted)
            .map(|(e, (stream, version))| {
                e.filter(|e| e.stream == *stream && e.stream_version == *version)
                    .map(|e| RecordedEvent::clone(&e))
            })
            .collect();
        let missing: Vec<_> = wanted
            .into_iter()
            .zip(from_tail)
            .enumerate()
            .filter(|(i, ((_, version), _))| found[*i].is_none() && *version > 0)
            .map(|(i, ((stream, version), tail))| (i, stream, version, tail))
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let read = self
            .with_reader(move |conn, path| {
                missing
                    .into_iter()
                    .map(|(i, stream, version, tail)| {
                        Ok((
                            i,
                            stream_after(conn, path, &stream, version - 1, 1, tail)?.pop(),
                        ))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
        for (i, event) in read {
            found[i] = event;
        }
        Ok(found)
    }

    async fn with_reader<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Path) -> Result<T> + Send + 'static,
    {
        self.inner.readers.read(f).await
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome> {
        crate::event::check_append(stream, &events)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .requests
            .send(Request::Append {
                stream: stream.clone(),
                expected,
                events,
                reply,
            })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        // The tail first, then the tables: an entry moving from one to the
        // other in between is then seen at least once, never missed.
        let from_tail = self.tail_after(stream, after_version);
        let stream = stream.clone();
        self.with_reader(move |conn, path| {
            stream_after(conn, path, &stream, after_version, max, from_tail)
        })
        .await
    }

    async fn read_all(&self, after: Position, max: usize) -> Result<Vec<RecordedEvent>> {
        self.with_reader(move |conn, path| read_after(conn, path, after, max))
            .await
    }

    async fn head(&self) -> Result<Position> {
        Ok(Position(*self.inner.head.borrow()))
    }

    fn subscribe(&self, after: Position) -> Subscription {
        let (tx, rx) = mpsc::channel(1024);
        let path = self.inner.path.clone();
        let mut head = self.inner.head.clone();
        let recent = Arc::clone(&self.inner.recent);
        tokio::spawn(async move {
            let mut after = after;
            let mut conn: Option<Connection> = None;
            loop {
                let target = *head.borrow_and_update();
                if target <= after.0 {
                    // Caught up: wait for the writer to commit more. A closed
                    // log ends the subscription.
                    if head.wait_for(|h| *h > after.0).await.is_err() {
                        return;
                    }
                    continue;
                }
                // Close behind the head: the events are in memory still.
                let held = recent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .after(after, 1024);
                if let Some(batch) = held {
                    for event in batch {
                        after = event.position;
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                let path2 = path.clone();
                let c = conn.take();
                let read = tokio::task::spawn_blocking(move || {
                    let c = match c {
                        Some(c) => c,
                        None => open_reader(&path2)?,
                    };
                    let (batch, damage) = read_prefix(&c, &path2, after, 1024);
                    Ok::<_, Error>((c, batch, damage))
                })
                .await;
                let (batch, damage) = match read {
                    Ok(Ok((c, batch, damage))) => {
                        conn = Some(c);
                        (batch, damage)
                    }
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Error::Io {
                                path: path.clone(),
                                source: std::io::Error::other(e),
                            }))
                            .await;
                        return;
                    }
                };
                for event in batch {
                    after = event.position;
                    if tx.send(Ok(Arc::new(event))).await.is_err() {
                        return;
                    }
                }
                if let Some(e) = damage {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        });
        Subscription::from_channel(rx)
    }
}

const COLUMNS: &str = "position, stream, stream_version, event_id, event_type, schema_version, \
     occurred_at_us, recorded_at_us, country, tenant, causation_id, correlation_id, \
     traceparent, tracestate, payload, crc";

/// [`COLUMNS`] of the `events` table aliased `e`.
const QUALIFIED: &str = "e.position, e.stream, e.stream_version, e.event_id, e.event_type, \
     e.schema_version, e.occurred_at_us, e.recorded_at_us, e.country, e.tenant, e.causation_id, \
     e.correlation_id, e.traceparent, e.tracestate, e.payload, e.crc";

/// Up to `max` events of `stream` after `after_version`, from the tables
/// and then from `from_tail` (the tail's entries, taken before the read).
fn stream_after(
    conn: &Connection,
    path: &Path,
    stream: &StreamId,
    after_version: u64,
    max: usize,
    from_tail: Vec<(u64, u64)>,
) -> Result<Vec<RecordedEvent>> {
    let key = stream.to_string();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {QUALIFIED} FROM stream_index si JOIN events e ON e.position = si.position \
             WHERE si.stream = ?1 AND si.stream_version > ?2 ORDER BY si.stream_version LIMIT ?3"
        ))
        .map_err(|e| storage(path, e))?;
    let rows = stmt
        .query_map(params![key, after_version as i64, max as i64], raw_row)
        .map_err(|e| storage(path, e))?;
    let mut out = collect(rows, path)?;
    let mut last = out.last().map_or(after_version, |e| e.stream_version);
    let mut by_position = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE position = ?1"))
        .map_err(|e| storage(path, e))?;
    for (version, position) in from_tail {
        if out.len() >= max {
            break;
        }
        if version <= last {
            continue;
        }
        let row = by_position
            .query_row([position as i64], raw_row)
            .map_err(|e| storage(path, e))?;
        out.push(checked(row, path)?);
        last = version;
    }
    // Versions are gap-free by construction; anything else is damage.
    for (i, e) in out.iter().enumerate() {
        if e.stream != *stream || e.stream_version != after_version + i as u64 + 1 {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: format!(
                    "{stream} has version {} at position {} where version {} belongs",
                    e.stream_version,
                    e.position,
                    after_version + i as u64 + 1
                ),
            });
        }
    }
    Ok(out)
}

fn read_after(
    conn: &Connection,
    path: &Path,
    after: Position,
    max: usize,
) -> Result<Vec<RecordedEvent>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
        ))
        .map_err(|e| storage(path, e))?;
    let rows = stmt
        .query_map(params![after.0 as i64, max as i64], raw_row)
        .map_err(|e| storage(path, e))?;
    collect(rows, path)
}

/// Like [`read_after`], but keeps the good events before a failure: a
/// subscriber gets everything up to the damage, then the error.
fn read_prefix(
    conn: &Connection,
    path: &Path,
    after: Position,
    max: usize,
) -> (Vec<RecordedEvent>, Option<Error>) {
    let mut out = Vec::new();
    let stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
    ));
    let mut stmt = match stmt {
        Ok(s) => s,
        Err(e) => return (out, Some(storage(path, e))),
    };
    let rows = match stmt.query_map(params![after.0 as i64, max as i64], raw_row) {
        Ok(rows) => rows,
        Err(e) => return (out, Some(storage(path, e))),
    };
    for row in rows {
        match row
            .map_err(|e| storage(path, e))
            .and_then(|r| checked(r, path))
        {
            Ok(event) => out.push(event),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// A row as SQLite returns it, before it is checked.
struct RawRow {
    position: i64,
    stream: String,
    stream_version: i64,
    event_id: Vec<u8>,
    event_type: String,
    schema_version: i64,
    occurred_at_us: i64,
    recorded_at_us: i64,
    country: Option<String>,
    tenant: Option<String>,
    causation_id: Option<String>,
    correlation_id: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    payload: Vec<u8>,
    crc: i64,
}

fn raw_row(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        position: r.get(0)?,
        stream: r.get(1)?,
        stream_version: r.get(2)?,
        event_id: r.get(3)?,
        event_type: r.get(4)?,
        schema_version: r.get(5)?,
        occurred_at_us: r.get(6)?,
        recorded_at_us: r.get(7)?,
        country: r.get(8)?,
        tenant: r.get(9)?,
        causation_id: r.get(10)?,
        correlation_id: r.get(11)?,
        traceparent: r.get(12)?,
        tracestate: r.get(13)?,
        payload: r.get(14)?,
        crc: r.get(15)?,
    })
}

fn collect(
    rows: impl Iterator<Item = rusqlite::Result<RawRow>>,
    path: &Path,
) -> Result<Vec<RecordedEvent>> {
    rows.map(|r| {
        r.map_err(|e| storage(path, e))
            .and_then(|r| checked(r, path))
    })
    .collect()
}

/// Turns a raw row into an event, refusing anything that does not match its
/// checksum or does not parse: damage is reported, never skipped.
fn checked(r: RawRow, path: &Path) -> Result<RecordedEvent> {
    let corrupt = |detail: String| Error::Corrupt {
        path: path.to_path_buf(),
        detail: format!("event at position {}: {detail}", r.position),
    };
    let event_id: [u8; 16] = r
        .event_id
        .as_slice()
        .try_into()
        .map_err(|_| corrupt(format!("event_id has {} bytes, not 16", r.event_id.len())))?;
    let instant = |us: i64| {
        DateTime::<Utc>::from_timestamp_micros(us)
            .ok_or_else(|| corrupt(format!("instant {us} out of range")))
    };
    let stream: StreamId = r
        .stream
        .parse()
        .map_err(|e| corrupt(format!("stream {:?}: {e}", r.stream)))?;
    let country = r
        .country
        .as_deref()
        .map(str::parse::<Country>)
        .transpose()
        .map_err(|e| corrupt(e.to_string()))?;
    let event = RecordedEvent {
        position: Position(r.position as u64),
        stream,
        stream_version: r.stream_version as u64,
        recorded_at: instant(r.recorded_at_us)?,
        event: NewEvent {
            event_id: EventId::from_bytes(event_id),
            event_type: r.event_type,
            schema_version: r.schema_version as u32,
            occurred_at: instant(r.occurred_at_us)?,
            country,
            tenant: r.tenant,
            causation_id: r.causation_id,
            correlation_id: r.correlation_id,
            traceparent: r.traceparent,
            tracestate: r.tracestate,
            payload: r.payload.into(),
        },
    };
    let expected = checksum(&event);
    if i64::from(expected) != r.crc {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "event at position {} fails its checksum (stored {:08x}, computed {expected:08x})",
                r.position, r.crc
            ),
        });
    }
    Ok(event)
}

/// CRC-32 of everything stored for one event, in a fixed order.
pub(crate) fn checksum(e: &RecordedEvent) -> u32 {
    // One buffer hashed once: the same bytes as field by field, in a
    // fraction of the calls.
    let ev = &e.event;
    let stream = e.stream.to_string();
    let texts = [
        Some(stream.as_str()),
        Some(ev.event_type.as_str()),
        ev.country.map(Country::code),
        ev.tenant.as_deref(),
        ev.causation_id.as_deref(),
        ev.correlation_id.as_deref(),
        ev.traceparent.as_deref(),
        ev.tracestate.as_deref(),
    ];
    let mut buf = Vec::with_capacity(
        texts
            .iter()
            .map(|t| 4 + t.map_or(0, str::len))
            .sum::<usize>()
            + 60,
    );
    for text in texts {
        match text {
            Some(s) => {
                buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
            None => buf.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
    }
    buf.extend_from_slice(&e.position.0.to_le_bytes());
    buf.extend_from_slice(&e.stream_version.to_le_bytes());
    buf.extend_from_slice(ev.event_id.as_bytes());
    buf.extend_from_slice(&ev.schema_version.to_le_bytes());
    buf.extend_from_slice(&ev.occurred_at.timestamp_micros().to_le_bytes());
    buf.extend_from_slice(&e.recorded_at.timestamp_micros().to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&buf);
    h.update(&ev.payload);
    h.finalize()
}

/// Keeps each cached statement's plan whatever its bound values. This build
/// of SQLite has STAT4, which otherwise re-prepares a statement whenever a
/// range parameter (`position > ?`) changes: measured at 15% of the
/// server's CPU under ingestion load.
fn stable_plans(conn: &Connection, path: &Path) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map(|_| ())
    .map_err(|e| classify(path, e))
}

fn configure_writer(conn: &Connection, path: &Path, options: &EmbeddedOptions) -> Result<()> {
    stable_plans(conn, path)?;
    let cache_kib = i64::from(options.cache_mib) * 1024;
    let setup = format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = OFF;
         PRAGMA cache_size = -{cache_kib};
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA temp_store = MEMORY;
         PRAGMA busy_timeout = 5000;"
    );
    // Only takes effect on a new, empty file: before WAL mode is set.
    conn.execute_batch(&format!("PRAGMA page_size = {};", options.page_size))
        .map_err(|e| classify(path, e))?;
    // journal_mode answers with a row; run it through query to accept that.
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .map_err(|e| classify(path, e))
        .and_then(|mode| {
            if mode.eq_ignore_ascii_case("wal") {
                Ok(())
            } else {
                Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    detail: format!("cannot switch to WAL mode (got {mode})"),
                })
            }
        })?;
    conn.execute_batch(&setup).map_err(|e| classify(path, e))?;

    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    if tables == 0 && app_id == 0 {
        conn.execute_batch(&format!(
            "BEGIN; {} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
            include_str!("schema.sql")
        ))
        .map_err(|e| classify(path, e))?;
        return Ok(());
    }
    if app_id != APPLICATION_ID {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!("not a Threshold event log (application_id {app_id:#x})"),
        });
    }
    if version != SCHEMA_VERSION {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!("schema version {version}; this build reads {SCHEMA_VERSION}"),
        });
    }
    Ok(())
}

/// A read-only connection to the store at `path`, as readers use.
fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| classify(path, e))?;
    conn.execute_batch("PRAGMA cache_size = -65536; PRAGMA busy_timeout = 5000;")
        .map_err(|e| classify(path, e))?;
    stable_plans(&conn, path)?;
    Ok(conn)
}

/// Takes `DIR/LOCK` so that two processes never write one store.
/// Makes a new store at `path`: built under another name, with its schema,
/// then renamed into place, so a start that stops half-way leaves no
/// `events.db` (and a later open never finds an empty one of ours).
fn create(path: &Path, options: &EmbeddedOptions) -> Result<()> {
    let new = path.with_extension("db.new");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    // What a start that stopped half-way left behind.
    for stale in ["db.new", "db.new-wal", "db.new-shm"] {
        let stale = path.with_extension(stale);
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&stale)(e)),
            _ => {}
        }
    }
    private::create(&new).map_err(io(&new))?;
    let conn = Connection::open(&new).map_err(|e| storage(&new, e))?;
    configure_writer(&conn, &new, options)?;
    // Everything into the file itself: only the file is renamed.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(|e| storage(&new, e))?;
    conn.close().map_err(|(_, e)| storage(&new, e))?;
    File::open(&new)
        .and_then(|f| f.sync_all())
        .map_err(io(&new))?;
    std::fs::rename(&new, path).map_err(io(path))?;
    // The rename is durable once the directory is.
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = private::open_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    private::narrow(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io { path, source }),
    }
}

pub(crate) fn storage(path: &Path, source: rusqlite::Error) -> Error {
    classify(path, source)
}

/// Maps SQLite's answer to what it means for the operator.
pub(crate) fn classify(path: &Path, source: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    match source.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Error::DiskFull {
            path: path.to_path_buf(),
        },
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => Error::Corrupt {
            path: path.to_path_buf(),
            detail: source.to_string(),
        },
        _ => Error::Storage {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// What a store holds, read without taking the writer's lock, so it works
/// while a server has the store open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The last durable position.
    pub head: Position,
    /// Events by type.
    pub by_type: Vec<(String, u64)>,
}

/// Counts of stored events by type, and the head, for operators and the CLI.
pub fn stats(dir: impl AsRef<Path>) -> Result<Stats> {
    let path = existing_db(dir.as_ref())?;
    let conn = open_reader(&path)?;
    let head: i64 = conn
        .query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| {
            r.get(0)
        })
        .map_err(|e| classify(&path, e))?;
    let mut stmt = conn
        .prepare("SELECT event_type, count(*) FROM events GROUP BY event_type ORDER BY event_type")
        .map_err(|e| classify(&path, e))?;
    let by_type = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .map_err(|e| classify(&path, e))?
        .map(|r| r.map_err(|e| classify(&path, e)))
        .collect::<Result<_>>()?;
    Ok(Stats {
        head: Position(head as u64),
        by_type,
    })
}

/// Up to `max` events after `after`, read without taking the writer's lock.
pub fn read_only(dir: impl AsRef<Path>, after: Position, max: usize) -> Result<Vec<RecordedEvent>> {
    let path = existing_db(dir.as_ref())?;
    let conn = open_reader(&path)?;
    read_after(&conn, &path, after, max)
}

fn existing_db(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Err(Error::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no event log here"),
        });
    }
    check::file_header(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests;
