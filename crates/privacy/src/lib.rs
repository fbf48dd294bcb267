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
//!
//! A forgotten subject stays forgotten: [`Vault::forget`] leaves a
//! tombstone, and no key is ever made for a tombstoned subject again.
//! Sealing or digesting for it fails with [`Error::Forgotten`], so an event
//! that would carry new personal data of a forgotten subject is refused
//! rather than sealed under a new key that the deletion request never
//! covered. This matters for subjects whose id is derived rather than
//! random (a resident's subject is `resident:` and the partner's resident
//! reference): without the tombstone the next grant for them would quietly
//! make a fresh key under the same id. A household's id is random, and
//! forgetting it also removes the link from its address; a later parcel to
//! that address therefore starts a new household with a new subject, which
//! a new deletion request (`privacy forget --street …`) finds and forgets in
//! the same way. Old ciphertext stays unopenable either way:
//! [`Vault::unseal`] answers `None` for it.
//!
//! The tombstone keeps no subject id in the clear, only an HMAC of it under
//! the vault's own secret. Subject ids can be personal data themselves (a
//! resident reference may be a customer number or an e-mail address), and
//! a deletion request should not leave behind the very identifier it asked
//! to erase. The vault can still tell a forgotten id when it is presented
//! again; anyone holding the vault file can test a guessed id, as with the
//! address links.
//!
//! The vault's files are readable and writable by their owner only (0600 on
//! unix, for the database and SQLite's `-wal` and `-shm` beside it, which
//! take the database file's mode), and a data directory it has to create is
//! made 0700.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
pub use threshold_api::v1::Sealed;

pub mod kek;
mod sqlite;
pub use kek::{Kek, Keks};
pub use sqlite::{SqliteStore, private_dir, private_file};

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
    /// A vault store failed other than in SQLite: one shared over the
    /// network unreachable, or a store holding what this build or the
    /// key-encryption keys given cannot read.
    #[error("{store}: {reason}")]
    Shared {
        /// The store.
        store: String,
        /// What went wrong.
        reason: String,
    },
    /// The subject was forgotten: no key is made for it again, so nothing
    /// new can be sealed or digested under it. The caller refuses the event
    /// that would carry it.
    #[error("subject {subject} was forgotten at its request: no new personal data is kept for it")]
    Forgotten {
        /// The subject.
        subject: String,
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

/// Where a vault keeps its state: its secret, the subjects' keys, the
/// links from addresses to households and the tombstones of forgotten
/// subjects. The cryptography is [`Vault`]'s; a store only keeps bytes, and
/// each of its operations is atomic: two processes asking for a subject's
/// key at once get the same one, and a key is never made after the
/// subject's tombstone. [`SqliteStore`] keeps them in a file on one
/// machine; processes on many machines share one over the network (on
/// Kafka, `threshold_server::KafkaVault`).
pub trait VaultStore: Send + Sync + 'static {
    /// The vault's own secret (for address links and tombstones), the
    /// same for every user of the store.
    fn secret(&self) -> Result<[u8; 32]>;

    /// Whether nothing was ever kept: no key, no link and no tombstone.
    fn is_unused(&self) -> Result<bool>;

    /// Whether the tombstone `subject_mac` is kept.
    fn is_forgotten(&self, subject_mac: &[u8; 32]) -> Result<bool>;

    /// The subject linked to `address_mac`, linking `fresh` to it when
    /// none is, with `fresh_key` as its key (a household is sealed for at
    /// once: its key is made with it).
    fn household(&self, address_mac: &[u8; 32], fresh: &str, fresh_key: Key32) -> Result<String>;

    /// The subject linked to `address_mac`, if any.
    fn find_household(&self, address_mac: &[u8; 32]) -> Result<Option<String>>;

    /// The subject's key `(key_id, key)`, keeping `fresh` as it when it has
    /// none; `None` when the tombstone `subject_mac` is kept (checked in
    /// the same step as the keeping).
    fn key(&self, subject: &str, subject_mac: &[u8; 32], fresh: Key32) -> Result<Option<Key32>>;

    /// The key `key_id` of `subject`, if kept.
    fn key_by_id(&self, subject: &str, key_id: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Keeps the tombstone `subject_mac`, and destroys every key of
    /// `subject` and every link to it; how many keys were destroyed.
    fn forget(&self, subject: &str, subject_mac: &[u8; 32]) -> Result<usize>;

    /// Where the store is, for messages.
    fn describe(&self) -> String;
}

/// A key as a store keeps it: its id (16 bytes) and the key (32 bytes).
pub type Key32 = (Vec<u8>, Vec<u8>);

/// Per-subject keys, kept by a [`VaultStore`] apart from the log.
pub struct Vault {
    store: Box<dyn VaultStore>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("store", &self.store.describe())
            .finish()
    }
}

/// HMAC-SHA256 (RFC 2104): for stores that name slots by a keyed hash.
pub fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
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

/// `N` random bytes from the operating system's generator (through
/// `rand`'s thread-local generator, seeded from it).
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

impl Vault {
    /// Opens (or creates) the vault in the data directory `dir`
    /// ([`SqliteStore`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::with_store(SqliteStore::open(dir)?))
    }

    /// Opens (or creates) the vault in the data directory `dir`, its
    /// secret and keys wrapped under `keks` when given
    /// ([`SqliteStore::open_with`]).
    pub fn open_with(dir: impl AsRef<Path>, keks: Option<Keks>) -> Result<Self> {
        Ok(Self::with_store(SqliteStore::open_with(dir, keks)?))
    }

    /// The vault over `store`.
    pub fn with_store(store: impl VaultStore) -> Self {
        Self {
            store: Box::new(store),
        }
    }

    /// Where its state is kept, for messages.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Whether the vault was never used: no key, no household link and no
    /// tombstone. A vault that forgot every subject still has their
    /// tombstones, so it is not unused. A server opening an unused vault
    /// over a log that holds sealed data has the wrong vault (or a lost
    /// one), and must not start: see `threshold-server`.
    pub fn is_unused(&self) -> Result<bool> {
        self.store.is_unused()
    }

    fn address_mac(&self, normalised: &str) -> Result<[u8; 32]> {
        Ok(hmac(&self.store.secret()?, normalised.as_bytes()))
    }

    /// What a tombstone keeps of `subject`: a keyed hash, domain-separated
    /// from the address links so the two can never be confused.
    fn subject_mac(&self, subject: &str) -> Result<[u8; 32]> {
        let mut message = b"forgotten subject\0".to_vec();
        message.extend_from_slice(subject.as_bytes());
        Ok(hmac(&self.store.secret()?, &message))
    }

    /// Whether `subject` was forgotten: nothing new is sealed for it again.
    pub fn is_subject_forgotten(&self, subject: &str) -> Result<bool> {
        self.store.is_forgotten(&self.subject_mac(subject)?)
    }

    /// The household living at `address` (its normalised parts), made on
    /// first sight. After its household was forgotten an address is not
    /// known any more, so this makes a new household with a new subject
    /// (see the module docs); a link that still names a forgotten subject
    /// is refused with [`Error::Forgotten`].
    pub fn household(&self, address: &[&str]) -> Result<Household> {
        let mac = self.address_mac(&normalise(address))?;
        let fresh = format!("hh-{}", uuid::Uuid::new_v4().simple());
        let key = (random::<16>().to_vec(), random::<32>().to_vec());
        let subject = self.store.household(&mac, &fresh, key)?;
        if subject != fresh && self.is_subject_forgotten(&subject)? {
            return Err(Error::Forgotten { subject });
        }
        Ok(Household { subject })
    }

    /// The household at `address`, if the vault knows one (it does not
    /// after it was forgotten).
    pub fn find_household(&self, address: &[&str]) -> Result<Option<String>> {
        let mac = self.address_mac(&normalise(address))?;
        self.store.find_household(&mac)
    }

    /// The subject's key, made on first use, or [`Error::Forgotten`].
    fn live_key(&self, subject: &str) -> Result<Key32> {
        let fresh = (random::<16>().to_vec(), random::<32>().to_vec());
        self.store
            .key(subject, &self.subject_mac(subject)?, fresh)?
            .ok_or_else(|| Error::Forgotten {
                subject: subject.to_owned(),
            })
    }
    /// Seals `plaintext` under `subject`'s key; `context` (what it is, e.g.
    /// the parcel's id) is bound in, so a sealed value cannot be moved to
    /// another event and still open. A forgotten subject is refused with
    /// [`Error::Forgotten`].
    pub fn seal(&self, subject: &str, context: &str, plaintext: &[u8]) -> Result<Sealed> {
        let (key_id, key) = self.live_key(subject)?;
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
    /// digests while the subject is known, and [`Error::Forgotten`] once it
    /// is forgotten.
    pub fn digest(&self, subject: &str, data: &[u8]) -> Result<Vec<u8>> {
        let (_, key) = self.live_key(subject)?;
        Ok(hmac(&key, data).to_vec())
    }

    /// Opens a sealed value bound to `context`: `None` once its subject was
    /// forgotten, an error when it does not authenticate.
    pub fn unseal(&self, sealed: &Sealed, context: &str) -> Result<Option<Vec<u8>>> {
        let Some(key) = self.store.key_by_id(&sealed.subject, &sealed.key_id)? else {
            return Ok(None);
        };
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

    /// Seals a protobuf message; [`Error::Forgotten`] for a forgotten subject.
    pub fn seal_message<M: prost::Message>(
        &self,
        subject: &str,
        context: &str,
        message: &M,
    ) -> Result<Sealed> {
        self.seal(subject, context, &message.encode_to_vec())
    }

    /// Destroys every key of `subject` and its address link, and leaves a
    /// tombstone so that no key is made for it again (also when nothing was
    /// known of it yet). Returns how many keys were destroyed (0: nothing
    /// was known of it).
    pub fn forget(&self, subject: &str) -> Result<usize> {
        self.store.forget(subject, &self.subject_mac(subject)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query on the vault file of `dir`, through a connection of its own.
    fn sql<T>(dir: &Path, f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> T {
        let conn = rusqlite::Connection::open(dir.join(VAULT_FILE)).unwrap();
        f(&conn).unwrap()
    }

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
        let key: Vec<u8> = sql(dir.path(), |c| {
            c.query_row("SELECT key FROM keys", [], |r| r.get(0))
        });
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

    #[test]
    fn a_forgotten_subject_gets_no_new_key_and_nothing_new_is_sealed_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path()).unwrap();
        let subject = "resident:anna.svensson@example.com";
        let point = Sealed {
            subject: "inner".into(),
            ..Default::default()
        };
        let sealed = v.seal(subject, "grant/g-1", b"59.33,18.06").unwrap();
        let message = v.seal_message(subject, "grant/g-2", &point).unwrap();
        assert_eq!(v.forget(subject).unwrap(), 1);

        for v in [&v, &Vault::open(dir.path()).unwrap()] {
            assert!(v.is_subject_forgotten(subject).unwrap());
            let refused = v.seal(subject, "grant/g-3", b"x").unwrap_err();
            assert!(
                matches!(&refused, Error::Forgotten { subject: s } if s == subject),
                "{refused}"
            );
            assert!(refused.to_string().contains("forgotten"), "{refused}");
            assert!(matches!(
                v.seal_message(subject, "grant/g-3", &point),
                Err(Error::Forgotten { .. })
            ));
            assert!(matches!(
                v.digest(subject, b"x"),
                Err(Error::Forgotten { .. })
            ));
            // Old data stays closed, without an error.
            assert_eq!(v.unseal(&sealed, "grant/g-1").unwrap(), None);
            assert_eq!(
                v.unseal_message::<Sealed>(&message, "grant/g-2").unwrap(),
                None
            );
            let keys: i64 = sql(dir.path(), |c| {
                c.query_row("SELECT COUNT(*) FROM keys", [], |r| r.get(0))
            });
            assert_eq!(keys, 0, "no key was made again");
        }
        // Forgetting again destroys nothing more and is no error.
        assert_eq!(v.forget(subject).unwrap(), 0);
        // Other subjects are not touched.
        assert!(v.seal("resident:other", "grant/g-4", b"x").is_ok());
        assert!(!v.is_subject_forgotten("resident:other").unwrap());
        drop(v);
        // The tombstone does not keep the id it was asked to erase.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes
                    .windows(b"anna.svensson".len())
                    .any(|w| w == b"anna.svensson"),
                "a forgotten subject's id is still on disk"
            );
        }
    }

    #[test]
    fn a_subject_forgotten_before_it_was_ever_seen_is_never_given_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path()).unwrap();
        assert_eq!(v.forget("resident:early").unwrap(), 0);
        assert!(matches!(
            v.seal("resident:early", "grant/g-1", b"x"),
            Err(Error::Forgotten { .. })
        ));
        assert!(matches!(
            v.digest("resident:early", b"x"),
            Err(Error::Forgotten { .. })
        ));
    }

    #[test]
    fn a_forgotten_household_is_not_found_again_and_its_address_starts_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path()).unwrap();
        let address = ["Gatan 1", "111 51", "Stockholm", "SE"];
        let old = v.household(&address).unwrap();
        let sealed = v.seal(&old.subject, "parcel/SE-1", b"Gatan 1").unwrap();
        v.forget(&old.subject).unwrap();
        assert!(matches!(
            v.seal(&old.subject, "parcel/SE-2", b"Gatan 1"),
            Err(Error::Forgotten { .. })
        ));
        // A later parcel to the address: a new household, never the old id.
        let new = v.household(&address).unwrap();
        assert_ne!(new.subject, old.subject);
        let again = v.seal(&new.subject, "parcel/SE-2", b"Gatan 1").unwrap();
        assert_eq!(v.unseal(&sealed, "parcel/SE-1").unwrap(), None);
        // Which a new deletion request finds and forgets the same way.
        assert_eq!(
            v.find_household(&address).unwrap(),
            Some(new.subject.clone())
        );
        assert_eq!(v.forget(&new.subject).unwrap(), 1);
        assert_eq!(v.unseal(&again, "parcel/SE-2").unwrap(), None);

        // A link that still names a forgotten subject (written by an older
        // build, say) is refused rather than used to make a key.
        let mac = v.address_mac(&normalise(&address)).unwrap();
        sql(dir.path(), |c| {
            c.execute(
                "INSERT OR REPLACE INTO households (address_mac, subject) VALUES (?1, ?2)",
                rusqlite::params![mac.to_vec(), old.subject],
            )
        });
        let err = v.household(&address).unwrap_err();
        assert!(
            matches!(&err, Error::Forgotten { subject } if *subject == old.subject),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_vault_files_are_owner_only_and_a_directory_it_makes_too() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let v = Vault::open(&dir).unwrap();
        v.seal("resident:r", "grant/g-1", b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            files += 1;
        }
        assert!(files >= 3, "the database with its -wal and -shm: {files}");
        drop(v);
        // An older vault file open to others is narrowed at open.
        let file = dir.join(VAULT_FILE);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _v = Vault::open(&dir).unwrap();
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn a_vault_is_unused_until_it_holds_a_key_a_household_or_a_tombstone() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path()).unwrap();
        assert!(v.is_unused().unwrap(), "a new vault");
        assert_eq!(
            v.describe(),
            dir.path().join(VAULT_FILE).display().to_string()
        );
        // Opened again: it has a secret now, and is still unused.
        drop(v);
        let v = Vault::open(dir.path()).unwrap();
        assert!(v.is_unused().unwrap(), "a vault opened twice, never used");

        v.household(&["Gatan 1", "111 51", "Stockholm", "SE"])
            .unwrap();
        assert!(!v.is_unused().unwrap(), "a household link");

        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path()).unwrap();
        v.seal("resident:r1", "grant:g1", b"x").unwrap();
        assert!(!v.is_unused().unwrap(), "a key");
        // Every subject forgotten: the tombstones remain, it was used.
        v.forget("resident:r1").unwrap();
        assert!(!v.is_unused().unwrap(), "a tombstone");
    }
}
