//! The track store on one machine: a SQLite file.

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension as _, params};
use threshold_domain::Country;
use threshold_log::Position;

use super::{
    Checkpoint, MAX_TRACK_EVENTS, ParcelSummary, StoreError, TrackEvent, TrackRow, TrackStore,
    backend, latest_per_parcel, step, summary_of,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS track_parcels (
    parcel_id  TEXT PRIMARY KEY,
    partner    TEXT NOT NULL,
    country    TEXT NOT NULL,
    depot      TEXT NOT NULL,
    day        TEXT NOT NULL,
    status     TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS track_parcels_by_day
    ON track_parcels (country, depot, day, parcel_id);
CREATE TABLE IF NOT EXISTS track_checkpoints (
    reader   TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    event_id TEXT NOT NULL
) WITHOUT ROWID;
";

/// A parcel's steps, each row appended at the table's end in the order it
/// came, and found by parcel through a unique index of (parcel, version).
/// Kept instead in the order of that key (a `WITHOUT ROWID` table, as
/// stores before this layout have it), a batch's rows fell on a page per
/// parcel all over the table, and each commit wrote, then checkpointed,
/// every such page whole; now the rows fill a few pages at the end and
/// only the index's entries, a fifth of a row's bytes, fall all over
/// (`deploy/README.md`, "the track store's steps in the order they
/// came"). [`upgrade`] moves an older store's rows over.
const STEPS: &str = "
CREATE TABLE IF NOT EXISTS track_events (
    parcel_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    event_id    TEXT NOT NULL,
    milestone   TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    detail      TEXT NOT NULL
);
";

/// The index [`STEPS`] are found by, made after the rows of an
/// [`upgrade`] are in.
const STEPS_BY_PARCEL: &str = "
CREATE UNIQUE INDEX IF NOT EXISTS track_events_by_parcel
    ON track_events (parcel_id, version);
";

/// Moves the steps of a store kept by (parcel, version) into a table of
/// [`STEPS`], in one transaction: the same rows, copied once on the first
/// open by this build. A store already laid out so is left as it is; one
/// whose copy fails is left as it was, and the error says so.
fn upgrade(db: &Connection) -> Result<(), StoreError> {
    let layout: Option<String> = db
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'track_events'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    if !layout.is_some_and(|sql| sql.contains("WITHOUT ROWID")) {
        return Ok(());
    }
    let tx = db.unchecked_transaction().map_err(backend)?;
    tx.execute_batch(&format!(
        "ALTER TABLE track_events RENAME TO track_events_by_key;
         {STEPS}
         INSERT INTO track_events
            (parcel_id, version, event_id, milestone, occurred_at, attempt, detail)
            SELECT parcel_id, version, event_id, milestone, occurred_at, attempt, detail
            FROM track_events_by_key ORDER BY parcel_id, version;
         DROP TABLE track_events_by_key;"
    ))
    .and_then(|()| tx.commit())
    .map_err(|e| {
        StoreError::Backend(format!(
            "moving the steps of a store of the earlier layout (kept by parcel \
             and version) to the current one: {e}; the store is left as it was"
        ))
    })
}

/// How much page cache the store keeps, in KiB (SQLite's default is 2,000).
/// A parcel's summary and its steps' index entries go where its id falls,
/// so each write of a batch touches pages all over: with the default, most
/// of a day's pages were read again from the file for each batch. Measured in `deploy/README.md`
/// ("fewer, larger batches"): less CPU per event at the maximum on Kafka,
/// and on the embedded log a p99 at 5,000/s no worse, for ~50 MB more
/// resident. (A WAL checkpointed every 10,000 pages instead of SQLite's
/// 1,000 was tried with it and not kept: its long checkpoints took the
/// embedded log's p99 at 5,000/s from ~15 to ~25 ms.)
const CACHE_KIB: u32 = 32 * 1024;

/// The track store in a SQLite file (or in memory, for tests). It can be
/// rebuilt from the log at any time, so it commits without waiting for the
/// disk (`synchronous = NORMAL` in WAL mode): a power cut loses at most the
/// last writes and their checkpoint together, and they are folded again.
#[derive(Clone)]
pub struct SqliteTrackStore {
    db: Arc<Mutex<Connection>>,
}

impl SqliteTrackStore {
    /// Opens (creating, owner-only) the store in the file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        threshold_privacy::private_file(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let db = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        db.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA cache_size = -{CACHE_KIB};"
        ))
        .map_err(backend)?;
        Self::with(db).map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))
    }

    /// A store in memory.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::with(Connection::open_in_memory().map_err(backend)?)
    }

    fn with(db: Connection) -> Result<Self, StoreError> {
        upgrade(&db)?;
        db.execute_batch(&format!("{SCHEMA}{STEPS}{STEPS_BY_PARCEL}"))
            .map_err(backend)?;
        Ok(Self {
            db: Arc::new(Mutex::new(db)),
        })
    }

    /// Runs `f` on the connection off the async runtime.
    async fn on<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&mut db.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(backend)?
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A country as stores write it (`SE`).
pub(super) fn country_code(c: Country) -> &'static str {
    c.code()
}

const SUMMARY: &str =
    "parcel_id, partner, country, depot, day, status, attempts, version, updated_at";

fn summary(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ParcelSummary, StoreError>> {
    Ok(summary_of(
        row.get(0)?,
        row.get(1)?,
        &row.get::<_, String>(2)?,
        row.get(3)?,
        &row.get::<_, String>(4)?,
        &row.get::<_, String>(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
    ))
}

fn get_summary(db: &Connection, parcel_id: &str) -> Result<Option<ParcelSummary>, StoreError> {
    db.query_row(
        &format!("SELECT {SUMMARY} FROM track_parcels WHERE parcel_id = ?1"),
        [parcel_id],
        summary,
    )
    .optional()
    .map_err(backend)?
    .transpose()
}

/// Writes the rows on `db` (in the caller's transaction): every step, and
/// each parcel's summary once, its latest in the rows.
fn write_rows(db: &Connection, rows: &[TrackRow]) -> Result<(), StoreError> {
    let mut event = db
        .prepare_cached(
            "INSERT INTO track_events
                (parcel_id, version, event_id, milestone, occurred_at, attempt, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (parcel_id, version) DO NOTHING",
        )
        .map_err(backend)?;
    let mut parcel = db
        .prepare_cached(&format!(
            "INSERT INTO track_parcels ({SUMMARY})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (parcel_id) DO UPDATE SET
                partner = excluded.partner, country = excluded.country,
                depot = excluded.depot, day = excluded.day,
                status = excluded.status, attempts = excluded.attempts,
                version = excluded.version, updated_at = excluded.updated_at
             WHERE excluded.version > track_parcels.version"
        ))
        .map_err(backend)?;
    for r in rows {
        let (s, e) = (&r.summary, &r.event);
        event
            .execute(params![
                s.parcel_id,
                e.version as i64,
                e.event_id,
                e.milestone.as_str(),
                millis(e.occurred_at),
                e.attempt,
                e.detail,
            ])
            .map_err(backend)?;
    }
    for s in latest_per_parcel(rows).into_iter().map(|r| &r.summary) {
        parcel
            .execute(params![
                s.parcel_id,
                s.partner,
                country_code(s.country),
                s.depot,
                s.day.to_string(),
                s.status.as_str(),
                s.attempts,
                s.version as i64,
                millis(s.updated_at),
            ])
            .map_err(backend)?;
    }
    Ok(())
}

/// Records on `db` how far `reader` has fed the store.
fn write_checkpoint(db: &Connection, reader: &str, at: &Checkpoint) -> Result<(), StoreError> {
    db.prepare_cached(
        "INSERT INTO track_checkpoints (reader, position, event_id) VALUES (?1, ?2, ?3)
         ON CONFLICT (reader) DO UPDATE SET
            position = excluded.position, event_id = excluded.event_id",
    )
    .and_then(|mut set| set.execute(params![reader, at.position.0 as i64, at.event_id]))
    .map(|_| ())
    .map_err(backend)
}

#[async_trait::async_trait]
impl TrackStore for SqliteTrackStore {
    async fn put(&self, rows: &[TrackRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = rows.to_vec();
        self.on(move |db| {
            let tx = db.transaction().map_err(backend)?;
            write_rows(&tx, &rows)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn summary(&self, parcel_id: &str) -> Result<Option<ParcelSummary>, StoreError> {
        let id = parcel_id.to_owned();
        self.on(move |db| get_summary(db, &id)).await
    }

    async fn steps(&self, parcel_id: &str) -> Result<Vec<TrackEvent>, StoreError> {
        let id = parcel_id.to_owned();
        self.on(move |db| {
            let mut q = db
                .prepare_cached(
                    "SELECT version, event_id, milestone, occurred_at, attempt, detail
                     FROM track_events WHERE parcel_id = ?1 ORDER BY version LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = q
                .query_map(params![id, MAX_TRACK_EVENTS as i64], |r| {
                    Ok(step(
                        r.get(0)?,
                        r.get(1)?,
                        &r.get::<_, String>(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .map_err(backend)?;
            rows.map(|r| r.map_err(backend)?).collect()
        })
        .await
    }

    async fn day(
        &self,
        country: Country,
        depot: &str,
        day: NaiveDate,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ParcelSummary>, StoreError> {
        let (depot, after) = (depot.to_owned(), after.unwrap_or_default().to_owned());
        self.on(move |db| {
            let mut q = db
                .prepare_cached(&format!(
                    "SELECT {SUMMARY} FROM track_parcels
                     WHERE country = ?1 AND depot = ?2 AND day = ?3 AND parcel_id > ?4
                     ORDER BY parcel_id LIMIT ?5"
                ))
                .map_err(backend)?;
            let rows = q
                .query_map(
                    params![
                        country_code(country),
                        depot,
                        day.to_string(),
                        after,
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    summary,
                )
                .map_err(backend)?;
            rows.map(|r| r.map_err(backend)?).collect()
        })
        .await
    }

    async fn checkpoint(&self, reader: &str) -> Result<Option<Checkpoint>, StoreError> {
        let reader = reader.to_owned();
        self.on(move |db| {
            db.query_row(
                "SELECT position, event_id FROM track_checkpoints WHERE reader = ?1",
                [reader],
                |r| {
                    Ok(Checkpoint {
                        position: Position(u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0)),
                        event_id: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn set_checkpoint(&self, reader: &str, at: &Checkpoint) -> Result<(), StoreError> {
        let (reader, at) = (reader.to_owned(), at.clone());
        self.on(move |db| write_checkpoint(db, &reader, &at)).await
    }

    /// One transaction: the rows and the checkpoint commit together.
    async fn feed(
        &self,
        rows: &[TrackRow],
        reader: &str,
        at: &Checkpoint,
    ) -> Result<(), StoreError> {
        let (rows, reader, at) = (rows.to_vec(), reader.to_owned(), at.clone());
        self.on(move |db| {
            let tx = db.transaction().map_err(backend)?;
            write_rows(&tx, &rows)?;
            write_checkpoint(&tx, &reader, &at)?;
            tx.commit().map_err(backend)
        })
        .await
    }
}
