//! Track and trace: where a parcel is and what happened to it, by parcel id,
//! and a depot's parcels of a day with where each stands.
//!
//! Partners ask it for their parcels, planners for their depot's, analysts
//! for any. Unlike the other read models it is kept in a store, not only in
//! memory, behind [`TrackStore`]: on one machine a SQLite file in the data
//! directory ([`SqliteTrackStore`]); where read models outgrow a process, a
//! ScyllaDB cluster (`ScyllaTrackStore`, cargo feature `scylla`). Both pass
//! the same contract suite ([`contract`]; the ScyllaDB run is
//! `tests/track_scylla.rs`).
//!
//! [`Tracker`] turns log events into [`TrackRow`]s; [`follow`] keeps a store
//! up to date from a log subscription, remembering how far it got per reader.
//! Writes are idempotent: a row is keyed by the parcel and the event's
//! version in the parcel's stream (with its event id), and a parcel's
//! summary and day row only move forward, to a later version. Applying rows
//! again, in any order, changes nothing — a reader that starts over, or two
//! processes that feed one store, leave it as one reader would.
//!
//! What the model holds is what a partner may know of its parcel: no
//! address, position, resident, household, driver, device, grant or note.

pub mod contract;
#[cfg(feature = "scylla")]
mod scylla;
mod sqlite;

#[cfg(feature = "scylla")]
pub use scylla::{SCHEMA, ScyllaTarget, ScyllaTrackStore, schema_statements};
pub use sqlite::SqliteTrackStore;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use threshold_domain::{Category, Country, DomainEvent, pb};
use threshold_log::{EventLog, Position, RecordedEvent};

use pb::parcel_event::Event as P;

/// How many buckets a depot's day is spread over in a store that
/// partitions by key (ScyllaDB): a Black Week day of a large depot, ~50,000
/// parcels, is ~3,000 rows a partition.
pub const DAY_BUCKETS: u32 = 16;

/// At most this many rows of one parcel's track are read: a parcel has a
/// handful of events a day it is due, and at most three attempts.
pub const MAX_TRACK_EVENTS: usize = 1_000;

/// The bucket of a parcel's day row.
pub fn day_bucket(parcel_id: &str) -> u32 {
    crc32fast::hash(parcel_id.as_bytes()) % DAY_BUCKETS
}

/// What happened to a parcel at one step of its track; the last one is
/// where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Milestone {
    /// A manifest row made it: due at a depot on a day.
    Manifested,
    /// A plan put it on a route.
    OnRoute,
    /// A day's plan left it out.
    LeftOut,
    /// Scanned onto a van.
    OutForDelivery,
    /// A driver is at the door.
    AttemptStarted,
    /// Handed over. Terminal.
    Delivered,
    /// An attempt failed.
    AttemptFailed,
    /// Due on another day.
    Rescheduled,
    /// Going back to the sender. Terminal.
    Returned,
}

impl Milestone {
    /// Every milestone.
    pub const ALL: [Milestone; 9] = [
        Milestone::Manifested,
        Milestone::OnRoute,
        Milestone::LeftOut,
        Milestone::OutForDelivery,
        Milestone::AttemptStarted,
        Milestone::Delivered,
        Milestone::AttemptFailed,
        Milestone::Rescheduled,
        Milestone::Returned,
    ];

    /// The word stores and replies use (`out_for_delivery`).
    pub fn as_str(self) -> &'static str {
        match self {
            Milestone::Manifested => "manifested",
            Milestone::OnRoute => "on_route",
            Milestone::LeftOut => "left_out",
            Milestone::OutForDelivery => "out_for_delivery",
            Milestone::AttemptStarted => "attempt_started",
            Milestone::Delivered => "delivered",
            Milestone::AttemptFailed => "attempt_failed",
            Milestone::Rescheduled => "rescheduled",
            Milestone::Returned => "returned",
        }
    }

    /// The parcel's journey has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Milestone::Delivered | Milestone::Returned)
    }
}

impl std::str::FromStr for Milestone {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Milestone::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a milestone"))
    }
}

/// One step of a parcel's track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackEvent {
    /// Its version in the parcel's stream: the order of the track.
    pub version: u64,
    /// The log event it came from.
    pub event_id: String,
    /// What happened.
    pub milestone: Milestone,
    /// When, by the reporting device's or service's clock.
    pub occurred_at: DateTime<Utc>,
    /// The attempt it concerns, 0 for none.
    pub attempt: u32,
    /// How it was delivered (`in_home`), why an attempt failed
    /// (`not_home`), the new day (`2026-11-24`), why a plan left it out:
    /// never personal data.
    pub detail: String,
}

/// Where a parcel stands, after the event at `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelSummary {
    /// The parcel.
    pub parcel_id: String,
    /// The retailer it belongs to.
    pub partner: String,
    /// Its country.
    pub country: Country,
    /// Its depot.
    pub depot: String,
    /// The local day it is due now.
    pub day: NaiveDate,
    /// The latest milestone.
    pub status: Milestone,
    /// Attempts started.
    pub attempts: u32,
    /// The stream version of the latest event folded.
    pub version: u64,
    /// When the latest event happened.
    pub updated_at: DateTime<Utc>,
}

/// A parcel's whole track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelTrack {
    /// Where it stands.
    pub summary: ParcelSummary,
    /// What happened, in stream order.
    pub events: Vec<TrackEvent>,
}

/// What one event writes: the step, and the parcel's summary after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRow {
    /// The parcel as it stands after the event.
    pub summary: ParcelSummary,
    /// The step.
    pub event: TrackEvent,
    /// The day the parcel was due before this event, when the event moved
    /// it (a reschedule): its row there goes.
    pub moved_from: Option<NaiveDate>,
}

/// A store failed or refused a request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or failed the request.
    #[error("track store: {0}")]
    Backend(String),
    /// The store holds something this version cannot read.
    #[error("track store holds an unreadable {what}: {detail}")]
    Corrupt {
        /// Which column or row.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// The track-and-trace store. Every write is idempotent, see the module.
#[async_trait::async_trait]
pub trait TrackStore: Send + Sync + 'static {
    /// Stores the rows. A row of a version already stored writes the same
    /// values again; a summary or day row only moves to a later version.
    async fn put(&self, rows: &[TrackRow]) -> Result<(), StoreError>;
    /// Where a parcel stands, if the store knows it.
    async fn summary(&self, parcel_id: &str) -> Result<Option<ParcelSummary>, StoreError>;
    /// A parcel's steps, in stream order (at most [`MAX_TRACK_EVENTS`]);
    /// none for a parcel the store does not know.
    async fn steps(&self, parcel_id: &str) -> Result<Vec<TrackEvent>, StoreError>;
    /// A parcel's summary and steps.
    async fn track(&self, parcel_id: &str) -> Result<Option<ParcelTrack>, StoreError> {
        let Some(summary) = self.summary(parcel_id).await? else {
            return Ok(None);
        };
        let events = self.steps(parcel_id).await?;
        Ok(Some(ParcelTrack { summary, events }))
    }
    /// The parcels due at `depot` on `day`, ordered by parcel id, after
    /// `after` (a page's last id), at most `limit`.
    async fn day(
        &self,
        country: Country,
        depot: &str,
        day: NaiveDate,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ParcelSummary>, StoreError>;
    /// How far `reader` has fed the store.
    async fn checkpoint(&self, reader: &str) -> Result<Option<Checkpoint>, StoreError>;
    /// Records how far `reader` has fed the store.
    async fn set_checkpoint(&self, reader: &str, at: &Checkpoint) -> Result<(), StoreError>;
    /// Stores the rows `reader` folded from its log up to `at`, and records
    /// that it has fed the store that far: one write where the store has
    /// transactions, so the checkpoint never stands apart from its rows.
    /// By default the rows, then the checkpoint; the rows are idempotent,
    /// so a crash between the two only folds the batch again.
    async fn feed(
        &self,
        rows: &[TrackRow],
        reader: &str,
        at: &Checkpoint,
    ) -> Result<(), StoreError> {
        self.put(rows).await?;
        self.set_checkpoint(reader, at).await
    }
}

/// How far a reader has fed a store: the position, in the reader's own log,
/// of the last event it folded, and that event's id. Positions are a
/// process's own (on Kafka each process numbers its replica), so a reader
/// checks on starting that the event at the position is still that one; if
/// its log was rebuilt, it feeds the store again from the start, which
/// changes nothing that is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last event's position.
    pub position: Position,
    /// Its id.
    pub event_id: String,
}

// Reading back what a store wrote, shared by the stores.

/// Each parcel's latest row among `rows` (by version), in the order the
/// parcels first appear: a store writes a parcel's summary and day row once
/// a batch, not once a row. The rows before it are the parcel's earlier
/// states. A summary only moves forward, so writing them would change
/// nothing; nor would their day rows, since a parcel is manifested once
/// and leaves a day only by a reschedule, whose row removes it there
/// (every row's `moved_from` is still written).
fn latest_per_parcel(rows: &[TrackRow]) -> Vec<&TrackRow> {
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
    let mut latest: Vec<&TrackRow> = Vec::new();
    for r in rows {
        match at.get(r.summary.parcel_id.as_str()) {
            Some(&i) => {
                if r.summary.version > latest[i].summary.version {
                    latest[i] = r;
                }
            }
            None => {
                at.insert(&r.summary.parcel_id, latest.len());
                latest.push(r);
            }
        }
    }
    latest
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Reads a column a store wrote, saying which on failure.
fn parse<T: std::str::FromStr>(what: &'static str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| StoreError::Corrupt {
        what,
        detail: format!("{s:?}: {e}"),
    })
}

/// An instant as stores keep it: milliseconds since the epoch.
fn instant(what: &'static str, ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt {
        what,
        detail: format!("{ms} ms is out of range"),
    })
}

/// One step as a store's row holds it.
fn step(
    version: i64,
    event_id: String,
    milestone: &str,
    occurred_at_ms: i64,
    attempt: i64,
    detail: String,
) -> Result<TrackEvent, StoreError> {
    Ok(TrackEvent {
        version: u64::try_from(version).unwrap_or(0),
        event_id,
        milestone: parse("milestone", milestone)?,
        occurred_at: instant("occurred_at", occurred_at_ms)?,
        attempt: u32::try_from(attempt).unwrap_or(0),
        detail,
    })
}

/// A summary as a store's row holds it (country and day as text).
#[allow(clippy::too_many_arguments)]
fn summary_of(
    parcel_id: String,
    partner: String,
    country: &str,
    depot: String,
    day: &str,
    status: &str,
    attempts: i64,
    version: i64,
    updated_at_ms: i64,
) -> Result<ParcelSummary, StoreError> {
    Ok(ParcelSummary {
        parcel_id,
        partner,
        country: parse("country", country)?,
        depot,
        day: parse("day", day)?,
        status: parse("status", status)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        version: u64::try_from(version).unwrap_or(0),
        updated_at: instant("updated_at", updated_at_ms)?,
    })
}

/// Turns parcel events into [`TrackRow`]s. It keeps the summary of each
/// parcel still under way, and asks the store for one it has not seen (a
/// reader that starts from a checkpoint).
#[derive(Debug, Default)]
pub struct Tracker {
    open: HashMap<String, ParcelSummary>,
}

impl Tracker {
    /// A tracker that knows no parcel yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parcels under way that it holds.
    pub fn open_parcels(&self) -> usize {
        self.open.len()
    }

    /// The rows for `events`, in order, asking `store` for a parcel it does
    /// not hold. Events of other categories, and events of a parcel
    /// nobody manifested, give none.
    pub async fn rows<E: std::borrow::Borrow<RecordedEvent>>(
        &mut self,
        events: &[E],
        store: &dyn TrackStore,
    ) -> Result<Vec<TrackRow>, StoreError> {
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            // A batch of 8,192 took a runtime worker for 8–29 ms at 20,000
            // handheld events a second, and the acknowledgements queued
            // behind it: each event spends of the task's budget, and the
            // runtime lets the others run once it is spent.
            tokio::task::coop::consume_budget().await;
            let event = event.borrow();
            if event.stream.category() != Category::Parcel {
                continue;
            }
            let Ok(DomainEvent::Parcel(e)) = event.decode() else {
                continue;
            };
            let id = event.stream.id();
            if !matches!(e, P::Manifested(_)) && !self.open.contains_key(id) {
                match store.summary(id).await? {
                    Some(s) => {
                        self.open.insert(id.to_owned(), s);
                    }
                    None => continue,
                }
            }
            if let Some(row) = self.fold(event, id, e) {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    fn fold(&mut self, event: &RecordedEvent, id: &str, e: P) -> Option<TrackRow> {
        let version = event.stream_version;
        let at = event.event.occurred_at;
        let step = |milestone, attempt, detail: String| TrackEvent {
            version,
            event_id: event.event.event_id.to_string(),
            milestone,
            occurred_at: at,
            attempt,
            detail,
        };
        if let P::Manifested(m) = &e {
            let (country, day) = crate::due(m)?;
            let summary = ParcelSummary {
                parcel_id: id.to_owned(),
                partner: m.partner_id.clone(),
                country,
                depot: m.depot_id.clone(),
                day,
                status: Milestone::Manifested,
                attempts: 0,
                version,
                updated_at: at,
            };
            self.open.insert(id.to_owned(), summary.clone());
            return Some(TrackRow {
                summary,
                event: step(Milestone::Manifested, 0, day.to_string()),
                moved_from: None,
            });
        }
        let summary = self.open.get_mut(id)?;
        if version <= summary.version {
            // Already folded (a reader that starts again before its
            // checkpoint): the store has its row.
            return None;
        }
        let mut moved_from = None;
        let (milestone, attempt, detail) = match e {
            P::Manifested(_) => unreachable!("handled above"),
            P::AssignedToRoute(_) => (Milestone::OnRoute, 0, String::new()),
            P::LeftOut(l) => (Milestone::LeftOut, 0, l.reason),
            P::OutForDelivery(_) => (Milestone::OutForDelivery, 0, String::new()),
            P::AttemptStarted(a) => {
                summary.attempts = summary.attempts.max(a.attempt);
                (Milestone::AttemptStarted, a.attempt, String::new())
            }
            P::Delivered(d) => (
                Milestone::Delivered,
                d.attempt,
                crate::method_name(d.method()),
            ),
            P::AttemptFailed(f) => (
                Milestone::AttemptFailed,
                f.attempt,
                crate::reason_name(f.reason()),
            ),
            P::Rescheduled(r) => {
                let day = crate::day(r.delivery_date.as_ref())?;
                if day != summary.day {
                    moved_from = Some(summary.day);
                    summary.day = day;
                }
                (Milestone::Rescheduled, 0, day.to_string())
            }
            P::Returned(r) => (Milestone::Returned, r.attempts, String::new()),
        };
        summary.status = milestone;
        summary.version = version;
        summary.updated_at = at;
        let row = TrackRow {
            summary: summary.clone(),
            event: step(milestone, attempt, detail),
            moved_from,
        };
        if milestone.is_terminal() {
            self.open.remove(id);
        }
        Some(row)
    }
}

/// Records how far the store is behind the head of what this process
/// holds of the log ([`EventLog::head_recent`]) every second, as
/// `threshold.projection.lag` with `projection = "track"`, like the read
/// models in memory.
fn spawn_lag(
    log: Arc<dyn EventLog>,
    fed: Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let gauge = opentelemetry::global::meter("threshold.projections")
        .u64_gauge("threshold.projection.lag")
        .with_description(
            "Log positions a read model is behind the head of what this process holds of the log",
        )
        .build();
    tokio::spawn(async move {
        let attrs = [opentelemetry::KeyValue::new("projection", "track")];
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let Ok(head) = log.head_recent().await else {
                return;
            };
            let at = fed.load(std::sync::atomic::Ordering::Relaxed);
            gauge.record(head.0.saturating_sub(at), &attrs);
        }
    })
}

/// Aborts a task when dropped: the lag gauge ends with the reader.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// At most this many events are folded into one write. Each write is a
/// commit of the store, and now and then a WAL checkpoint, whatever its
/// size: a batch's parcels fall on pages all over the tables, so a commit
/// writes about as many pages for a few hundred events as for a few
/// thousand. At 512 the server on Kafka at its maximum (~24,000 events a
/// second into the log) committed ~45 times a second and spent ~8% of its
/// CPU in those commits; at 2,048 with [`GATHER`] at 50 ms, ~20 times a
/// second and still ~8% in the commits and their checkpoints; at this
/// size and [`GATHER`], ~5 times a second and ~7.6% (the pages a commit
/// writes grow with its rows too). A write ends below ~40,000 events a
/// second. A read
/// of the SQLite store waits for a write in progress (one connection), so
/// the cap also bounds that wait: a catch-up from the start of the log
/// writes batches of this size (`deploy/README.md`).
const BATCH: usize = 8192;

/// How long a write waits for more events once one came: track and trace
/// is read by people and partners, for whom a fifth of a second is
/// nothing, and a write per event would cost the store a commit per event.
/// 200 ms instead of 50 (with [`BATCH`] at 8,192 instead of 2,048) took
/// the server on Kafka at its maximum from ~123 to ~119 µs of CPU per
/// event (`deploy/README.md`).
const GATHER: std::time::Duration = std::time::Duration::from_millis(200);

/// Keeps `store` up to date with `log` as `reader`, from where that reader
/// last got to, until the log closes or fails; returns what stopped it.
/// A batch the store does not take is tried again, backing off up to 5 s,
/// without moving on: the checkpoint only moves past rows the store took.
pub async fn follow(
    log: Arc<dyn EventLog>,
    store: Arc<dyn TrackStore>,
    reader: String,
) -> Option<threshold_log::Error> {
    follow_gathering(log, store, reader, GATHER).await
}

/// [`follow`], a write waiting up to `gather` for more events once one came.
async fn follow_gathering(
    log: Arc<dyn EventLog>,
    store: Arc<dyn TrackStore>,
    reader: String,
    gather: std::time::Duration,
) -> Option<threshold_log::Error> {
    let checkpoint = loop {
        match store.checkpoint(&reader).await {
            Ok(at) => break at,
            Err(e) => {
                tracing::warn!(error = %e, reader, "the track store's checkpoint cannot be read; trying again");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    };
    // A log that ends before the checkpoint is not the one it was kept on.
    let head = match log.head().await {
        Ok(head) => head,
        Err(e) => return Some(e),
    };
    let checkpoint = match checkpoint {
        Some(c) if c.position > head => {
            tracing::warn!(
                reader,
                position = c.position.0,
                head = head.0,
                "the log ends before the track store's checkpoint; feeding the store again from the start"
            );
            None
        }
        other => other,
    };
    let fed = Arc::new(std::sync::atomic::AtomicU64::new(
        checkpoint.as_ref().map_or(0, |c| c.position.0),
    ));
    let lag = spawn_lag(Arc::clone(&log), Arc::clone(&fed));
    let _lag = AbortOnDrop(lag);
    let mut pending = None;
    let mut sub = match checkpoint {
        None => log.subscribe(Position(0)),
        Some(c) => {
            // From the checkpoint's own event, to see it is still there;
            // folding it again changes nothing.
            let mut sub = log.subscribe(Position(c.position.0.saturating_sub(1)));
            match sub.next().await {
                Some(Ok(e))
                    if e.position == c.position && e.event.event_id.to_string() == c.event_id =>
                {
                    pending = Some(e);
                    sub
                }
                Some(Err(e)) => return Some(e),
                None => return None,
                Some(Ok(_)) => {
                    tracing::warn!(
                        reader,
                        position = c.position.0,
                        "the log no longer has the track store's checkpoint event there; feeding the store again from the start"
                    );
                    log.subscribe(Position(0))
                }
            }
        }
    };
    let mut tracker = Tracker::new();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let next = match pending.take() {
            Some(e) => Some(Ok(e)),
            None => sub.next().await,
        };
        match next {
            Some(Ok(e)) => batch.push(e),
            Some(Err(e)) => return Some(e),
            None => return None,
        }
        // What else comes within `gather` goes in the same write: a busy
        // log's events one write each would cost a commit apiece.
        let until = tokio::time::Instant::now() + gather;
        while batch.len() < BATCH {
            let next = match sub.try_next() {
                Some(next) => Some(next),
                None => tokio::time::timeout_at(until, sub.next())
                    .await
                    .unwrap_or_default(),
            };
            match next {
                Some(Ok(e)) => batch.push(e),
                Some(Err(e)) => return Some(e),
                None => break,
            }
        }
        // A batch holds at least the event it began with.
        let Some(last) = batch.last().map(|e| Checkpoint {
            position: e.position,
            event_id: e.event.event_id.to_string(),
        }) else {
            continue;
        };
        let mut backoff = std::time::Duration::from_millis(100);
        let mut rows = None;
        loop {
            let stored =
                async {
                    if rows.is_none() {
                        rows = Some(tracker.rows(&batch, store.as_ref()).await.inspect_err(
                            |_| {
                                // Part of the batch may be folded: start from what
                                // the store holds, which is every earlier batch.
                                tracker = Tracker::new();
                            },
                        )?);
                    }
                    store
                        .feed(rows.as_deref().unwrap_or_default(), &reader, &last)
                        .await
                }
                .await;
            match stored {
                Ok(()) => {
                    fed.store(last.position.0, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, reader, "the track store did not take a batch; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests;
