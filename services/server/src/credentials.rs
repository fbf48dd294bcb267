//! Where a server's credentials are: the data directory's file on the
//! embedded log, and on Kafka [`KafkaCredentials`], a compacted topic every
//! process reads whole, so a credential added or revoked anywhere counts in
//! every process within about [`FETCH_WAIT_MS`](threshold_log::kafka::FETCH_WAIT_MS),
//! and a process on a new machine needs no file of credentials.
//!
//! The topic is `PREFIX.credentials`: key the credential's name, value its
//! [`Credential`] as JSON (role, tenant, SHA-256 of the token; never the
//! token), a tombstone for a revoked one. Compaction keeps each name's last
//! record; a revoked credential's record and tombstone are gone from the
//! broker's disk after compaction and `delete.retention.ms` (see
//! `deploy/README.md`), and hold only a hash of a token already refused.

use std::path::Path;
use std::sync::{Arc, RwLock};

use threshold_auth::{Credential, CredentialStore, Credentials, StoreFuture};
use threshold_log::kafka::{KafkaOptions, KafkaTable};

use crate::LogSpec;

/// The credentials topic of a deployment whose topics start with `prefix`.
pub fn credentials_topic(prefix: &str) -> String {
    format!("{prefix}.credentials")
}

/// A deployment's credentials in a compacted Kafka topic.
pub struct KafkaCredentials {
    table: KafkaTable,
    /// The table version last turned into credentials, and them.
    cache: RwLock<(u64, Arc<Credentials>)>,
}

fn store_error(e: impl std::fmt::Display) -> threshold_auth::Error {
    threshold_auth::Error::Store(e.to_string())
}

impl KafkaCredentials {
    /// Opens the credentials of the deployment on `brokers` whose topics
    /// start with `prefix`, as the process `name`, read to the topic's end.
    pub async fn open(
        brokers: &str,
        prefix: &str,
        name: &str,
    ) -> Result<Self, threshold_log::Error> {
        // The table keeps nothing on disk: the options' replica is unused.
        let mut options = KafkaOptions::new(brokers, "", name);
        options.topic_prefix = prefix.to_owned();
        Self::open_with(&options).await
    }

    /// [`KafkaCredentials::open`] with the brokers, topic prefix, name and
    /// fetch wait of `options` (their replica is unused).
    pub async fn open_with(options: &KafkaOptions) -> Result<Self, threshold_log::Error> {
        let table = KafkaTable::open(options, &credentials_topic(&options.topic_prefix)).await?;
        Ok(Self {
            table,
            cache: RwLock::new((u64::MAX, Arc::default())),
        })
    }
}

impl CredentialStore for KafkaCredentials {
    fn current(&self) -> threshold_auth::Result<Arc<Credentials>> {
        let version = self.table.version();
        {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if cache.0 == version {
                return Ok(Arc::clone(&cache.1));
            }
        }
        let state = self.table.state();
        let list = state.entries.iter().filter_map(|(key, value)| {
            match serde_json::from_slice::<Credential>(&value.value) {
                Ok(c) if c.name == *key => Some(c),
                Ok(c) => {
                    tracing::warn!(key = %key, name = %c.name, topic = self.table.topic(),
                        "a credential whose name is not its key, ignored");
                    None
                }
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, topic = self.table.topic(),
                        "a credential record this build cannot read, ignored");
                    None
                }
            }
        });
        let fresh = Arc::new(Credentials::of(list.collect::<Vec<_>>()));
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        *cache = (state.version, Arc::clone(&fresh));
        Ok(fresh)
    }

    fn add(&self, credential: Credential) -> StoreFuture<'_, threshold_auth::Result<()>> {
        Box::pin(async move {
            self.table.sync().await.map_err(store_error)?;
            if self.current()?.has(&credential.name) {
                return Err(threshold_auth::Error::Invalid(format!(
                    "{}: a credential named {:?} exists already",
                    self.describe(),
                    credential.name
                )));
            }
            let value = serde_json::to_vec(&credential).map_err(store_error)?;
            self.table
                .put(&credential.name, Some(&value))
                .await
                .map(drop)
                .map_err(store_error)
        })
    }

    fn revoke<'a>(&'a self, name: &'a str) -> StoreFuture<'a, threshold_auth::Result<bool>> {
        Box::pin(async move {
            self.table.sync().await.map_err(store_error)?;
            if !self.current()?.has(name) {
                return Ok(false);
            }
            self.table.put(name, None).await.map_err(store_error)?;
            Ok(true)
        })
    }

    fn describe(&self) -> String {
        format!("Kafka topic {}", self.table.topic())
    }
}

/// The credentials store of a log: the data directory's file on the
/// embedded log, the deployment's topic on Kafka.
pub async fn credential_store(
    log: &LogSpec,
    data: &Path,
    prefix: &str,
    name: &str,
) -> Result<Arc<dyn CredentialStore>, threshold_log::Error> {
    Ok(match log {
        LogSpec::Embedded => Arc::new(threshold_auth::FileCredentials::new(data)),
        LogSpec::Kafka(brokers) => Arc::new(KafkaCredentials::open(brokers, prefix, name).await?),
    })
}
