//! The single writer: group commit of everything queued, then the answers.
//!
//! Each group is one transaction: the new rows go into `events` (appended in
//! position order, the cheap write), and a slice of the sealed tail
//! generation goes into `stream_index` and `event_ids` in key order, so an
//! index page is written once per many events rather than once per event.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use threshold_domain::{EventId, StreamId};
use tokio::sync::{mpsc, oneshot, watch};

use super::recent::Recent;
use super::seen::Seen;
use super::tail::{FlushPlan, Generation, Located, Tail};
use super::{Planned, classify};
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
    /// What an append would do, decided after everything queued before it
    /// and writing nothing (see [`super::EmbeddedLog::plan`]).
    Plan {
        stream: StreamId,
        expected: ExpectedVersion,
        ids: Vec<EventId>,
        reply: oneshot::Sender<Result<Planned>>,
    },
    /// Records stored elsewhere first (Kafka), taken in by one rule; see
    /// [`super::EmbeddedLog::replicate`].
    Replicate {
        streams: Vec<(StreamId, Vec<Conditional>)>,
        reply: oneshot::Sender<Result<Vec<Vec<Option<Ack>>>>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// An event that goes into its stream only as the stream's next version,
/// following the stream's last event: a record of a log kept elsewhere,
/// which the writer that decided it numbered.
#[derive(Debug, Clone)]
pub struct Conditional {
    /// The event.
    pub event: NewEvent,
    /// Its version in its stream, as its writer decided.
    pub version: u64,
    /// The stream's event it follows (`None`: the stream's first).
    pub after: Option<EventId>,
}

/// Writes queued for one group commit, and plans decided among them.
enum Work {
    Append(Append),
    Replicate(
        Vec<(StreamId, Vec<Conditional>)>,
        oneshot::Sender<Result<Vec<Vec<Option<Ack>>>>>,
    ),
    Plan(
        StreamId,
        ExpectedVersion,
        Vec<EventId>,
        oneshot::Sender<Result<Planned>>,
    ),
}

/// A write's answer, sent once its group is durable.
enum Answer {
    Append(
        oneshot::Sender<Result<AppendOutcome>>,
        Result<AppendOutcome>,
    ),
    Replicate(
        oneshot::Sender<Result<Vec<Vec<Option<Ack>>>>>,
        Result<Vec<Vec<Option<Ack>>>>,
    ),
    Plan(oneshot::Sender<Result<Planned>>, Result<Planned>),
}

impl Answer {
    fn outcome_error(&self) -> Option<&Error> {
        match self {
            Answer::Append(_, Err(e)) | Answer::Replicate(_, Err(e)) => Some(e),
            _ => None,
        }
    }

    fn send(self) {
        match self {
            Answer::Append(reply, outcome) => {
                let _ = reply.send(outcome);
            }
            Answer::Replicate(reply, outcome) => {
                let _ = reply.send(outcome);
            }
            Answer::Plan(reply, outcome) => {
                let _ = reply.send(outcome);
            }
        }
    }

    fn fail(self, err: Error) {
        match self {
            Answer::Append(reply, _) => {
                let _ = reply.send(Err(err));
            }
            Answer::Replicate(reply, _) => {
                let _ = reply.send(Err(err));
            }
            Answer::Plan(reply, _) => {
                let _ = reply.send(Err(err));
            }
        }
    }
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

/// How the writer batches and indexes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Config {
    pub(super) max_batch_events: usize,
    /// Seal the tail's active generation once it holds this many events.
    pub(super) seal_after: usize,
    /// Index entries (of each index) written per group commit, at least.
    pub(super) flush_slice: usize,
}

struct Writer {
    // Declared before `_lock`: the connection closes first, then the lock goes.
    conn: Connection,
    path: PathBuf,
    head: u64,
    head_tx: watch::Sender<u64>,
    versions: HashMap<Arc<str>, u64>,
    /// Each stream's last event this writer wrote, with its version: what
    /// the stream's next event follows, known without a read when a plan
    /// or a replicated record asks. Bounded and cleared with `versions`.
    lasts: HashMap<Arc<str>, (u64, EventId)>,
    tail: Arc<RwLock<Tail>>,
    recent: Arc<Mutex<Recent>>,
    plan: Option<FlushPlan>,
    config: Config,
    wal_frames: Arc<AtomicU64>,
    checkpointer: Option<super::checkpoint::Checkpointer>,
    /// Which ids may be stored: a fresh id it rules out is not looked up.
    seen: Seen,
    _lock: File,
}

/// WAL length (in frames, 4 KiB each) at which the writer restarts the WAL.
const WAL_RESTART_FRAMES: u64 = 32_768;

/// Index entries a group commit of `events` writes while a sealed
/// generation is being indexed: twice its own events, so that the
/// generation is indexed within half the time the next one takes to fill,
/// and each commit's share stays in proportion to it. At least
/// [`MIN_SLICE`] (a quiet log's generation is still indexed in time), and
/// never more than the larger of `events` and `slice`: a full-speed writer,
/// whose commits are large, indexes as it did with a fixed slice.
///
/// A fixed slice of 4,096 made each commit of a few hundred events at
/// 20,000 handheld events a second carry several times its own work until
/// the generation was indexed: half a second of late acknowledgements
/// (over 50 ms) every second and a half, when a generation of 65,536
/// filled.
fn slice_for(events: usize, slice: usize) -> usize {
    (2 * events).max(MIN_SLICE).min(events.max(slice))
}

/// The fewest index entries a commit writes while a generation is indexed.
const MIN_SLICE: usize = 256;

/// Everything the writer thread starts with.
pub(super) struct Start {
    pub(super) conn: Connection,
    pub(super) lock: File,
    pub(super) path: PathBuf,
    pub(super) head: u64,
    pub(super) head_tx: watch::Sender<u64>,
    pub(super) tail: Arc<RwLock<Tail>>,
    pub(super) recent: Arc<Mutex<Recent>>,
    pub(super) wal_frames: Arc<AtomicU64>,
    pub(super) checkpointer: super::checkpoint::Checkpointer,
    pub(super) config: Config,
    pub(super) seen: super::seen::Stats,
}

pub(super) fn spawn(start: Start, rx: mpsc::Receiver<Request>) -> Result<JoinHandle<()>> {
    let path = start.path.clone();
    let mut seen = Seen::start(path.clone(), start.head, &start.seen);
    {
        // The tail recovered at open is the writer's to cover: its ids
        // may reach `event_ids` after the history is read.
        let tail = start.tail.read().unwrap_or_else(|p| p.into_inner());
        for id in tail.active.ids.keys() {
            seen.insert(id);
        }
    }
    // A tail recovered at open may already be due for sealing.
    let mut writer = Writer {
        conn: start.conn,
        path: start.path,
        head: start.head,
        head_tx: start.head_tx,
        versions: HashMap::new(),
        lasts: HashMap::new(),
        tail: start.tail,
        recent: start.recent,
        plan: None,
        config: start.config,
        wal_frames: start.wal_frames,
        checkpointer: Some(start.checkpointer),
        seen,
        _lock: start.lock,
    };
    writer.maybe_seal();
    std::thread::Builder::new()
        .name("threshold-log-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|source| Error::Io { path, source })
}

/// What the current transaction has written so far, undone if it fails.
struct Overlay {
    /// When its events are recorded: the transaction's one instant, to the
    /// microsecond, as the database keeps it.
    now: DateTime<Utc>,
    versions: HashMap<Arc<str>, u64>,
    ids: HashMap<[u8; 16], Located>,
    added: Vec<([u8; 16], Arc<str>, u64, u64)>,
    /// Each stream's last event written in this transaction.
    lasts: HashMap<Arc<str>, EventId>,
    /// The events written, in position order.
    written: Vec<RecordedEvent>,
}

impl Overlay {
    /// Nothing written yet, by a transaction recording at `now`.
    fn new(now: DateTime<Utc>) -> Self {
        Self {
            now,
            versions: HashMap::new(),
            ids: HashMap::new(),
            added: Vec::new(),
            lasts: HashMap::new(),
            written: Vec::new(),
        }
    }
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::Receiver<Request>) {
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
                        batch.push(Work::Append((stream, expected, evs, reply)));
                    }
                    Request::Replicate { streams, reply } => {
                        events += streams.iter().map(|(_, r)| r.len()).sum::<usize>();
                        batch.push(Work::Replicate(streams, reply));
                    }
                    Request::Plan {
                        stream,
                        expected,
                        ids,
                        reply,
                    } => {
                        // Decided in the group, after its writes (all that
                        // was queued before it, and maybe more), and
                        // answered once they are durable.
                        batch.push(Work::Plan(stream, expected, ids, reply));
                    }
                    Request::Close { reply } => {
                        close_reply = Some(reply);
                        break;
                    }
                }
                if events < self.config.max_batch_events {
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
        self.seen.stop();
        // A clean close leaves the indexes complete and the WAL folded into
        // the database, so the next open has nothing to recover.
        self.drain_index();
        // The checkpointer's own checkpoint would make this one BUSY.
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        if let Some(reply) = close_reply {
            let _ = reply.send(());
        }
    }

    fn commit_group(&mut self, batch: Vec<Work>) {
        self.seen.poll();
        let mut overlay = Overlay::new(to_micros(Utc::now()));
        let mut pending = Vec::with_capacity(batch.len());
        let mut head = self.head;
        let group_events: usize = batch
            .iter()
            .map(|w| match w {
                Work::Append(a) => a.2.len(),
                Work::Replicate(streams, _) => streams.iter().map(|(_, r)| r.len()).sum(),
                Work::Plan(..) => 0,
            })
            .sum();
        if self.wal_frames.load(Ordering::Relaxed) > WAL_RESTART_FRAMES {
            // Most frames are copied already; copy the rest and start over.
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
            self.wal_frames.store(0, Ordering::Relaxed);
        }

        let began = self.conn.execute_batch("BEGIN IMMEDIATE");
        let mut failure: Option<Error> = began.err().map(|e| classify(&self.path, e));
        // Plans are decided after every write of the group, on what the
        // commit makes durable: they are answered only then, and a write
        // queued after a plan is in it either way.
        let mut plans = Vec::new();
        for work in batch {
            let answer = match (work, &failure) {
                (Work::Plan(stream, expected, ids, reply), _) => {
                    plans.push((stream, expected, ids, reply));
                    continue;
                }
                // Every reply is replaced below.
                (Work::Append(a), Some(_)) => Answer::Append(a.3, Err(Error::Closed)),
                (Work::Replicate(_, reply), Some(_)) => {
                    Answer::Replicate(reply, Err(Error::Closed))
                }
                (Work::Append((stream, expected, events, reply)), None) => Answer::Append(
                    reply,
                    self.apply(&stream, expected, events, &mut head, &mut overlay),
                ),
                (Work::Replicate(streams, reply), None) => {
                    let mut verdicts = Vec::with_capacity(streams.len());
                    let mut outcome = Ok(());
                    for (stream, records) in streams {
                        match self.replicate(&stream, records, &mut head, &mut overlay) {
                            Ok(v) => verdicts.push(v),
                            Err(e) => {
                                outcome = Err(e);
                                break;
                            }
                        }
                    }
                    Answer::Replicate(reply, outcome.map(|()| verdicts))
                }
            };
            // A storage error fails the whole group; a refusal fails one append.
            if let Some(e) = answer.outcome_error()
                && is_storage(e)
            {
                failure = Some(repeat(e, &self.path));
            }
            pending.push(answer);
        }
        for (stream, expected, ids, reply) in plans {
            // A plan that fails fails alone: it wrote nothing.
            let planned = match failure {
                Some(_) => Err(Error::Closed),
                None => self.plan(&stream, expected, &ids, &overlay),
            };
            pending.push(Answer::Plan(reply, planned));
        }
        let mut cursors = None;
        // A group of plans alone writes nothing, and commits nothing to disk.
        if failure.is_none() && !overlay.added.is_empty() {
            match self.flush_slice(slice_for(group_events, self.config.flush_slice)) {
                Ok(c) => cursors = c,
                Err(e) => failure = Some(classify(&self.path, e)),
            }
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
            for answer in pending {
                answer.fail(repeat(&err, &self.path));
            }
            return;
        }

        // Durable. Make it findable, publish the head, then answer.
        if !overlay.added.is_empty() {
            self.after_commit(overlay, cursors, head);
        }
        for answer in pending {
            answer.send();
        }
    }

    fn after_commit(&mut self, overlay: Overlay, cursors: Option<(usize, usize)>, head: u64) {
        for (id, ..) in &overlay.added {
            self.seen.insert(id);
        }
        {
            let mut tail = self.tail.write().unwrap_or_else(|p| p.into_inner());
            for (id, stream, version, position) in &overlay.added {
                tail.active.add(*id, stream, *version, *position);
            }
            if let (Some(plan), Some((s, i))) = (self.plan.as_mut(), cursors) {
                plan.stream_cursor = s;
                plan.id_cursor = i;
                if plan.is_done() {
                    tail.sealed = None;
                    self.plan = None;
                }
            }
        }
        if self.versions.len() + overlay.versions.len() > VERSION_CACHE_LIMIT {
            self.versions.clear();
            self.lasts.clear();
        }
        for (key, last) in overlay.lasts {
            // Set together: the stream's version is its last event's.
            if let Some(version) = overlay.versions.get(&key) {
                self.lasts.insert(key, (*version, last));
            }
        }
        self.versions.extend(overlay.versions);
        self.head = head;
        self.maybe_seal();
        // Before the head moves: a subscriber that sees it finds them.
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(overlay.written);
        self.head_tx.send_replace(head);
    }

    /// Seals the active generation for indexing once it is large enough and
    /// the previous one is fully indexed.
    fn maybe_seal(&mut self) {
        if self.plan.is_some() {
            return;
        }
        let upto = self.head;
        {
            let mut tail = self.tail.write().unwrap_or_else(|p| p.into_inner());
            if tail.sealed.is_some() || tail.active.len < self.config.seal_after.max(1) {
                return;
            }
            let generation = std::mem::take(&mut tail.active);
            tail.sealed = Some(generation);
        }
        // Sorting happens under the read lock: readers keep going.
        let tail = self.tail.read().unwrap_or_else(|p| p.into_inner());
        if let Some(sealed) = &tail.sealed {
            self.plan = Some(FlushPlan::new(sealed, upto));
        }
    }

    /// Writes the next slice of the flush plan; returns the new cursors, to
    /// be kept only if the transaction commits.
    fn flush_slice(&mut self, n: usize) -> rusqlite::Result<Option<(usize, usize)>> {
        let Some(plan) = &self.plan else {
            return Ok(None);
        };
        let s_end = (plan.stream_cursor + n).min(plan.streams.len());
        let i_end = (plan.id_cursor + n).min(plan.ids.len());
        {
            let mut put = self.conn.prepare_cached(
                "INSERT OR IGNORE INTO stream_index (stream, stream_version, position) VALUES (?1, ?2, ?3)",
            )?;
            for (stream, version, position) in &plan.streams[plan.stream_cursor..s_end] {
                put.execute(params![stream.as_ref(), *version as i64, *position as i64])?;
            }
            let mut put = self.conn.prepare_cached(
                "INSERT OR IGNORE INTO event_ids (event_id, position) VALUES (?1, ?2)",
            )?;
            for (id, position) in &plan.ids[plan.id_cursor..i_end] {
                put.execute(params![id.as_slice(), *position as i64])?;
            }
        }
        if s_end == plan.streams.len() && i_end == plan.ids.len() {
            self.conn.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'indexed_upto'",
                [plan.upto as i64],
            )?;
        }
        Ok(Some((s_end, i_end)))
    }

    /// Indexes everything in the tail (at close).
    fn drain_index(&mut self) {
        loop {
            if self.plan.is_none() {
                let mut tail = self.tail.write().unwrap_or_else(|p| p.into_inner());
                if tail.active.len == 0 {
                    return;
                }
                let generation = std::mem::take(&mut tail.active);
                self.plan = Some(FlushPlan::new(&generation, self.head));
                tail.sealed = Some(generation);
            }
            let done = self.conn.execute_batch("BEGIN IMMEDIATE").is_ok()
                && match self.flush_slice(usize::MAX) {
                    Ok(c) => self
                        .conn
                        .execute_batch("COMMIT")
                        .is_ok()
                        .then_some(c)
                        .flatten(),
                    Err(_) => None,
                }
                .is_some();
            if !done {
                // Left for the next open to rebuild from `events`.
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                return;
            }
            self.plan = None;
            self.tail.write().unwrap_or_else(|p| p.into_inner()).sealed = None;
        }
    }

    fn version_of(&mut self, key: &Arc<str>, overlay: &Overlay) -> rusqlite::Result<u64> {
        if let Some(v) = overlay.versions.get(key).or_else(|| self.versions.get(key)) {
            return Ok(*v);
        }
        let in_tail = self
            .tail
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .last_version(key);
        let v = match in_tail {
            Some(v) => v,
            None => {
                let v: i64 = self
                    .conn
                    .prepare_cached(
                        "SELECT COALESCE(MAX(stream_version), 0) FROM stream_index WHERE stream = ?1",
                    )?
                    .query_row([key.as_ref()], |r| r.get(0))?;
                v as u64
            }
        };
        self.versions.insert(Arc::clone(key), v);
        Ok(v)
    }

    fn lookup(&self, id: &[u8; 16], overlay: &Overlay) -> rusqlite::Result<Option<Located>> {
        if let Some(found) = overlay.ids.get(id) {
            return Ok(Some(found.clone()));
        }
        // Before the tail's lock: every id in the tail is in the filter.
        if self.seen.never_stored(id) {
            return Ok(None);
        }
        if let Some(found) = self
            .tail
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .find_id(id)
        {
            return Ok(Some(found));
        }
        self.conn
            .prepare_cached(
                "SELECT e.position, e.stream, e.stream_version FROM event_ids i \
                 JOIN events e ON e.position = i.position WHERE i.event_id = ?1",
            )?
            .query_row([id.as_slice()], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    Arc::from(r.get::<_, String>(1)?),
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .optional()
    }

    /// The stream's version, and where each of `ids` is stored already;
    /// refuses an id stored in another stream, and a stale `expected` when
    /// anything is new.
    fn check(
        &mut self,
        stream: &StreamId,
        key: &Arc<str>,
        expected: ExpectedVersion,
        ids: &[EventId],
        overlay: &Overlay,
    ) -> Result<(u64, Vec<Option<Located>>)> {
        let current = self
            .version_of(key, overlay)
            .map_err(|e| classify(&self.path, e))?;
        let mut known = Vec::with_capacity(ids.len());
        let mut fresh = 0;
        for id in ids {
            let found = self
                .lookup(id.as_bytes(), overlay)
                .map_err(|e| classify(&self.path, e))?;
            match &found {
                Some((_, in_stream, _)) if **in_stream != **key => {
                    return Err(Error::EventIdReused {
                        event_id: *id,
                        stored_in: in_stream.to_string(),
                        stream: stream.clone(),
                    });
                }
                Some(_) => {}
                None => fresh += 1,
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
        Ok((current, known))
    }

    /// The id of the last event of the stream `key`, whose version is
    /// `version` with what the group wrote so far (`overlay`), if it has
    /// one: from the group, from what the writer wrote before, from the
    /// tail, or from the database.
    fn last_event(
        &self,
        key: &Arc<str>,
        version: u64,
        overlay: &Overlay,
    ) -> rusqlite::Result<Option<EventId>> {
        if version == 0 {
            return Ok(None);
        }
        if let Some(last) = overlay.lasts.get(key) {
            return Ok(Some(*last));
        }
        if let Some((v, last)) = self.lasts.get(key)
            && *v == version
        {
            return Ok(Some(*last));
        }
        let in_tail = self
            .tail
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .stream_after(key, version - 1)
            .into_iter()
            .find(|(v, _)| *v == version)
            .map(|(_, position)| position);
        let position = match in_tail {
            Some(p) => Some(p),
            None => self
                .conn
                .prepare_cached(
                    "SELECT position FROM stream_index WHERE stream = ?1 AND stream_version = ?2",
                )?
                .query_row(params![key.as_ref(), version as i64], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()?
                .map(|p| p as u64),
        };
        let Some(position) = position else {
            return Ok(None);
        };
        let id: Vec<u8> = self
            .conn
            .prepare_cached("SELECT event_id FROM events WHERE position = ?1")?
            .query_row([position as i64], |r| r.get(0))?;
        Ok(<[u8; 16]>::try_from(id.as_slice())
            .ok()
            .map(EventId::from_bytes))
    }

    /// What appending `ids` to `stream` would do after what the group has
    /// written so far (`overlay`), writing nothing.
    fn plan(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        ids: &[EventId],
        overlay: &Overlay,
    ) -> Result<Planned> {
        let key: Arc<str> = Arc::from(stream.to_string());
        let (current, known) = self.check(stream, &key, expected, ids, overlay)?;
        let last = self
            .last_event(&key, current, overlay)
            .map_err(|e| classify(&self.path, e))?;
        Ok(Planned {
            current,
            last,
            stored: known
                .into_iter()
                .map(|k| {
                    k.map(|(position, _, version)| Ack::Duplicate {
                        position: Position(position),
                        version,
                    })
                })
                .collect(),
        })
    }

    fn apply(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        head: &mut u64,
        overlay: &mut Overlay,
    ) -> Result<AppendOutcome> {
        let key: Arc<str> = Arc::from(stream.to_string());
        let ids: Vec<EventId> = events.iter().map(|e| e.event_id).collect();
        let (current, known) = self.check(stream, &key, expected, &ids, overlay)?;
        self.write(
            stream,
            key,
            current,
            events.into_iter().zip(known),
            head,
            overlay,
        )
    }

    /// Writes each event of `stream` (`key`) found nowhere (`None`) after
    /// version `current`, and answers one stored already with the original.
    fn write(
        &mut self,
        stream: &StreamId,
        key: Arc<str>,
        current: u64,
        events: impl ExactSizeIterator<Item = (NewEvent, Option<Located>)>,
        head: &mut u64,
        overlay: &mut Overlay,
    ) -> Result<AppendOutcome> {
        let path = self.path.clone();
        let db = |e| classify(&path, e);
        let now = overlay.now;
        let mut version = current;
        let mut last_written = None;
        let mut acks = Vec::with_capacity(events.len());
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT INTO events (position, stream, stream_version, event_id, event_type, \
                 schema_version, occurred_at_us, recorded_at_us, country, tenant, causation_id, \
                 correlation_id, traceparent, tracestate, payload, crc) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .map_err(db)?;
        for (event, found) in events {
            let id = *event.event_id.as_bytes();
            // Stored before this call, or earlier in this same call.
            if let Some((position, _, v)) = found.or_else(|| overlay.ids.get(&id).cloned()) {
                acks.push(Ack::Duplicate {
                    position: Position(position),
                    version: v,
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
            let crc = super::checksum(&recorded);
            let ev = &recorded.event;
            insert
                .execute(params![
                    *head as i64,
                    key.as_ref(),
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
            // As a read of the database gives it: the caller's instant to
            // the microsecond (`now` is already).
            let mut kept = recorded;
            kept.event.occurred_at = to_micros(kept.event.occurred_at);
            overlay.written.push(kept);
            overlay.ids.insert(id, (*head, Arc::clone(&key), version));
            last_written = Some(EventId::from_bytes(id));
            overlay.added.push((id, Arc::clone(&key), version, *head));
            acks.push(Ack::Appended {
                position: Position(*head),
                version,
            });
        }
        if let Some(last) = last_written {
            overlay.lasts.insert(Arc::clone(&key), last);
        }
        overlay.versions.insert(key, version);
        Ok(AppendOutcome {
            stream_version: version,
            acks,
        })
    }

    /// Takes `records` of `stream` in their order by one rule: a record
    /// goes in when its version is the stream's next and it follows the
    /// stream's last event. Per record: `Appended` where it went in,
    /// `Duplicate` where its event was stored already, `None` where another
    /// record overtook it (or its id belongs to another stream).
    fn replicate(
        &mut self,
        stream: &StreamId,
        records: Vec<Conditional>,
        head: &mut u64,
        overlay: &mut Overlay,
    ) -> Result<Vec<Option<Ack>>> {
        let key: Arc<str> = Arc::from(stream.to_string());
        let path = self.path.clone();
        let db = |e| classify(&path, e);
        let current = self.version_of(&key, overlay).map_err(db)?;
        let mut last = self.last_event(&key, current, overlay).map_err(db)?;
        let mut version = current;
        let mut verdicts = Vec::with_capacity(records.len());
        let mut accepted = Vec::new();
        let mut slots = Vec::new();
        let mut repeats = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for record in records {
            let id = record.event.event_id;
            if let Some((position, in_stream, v)) =
                self.lookup(id.as_bytes(), overlay).map_err(db)?
            {
                verdicts.push((*in_stream == *key).then_some(Ack::Duplicate {
                    position: Position(position),
                    version: v,
                }));
                continue;
            }
            if taken.contains(&id) {
                // Its event goes in earlier in this call.
                repeats.push((verdicts.len(), id));
                verdicts.push(None);
                continue;
            }
            if record.version == version + 1 && record.after == last {
                version += 1;
                last = Some(id);
                taken.insert(id);
                slots.push(verdicts.len());
                accepted.push(record.event);
            } else {
                tracing::debug!(
                    %stream,
                    version = record.version,
                    head = version,
                    event_id = %id,
                    "a record another writer's overtook was left out"
                );
            }
            verdicts.push(None);
        }
        if !accepted.is_empty() {
            // Each was looked up above, found nowhere, and taken once.
            let fresh = accepted.into_iter().map(|event| (event, None));
            let outcome = self.write(stream, key, current, fresh, head, overlay)?;
            for (slot, ack) in slots.into_iter().zip(outcome.acks) {
                verdicts[slot] = Some(ack);
            }
        }
        for (slot, id) in repeats {
            verdicts[slot] =
                overlay
                    .ids
                    .get(id.as_bytes())
                    .map(|(position, _, v)| Ack::Duplicate {
                        position: Position(*position),
                        version: *v,
                    });
        }
        Ok(verdicts)
    }
}

/// An instant as the database keeps it (`*_us`: microseconds).
fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Rebuilds the tail from the `events` rows after `meta.indexed_upto`.
pub(super) fn recover_tail(conn: &Connection) -> rusqlite::Result<(Tail, u64)> {
    let indexed: i64 = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'indexed_upto'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let mut generation = Generation::default();
    let mut streams: HashMap<String, Arc<str>> = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT position, stream, stream_version, event_id FROM events WHERE position > ?1 ORDER BY position",
    )?;
    let mut rows = stmt.query([indexed])?;
    while let Some(r) = rows.next()? {
        let position = r.get::<_, i64>(0)? as u64;
        let name: String = r.get(1)?;
        let version = r.get::<_, i64>(2)? as u64;
        let id: Vec<u8> = r.get(3)?;
        let Ok(id) = <[u8; 16]>::try_from(id.as_slice()) else {
            return Err(rusqlite::Error::IntegralValueOutOfRange(3, id.len() as i64));
        };
        let stream = streams
            .entry(name)
            .or_insert_with_key(|k| Arc::from(k.as_str()))
            .clone();
        generation.add(id, &stream, version, position);
    }
    Ok((
        Tail {
            sealed: None,
            active: generation,
        },
        indexed as u64,
    ))
}

fn is_storage(e: &Error) -> bool {
    matches!(
        e,
        Error::Storage { .. } | Error::DiskFull { .. } | Error::Corrupt { .. } | Error::Io { .. }
    )
}

/// The group's failure, repeated for each append in it.
fn repeat(e: &Error, path: &std::path::Path) -> Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_indexes_in_proportion_to_its_own_events_within_bounds() {
        // Small commits: twice their events, never fewer than the floor.
        assert_eq!(slice_for(1, 4_096), MIN_SLICE);
        assert_eq!(slice_for(100, 4_096), MIN_SLICE);
        assert_eq!(slice_for(500, 4_096), 1_000);
        // Large ones: as with a fixed slice, their own events or the slice.
        assert_eq!(slice_for(3_000, 4_096), 4_096);
        assert_eq!(slice_for(10_000, 4_096), 10_000);
        // A slice below the floor (the tests' tiny ones) is kept.
        assert_eq!(slice_for(1, 3), 3);
        // Whatever the commits' size, a generation is indexed before the
        // next one fills: each commit indexes at least its own events.
        for events in 1..20_000 {
            assert!(slice_for(events, 4_096) >= events, "{events}");
        }
    }
}
