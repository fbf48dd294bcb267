//! [`KafkaVault`]: the vault's state in a compacted Kafka topic every
//! process reads whole, so processes on many machines seal and open with
//! the same keys and an erasure counts in all of them, with nothing shared
//! on disk. The cryptography is [`threshold_privacy::Vault`]'s; this is its
//! [`VaultStore`].
//!
//! # Records
//!
//! The topic is `PREFIX.vault` (one partition, compacted), held whole in
//! memory ([`KafkaTable`]). Record keys name slots and never a subject in
//! the clear (a subject id may be personal data): addresses and subjects
//! appear as keyed hashes under the vault's secret.
//!
//! | key | value |
//! | --- | --- |
//! | `secret/CLAIM` | the vault's secret, wrapped |
//! | `household/HMAC(address)/CLAIM` | the household's subject id |
//! | `key/HMAC(subject)/CLAIM` | key id and key, wrapped |
//! | `forgotten/HMAC(subject)` | a tombstone of the subject (never removed) |
//!
//! Secrets and keys are wrapped under the operator's key-encryption key
//! ([`Keks`]), with the record key as associated data.
//!
//! # The first claim wins
//!
//! Kafka has no compare-and-set, so a slot is filled by claims: a process
//! that finds a slot empty writes a claim under a key of its own (`CLAIM`
//! is random), waits until its table holds it, and takes the slot's claim
//! of the lowest offset, which every process sees the same since they all
//! read one partition in order. A process whose claim lost removes it (a
//! Kafka tombstone), so compaction leaves one claim per slot, and never
//! reorders what it leaves. Two processes making the same household's or
//! subject's key at once therefore both use the first one.
//!
//! # Erasure
//!
//! `forget` writes the subject's tombstone, waits until its table holds it
//! (and with it every claim written before it), then removes the subject's
//! key claims and the links to it. A key claim written after the tombstone
//! is removed by its own writer, who sees the tombstone when it waits for
//! its claim and refuses the key. Removed records stay on the brokers' disks
//! until compaction (see `deploy/README.md`, *The vault on Kafka*); their
//! keys are wrapped, and a key-encryption key rotation rewraps only what is
//! live.

use std::collections::BTreeMap;

use threshold_log::kafka::{KafkaOptions, KafkaTable, Stored};
use threshold_privacy::{Error, Keks, Key32, Result, VaultStore, hmac};

/// How long the vault table's follower waits at the broker unless the
/// options set a wait for every follower: a process that makes a key waits
/// for its own claim to come back, and the test broker holds every fetch
/// for its whole wait.
const FETCH_WAIT_MS: u64 = 5;

/// The vault topic of a deployment whose topics start with `prefix`.
pub fn vault_topic(prefix: &str) -> String {
    format!("{prefix}.vault")
}

/// A vault's state in a compacted Kafka topic.
pub struct KafkaVault {
    table: KafkaTable,
    keks: Keks,
    secret: [u8; 32],
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn claim_id() -> String {
    hex(&threshold_privacy::random::<16>())
}

/// The claim of the lowest offset among the keys starting with `prefix`.
fn first<'a>(
    entries: &'a BTreeMap<String, Stored>,
    prefix: &str,
) -> Option<(&'a String, &'a Stored)> {
    entries
        .range(prefix.to_owned()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .min_by_key(|(_, s)| s.offset)
}

impl KafkaVault {
    /// Opens the vault of the deployment on `brokers` whose topics start
    /// with `prefix`, as the process `name`, with its key-encryption keys.
    pub async fn open(brokers: &str, prefix: &str, name: &str, keks: Keks) -> Result<Self> {
        let mut options = KafkaOptions::new(brokers, "", name);
        options.topic_prefix = prefix.to_owned();
        Self::open_with(&options, keks).await
    }

    /// [`KafkaVault::open`] with the brokers, topic prefix, name and fetch
    /// wait of `options` (the table keeps nothing on disk: their replica
    /// is unused).
    pub async fn open_with(options: &KafkaOptions, keks: Keks) -> Result<Self> {
        let topic = vault_topic(&options.topic_prefix);
        let shared = |e: threshold_log::Error| Error::Shared {
            store: format!("Kafka topic {topic}"),
            reason: e.to_string(),
        };
        let table = KafkaTable::open_with(options, &topic, FETCH_WAIT_MS)
            .await
            .map_err(shared)?;
        let vault = Self {
            table,
            keks,
            secret: [0; 32],
        };
        // The first process makes the secret; a claim waits on this thread.
        let (vault, secret) = tokio::task::spawn_blocking(move || {
            let found = match first(&vault.table.state().entries, "secret/") {
                Some((k, s)) => Some((k.clone(), s.clone())),
                None => vault.claim("secret/", |slot| {
                    vault.keks.wrap(slot, &threshold_privacy::random::<32>())
                })?,
            };
            let (slot, stored) = found
                .ok_or_else(|| vault.error("the vault's secret was removed as it was made"))?;
            let secret = vault.unwrap(&slot, &stored.value)?;
            Ok::<_, Error>((vault, secret))
        })
        .await
        .map_err(|e| Error::Shared {
            store: format!("Kafka topic {topic}"),
            reason: e.to_string(),
        })??;
        let mut vault = vault;
        vault.secret = secret
            .try_into()
            .map_err(|_| vault.error("the vault's secret is not 32 bytes"))?;
        Ok(vault)
    }

    fn error(&self, reason: impl std::fmt::Display) -> Error {
        Error::Shared {
            store: self.describe(),
            reason: reason.to_string(),
        }
    }

    fn unwrap(&self, slot: &str, wrapped: &[u8]) -> Result<Vec<u8>> {
        self.keks.unwrap(slot, wrapped).map_err(|e| self.error(e))
    }

    fn put(&self, key: &str, value: Option<&[u8]>) -> Result<()> {
        self.table
            .put_blocking(key, value)
            .map(drop)
            .map_err(|e| self.error(e))
    }

    /// Claims the slot `prefix` with the value `make` gives for the claim's
    /// record key; the winning claim (maybe another process's), or `None`
    /// when every claim of the slot was removed meanwhile (an erasure).
    fn claim(
        &self,
        prefix: &str,
        make: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<Option<(String, Stored)>> {
        let key = format!("{prefix}{}", claim_id());
        self.put(&key, Some(&make(&key)))?;
        let state = self.table.state();
        let won = first(&state.entries, prefix).map(|(k, s)| (k.clone(), s.clone()));
        if won.as_ref().is_some_and(|(k, _)| *k != key) {
            // Lost to an earlier claim: removed, so one claim stays.
            self.put(&key, None)?;
        }
        Ok(won)
    }

    fn household_prefix(address_mac: &[u8; 32]) -> String {
        format!("household/{}/", hex(address_mac))
    }

    /// A subject's key slot: a keyed hash, domain-separated from the
    /// tombstones' and the addresses'.
    fn key_prefix(&self, subject: &str) -> String {
        let mut message = b"vault key slot\0".to_vec();
        message.extend_from_slice(subject.as_bytes());
        format!("key/{}/", hex(&hmac(&self.secret, &message)))
    }

    fn forgotten_key(subject_mac: &[u8; 32]) -> String {
        format!("forgotten/{}", hex(subject_mac))
    }

    /// The live key of `subject` in `entries`: `(key_id, key)`.
    fn live(&self, entries: &BTreeMap<String, Stored>, subject: &str) -> Result<Option<Key32>> {
        first(entries, &self.key_prefix(subject))
            .map(|(slot, stored)| self.split_key(slot, &stored.value))
            .transpose()
    }

    fn split_key(&self, slot: &str, wrapped: &[u8]) -> Result<Key32> {
        let mut both = self.unwrap(slot, wrapped)?;
        if both.len() != 48 {
            return Err(self.error(format!("{slot}: a key is 16 + 32 bytes")));
        }
        let key = both.split_off(16);
        Ok((both, key))
    }

    /// Rewraps every live secret and key not wrapped under the current
    /// key-encryption key, in the order they were written (so the first
    /// claim of each slot stays first). Returns how many were rewrapped.
    pub fn rewrap(&self) -> Result<usize> {
        self.table.barrier_blocking().map_err(|e| self.error(e))?;
        let state = self.table.state();
        let mut stale: Vec<(&String, &Stored)> = state
            .entries
            .iter()
            .filter(|(k, s)| {
                (k.starts_with("secret/") || k.starts_with("key/"))
                    && !self.keks.is_current(&s.value)
            })
            .collect();
        stale.sort_by_key(|(_, s)| s.offset);
        for (slot, stored) in &stale {
            let plain = self.unwrap(slot, &stored.value)?;
            self.put(slot, Some(&self.keks.wrap(slot, &plain)))?;
        }
        Ok(stale.len())
    }
}

impl VaultStore for KafkaVault {
    fn secret(&self) -> Result<[u8; 32]> {
        Ok(self.secret)
    }

    fn is_unused(&self) -> Result<bool> {
        Ok(!self.table.state().entries.keys().any(|k| {
            k.starts_with("household/") || k.starts_with("key/") || k.starts_with("forgotten/")
        }))
    }

    fn is_forgotten(&self, subject_mac: &[u8; 32]) -> Result<bool> {
        Ok(self
            .table
            .state()
            .entries
            .contains_key(&Self::forgotten_key(subject_mac)))
    }

    fn household(&self, address_mac: &[u8; 32], fresh: &str, fresh_key: Key32) -> Result<String> {
        let prefix = Self::household_prefix(address_mac);
        let subject = |value: Vec<u8>| {
            String::from_utf8(value).map_err(|_| self.error(format!("{prefix}: not a subject id")))
        };
        if let Some((_, s)) = first(&self.table.state().entries, &prefix) {
            return subject(s.value.clone());
        }
        // The link and the new subject's key in one round trip.
        let link = format!("{prefix}{}", claim_id());
        let key = format!("{}{}", self.key_prefix(fresh), claim_id());
        let wrapped = self
            .keks
            .wrap(&key, &[fresh_key.0.as_slice(), &fresh_key.1].concat());
        self.table
            .put_many_blocking(&[(&link, Some(fresh.as_bytes())), (&key, Some(&wrapped))])
            .map_err(|e| self.error(e))?;
        let won = first(&self.table.state().entries, &prefix).map(|(k, s)| (k.clone(), s.clone()));
        match won {
            Some((k, _)) if k == link => Ok(fresh.to_owned()),
            Some((_, s)) => {
                // Another process linked the address first: its subject
                // stands, and the claims made here go.
                self.table
                    .put_many_blocking(&[(&link, None), (&key, None)])
                    .map_err(|e| self.error(e))?;
                subject(s.value)
            }
            None => Ok(fresh.to_owned()),
        }
    }

    fn find_household(&self, address_mac: &[u8; 32]) -> Result<Option<String>> {
        let prefix = Self::household_prefix(address_mac);
        first(&self.table.state().entries, &prefix)
            .map(|(_, s)| {
                String::from_utf8(s.value.clone())
                    .map_err(|_| self.error(format!("{prefix}: not a subject id")))
            })
            .transpose()
    }

    fn key(&self, subject: &str, subject_mac: &[u8; 32], fresh: Key32) -> Result<Option<Key32>> {
        {
            let state = self.table.state();
            if state
                .entries
                .contains_key(&Self::forgotten_key(subject_mac))
            {
                return Ok(None);
            }
            if let Some(key) = self.live(&state.entries, subject)? {
                return Ok(Some(key));
            }
        }
        let prefix = self.key_prefix(subject);
        let won = self.claim(&prefix, |slot| {
            self.keks
                .wrap(slot, &[fresh.0.as_slice(), &fresh.1].concat())
        })?;
        // The claim came back: every record before it is held, the
        // subject's tombstone among them if it was written first.
        if self.is_forgotten(subject_mac)? {
            if let Some((slot, _)) = won {
                self.put(&slot, None)?;
            }
            return Ok(None);
        }
        won.map(|(slot, stored)| self.split_key(&slot, &stored.value))
            .transpose()
    }

    fn key_by_id(&self, subject: &str, key_id: &[u8]) -> Result<Option<Vec<u8>>> {
        let matching = |entries: &BTreeMap<String, Stored>| -> Result<Option<Vec<u8>>> {
            Ok(self
                .live(entries, subject)?
                .filter(|(id, _)| id == key_id)
                .map(|(_, key)| key))
        };
        if let Some(key) = matching(&self.table.state().entries)? {
            return Ok(Some(key));
        }
        // Sealed by another process a moment ago, perhaps: read to the
        // topic's end before saying the key is gone.
        self.table.sync_blocking().map_err(|e| self.error(e))?;
        matching(&self.table.state().entries)
    }

    fn forget(&self, subject: &str, subject_mac: &[u8; 32]) -> Result<usize> {
        self.put(&Self::forgotten_key(subject_mac), Some(b"1"))?;
        let state = self.table.state();
        let prefix = self.key_prefix(subject);
        let keys: Vec<&String> = state
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k)
            .collect();
        let links = state
            .entries
            .iter()
            .filter(|(k, s)| k.starts_with("household/") && s.value == subject.as_bytes())
            .map(|(k, _)| k);
        for slot in keys.iter().copied().chain(links) {
            self.put(slot, None)?;
        }
        Ok(keys.len())
    }

    fn describe(&self) -> String {
        format!("Kafka topic {}", self.table.topic())
    }
}
