//! The durable state of webhooks: endpoints (with their state, signing
//! secrets and delivered position) and every delivery attempt, in one
//! SQLite file beside the log (`webhooks.sqlite` under `--data DIR`).
//!
//! What is delivered comes from the log; this file holds only where each
//! endpoint has got to, so a restarted process resumes each endpoint from
//! its durable position and redelivers at most the event in flight.
//! Every read and write of an endpoint names its tenant: a partner naming
//! another partner's endpoint id finds nothing, exactly as for an id that
//! does not exist.
//!
//! Signing secrets cannot be hashed (the server signs with the same key
//! the receiver verifies with), so with a [`Vault`] they are sealed under
//! the vault's [`SECRETS_SUBJECT`] key, bound to their endpoint, and this
//! file holds only ciphertext: a copy of it (a backup, a support bundle)
//! hands out no key without the vault, which lives in its own file. Without
//! a vault (tests of this crate) they are stored plain. Secrets stored
//! plain before a vault was given are sealed when the store is opened with
//! one, and the freed pages overwritten (`secure_delete`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use prost::Message as _;
use rusqlite::{Connection, OptionalExtension as _, params};
use threshold_privacy::{Sealed, Vault};

use crate::signature::Secret;
use crate::{Error, Result};

/// Endpoints one partner may hold.
pub const MAX_ENDPOINTS_PER_TENANT: i64 = 20;

/// Longest response excerpt kept per attempt.
pub const EXCERPT: usize = 256;

/// Secrets an endpoint signs with at once: the newest and those still in
/// their overlap. A rotation past it ends the oldest's overlap at once, so
/// rotating in a loop cannot grow the secrets every delivery signs with.
pub const MAX_LIVE_SECRETS: i64 = 3;

/// Attempts kept per endpoint, the newest: older ones are dropped as new
/// ones are recorded (a replay in a loop records one per event).
pub const ATTEMPTS_KEPT: i64 = 1000;

/// Alerts kept per partner, the newest.
pub const ALERTS_KEPT: i64 = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS endpoints (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  url TEXT NOT NULL,
  kinds TEXT NOT NULL,
  state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  created_at TEXT NOT NULL,
  cursor INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS endpoints_tenant ON endpoints (tenant);
CREATE TABLE IF NOT EXISTS secrets (
  endpoint_id TEXT NOT NULL,
  secret TEXT NOT NULL,
  created_at TEXT NOT NULL,
  expires_at TEXT
);
CREATE INDEX IF NOT EXISTS secrets_endpoint ON secrets (endpoint_id);
CREATE TABLE IF NOT EXISTS attempts (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  endpoint_id TEXT NOT NULL,
  event_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  parcel_id TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  at TEXT NOT NULL,
  status INTEGER,
  error TEXT NOT NULL,
  latency_ms INTEGER NOT NULL,
  excerpt TEXT NOT NULL,
  result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_endpoint ON attempts (endpoint_id, seq);
CREATE TABLE IF NOT EXISTS alerts (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  endpoint_id TEXT NOT NULL,
  tenant TEXT NOT NULL,
  at TEXT NOT NULL,
  message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_tenant ON alerts (tenant, seq);
";

/// Whether an endpoint is delivered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Delivered to.
    Active,
    /// Paused by its partner: events wait at its position.
    Paused,
    /// Disabled by delivery (410 Gone, or failing past the schedule):
    /// resumed only by its partner.
    Disabled,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Paused => "paused",
            State::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "active" => State::Active,
            "paused" => State::Paused,
            _ => State::Disabled,
        }
    }
}

/// An endpoint as its partner sees it (without secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `ep_` and a random id.
    pub id: String,
    /// The partner.
    pub tenant: String,
    /// Where deliveries go.
    pub url: String,
    /// The event kinds it receives.
    pub kinds: Vec<String>,
    /// Whether it is delivered to.
    pub state: State,
    /// Why it was disabled, if it was.
    pub reason: String,
    /// Its delivered position: the log position of the last event handled.
    pub cursor: u64,
}

/// What an attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// Will be retried.
    Retry,
    /// 410 Gone: the endpoint is disabled.
    Gone,
    /// The schedule ran out: the endpoint is disabled.
    Exhausted,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Retry => "retry",
            Verdict::Gone => "gone",
            Verdict::Exhausted => "exhausted",
        }
    }
}

/// One delivery attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// `webhook-id`.
    pub event_id: String,
    /// Log position of the event.
    pub position: u64,
    /// The parcel.
    pub parcel_id: String,
    /// 1 for the first attempt of this event.
    pub attempt: u32,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The HTTP status, if a response came.
    pub status: Option<u16>,
    /// What went wrong without a response (timeout, reset, refused address).
    pub error: String,
    /// Request to response (or failure), in milliseconds.
    pub latency_ms: u64,
    /// The start of the response body, at most [`EXCERPT`] bytes.
    pub excerpt: String,
    /// What it came to.
    pub verdict: Verdict,
}

/// An alert raised for an endpoint (disabled), to its partner and the carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The endpoint.
    pub endpoint_id: String,
    /// Its partner.
    pub tenant: String,
    /// When.
    pub at: DateTime<Utc>,
    /// What happened.
    pub message: String,
}

/// The store. Cheap calls, made from blocking threads.
pub struct Store {
    conn: Mutex<Connection>,
    vault: Option<Arc<Vault>>,
}

/// The vault subject whose key seals every endpoint's signing secrets.
pub const SECRETS_SUBJECT: &str = "webhook-secrets";

/// How a sealed secret's column value starts (then the base64 of the
/// encoded [`Sealed`]); a plain one starts with `whsec_`.
const SEALED_PREFIX: &str = "sealed:v1:";

/// What a secret is sealed to: its endpoint, so a sealed value copied to
/// another endpoint's row does not open.
fn context(endpoint: &str) -> String {
    format!("webhook-secret/{endpoint}")
}

fn vault_error(e: threshold_privacy::Error) -> Error {
    Error::Store(format!("sealing signing secrets: {e}"))
}

fn db(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("endpoint {id:?}"))
}

impl Store {
    /// Opens (creating) the store at `path`, keeping secrets plain.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_sealed(path, None)
    }

    /// Opens (creating) the store at `path`, its signing secrets sealed
    /// with `vault` when given (sealing any stored plain before).
    pub fn open_sealed(path: impl AsRef<Path>, vault: Option<Arc<Vault>>) -> Result<Self> {
        // The signing secrets are in it: the owner's alone, made so before
        // SQLite opens it (its -wal and -shm take its mode).
        threshold_privacy::private_file(path.as_ref())
            .map_err(|e| Error::Store(format!("{}: {e}", path.as_ref().display())))?;
        let conn = Connection::open(path.as_ref()).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        // WAL with NORMAL: a commit survives the process being killed at
        // any moment (what a restart needs); only a power loss may take the
        // last commits, and a lost delivered position only redelivers.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        // A secret resealed, rotated out or deleted leaves no copy in a
        // freed page.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        let store = Self {
            conn: Mutex::new(conn),
            vault,
        };
        store.seal_plain()?;
        Ok(store)
    }

    /// Seals the secrets stored plain, when there is a vault.
    fn seal_plain(&self) -> Result<()> {
        if self.vault.is_none() {
            return Ok(());
        }
        let mut conn = self.conn();
        let plain: Vec<(i64, String, String)> = {
            let mut st = conn
                .prepare("SELECT rowid, endpoint_id, secret FROM secrets WHERE secret NOT LIKE 'sealed:%'")
                .map_err(db)?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(db)?
                .collect::<rusqlite::Result<_>>()
                .map_err(db)?
        };
        if plain.is_empty() {
            return Ok(());
        }
        let tx = conn.transaction().map_err(db)?;
        for (rowid, endpoint, secret) in &plain {
            let sealed = self.sealed(endpoint, &Secret::parse(secret)?)?;
            tx.execute(
                "UPDATE secrets SET secret = ?1 WHERE rowid = ?2",
                params![sealed, rowid],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        // The plain values' old pages may sit in the WAL: copied back and
        // the WAL emptied, so only the overwritten pages remain.
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(db)?;
        tracing::info!(
            secrets = plain.len(),
            "webhook signing secrets sealed with the vault"
        );
        Ok(())
    }

    /// A secret as its column holds it: sealed with the vault, or plain.
    fn sealed(&self, endpoint: &str, secret: &Secret) -> Result<String> {
        let Some(vault) = &self.vault else {
            return Ok(secret.expose());
        };
        let sealed = vault
            .seal(
                SECRETS_SUBJECT,
                &context(endpoint),
                secret.expose().as_bytes(),
            )
            .map_err(vault_error)?;
        Ok(format!(
            "{SEALED_PREFIX}{}",
            STANDARD.encode(sealed.encode_to_vec())
        ))
    }

    /// The secret a column holds.
    fn opened(&self, endpoint: &str, column: &str) -> Result<Secret> {
        let Some(b64) = column.strip_prefix(SEALED_PREFIX) else {
            return Secret::parse(column);
        };
        let vault = self.vault.as_ref().ok_or_else(|| {
            Error::Store("a signing secret is sealed, but no vault was given to open it".into())
        })?;
        let sealed = STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| Sealed::decode(b.as_slice()).ok())
            .ok_or_else(|| {
                Error::Store(format!("endpoint {endpoint}'s sealed secret is damaged"))
            })?;
        let plain = vault
            .unseal(&sealed, &context(endpoint))
            .map_err(vault_error)?
            .ok_or_else(|| {
                Error::Store("the vault's key for signing secrets was forgotten".into())
            })?;
        Secret::parse(&String::from_utf8_lossy(&plain))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every
        // write is one transaction), so a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers an endpoint for `tenant` starting after `cursor`, with a
    /// fresh secret; returns it and the secret.
    pub fn add(
        &self,
        tenant: &str,
        url: &str,
        kinds: &[String],
        cursor: u64,
        now: DateTime<Utc>,
    ) -> Result<(Endpoint, Secret)> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let held: i64 = tx
            .query_row(
                "SELECT count(*) FROM endpoints WHERE tenant = ?1",
                [tenant],
                |r| r.get(0),
            )
            .map_err(db)?;
        if held >= MAX_ENDPOINTS_PER_TENANT {
            return Err(Error::Exhausted(format!(
                "partner {tenant:?} holds {held} endpoints, the most allowed"
            )));
        }
        let id = format!("ep_{}", uuid::Uuid::new_v4().simple());
        let secret = Secret::generate();
        let stored = self.sealed(&id, &secret)?;
        tx.execute(
            "INSERT INTO endpoints (id, tenant, url, kinds, state, created_at, cursor) VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6)",
            params![id, tenant, url, kinds.join(","), now.to_rfc3339(), cursor as i64],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO secrets (endpoint_id, secret, created_at) VALUES (?1, ?2, ?3)",
            params![id, stored, now.to_rfc3339()],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok((
            Endpoint {
                id,
                tenant: tenant.to_owned(),
                url: url.to_owned(),
                kinds: kinds.to_vec(),
                state: State::Active,
                reason: String::new(),
                cursor,
            },
            secret,
        ))
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Endpoint> {
        let kinds: String = r.get(3)?;
        let state: String = r.get(4)?;
        let cursor: i64 = r.get(6)?;
        Ok(Endpoint {
            id: r.get(0)?,
            tenant: r.get(1)?,
            url: r.get(2)?,
            kinds: kinds
                .split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
            state: State::parse(&state),
            reason: r.get(5)?,
            cursor: u64::try_from(cursor).unwrap_or(0),
        })
    }

    const COLUMNS: &'static str = "id, tenant, url, kinds, state, reason, cursor";

    /// `tenant`'s endpoint `id`.
    pub fn get(&self, tenant: &str, id: &str) -> Result<Endpoint> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {} FROM endpoints WHERE id = ?1 AND tenant = ?2",
                    Self::COLUMNS
                ),
                [id, tenant],
                Self::row,
            )
            .optional()
            .map_err(db)?
            .ok_or_else(|| not_found(id))
    }

    /// `tenant`'s endpoints.
    pub fn list(&self, tenant: &str) -> Result<Vec<Endpoint>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(&format!(
                "SELECT {} FROM endpoints WHERE tenant = ?1 ORDER BY created_at, id",
                Self::COLUMNS
            ))
            .map_err(db)?;
        st.query_map([tenant], Self::row)
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)
    }

    /// Every endpoint of every partner: what the deliveries start from.
    pub fn all(&self) -> Result<Vec<Endpoint>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(&format!(
                "SELECT {} FROM endpoints ORDER BY id",
                Self::COLUMNS
            ))
            .map_err(db)?;
        st.query_map([], Self::row)
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)
    }

    /// Sets `tenant`'s endpoint `id` to `state` (with `reason`).
    pub fn set_state(&self, tenant: &str, id: &str, state: State, reason: &str) -> Result<()> {
        let n = self
            .conn()
            .execute(
                "UPDATE endpoints SET state = ?1, reason = ?2 WHERE id = ?3 AND tenant = ?4",
                params![state.as_str(), reason, id, tenant],
            )
            .map_err(db)?;
        if n == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// Deletes `tenant`'s endpoint `id`, its secrets and its attempts.
    pub fn delete(&self, tenant: &str, id: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        let n = tx
            .execute(
                "DELETE FROM endpoints WHERE id = ?1 AND tenant = ?2",
                [id, tenant],
            )
            .map_err(db)?;
        if n == 0 {
            return Err(not_found(id));
        }
        tx.execute("DELETE FROM secrets WHERE endpoint_id = ?1", [id])
            .map_err(db)?;
        tx.execute("DELETE FROM attempts WHERE endpoint_id = ?1", [id])
            .map_err(db)?;
        tx.commit().map_err(db)
    }

    /// The endpoint's delivered position, moved to `cursor` (forward as
    /// deliveries complete, back for a replay).
    pub fn set_cursor(&self, id: &str, cursor: u64) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE endpoints SET cursor = ?1 WHERE id = ?2",
                params![cursor as i64, id],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Moves `tenant`'s endpoint `id` back to `cursor` for a replay (never
    /// forward: a replay must not skip what is not yet delivered).
    pub fn rewind(&self, tenant: &str, id: &str, cursor: u64) -> Result<u64> {
        let ep = self.get(tenant, id)?;
        let to = cursor.min(ep.cursor);
        self.set_cursor(id, to)?;
        Ok(to)
    }

    /// A fresh secret for `tenant`'s endpoint `id`; the secrets valid now
    /// stay valid until `now + overlap`.
    pub fn rotate(
        &self,
        tenant: &str,
        id: &str,
        overlap: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<Secret> {
        self.get(tenant, id)?;
        let secret = Secret::generate();
        let stored = self.sealed(id, &secret)?;
        let until = now + overlap;
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db)?;
        tx.execute(
            "UPDATE secrets SET expires_at = ?1 WHERE endpoint_id = ?2 AND (expires_at IS NULL OR expires_at > ?1)",
            params![until.to_rfc3339(), id],
        )
        .map_err(db)?;
        tx.execute(
            "DELETE FROM secrets WHERE endpoint_id = ?1 AND expires_at <= ?2",
            params![id, now.to_rfc3339()],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO secrets (endpoint_id, secret, created_at) VALUES (?1, ?2, ?3)",
            params![id, stored, now.to_rfc3339()],
        )
        .map_err(db)?;
        tx.execute(
            "DELETE FROM secrets WHERE endpoint_id = ?1 AND rowid NOT IN \
             (SELECT rowid FROM secrets WHERE endpoint_id = ?1 ORDER BY rowid DESC LIMIT ?2)",
            params![id, MAX_LIVE_SECRETS],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(secret)
    }

    /// The secrets that sign a delivery at `now`, newest first.
    pub fn secrets(&self, id: &str, now: DateTime<Utc>) -> Result<Vec<Secret>> {
        let rows: Vec<String> = {
            let conn = self.conn();
            let mut st = conn
            .prepare(
                "SELECT secret FROM secrets WHERE endpoint_id = ?1 AND (expires_at IS NULL OR expires_at > ?2) ORDER BY rowid DESC",
            )
            .map_err(db)?;
            st.query_map(params![id, now.to_rfc3339()], |r| r.get(0))
                .map_err(db)?
                .collect::<rusqlite::Result<_>>()
                .map_err(db)?
        };
        rows.iter().map(|s| self.opened(id, s)).collect()
    }

    /// Records an attempt on endpoint `id`.
    pub fn record(&self, id: &str, a: &Attempt) -> Result<()> {
        let excerpt: String = a.excerpt.chars().take(EXCERPT).collect();
        let conn = self.conn();
        conn.execute(
                "INSERT INTO attempts (endpoint_id, event_id, position, parcel_id, attempt, at, status, error, latency_ms, excerpt, result) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    id,
                    a.event_id,
                    a.position as i64,
                    a.parcel_id,
                    a.attempt,
                    a.at.to_rfc3339(),
                    a.status,
                    a.error,
                    a.latency_ms as i64,
                    excerpt,
                    a.verdict.as_str()
                ],
            )
            .map_err(db)?;
        keep_newest(&conn, "attempts", "endpoint_id", id, ATTEMPTS_KEPT)
    }

    /// Up to `max` attempts on `tenant`'s endpoint `id` after sequence
    /// `after`, oldest first, with each one's sequence number.
    pub fn attempts(
        &self,
        tenant: &str,
        id: &str,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, Attempt)>> {
        self.get(tenant, id)?;
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT seq, event_id, position, parcel_id, attempt, at, status, error, latency_ms, excerpt, result FROM attempts WHERE endpoint_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(db)?;
        st.query_map(params![id, after as i64, max as i64], |r| {
            let at: String = r.get(5)?;
            let result: String = r.get(10)?;
            Ok((
                u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                Attempt {
                    event_id: r.get(1)?,
                    position: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    parcel_id: r.get(3)?,
                    attempt: r.get(4)?,
                    at: DateTime::parse_from_rfc3339(&at)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_default(),
                    status: r.get(6)?,
                    error: r.get(7)?,
                    latency_ms: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
                    excerpt: r.get(9)?,
                    verdict: match result.as_str() {
                        "delivered" => Verdict::Delivered,
                        "gone" => Verdict::Gone,
                        "exhausted" => Verdict::Exhausted,
                        _ => Verdict::Retry,
                    },
                },
            ))
        })
        .map_err(db)?
        .collect::<rusqlite::Result<_>>()
        .map_err(db)
    }

    /// Raises an alert for endpoint `id` of `tenant`.
    pub fn alert(&self, tenant: &str, id: &str, message: &str, now: DateTime<Utc>) -> Result<()> {
        tracing::warn!(endpoint = id, tenant, message, "webhook endpoint alert");
        let conn = self.conn();
        conn.execute(
            "INSERT INTO alerts (endpoint_id, tenant, at, message) VALUES (?1, ?2, ?3, ?4)",
            params![id, tenant, now.to_rfc3339(), message],
        )
        .map_err(db)?;
        keep_newest(&conn, "alerts", "tenant", tenant, ALERTS_KEPT)
    }

    /// Up to `max` alerts for `tenant` (every partner's for the carrier's
    /// `None`) after sequence `after`, oldest first, with their sequence.
    pub fn alerts(
        &self,
        tenant: Option<&str>,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, Alert)>> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT seq, endpoint_id, tenant, at, message FROM alerts \
                 WHERE (?1 IS NULL OR tenant = ?1) AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(db)?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        st.query_map(params![tenant, after, max], |r| {
            let seq: i64 = r.get(0)?;
            let at: String = r.get(3)?;
            Ok((
                u64::try_from(seq).unwrap_or(0),
                Alert {
                    endpoint_id: r.get(1)?,
                    tenant: r.get(2)?,
                    at: DateTime::parse_from_rfc3339(&at)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_default(),
                    message: r.get(4)?,
                },
            ))
        })
        .map_err(db)?
        .collect::<rusqlite::Result<_>>()
        .map_err(db)
    }
}

/// Drops the rows of `table` whose `column` is `key` but its newest `kept`
/// (by `seq`). `table` and `column` are this file's own names, never input.
fn keep_newest(
    conn: &Connection,
    table: &'static str,
    column: &'static str,
    key: &str,
    kept: i64,
) -> Result<()> {
    conn.prepare_cached(&format!(
        "DELETE FROM {table} WHERE {column} = ?1 AND seq <= \
         (SELECT seq FROM {table} WHERE {column} = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)"
    ))
    .and_then(|mut st| st.execute(params![key, kept]))
    .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(store: &Store, tenant: &str) -> Endpoint {
        store
            .add(tenant, "https://shop.example/hooks", &[], 0, Utc::now())
            .expect("added")
            .0
    }

    /// A store in a directory of its own, removed with it.
    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("a directory");
        let store = Store::open(dir.path().join("webhooks.sqlite")).expect("store");
        (dir, store)
    }

    #[test]
    fn rotating_in_a_loop_keeps_a_few_secrets_live() {
        let (_dir, store) = store();
        let ep = endpoint(&store, "nordshop");
        let now = Utc::now();
        let mut newest = Vec::new();
        for _ in 0..50 {
            let s = store
                .rotate("nordshop", &ep.id, chrono::Duration::days(30), now)
                .expect("rotated");
            newest.insert(0, s);
        }
        let live = store.secrets(&ep.id, now).expect("secrets");
        assert_eq!(live.len(), MAX_LIVE_SECRETS as usize);
        // The newest ones, newest first: the latest still signs.
        let expose = |s: &[Secret]| s.iter().map(Secret::expose).collect::<Vec<_>>();
        assert_eq!(expose(&live), expose(&newest[..live.len()]));
    }

    #[test]
    fn attempts_and_alerts_keep_the_newest_only() {
        let (_dir, store) = store();
        let (a, b) = (endpoint(&store, "nordshop"), endpoint(&store, "fjellshop"));
        let attempt = |n: u64| Attempt {
            event_id: format!("e-{n}"),
            position: n,
            parcel_id: "SE-1".into(),
            attempt: 1,
            at: Utc::now(),
            status: Some(500),
            error: String::new(),
            latency_ms: 1,
            excerpt: String::new(),
            verdict: Verdict::Retry,
        };
        let extra = 25;
        for n in 0..(ATTEMPTS_KEPT as u64 + extra) {
            store.record(&a.id, &attempt(n)).expect("recorded");
            store
                .alert("nordshop", &a.id, &format!("alert {n}"), Utc::now())
                .expect("alerted");
        }
        store.record(&b.id, &attempt(0)).expect("recorded");
        store
            .alert("fjellshop", &b.id, "alert", Utc::now())
            .expect("alerted");
        let kept = store
            .attempts("nordshop", &a.id, 0, 10_000)
            .expect("attempts");
        assert_eq!(kept.len(), ATTEMPTS_KEPT as usize);
        assert_eq!(kept[0].1.position, extra, "the oldest kept");
        let alerts = store.alerts(Some("nordshop"), 0, 10_000).expect("alerts");
        assert_eq!(alerts.len(), ALERTS_KEPT as usize);
        assert_eq!(alerts[0].1.message, format!("alert {extra}"));
        // Another partner's are its own.
        assert_eq!(
            store.attempts("fjellshop", &b.id, 0, 10).expect("b").len(),
            1
        );
        assert_eq!(store.alerts(Some("fjellshop"), 0, 10).expect("b").len(), 1);
    }
}
