//! The track store on a ScyllaDB (or Cassandra) cluster; the schema is
//! `deploy/scylla/schema.cql`.
//!
//! Every row of a parcel is written with the event's stream version as its
//! write timestamp (`USING TIMESTAMP`), so a later version wins whatever
//! order rows arrive in, and a row written again changes nothing. A
//! reschedule deletes the parcel's row on its old day at the reschedule's
//! version: a replayed older write to that day stays shadowed. Reads and
//! writes are at `LOCAL_QUORUM`.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use threshold_domain::Country;
use threshold_log::Position;

use super::sqlite::country_code;
use super::{
    Checkpoint, DAY_BUCKETS, MAX_TRACK_EVENTS, ParcelSummary, StoreError, TrackEvent, TrackRow,
    TrackStore, backend, day_bucket, latest_per_parcel, step, summary_of,
};

/// The schema, as operators apply it, for keyspace `threshold`.
pub const SCHEMA: &str = include_str!("../../../../deploy/scylla/schema.cql");

/// At most this many writes of one batch are in flight at once.
const IN_FLIGHT: usize = 64;

/// Where a store is: `scylla://HOST:PORT[,HOST:PORT…]/KEYSPACE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaTarget {
    /// Contact points.
    pub nodes: Vec<String>,
    /// The keyspace holding the tables.
    pub keyspace: String,
}

impl std::str::FromStr for ScyllaTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("scylla://").ok_or_else(|| {
            format!("{s:?}: a track store is scylla://HOST:PORT[,HOST:PORT…]/KEYSPACE")
        })?;
        let (nodes, keyspace) = rest
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: no keyspace after the hosts (…/KEYSPACE)"))?;
        let nodes: Vec<String> = nodes
            .split(',')
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        if nodes.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        if keyspace.is_empty()
            || keyspace.len() > 48
            || !keyspace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || keyspace.starts_with('_')
        {
            return Err(format!(
                "{s:?}: keyspace {keyspace:?} is not 1–48 letters, digits and underscores"
            ));
        }
        Ok(Self {
            nodes,
            keyspace: keyspace.to_owned(),
        })
    }
}

struct Statements {
    put_event: PreparedStatement,
    put_parcel: PreparedStatement,
    put_day: PreparedStatement,
    drop_day: PreparedStatement,
    summary: PreparedStatement,
    events: PreparedStatement,
    day: PreparedStatement,
    checkpoint: PreparedStatement,
    set_checkpoint: PreparedStatement,
}

/// The track store on a cluster.
#[derive(Clone)]
pub struct ScyllaTrackStore {
    session: Arc<Session>,
    q: Arc<Statements>,
}

impl ScyllaTrackStore {
    /// Connects to `target` and prepares the statements; the tables must
    /// exist (`deploy/scylla/schema.cql`, or [`Self::create_schema`]).
    pub async fn connect(target: &ScyllaTarget) -> Result<Self, StoreError> {
        let session = Self::session(target).await?;
        Self::prepare(session, &target.keyspace).await
    }

    async fn session(target: &ScyllaTarget) -> Result<Session, StoreError> {
        SessionBuilder::new()
            .known_nodes(&target.nodes)
            .build()
            .await
            .map_err(|e| StoreError::Backend(format!("{}: {e}", target.nodes.join(","))))
    }

    /// Creates the keyspace (with `replication`, a CQL map such as
    /// `{'class': 'SimpleStrategy', 'replication_factor': 1}`) and the
    /// tables of `deploy/scylla/schema.cql` in it, if missing, and connects.
    pub async fn create_schema(
        target: &ScyllaTarget,
        replication: &str,
    ) -> Result<Self, StoreError> {
        let session = Self::session(target).await?;
        for statement in schema_statements(&target.keyspace, replication) {
            session
                .query_unpaged(statement.as_str(), &[])
                .await
                .map_err(|e| StoreError::Backend(format!("{statement}: {e}")))?;
        }
        session.await_schema_agreement().await.map_err(backend)?;
        Self::prepare(session, &target.keyspace).await
    }

    /// Drops the keyspace: for tests that made one of their own.
    pub async fn drop_keyspace(&self, keyspace: &str) -> Result<(), StoreError> {
        self.session
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), &[])
            .await
            .map(|_| ())
            .map_err(backend)
    }

    async fn prepare(session: Session, ks: &str) -> Result<Self, StoreError> {
        let prepare = async |cql: String| {
            let mut p = session
                .prepare(cql.as_str())
                .await
                .map_err(|e| StoreError::Backend(format!("{cql}: {e}")))?;
            p.set_consistency(Consistency::LocalQuorum);
            Ok::<_, StoreError>(p)
        };
        let summary_cols =
            "parcel_id, partner, country, depot, day, status, attempts, version, updated_at";
        let q = Statements {
            put_event: prepare(format!(
                "INSERT INTO {ks}.track_events
                   (parcel_id, version, event_id, milestone, occurred_at, attempt, detail)
                 VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            put_parcel: prepare(format!(
                "INSERT INTO {ks}.track_parcels ({summary_cols})
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            put_day: prepare(format!(
                "INSERT INTO {ks}.track_days
                   (country, depot, day, bucket, parcel_id, partner, status, attempts, version, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            drop_day: prepare(format!(
                "DELETE FROM {ks}.track_days USING TIMESTAMP ?
                 WHERE country = ? AND depot = ? AND day = ? AND bucket = ? AND parcel_id = ?"
            ))
            .await?,
            summary: prepare(format!(
                "SELECT {summary_cols} FROM {ks}.track_parcels WHERE parcel_id = ?"
            ))
            .await?,
            events: prepare(format!(
                "SELECT version, event_id, milestone, occurred_at, attempt, detail
                 FROM {ks}.track_events WHERE parcel_id = ? LIMIT {MAX_TRACK_EVENTS}"
            ))
            .await?,
            day: prepare(format!(
                "SELECT parcel_id, partner, country, depot, day, status, attempts, version, updated_at
                 FROM {ks}.track_days
                 WHERE country = ? AND depot = ? AND day = ? AND bucket = ? AND parcel_id > ?
                 LIMIT ?"
            ))
            .await?,
            checkpoint: prepare(format!(
                "SELECT position, event_id FROM {ks}.track_checkpoints WHERE reader = ?"
            ))
            .await?,
            set_checkpoint: prepare(format!(
                "INSERT INTO {ks}.track_checkpoints (reader, position, event_id) VALUES (?, ?, ?)"
            ))
            .await?,
        };
        Ok(Self {
            session: Arc::new(session),
            q: Arc::new(q),
        })
    }
}

/// The schema's statements for `keyspace` with `replication`.
pub fn schema_statements(keyspace: &str, replication: &str) -> Vec<String> {
    let without_comments: String = SCHEMA
        .lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with("CREATE KEYSPACE") {
                format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}")
            } else {
                s.replace("threshold.", &format!("{keyspace}."))
            }
        })
        .collect()
}

fn ts(t: DateTime<Utc>) -> CqlTimestamp {
    CqlTimestamp(t.timestamp_millis())
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

type SummaryRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    i32,
    i64,
    CqlTimestamp,
);

fn summary(r: SummaryRow) -> Result<ParcelSummary, StoreError> {
    let (parcel_id, partner, c, depot, d, status, attempts, version, updated) = r;
    summary_of(
        parcel_id,
        partner,
        &c,
        depot,
        &d,
        &status,
        attempts.into(),
        version,
        updated.0,
    )
}

impl ScyllaTrackStore {
    /// The rows `statement` answers with `values`.
    async fn rows(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<scylla::response::query_result::QueryRowsResult, StoreError> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(backend)?
            .into_rows_result()
            .map_err(backend)
    }

    /// A row's step.
    async fn put_step(&self, r: &TrackRow) -> Result<(), StoreError> {
        let (s, e) = (&r.summary, &r.event);
        self.session
            .execute_unpaged(
                &self.q.put_event,
                (
                    &s.parcel_id,
                    big(e.version),
                    &e.event_id,
                    e.milestone.as_str(),
                    ts(e.occurred_at),
                    int(e.attempt),
                    &e.detail,
                    big(e.version),
                ),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The parcel's row on the day a reschedule moved it from, at the
    /// reschedule's version.
    async fn drop_day(&self, r: &TrackRow, old: NaiveDate) -> Result<(), StoreError> {
        let s = &r.summary;
        self.session
            .execute_unpaged(
                &self.q.drop_day,
                (
                    big(s.version),
                    country_code(s.country),
                    &s.depot,
                    old.to_string(),
                    i32::try_from(day_bucket(&s.parcel_id)).unwrap_or(0),
                    &s.parcel_id,
                ),
            )
            .await
            .map(|_| ())
            .map_err(backend)
    }

    /// A parcel's summary and its day row, as of `r`.
    async fn put_summary(&self, r: &TrackRow) -> Result<(), StoreError> {
        let s = &r.summary;
        let at = big(s.version);
        let day = s.day.to_string();
        let bucket = i32::try_from(day_bucket(&s.parcel_id)).unwrap_or(0);
        self.session
            .execute_unpaged(
                &self.q.put_day,
                (
                    country_code(s.country),
                    &s.depot,
                    &day,
                    bucket,
                    &s.parcel_id,
                    &s.partner,
                    s.status.as_str(),
                    int(s.attempts),
                    at,
                    ts(s.updated_at),
                    at,
                ),
            )
            .await
            .map_err(backend)?;
        self.session
            .execute_unpaged(
                &self.q.put_parcel,
                (
                    &s.parcel_id,
                    &s.partner,
                    country_code(s.country),
                    &s.depot,
                    &day,
                    s.status.as_str(),
                    int(s.attempts),
                    at,
                    ts(s.updated_at),
                    at,
                ),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl TrackStore for ScyllaTrackStore {
    async fn put(&self, rows: &[TrackRow]) -> Result<(), StoreError> {
        // Rows are independent (the write timestamps order them), so they
        // go side by side: every step; then each parcel's summary and day
        // row once, its latest in the batch, so a summary is never ahead of
        // its steps; then the rows on the days reschedules moved parcels
        // from, so a moved parcel is never on no day while a batch is
        // written (it may be on both for a moment).
        for chunk in rows.chunks(IN_FLIGHT) {
            futures::future::try_join_all(chunk.iter().map(|r| self.put_step(r))).await?;
        }
        for chunk in latest_per_parcel(rows).chunks(IN_FLIGHT) {
            futures::future::try_join_all(chunk.iter().map(|r| self.put_summary(r))).await?;
        }
        let moved: Vec<(&TrackRow, NaiveDate)> = rows
            .iter()
            .filter_map(|r| r.moved_from.map(|old| (r, old)))
            .collect();
        for chunk in moved.chunks(IN_FLIGHT) {
            futures::future::try_join_all(chunk.iter().map(|(r, old)| self.drop_day(r, *old)))
                .await?;
        }
        Ok(())
    }

    async fn summary(&self, parcel_id: &str) -> Result<Option<ParcelSummary>, StoreError> {
        let rows = self.rows(&self.q.summary, (parcel_id,)).await?;
        rows.maybe_first_row::<SummaryRow>()
            .map_err(backend)?
            .map(summary)
            .transpose()
    }

    async fn steps(&self, parcel_id: &str) -> Result<Vec<TrackEvent>, StoreError> {
        self.rows(&self.q.events, (parcel_id,))
            .await?
            .rows::<(i64, String, String, CqlTimestamp, i32, String)>()
            .map_err(backend)?
            .map(|row| {
                let (version, event_id, milestone, at, attempt, detail) = row.map_err(backend)?;
                step(version, event_id, &milestone, at.0, attempt.into(), detail)
            })
            .collect()
    }

    async fn day(
        &self,
        country: Country,
        depot: &str,
        day: NaiveDate,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ParcelSummary>, StoreError> {
        let d = day.to_string();
        let after = after.unwrap_or_default();
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        // Each bucket's next page, then the first `limit` of them all.
        let pages = futures::future::try_join_all((0..DAY_BUCKETS).map(|bucket| {
            let d = &d;
            async move {
                let rows = self
                    .rows(
                        &self.q.day,
                        (
                            country_code(country),
                            depot,
                            d,
                            i32::try_from(bucket).unwrap_or(0),
                            after,
                            limit,
                        ),
                    )
                    .await?;
                rows.rows::<SummaryRow>()
                    .map_err(backend)?
                    .map(|r| summary(r.map_err(backend)?))
                    .collect::<Result<Vec<_>, StoreError>>()
            }
        }))
        .await?;
        let mut all: Vec<ParcelSummary> = pages.into_iter().flatten().collect();
        all.sort_by(|a, b| a.parcel_id.cmp(&b.parcel_id));
        all.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(all)
    }

    async fn checkpoint(&self, reader: &str) -> Result<Option<Checkpoint>, StoreError> {
        let rows = self.rows(&self.q.checkpoint, (reader,)).await?;
        Ok(rows
            .maybe_first_row::<(i64, String)>()
            .map_err(backend)?
            .map(|(position, event_id)| Checkpoint {
                position: Position(u64::try_from(position).unwrap_or(0)),
                event_id,
            }))
    }

    async fn set_checkpoint(&self, reader: &str, at: &Checkpoint) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(
                &self.q.set_checkpoint,
                (reader, big(at.position.0), &at.event_id),
            )
            .await
            .map(|_| ())
            .map_err(backend)
    }
}
