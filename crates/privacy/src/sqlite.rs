//! [`SqliteStore`]: a vault's state in `DATA/vault.db`, for processes on
//! one machine (they may share it with `--vault`). Opened with
//! `secure_delete`, so forgotten keys are overwritten on disk.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{Error, Key32, Result, VAULT_FILE, VaultStore, random};

/// A vault's state in a SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// Makes `dir` (and missing parents) owner-only; an existing directory is
/// left as it is: the data directory is the server's to narrow.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes `path` if missing, and narrows it to owner-only (unix): for
/// every file a process keeps in its data directory.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}
impl SqliteStore {
    /// Opens (or creates) the store in the data directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(VAULT_FILE);
        let store = |source| Error::Store {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            let _ = private_dir(parent);
        }
        // SQLite makes the file 0644 less the umask, and its -wal and -shm
        // files copy the database's mode: making the file first, owner-only,
        // keeps all three private.
        let _ = private_file(&path);
        let conn = Connection::open(&path).map_err(store)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA secure_delete = ON;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS secret (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 value BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS keys (
                 key_id BLOB PRIMARY KEY,
                 subject TEXT NOT NULL,
                 key BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS keys_by_subject ON keys (subject);
             CREATE TABLE IF NOT EXISTS households (
                 address_mac BLOB PRIMARY KEY,
                 subject TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS households_by_subject ON households (subject);
             CREATE TABLE IF NOT EXISTS forgotten (
                 subject_mac BLOB PRIMARY KEY
             );",
        )
        .map_err(store)?;
        conn.execute(
            "INSERT OR IGNORE INTO secret (id, value) VALUES (1, ?1)",
            params![random::<32>().to_vec()],
        )
        .map_err(store)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The vault's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| Error::Store {
            path: self.path.clone(),
            source,
        })
    }
}

fn forgotten(conn: &Connection, subject_mac: &[u8; 32]) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM forgotten WHERE subject_mac = ?1",
        params![subject_mac.to_vec()],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

impl VaultStore for SqliteStore {
    fn secret(&self) -> Result<[u8; 32]> {
        let value: Vec<u8> = self.with(|conn| {
            conn.query_row("SELECT value FROM secret WHERE id = 1", [], |r| r.get(0))
        })?;
        value.try_into().map_err(|_| Error::Shared {
            store: self.describe(),
            reason: "the vault's secret is not 32 bytes".into(),
        })
    }

    fn is_unused(&self) -> Result<bool> {
        self.with(|conn| {
            conn.query_row(
                "SELECT NOT (EXISTS (SELECT 1 FROM keys)
                          OR EXISTS (SELECT 1 FROM households)
                          OR EXISTS (SELECT 1 FROM forgotten))",
                [],
                |r| r.get(0),
            )
        })
    }

    fn is_forgotten(&self, subject_mac: &[u8; 32]) -> Result<bool> {
        self.with(|conn| forgotten(conn, subject_mac))
    }

    fn household(&self, address_mac: &[u8; 32], fresh: &str, fresh_key: Key32) -> Result<String> {
        self.with(|conn| {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            if let Some(subject) = tx
                .query_row(
                    "SELECT subject FROM households WHERE address_mac = ?1",
                    params![address_mac.to_vec()],
                    |r| r.get::<_, String>(0),
                )
                .optional()?
            {
                return Ok(subject);
            }
            tx.execute(
                "INSERT INTO households (address_mac, subject) VALUES (?1, ?2)",
                params![address_mac.to_vec(), fresh],
            )?;
            tx.execute(
                "INSERT INTO keys (key_id, subject, key) VALUES (?1, ?2, ?3)",
                params![fresh_key.0, fresh, fresh_key.1],
            )?;
            tx.commit()?;
            Ok(fresh.to_owned())
        })
    }

    fn find_household(&self, address_mac: &[u8; 32]) -> Result<Option<String>> {
        self.with(|conn| {
            conn.query_row(
                "SELECT subject FROM households WHERE address_mac = ?1",
                params![address_mac.to_vec()],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// The check and the insert are one transaction, so a `forget` from
    /// another process cannot fall between them.
    fn key(&self, subject: &str, subject_mac: &[u8; 32], fresh: Key32) -> Result<Option<Key32>> {
        self.with(|conn| {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            if forgotten(&tx, subject_mac)? {
                return Ok(None);
            }
            if let Some(found) = tx
                .query_row(
                    "SELECT key_id, key FROM keys WHERE subject = ?1 ORDER BY rowid DESC LIMIT 1",
                    params![subject],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
            {
                return Ok(Some(found));
            }
            tx.execute(
                "INSERT INTO keys (key_id, subject, key) VALUES (?1, ?2, ?3)",
                params![fresh.0, subject, fresh.1],
            )?;
            tx.commit()?;
            Ok(Some(fresh))
        })
    }

    fn key_by_id(&self, subject: &str, key_id: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(|conn| {
            conn.query_row(
                "SELECT key FROM keys WHERE key_id = ?1 AND subject = ?2",
                params![key_id, subject],
                |r| r.get(0),
            )
            .optional()
        })
    }

    fn forget(&self, subject: &str, subject_mac: &[u8; 32]) -> Result<usize> {
        self.with(|conn| {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR IGNORE INTO forgotten (subject_mac) VALUES (?1)",
                params![subject_mac.to_vec()],
            )?;
            let keys = tx.execute("DELETE FROM keys WHERE subject = ?1", params![subject])?;
            tx.execute(
                "DELETE FROM households WHERE subject = ?1",
                params![subject],
            )?;
            tx.commit()?;
            // Overwrite freed pages now, not at some later write.
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(keys)
        })
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
