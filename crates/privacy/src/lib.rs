//! Personal data that can be forgotten while the event log stays whole.
//!
//! The log is append-only and its homes' audit chains hash what is stored,
//! so personal data cannot be deleted from it. Instead it is never stored
//! there in the clear: an address is sealed (XChaCha20-Poly1305) under a key
//! of its subject — a household, found by a keyed hash of its address, or a
//! resident — and only the ciphertext ([`pb::Sealed`]) goes into events. The
//! keys live in the [`Vault`], `DATA/vault.db`, apart from the log. A
//! deletion request ([`Vault::forget`]) destroys the subject's keys and the
//! entry that links its address to it: the ciphertext in the log can never
//! be opened again, while every event, statistic and hash stays as it was.
//!
//! Subjects are random ids, so an event names a household without saying
//! which; the link from an address to its household (a keyed hash of the
//! normalised address) is in the vault and goes with the keys. The vault is
//! opened with `secure_delete` so forgotten keys are overwritten on disk,
//! and is read on every use, so a key forgotten by `threshold privacy
//! forget` is gone for a running server at once.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
pub use threshold_api::v1::Sealed;

/// The vault's file in the data directory.
pub const VAULT_FILE: &str = "vault.db";

/// Why the vault failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The vault file could not be used.
    #[error("{path}: {source}")]
    Store {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A sealed value does not open under its key: changed or damaged.
    #[error("sealed data of subject {subject} does not authenticate: it was changed or damaged")]
    Tampered {
        /// The subject.
        subject: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is known of a household: its id, and whether it was just created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Household {
    /// The household's subject id.
    pub subject: String,
}

/// Per-subject keys, in a SQLite file apart from the log.
pub struct Vault {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("path", &self.path).finish()
    }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// An address as the household lookup sees it: case, spacing and
/// punctuation do not make another household.
pub fn normalise(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| {
            p.chars()
                .filter(|c| c.is_alphanumeric() || c.is_whitespace())
                .collect::<String>()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .collect::<Vec<_>>()
        .join("|")
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

impl Vault {
    /// Opens (or creates) the vault in the data directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(VAULT_FILE);
        let store = |source| Error::Store {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
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
             CREATE INDEX IF NOT EXISTS households_by_subject ON households (subject);",
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

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| Error::Store {
            path: self.path.clone(),
            source,
        })
    }

    fn address_mac(conn: &Connection, normalised: &str) -> rusqlite::Result<[u8; 32]> {
        let secret: Vec<u8> =
            conn.query_row("SELECT value FROM secret WHERE id = 1", [], |r| r.get(0))?;
        Ok(hmac(&secret, normalised.as_bytes()))
    }

    /// The household living at `address` (its normalised parts), made on
    /// first sight.
    pub fn household(&self, address: &[&str]) -> Result<Household> {
        let normalised = normalise(address);
        self.with(|conn| {
            let mac = Self::address_mac(conn, &normalised)?;
            if let Some(subject) = conn
                .query_row(
                    "SELECT subject FROM households WHERE address_mac = ?1",
                    params![mac.to_vec()],
                    |r| r.get::<_, String>(0),
                )
                .optional()?
            {
                return Ok(Household { subject });
            }
            let subject = format!("hh-{}", uuid::Uuid::new_v4().simple());
            conn.execute(
                "INSERT INTO households (address_mac, subject) VALUES (?1, ?2)",
                params![mac.to_vec(), subject],
            )?;
            Ok(Household { subject })
        })
    }

    /// The household at `address`, if the vault knows one (it does not
    /// after it was forgotten).
    pub fn find_household(&self, address: &[&str]) -> Result<Option<String>> {
        let normalised = normalise(address);
        self.with(|conn| {
            let mac = Self::address_mac(conn, &normalised)?;
            conn.query_row(
                "SELECT subject FROM households WHERE address_mac = ?1",
                params![mac.to_vec()],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// The subject's current key, made on first use.
    fn key(conn: &Connection, subject: &str) -> rusqlite::Result<(Vec<u8>, Vec<u8>)> {
        if let Some(found) = conn
            .query_row(
                "SELECT key_id, key FROM keys WHERE subject = ?1 ORDER BY rowid DESC LIMIT 1",
                params![subject],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
        {
            return Ok(found);
        }
        let (key_id, key) = (random::<16>().to_vec(), random::<32>().to_vec());
        conn.execute(
            "INSERT INTO keys (key_id, subject, key) VALUES (?1, ?2, ?3)",
            params![key_id, subject, key],
        )?;
        Ok((key_id, key))
    }

    /// Seals `plaintext` under `subject`'s key; `context` (what it is, e.g.
    /// the parcel's id) is bound in, so a sealed value cannot be moved to
    /// another event and still open.
    pub fn seal(&self, subject: &str, context: &str, plaintext: &[u8]) -> Result<Sealed> {
        let (key_id, key) = self.with(|conn| Self::key(conn, subject))?;
        let nonce = random::<24>();
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&key));
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| Error::Tampered {
                subject: subject.to_owned(),
            })?;
        Ok(Sealed {
            subject: subject.to_owned(),
            key_id,
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// A keyed hash of `data` under `subject`'s key: equal data gives equal
    /// digests while the subject is known, and nothing once it is forgotten.
    pub fn digest(&self, subject: &str, data: &[u8]) -> Result<Vec<u8>> {
        let (_, key) = self.with(|conn| Self::key(conn, subject))?;
        Ok(hmac(&key, data).to_vec())
    }

    /// Opens a sealed value bound to `context`: `None` once its subject was
    /// forgotten, an error when it does not authenticate.
    pub fn unseal(&self, sealed: &Sealed, context: &str) -> Result<Option<Vec<u8>>> {
        let key: Option<Vec<u8>> = self.with(|conn| {
            conn.query_row(
                "SELECT key FROM keys WHERE key_id = ?1 AND subject = ?2",
                params![sealed.key_id, sealed.subject],
                |r| r.get(0),
            )
            .optional()
        })?;
        let Some(key) = key else { return Ok(None) };
        if sealed.nonce.len() != 24 {
            return Err(Error::Tampered {
                subject: sealed.subject.clone(),
            });
        }
        XChaCha20Poly1305::new(Key::from_slice(&key))
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map(Some)
            .map_err(|_| Error::Tampered {
                subject: sealed.subject.clone(),
            })
    }

    /// Opens a sealed protobuf message of type `M`.
    pub fn unseal_message<M: prost::Message + Default>(
        &self,
        sealed: &Sealed,
        context: &str,
    ) -> Result<Option<M>> {
        Ok(match self.unseal(sealed, context)? {
            None => None,
            Some(bytes) => Some(M::decode(bytes.as_slice()).map_err(|_| Error::Tampered {
                subject: sealed.subject.clone(),
            })?),
        })
    }

    /// Seals a protobuf message.
    pub fn seal_message<M: prost::Message>(
        &self,
        subject: &str,
        context: &str,
        message: &M,
    ) -> Result<Sealed> {
        self.seal(subject, context, &message.encode_to_vec())
    }

    /// Destroys every key of `subject` and its address link. Returns how
    /// many keys were destroyed (0: nothing was known of it).
    pub fn forget(&self, subject: &str) -> Result<usize> {
        self.with(|conn| {
            let keys = conn.execute("DELETE FROM keys WHERE subject = ?1", params![subject])?;
            conn.execute(
                "DELETE FROM households WHERE subject = ?1",
                params![subject],
            )?;
            // Overwrite freed pages now, not at some later write.
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(keys)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_household_is_found_again_by_its_address_however_written() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path()).unwrap();
        let a = v
            .household(&["Drottninggatan 1", "111 51", "Stockholm", "SE"])
            .unwrap();
        let b = v
            .household(&["drottninggatan  1", "111 51", "STOCKHOLM.", "se"])
            .unwrap();
        assert_eq!(a, b);
        let c = v
            .household(&["Drottninggatan 2", "111 51", "Stockholm", "SE"])
            .unwrap();
        assert_ne!(a, c);
        assert!(a.subject.starts_with("hh-"));
    }

    #[test]
    fn sealed_data_opens_in_its_context_until_its_subject_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path()).unwrap();
        let hh = v
            .household(&["Gatan 1", "111 51", "Stockholm", "SE"])
            .unwrap();
        let sealed = v
            .seal(&hh.subject, "parcel/SE-1", b"Gatan 1, 111 51 Stockholm")
            .unwrap();
        assert!(!String::from_utf8_lossy(&sealed.ciphertext).contains("Gatan"));
        assert_eq!(
            v.unseal(&sealed, "parcel/SE-1").unwrap().as_deref(),
            Some(&b"Gatan 1, 111 51 Stockholm"[..])
        );
        // Moved to another event, or changed: refused, not misread.
        assert!(matches!(
            v.unseal(&sealed, "parcel/SE-2"),
            Err(Error::Tampered { .. })
        ));
        let mut changed = sealed.clone();
        changed.ciphertext[0] ^= 1;
        assert!(v.unseal(&changed, "parcel/SE-1").is_err());
        let d1 = v.digest(&hh.subject, b"x").unwrap();
        assert_eq!(d1, v.digest(&hh.subject, b"x").unwrap());

        // Forgotten: gone for good, also for another handle on the file.
        let key: Vec<u8> = v
            .with(|c| c.query_row("SELECT key FROM keys", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(v.forget(&hh.subject).unwrap(), 1);
        assert_eq!(v.unseal(&sealed, "parcel/SE-1").unwrap(), None);
        let other = Vault::open(dir.path()).unwrap();
        assert_eq!(other.unseal(&sealed, "parcel/SE-1").unwrap(), None);
        assert_eq!(
            other
                .find_household(&["Gatan 1", "111 51", "Stockholm", "SE"])
                .unwrap(),
            None,
            "the address no longer leads to the household"
        );
        drop((v, other));
        // The key's bytes are not left anywhere in the vault's files.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_slice()),
                "a forgotten key is still on disk"
            );
        }
    }
}
