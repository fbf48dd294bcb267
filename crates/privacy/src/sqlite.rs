//! [`SqliteStore`]: a vault's state in `DATA/vault.db`, for processes on
//! one machine (they may share it with `--vault`). Opened with
//! `secure_delete`, so forgotten keys are overwritten on disk.
//!
//! Given key-encryption keys ([`SqliteStore::open_with`]), the store keeps
//! the vault's secret and every subject's key wrapped under the current one
//! ([`Keks`]; the secret's slot is `secret`, a key's `key/<subject>/<key
//! id>`, so a wrapped key cannot be moved to another subject's row): a copy
//! of the file (a backup, a disk image, a support bundle) opens no sealed
//! value without the key-encryption key. Values kept in the clear, by an
//! older version or before a key was given, are wrapped when the store is
//! opened with one, and the pages that held them overwritten. A store
//! holding wrapped values is refused without its key, naming the key's id.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::kek::hex;
use super::{Error, Keks, Key32, Result, VAULT_FILE, VaultStore, random};

/// A vault's state in a SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    keks: Option<Keks>,
    /// The vault's secret, once read: it never changes (a rotation rewraps
    /// it, the same secret), and every seal asks for it.
    secret: OnceLock<[u8; 32]>,
}

/// The slot a subject's key is wrapped for.
fn key_slot(subject: &str, key_id: &[u8]) -> String {
    format!("key/{subject}/{}", hex(key_id))
}

const SECRET_SLOT: &str = "secret";

/// The keys kept in the clear, as SQL: a wrapped value is longer than its
/// header (34 bytes) and starts `W1` ([`Keks::wrapped_by`]), so a start
/// scans the table without reading every wrapped key out of it.
const CLEAR: &str = "WHERE length(key) <= 34 OR substr(key, 1, 2) <> x'5731'";

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
    /// Opens (or creates) the store in the data directory `dir`, its
    /// values in the clear.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, None)
    }

    /// Opens (or creates) the store in the data directory `dir`; with
    /// `keks`, its secret and keys wrapped under the current key (values
    /// found in the clear are wrapped now). Without `keks`, a store that
    /// holds wrapped values is refused.
    pub fn open_with(dir: impl AsRef<Path>, keks: Option<Keks>) -> Result<Self> {
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
        let secret = random::<32>();
        let secret = match &keks {
            Some(keks) => keks.wrap(SECRET_SLOT, &secret),
            None => secret.to_vec(),
        };
        conn.execute(
            "INSERT OR IGNORE INTO secret (id, value) VALUES (1, ?1)",
            params![secret],
        )
        .map_err(store)?;
        let store = Self {
            path,
            conn: Mutex::new(conn),
            keks,
            secret: OnceLock::new(),
        };
        // The secret is wrapped with the rest, and first: one that does not
        // open tells of a store that needs a key, or another key, before
        // anything is wrapped under the key given.
        store.secret()?;
        store.wrap_where(CLEAR, |value| Keks::wrapped_by(value).is_none())?;
        if store.keks.is_some() {
            // Pages a wrapping could not overwrite before (another process
            // held the file open) are overwritten now.
            let conn = store.conn.lock().unwrap_or_else(|p| p.into_inner());
            store.overwrite(&conn)?;
        }
        Ok(store)
    }

    /// Wraps every value under the current key-encryption key that is not
    /// already: the last step of a rotation, once every process sharing
    /// the store was given the new key (`threshold privacy rewrap`). How
    /// many values were wrapped. Without keys, nothing is.
    pub fn rewrap(&self) -> Result<usize> {
        match &self.keks {
            Some(keks) => self.wrap_where("", |value| !keks.is_current(value)),
            None => Ok(0),
        }
    }

    /// Rewraps under the current key every value `stale` picks (of the
    /// keys, among those the SQL condition `among` selects), in one
    /// transaction, then overwrites the pages that held them: with
    /// `secure_delete` a row's old bytes are zeroed where it was, and the
    /// checkpoint writes the new pages over the database's and empties the
    /// write-ahead log.
    fn wrap_where(&self, among: &str, stale: impl Fn(&[u8]) -> bool) -> Result<usize> {
        let Some(keks) = &self.keks else {
            return Ok(0);
        };
        let fail = |reason: String| Error::Shared {
            store: self.describe(),
            reason,
        };
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let sql = |source| Error::Store {
            path: self.path.clone(),
            source,
        };
        let tx = Transaction::new_unchecked(&conn, TransactionBehavior::Immediate).map_err(sql)?;
        let mut wrapped = 0;
        let secret: Vec<u8> = tx
            .query_row("SELECT value FROM secret WHERE id = 1", [], |r| r.get(0))
            .map_err(sql)?;
        if stale(&secret) {
            let plain = self.open_value(SECRET_SLOT, secret).map_err(fail)?;
            tx.execute(
                "UPDATE secret SET value = ?1 WHERE id = 1",
                params![keks.wrap(SECRET_SLOT, &plain)],
            )
            .map_err(sql)?;
            wrapped += 1;
        }
        let keys: Vec<(i64, String, Vec<u8>, Vec<u8>)> = {
            let mut select = tx
                .prepare(&format!(
                    "SELECT rowid, subject, key_id, key FROM keys {among}"
                ))
                .map_err(sql)?;
            select
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(sql)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql)?
        };
        for (rowid, subject, key_id, key) in keys {
            if !stale(&key) {
                continue;
            }
            let slot = key_slot(&subject, &key_id);
            let plain = self.open_value(&slot, key).map_err(fail)?;
            tx.execute(
                "UPDATE keys SET key = ?1 WHERE rowid = ?2",
                params![keks.wrap(&slot, &plain), rowid],
            )
            .map_err(sql)?;
            wrapped += 1;
        }
        tx.commit().map_err(sql)?;
        if wrapped > 0 {
            self.overwrite(&conn)?;
        }
        Ok(wrapped)
    }

    /// Writes every page of the write-ahead log over the database's and
    /// empties the log, so what a deletion or a wrapping replaced is gone
    /// from both files (`secure_delete` zeroed it in the new pages). A
    /// reader of another process can hold the checkpoint off: it is tried
    /// for up to two seconds, then refused with what to do.
    fn overwrite(&self, conn: &Connection) -> Result<()> {
        for _ in 0..100 {
            let busy: i64 = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .map_err(|source| Error::Store {
                    path: self.path.clone(),
                    source,
                })?;
            if busy == 0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(Error::Shared {
            store: self.describe(),
            reason: "the pages that held a destroyed or unwrapped key could not be \
                     overwritten: another process holds the vault open; run this again once \
                     it is stopped"
                .into(),
        })
    }

    /// Why a key cannot be kept here in the clear, if it cannot: a store
    /// opened without keys that another process has since wrapped (its
    /// secret is wrapped now). Asked in the transaction that would keep
    /// it.
    fn wrapped_since(&self, conn: &Connection) -> rusqlite::Result<Option<String>> {
        if self.keks.is_some() {
            return Ok(None);
        }
        let secret: Vec<u8> = conn
            .prepare_cached("SELECT value FROM secret WHERE id = 1")?
            .query_row([], |r| r.get(0))?;
        Ok(Keks::wrapped_by(&secret).map(|id| {
            format!(
                "the vault was wrapped under the key-encryption key {} after this process \
                 opened it, and no key is kept in the clear in it: start this process with \
                 the key (--vault-kek-file or THRESHOLD_VAULT_KEK)",
                hex(&id)
            )
        }))
    }

    /// A stored value in the clear: unwrapped from `slot` when wrapped (a
    /// store without keys cannot), as it is when kept in the clear.
    fn open_value(&self, slot: &str, value: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
        match (Keks::wrapped_by(&value), &self.keks) {
            (None, _) => Ok(value),
            (Some(_), Some(keks)) => keks.unwrap(slot, &value),
            (Some(id), None) => Err(format!(
                "{slot}: wrapped under the key-encryption key {}, and this process was given \
                 none (--vault-kek-file or THRESHOLD_VAULT_KEK)",
                hex(&id)
            )),
        }
    }

    /// [`Self::open_value`], failing as the store; the slot is named only
    /// for a wrapped value, so a store in the clear formats none.
    fn opened(&self, slot: impl FnOnce() -> String, value: Vec<u8>) -> Result<Vec<u8>> {
        if Keks::wrapped_by(&value).is_none() {
            return Ok(value);
        }
        self.open_value(&slot(), value)
            .map_err(|reason| Error::Shared {
                store: self.describe(),
                reason,
            })
    }

    /// `key` as this store keeps it for `slot`.
    fn kept(&self, slot: &str, key: &[u8]) -> Vec<u8> {
        match &self.keks {
            Some(keks) => keks.wrap(slot, key),
            None => key.to_vec(),
        }
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
    conn.prepare_cached("SELECT 1 FROM forgotten WHERE subject_mac = ?1")?
        .query_row(params![subject_mac.as_slice()], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

impl VaultStore for SqliteStore {
    fn secret(&self) -> Result<[u8; 32]> {
        if let Some(secret) = self.secret.get() {
            return Ok(*secret);
        }
        let value: Vec<u8> = self.with(|conn| {
            conn.query_row("SELECT value FROM secret WHERE id = 1", [], |r| r.get(0))
        })?;
        let secret: [u8; 32] = self
            .opened(|| SECRET_SLOT.to_owned(), value)?
            .try_into()
            .map_err(|_| Error::Shared {
                store: self.describe(),
                reason: "the vault's secret is not 32 bytes".into(),
            })?;
        Ok(*self.secret.get_or_init(|| secret))
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
        let made = self.with(|conn| {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            if let Some(subject) = tx
                .prepare_cached("SELECT subject FROM households WHERE address_mac = ?1")?
                .query_row(params![address_mac.as_slice()], |r| r.get::<_, String>(0))
                .optional()?
            {
                return Ok(Ok(subject));
            }
            if let Some(refusal) = self.wrapped_since(&tx)? {
                return Ok(Err(refusal));
            }
            tx.execute(
                "INSERT INTO households (address_mac, subject) VALUES (?1, ?2)",
                params![address_mac.to_vec(), fresh],
            )?;
            tx.execute(
                "INSERT INTO keys (key_id, subject, key) VALUES (?1, ?2, ?3)",
                params![
                    fresh_key.0,
                    fresh,
                    self.kept(&key_slot(fresh, &fresh_key.0), &fresh_key.1)
                ],
            )?;
            tx.commit()?;
            Ok(Ok(fresh.to_owned()))
        })?;
        made.map_err(|reason| Error::Shared {
            store: self.describe(),
            reason,
        })
    }

    fn find_household(&self, address_mac: &[u8; 32]) -> Result<Option<String>> {
        self.with(|conn| {
            conn.prepare_cached("SELECT subject FROM households WHERE address_mac = ?1")?
                .query_row(params![address_mac.as_slice()], |r| r.get(0))
                .optional()
        })
    }

    /// The check and the insert are one transaction, so a `forget` from
    /// another process cannot fall between them.
    fn key(&self, subject: &str, subject_mac: &[u8; 32], fresh: Key32) -> Result<Option<Key32>> {
        let found = self.with(|conn| {
            let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
            if forgotten(&tx, subject_mac)? {
                return Ok(Ok(None));
            }
            if let Some(found) = tx
                .prepare_cached(
                    "SELECT key_id, key FROM keys WHERE subject = ?1 ORDER BY rowid DESC LIMIT 1",
                )?
                .query_row(params![subject], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .optional()?
            {
                return Ok(Ok(Some(Ok(found))));
            }
            if let Some(refusal) = self.wrapped_since(&tx)? {
                return Ok(Err(refusal));
            }
            tx.execute(
                "INSERT INTO keys (key_id, subject, key) VALUES (?1, ?2, ?3)",
                params![
                    fresh.0,
                    subject,
                    self.kept(&key_slot(subject, &fresh.0), &fresh.1)
                ],
            )?;
            tx.commit()?;
            Ok(Ok(Some(Err(fresh))))
        })?;
        let found = found.map_err(|reason| Error::Shared {
            store: self.describe(),
            reason,
        })?;
        match found {
            None => Ok(None),
            Some(Err(fresh)) => Ok(Some(fresh)),
            Some(Ok((key_id, key))) => {
                let key = self.opened(|| key_slot(subject, &key_id), key)?;
                Ok(Some((key_id, key)))
            }
        }
    }

    fn key_by_id(&self, subject: &str, key_id: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = self.with(|conn| {
            conn.prepare_cached("SELECT key FROM keys WHERE key_id = ?1 AND subject = ?2")?
                .query_row(params![key_id, subject], |r| r.get(0))
                .optional()
        })?;
        key.map(|key| self.opened(|| key_slot(subject, key_id), key))
            .transpose()
    }

    /// The keys are destroyed when the transaction commits; the pages
    /// that held them are overwritten at once ([`Self::overwrite`]), and a
    /// failure to overwrite them is the error, which a second `forget`
    /// (destroying nothing more) retries.
    fn forget(&self, subject: &str, subject_mac: &[u8; 32]) -> Result<usize> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let keys = (|| {
            let tx = Transaction::new_unchecked(&conn, TransactionBehavior::Immediate)?;
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
            Ok(keys)
        })()
        .map_err(|source| Error::Store {
            path: self.path.clone(),
            source,
        })?;
        self.overwrite(&conn)?;
        Ok(keys)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kek, Vault};

    fn kek() -> Kek {
        Kek::from_hex(&Kek::generate_hex(), "test").unwrap()
    }

    /// A key's row: subject, key id, the value stored.
    type Row = (String, Vec<u8>, Vec<u8>);

    /// Every key's row, and the stored secret, through a connection of
    /// their own.
    fn stored(dir: &Path) -> (Vec<Row>, Vec<u8>) {
        let conn = Connection::open(dir.join(VAULT_FILE)).unwrap();
        let keys = conn
            .prepare("SELECT subject, key_id, key FROM keys ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let secret = conn
            .query_row("SELECT value FROM secret", [], |r| r.get(0))
            .unwrap();
        (keys, secret)
    }

    /// Whether any of the vault's files holds `bytes`.
    fn on_disk(dir: &Path, bytes: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let file = std::fs::read(entry.unwrap().path()).unwrap();
            file.windows(bytes.len()).any(|w| w == bytes)
        })
    }

    #[test]
    fn with_a_key_encryption_key_no_key_is_kept_in_the_clear_and_older_ones_are_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let address = ["Gatan 1", "111 51", "Stockholm", "SE"];
        // A vault kept in the clear, as before a key was given.
        let plain = Vault::open(dir.path()).unwrap();
        let hh = plain.household(&address).unwrap();
        let sealed = plain.seal(&hh.subject, "parcel/SE-1", b"Gatan 1").unwrap();
        // Enough keys for the table to span pages.
        for i in 2..300 {
            plain
                .household(&[&format!("Gatan {i}"), "111 51", "Stockholm", "SE"])
                .unwrap();
        }
        drop(plain);
        let (keys, secret) = stored(dir.path());
        assert_eq!((keys.len(), keys[0].2.len(), secret.len()), (299, 32, 32));
        let (old_key, old_secret) = (keys[0].2.clone(), secret);
        assert!(on_disk(dir.path(), &old_key), "the test can see a key");

        // Opened with a key: what was in the clear is wrapped, its old
        // bytes overwritten while the store is still open (not by SQLite's
        // checkpoint on the last close), and it opens what it sealed
        // before.
        let a = kek();
        let keks = Keks::new(a.clone(), []);
        let v = Vault::open_with(dir.path(), Some(keks.clone())).unwrap();
        for (_, _, key) in &keys {
            assert!(!on_disk(dir.path(), key), "a key in the clear on disk");
        }
        assert!(!on_disk(dir.path(), &old_secret), "the secret in the clear");
        assert_eq!(
            v.unseal(&sealed, "parcel/SE-1").unwrap().as_deref(),
            Some(&b"Gatan 1"[..])
        );
        assert_eq!(
            v.find_household(&address).unwrap(),
            Some(hh.subject.clone())
        );
        let later = v.seal("resident:r", "grant/g-1", b"59.33,18.06").unwrap();
        drop(v);
        let (keys, secret) = stored(dir.path());
        assert_eq!(keys.len(), 300);
        let r = keys.len() - 1;
        let store = SqliteStore::open_with(dir.path(), Some(keks.clone())).unwrap();
        let mut clear = vec![store.secret().unwrap().to_vec()];
        for (subject, key_id, value) in &keys {
            assert_eq!(Keks::wrapped_by(value), Some(a.id), "{subject}'s key");
            clear.push(store.key_by_id(subject, key_id).unwrap().unwrap());
        }
        assert_eq!(Keks::wrapped_by(&secret), Some(a.id), "the secret");
        assert_eq!(clear[0], old_secret);
        assert_eq!(clear[1], old_key);
        for bytes in &clear {
            assert!(!on_disk(dir.path(), bytes), "a key in the clear on disk");
        }
        drop(store);

        // Without the key, or with another, it does not open, and says
        // which key it needs.
        let err = Vault::open(dir.path()).unwrap_err().to_string();
        for said in [a.id_hex().as_str(), "THRESHOLD_VAULT_KEK", VAULT_FILE] {
            assert!(err.contains(said), "{said:?}: {err}");
        }
        let err = Vault::open_with(dir.path(), Some(Keks::new(kek(), [])))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&a.id_hex()) && err.contains("not given"),
            "{err}"
        );
        // ... and the refused key wrapped nothing: a key another process
        // kept in the clear stays as it was.
        let conn = Connection::open(dir.path().join(VAULT_FILE)).unwrap();
        let clear_row = [7u8; 32].to_vec();
        conn.execute(
            "INSERT INTO keys (key_id, subject, key) VALUES (x'00', 'resident:c', ?1)",
            params![clear_row],
        )
        .unwrap();
        assert!(Vault::open_with(dir.path(), Some(Keks::new(kek(), []))).is_err());
        let kept: Vec<u8> = conn
            .query_row(
                "SELECT key FROM keys WHERE subject = 'resident:c'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, clear_row);
        conn.execute("DELETE FROM keys WHERE subject = 'resident:c'", [])
            .unwrap();

        // A wrapped key moved to another subject's row does not open there
        // (the key ids differ)...
        conn.execute(
            "UPDATE keys SET key = ?1 WHERE subject = ?2",
            params![keys[0].2, keys[r].0],
        )
        .unwrap();
        let v = Vault::open_with(dir.path(), Some(keks.clone())).unwrap();
        let err = v.unseal(&later, "grant/g-1").unwrap_err().to_string();
        assert!(err.contains("does not authenticate"), "{err}");
        drop(v);
        // ... nor does a row given to another subject, its key id kept.
        conn.execute(
            "UPDATE keys SET subject = 'resident:x' WHERE subject = ?1",
            params![keys[0].0],
        )
        .unwrap();
        let store = SqliteStore::open_with(dir.path(), Some(keks)).unwrap();
        let err = store
            .key_by_id("resident:x", &keys[0].1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not authenticate"), "{err}");
    }

    #[test]
    fn a_process_without_the_key_keeps_no_new_key_in_the_clear_once_another_wrapped_the_vault() {
        let dir = tempfile::tempdir().unwrap();
        let keyless = SqliteStore::open(dir.path()).unwrap();
        let mac = [1u8; 32];
        let fresh = || (vec![9u8; 16], vec![8u8; 32]);
        assert!(keyless.key("resident:a", &mac, fresh()).unwrap().is_some());
        // Another process, given the key, wraps the vault.
        let a = kek();
        let wrapping = SqliteStore::open_with(dir.path(), Some(Keks::new(a.clone(), []))).unwrap();
        for refused in [
            keyless
                .key("resident:b", &[2u8; 32], fresh())
                .map(|_| ())
                .unwrap_err(),
            keyless
                .household(&[3u8; 32], "hh-b", fresh())
                .map(|_| ())
                .unwrap_err(),
        ] {
            let said = refused.to_string();
            assert!(
                said.contains(&a.id_hex()) && said.contains("THRESHOLD_VAULT_KEK"),
                "{said}"
            );
        }
        // What it kept before is wrapped, and nothing is in the clear.
        let (keys, _) = stored(dir.path());
        assert_eq!(keys.len(), 1);
        assert_eq!(Keks::wrapped_by(&keys[0].2), Some(a.id));
        assert!(!on_disk(dir.path(), &[8u8; 32]));
        drop(wrapping);
    }

    #[test]
    fn a_rotation_rewraps_under_the_new_key_and_the_old_one_can_then_go() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (kek(), kek());
        let v = Vault::open_with(dir.path(), Some(Keks::new(old.clone(), []))).unwrap();
        let hh = v
            .household(&["Gatan 1", "111 51", "Stockholm", "SE"])
            .unwrap();
        let a = v.seal(&hh.subject, "parcel/SE-1", b"Gatan 1").unwrap();
        let b = v.seal("resident:r", "grant/g-1", b"59.33,18.06").unwrap();
        drop(v);

        // Every process is given the new key first, the old one after it.
        let both = SqliteStore::open_with(dir.path(), Some(Keks::new(new.clone(), [old.clone()])))
            .unwrap();
        assert_eq!(both.rewrap().unwrap(), 3, "the secret and two keys");
        assert_eq!(both.rewrap().unwrap(), 0, "nothing is left to rewrap");
        drop(both);
        let (keys, secret) = stored(dir.path());
        for value in keys.iter().map(|k| &k.2).chain([&secret]) {
            assert_eq!(Keks::wrapped_by(value), Some(new.id));
        }
        // Then the old key goes.
        let v = Vault::open_with(dir.path(), Some(Keks::new(new, []))).unwrap();
        assert_eq!(
            v.unseal(&a, "parcel/SE-1").unwrap().as_deref(),
            Some(&b"Gatan 1"[..])
        );
        assert!(v.unseal(&b, "grant/g-1").unwrap().is_some());
        // Forgetting still destroys: the wrapped key's bytes are gone too.
        let wrapped = keys.iter().find(|k| k.0 == hh.subject).unwrap().2.clone();
        assert_eq!(v.forget(&hh.subject).unwrap(), 1);
        assert_eq!(v.unseal(&a, "parcel/SE-1").unwrap(), None);
        drop(v);
        assert!(!on_disk(dir.path(), &wrapped));
        let err = Vault::open_with(dir.path(), Some(Keks::new(old, [])))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not given"), "{err}");
    }
}
