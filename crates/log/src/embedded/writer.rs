//! The single writer: group commit of everything queued, then the answers.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use threshold_domain::StreamId;
use tokio::sync::{mpsc, oneshot, watch};

use super::{checksum, classify, find_event_id};
use crate::event::{Ack, AppendOutcome, ExpectedVersion, NewEvent, Position, RecordedEvent};
use crate::{Error, Result};

/// Work for the writer thread.
#[derive(Debug)]
pub(crate) enum Request {
    Append {
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        reply: oneshot::Sender<Result<AppendOutcome>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// One append as the writer thread takes it off the queue.
type Append = (
    StreamId,
    ExpectedVersion,
    Vec<NewEvent>,
    oneshot::Sender<Result<AppendOutcome>>,
);

/// Stream versions the writer has seen; bounded so a year of parcels does not
/// live in memory. A miss costs one index lookup.
const VERSION_CACHE_LIMIT: usize = 1 << 20;

struct Writer {
    // Declared before `_lock`: the connection closes first, then the lock goes.
    conn: Connection,
    path: PathBuf,
    head: u64,
    head_tx: watch::Sender<u64>,
    versions: HashMap<String, u64>,
    _lock: File,
}

pub(super) fn spawn(
    conn: Connection,
    lock: File,
    path: PathBuf,
    head: u64,
    head_tx: watch::Sender<u64>,
    rx: mpsc::Receiver<Request>,
    max_batch_events: usize,
) -> Result<JoinHandle<()>> {
    let mut writer = Writer {
        conn,
        path: path.clone(),
        head,
        head_tx,
        versions: HashMap::new(),
        _lock: lock,
    };
    std::thread::Builder::new()
        .name("threshold-log-writer".into())
        .spawn(move || writer.run(rx, max_batch_events.max(1)))
        .map_err(|source| Error::Io { path, source })
}

/// One append being applied inside the group's transaction.
struct Pending {
    reply: oneshot::Sender<Result<AppendOutcome>>,
    outcome: Result<AppendOutcome>,
}

/// What the current transaction has written so far, undone if it fails.
#[derive(Default)]
struct Overlay {
    versions: HashMap<String, u64>,
    ids: HashMap<[u8; 16], (u64, String, u64)>,
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::Receiver<Request>, max_batch_events: usize) {
        let mut close_reply = None;
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Vec::new();
            let mut events = 0;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Append {
                        stream,
                        expected,
                        events: evs,
                        reply,
                    } => {
                        events += evs.len();
                        batch.push((stream, expected, evs, reply));
                    }
                    Request::Close { reply } => {
                        close_reply = Some(reply);
                        break;
                    }
                }
                if events < max_batch_events {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit_group(batch);
            }
            if close_reply.is_some() {
                break;
            }
        }
        // Fold the WAL into the database so a closed store is one file.
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        if let Some(reply) = close_reply {
            let _ = reply.send(());
        }
    }

    fn commit_group(&mut self, batch: Vec<Append>) {
        let now = Utc::now();
        let mut overlay = Overlay::default();
        let mut pending = Vec::with_capacity(batch.len());
        let mut head = self.head;

        let began = self.conn.execute_batch("BEGIN IMMEDIATE");
        let mut failure: Option<Error> = began.err().map(|e| classify(&self.path, e));
        for (stream, expected, events, reply) in batch {
            let outcome = match &failure {
                Some(_) => Err(Error::Closed), // replaced below
                None => self.apply(&stream, expected, events, now, &mut head, &mut overlay),
            };
            // A storage error fails the whole group; a refusal fails one append.
            if let Err(e) = &outcome
                && is_storage(e)
            {
                failure = Some(clone_storage(e, &self.path));
            }
            pending.push(Pending { reply, outcome });
        }
        if failure.is_none()
            && let Err(e) = self.conn.execute_batch("COMMIT")
        {
            failure = Some(classify(&self.path, e));
        }
        if let Some(err) = failure {
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            for p in pending {
                let _ = p.reply.send(Err(clone_storage(&err, &self.path)));
            }
            return;
        }

        // Durable: publish, then answer.
        if self.versions.len() + overlay.versions.len() > VERSION_CACHE_LIMIT {
            self.versions.clear();
        }
        self.versions.extend(overlay.versions);
        self.head = head;
        self.head_tx.send_replace(head);
        for p in pending {
            let _ = p.reply.send(p.outcome);
        }
    }

    fn version_of(&mut self, key: &str, overlay: &Overlay) -> rusqlite::Result<u64> {
        if let Some(v) = overlay.versions.get(key).or_else(|| self.versions.get(key)) {
            return Ok(*v);
        }
        let v: i64 = self
            .conn
            .prepare_cached(
                "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream = ?1",
            )?
            .query_row([key], |r| r.get(0))?;
        self.versions.insert(key.to_owned(), v as u64);
        Ok(v as u64)
    }

    fn lookup(
        &self,
        id: &[u8; 16],
        overlay: &Overlay,
    ) -> rusqlite::Result<Option<(u64, String, u64)>> {
        if let Some(found) = overlay.ids.get(id) {
            return Ok(Some(found.clone()));
        }
        find_event_id(&self.conn, &threshold_domain::EventId::from_bytes(*id))
    }

    fn apply(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        now: DateTime<Utc>,
        head: &mut u64,
        overlay: &mut Overlay,
    ) -> Result<AppendOutcome> {
        let key = stream.to_string();
        let path = self.path.clone();
        let db = |e| classify(&path, e);
        let current = self.version_of(&key, overlay).map_err(db)?;

        // First pass: which events are stored already, and may the rest go in?
        let mut known = Vec::with_capacity(events.len());
        let mut fresh = 0;
        for e in &events {
            let found = self.lookup(e.event_id.as_bytes(), overlay).map_err(db)?;
            if let Some((_, in_stream, _)) = &found {
                if *in_stream != key {
                    return Err(Error::EventIdReused {
                        event_id: e.event_id,
                        stored_in: in_stream.clone(),
                        stream: stream.clone(),
                    });
                }
            } else {
                fresh += 1;
            }
            known.push(found);
        }
        if fresh > 0
            && let ExpectedVersion::Exactly(v) = expected
            && v != current
        {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected: v,
                actual: current,
            });
        }

        // Second pass: write what is new, answer duplicates with the original.
        let mut version = current;
        let mut acks = Vec::with_capacity(events.len());
        let mut in_call: HashMap<[u8; 16], (u64, u64)> = HashMap::new();
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT INTO events (position, stream, stream_version, event_id, event_type, \
                 schema_version, occurred_at_us, recorded_at_us, country, tenant, causation_id, \
                 correlation_id, traceparent, tracestate, payload, crc) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .map_err(db)?;
        for (event, found) in events.into_iter().zip(known) {
            let id = *event.event_id.as_bytes();
            if let Some((position, _, v)) = found {
                acks.push(Ack::Duplicate {
                    position: Position(position),
                    version: v,
                });
                continue;
            }
            if let Some((position, v)) = in_call.get(&id) {
                acks.push(Ack::Duplicate {
                    position: Position(*position),
                    version: *v,
                });
                continue;
            }
            version += 1;
            *head += 1;
            let recorded = RecordedEvent {
                position: Position(*head),
                stream: stream.clone(),
                stream_version: version,
                recorded_at: now,
                event,
            };
            let crc = checksum(&recorded);
            let ev = &recorded.event;
            insert
                .execute(params![
                    *head as i64,
                    key,
                    version as i64,
                    id.as_slice(),
                    ev.event_type,
                    ev.schema_version,
                    ev.occurred_at.timestamp_micros(),
                    now.timestamp_micros(),
                    ev.country.map(|c| c.code()),
                    ev.tenant,
                    ev.causation_id,
                    ev.correlation_id,
                    ev.traceparent,
                    ev.tracestate,
                    ev.payload.as_ref(),
                    i64::from(crc),
                ])
                .map_err(|e| classify(&path, e))?;
            in_call.insert(id, (*head, version));
            overlay.ids.insert(id, (*head, key.clone(), version));
            acks.push(Ack::Appended {
                position: Position(*head),
                version,
            });
        }
        overlay.versions.insert(key, version);
        Ok(AppendOutcome {
            stream_version: version,
            acks,
        })
    }
}

fn is_storage(e: &Error) -> bool {
    matches!(
        e,
        Error::Storage { .. } | Error::DiskFull { .. } | Error::Corrupt { .. } | Error::Io { .. }
    )
}

/// The group's failure, repeated for each append in it.
fn clone_storage(e: &Error, path: &Path) -> Error {
    match e {
        Error::DiskFull { path } => Error::DiskFull { path: path.clone() },
        Error::Corrupt { path, detail } => Error::Corrupt {
            path: path.clone(),
            detail: detail.clone(),
        },
        other => Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!("{other}; nothing of this append was stored")),
        },
    }
}
