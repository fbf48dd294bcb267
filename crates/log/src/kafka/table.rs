//! [`KafkaTable`]: a compacted topic kept whole in memory and followed, for
//! the small state every process of a deployment shares (credentials,
//! among others) with nothing shared on disk.
//!
//! A record's key is the entry's key, its value the entry; a record without
//! a value (a tombstone) removes the key. Later records win, which is what
//! compaction keeps, so every process that reads the topic from its start
//! holds the same table once it has read as far. Opening reads to the end
//! the topic had when asked; after that a task applies new records as they
//! come (within about [`FETCH_WAIT_MS`] of the broker taking them), and
//! [`KafkaTable::put`] returns once this process's table holds the write.
//!
//! No state is kept on disk: a process reads the whole topic at every
//! start. The topic is created, when missing, with one partition and
//! `cleanup.policy=compact`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::KafkaOptions;
use super::admin::{BROKER_TIMEOUT, partition_counts};
use super::log::kafka;
use super::options::RECONNECT_BACKOFF_MAX_MS;
use crate::{Error, Result};

/// How long the follower's fetch waits at the broker for new records, in
/// milliseconds: a change reaches every process within about this.
pub const FETCH_WAIT_MS: u64 = 100;

/// The entries as one process holds them, and how far it has read.
#[derive(Debug, Default, Clone)]
pub struct TableState {
    /// Key → value.
    pub entries: Arc<BTreeMap<String, Vec<u8>>>,
    /// Per partition, the offset of the next record to apply.
    next: Vec<i64>,
    /// Bumped on every change of `entries`.
    pub version: u64,
}

/// A compacted topic, held whole in memory. Cheap to clone.
#[derive(Clone)]
pub struct KafkaTable {
    topic: String,
    producer: FutureProducer,
    state: Arc<RwLock<TableState>>,
    applied: watch::Receiver<Vec<i64>>,
    /// Asks where the partitions end.
    probe: Arc<BaseConsumer>,
    /// Held for its drop: the last clone stops the follower.
    _follower: Arc<Follower>,
}

impl std::fmt::Debug for KafkaTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTable")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// The task that applies new records; stopped when the last clone goes.
struct Follower(tokio::task::JoinHandle<()>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl KafkaTable {
    /// Opens `topic` on the options' brokers (creating it compacted when
    /// missing) and reads it to the end it had when asked.
    pub async fn open(options: &KafkaOptions, topic: &str) -> Result<Self> {
        create_compacted(options, topic).await?;
        // Neither joins the group nor commits: partitions are assigned and
        // read from their start at every open.
        let config = || {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", &options.brokers)
                .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
                .set("client.id", &options.name)
                .set("group.id", format!("{topic}.reader"))
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("fetch.wait.max.ms", FETCH_WAIT_MS.to_string());
            c
        };
        let probe: BaseConsumer = config()
            .create()
            .map_err(|e| kafka("creating a table's client", e))?;
        let consumer: StreamConsumer = config()
            .create()
            .map_err(|e| kafka("creating a table's consumer", e))?;
        let topics = [topic.to_owned()];
        let partitions = partition_counts(&consumer, &topics)?[0];
        let mut ends = Vec::with_capacity(partitions as usize);
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, BROKER_TIMEOUT)
                .map_err(|e| kafka("reading a table's end", e))?;
            ends.push(high);
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| kafka("assigning a table's partitions", e))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| kafka("assigning a table's partitions", e))?;

        let state = Arc::new(RwLock::new(TableState {
            next: vec![0; partitions as usize],
            ..TableState::default()
        }));
        let (tx, applied) = watch::channel(vec![0; partitions as usize]);
        let follower = tokio::spawn(follow(consumer, Arc::clone(&state), tx));
        let table = Self {
            topic: topic.to_owned(),
            producer: super::append::producer(options)?,
            state,
            applied,
            probe: Arc::new(probe),
            _follower: Arc::new(Follower(follower)),
        };
        table.wait_for(&ends).await?;
        Ok(table)
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Bumped on every change of the entries: cheaper to compare than them.
    pub fn version(&self) -> u64 {
        self.state.read().unwrap_or_else(|p| p.into_inner()).version
    }

    /// The entries as this process holds them now.
    pub fn state(&self) -> TableState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes `value` under `key` (`None` removes it) and returns once this
    /// process's table holds the write.
    pub async fn put(&self, key: &str, value: Option<&[u8]>) -> Result<()> {
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        let delivery = self
            .producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| kafka("writing a table entry", e))?;
        let (partition, offset) = (delivery.partition, delivery.offset);
        let mut until = vec![0; self.applied.borrow().len()];
        if let Some(slot) = until.get_mut(partition as usize) {
            *slot = offset + 1;
        }
        self.wait_for(&until).await
    }

    /// Waits, up to the broker timeout, until this process has applied every
    /// partition up to `ends` (exclusive).
    async fn wait_for(&self, ends: &[i64]) -> Result<()> {
        let mut applied = self.applied.clone();
        let caught_up = |a: &Vec<i64>| a.iter().zip(ends).all(|(applied, end)| applied >= end);
        let waited = tokio::time::timeout(BROKER_TIMEOUT, applied.wait_for(caught_up))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(kafka(
                "following a table",
                format!("{}: the follower stopped", self.topic),
            )),
            Err(_) => Err(Error::Kafka {
                operation: "following a table",
                detail: format!(
                    "{}: not read up to {ends:?} within {BROKER_TIMEOUT:?} (at {:?})",
                    self.topic,
                    applied.borrow()
                ),
            }),
        }
    }

    /// Waits until the table holds what the topic held when called.
    pub async fn sync(&self) -> Result<()> {
        let probe = Arc::clone(&self.probe);
        let topic = self.topic.clone();
        let partitions = self.applied.borrow().len() as i32;
        let ends = tokio::task::spawn_blocking(move || {
            (0..partitions)
                .map(|p| {
                    probe
                        .fetch_watermarks(&topic, p, BROKER_TIMEOUT)
                        .map(|(_, high)| high)
                        .map_err(|e| kafka("reading a table's end", e))
                })
                .collect::<Result<Vec<i64>>>()
        })
        .await
        .map_err(|e| kafka("reading a table's end", e))??;
        self.wait_for(&ends).await
    }
}

/// Applies records as they come, in each partition's order.
async fn follow(
    consumer: StreamConsumer,
    state: Arc<RwLock<TableState>>,
    applied: watch::Sender<Vec<i64>>,
) {
    loop {
        let message = match consumer.recv().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "table consumer");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                "table record without a UTF-8 key, skipped"
            );
            continue;
        };
        let next = {
            let mut s = state.write().unwrap_or_else(|p| p.into_inner());
            // Copied only while a reader holds the previous entries.
            let entries = Arc::make_mut(&mut s.entries);
            match message.payload() {
                Some(value) => {
                    entries.insert(key.to_owned(), value.to_vec());
                }
                None => {
                    entries.remove(key);
                }
            }
            s.version += 1;
            if let Some(slot) = s.next.get_mut(message.partition() as usize) {
                *slot = message.offset() + 1;
            }
            s.next.clone()
        };
        applied.send_replace(next);
    }
}

/// Creates `topic` with one partition and compaction, unless it exists.
async fn create_compacted(options: &KafkaOptions, topic: &str) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .set("client.id", &options.name)
        .create()
        .map_err(|e| kafka("creating the admin client", e))?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(options.replication))
        .set("cleanup.policy", "compact");
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().request_timeout(Some(BROKER_TIMEOUT)),
        )
        .await
        .map_err(|e| kafka("creating a table's topic", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(kafka(
                    "creating a table's topic",
                    format!("{topic}: {code}"),
                ));
            }
        }
    }
    Ok(())
}
