//! The process's replica: the consumer that takes every partition of the
//! category topics into the local [`EmbeddedLog`] by the one rule every
//! process applies alike, where it resumes, and the waits for it to hold
//! what Kafka held.
//!
//! It only reads from Kafka: it never produces a record, and it never
//! stores an event the rule leaves out, so every process's replica holds
//! the same events at the same versions.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use threshold_domain::{EventId, StreamId};
use tokio::sync::watch;

use super::admin::BROKER_TIMEOUT;
use super::append::Verdicts;
use super::log::kafka;
use super::options::RECONNECT_BACKOFF_MAX_MS;
use super::record;
use super::stages::{Stage, Stages};
use super::{KafkaLog, KafkaOptions};
use crate::embedded::{Conditional, EmbeddedLog};
use crate::{EventLog, Position, Result};

/// Most records the replica takes in one batch.
const REPLICA_BATCH: usize = 8_192;

/// How long the replica's consumer may take no record while a read waits
/// for one.
pub(super) const READ_BACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What the replica has taken from each partition.
#[derive(Debug)]
pub(super) struct Progress {
    /// Per category, per partition: the next offset the replica will take.
    pub(super) next: Vec<Vec<AtomicI64>>,
    /// Bumped after every batch the replica stored.
    pub(super) changed: watch::Sender<u64>,
}

impl Progress {
    /// Progress from the offsets the replica starts at (per category, per
    /// partition).
    pub(super) fn new(starts: &[Vec<i64>]) -> Self {
        Self {
            next: starts
                .iter()
                .map(|parts| parts.iter().map(|o| AtomicI64::new(*o)).collect())
                .collect(),
            changed: watch::channel(0).0,
        }
    }
}

/// The replica's consumer, in the group `<prefix>.replica.<name>`; it
/// commits by hand, only once what it read is durable in the replica.
pub(super) fn consumer(options: &KafkaOptions) -> Result<StreamConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .set("client.id", &options.name)
        .set(
            "group.id",
            format!("{}.replica.{}", options.topic_prefix, options.name),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|e| kafka("creating the replica's consumer", e))
}

/// The client that asks where the partitions end: a consumer in no group,
/// reading nothing.
pub(super) fn ends_client(options: &KafkaOptions) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .set("client.id", &options.name)
        .create()
        .map_err(|e| kafka("creating the client that reads partition ends", e))
}

/// Assigns every partition of `topics` (`counts` partitions each) to the
/// consumer, where the replica's committed offsets say, unless the replica
/// is new: then from the beginning of every partition. The offsets it
/// starts at, per topic, per partition.
pub(super) async fn assign(
    consumer: &Arc<StreamConsumer>,
    replica: &EmbeddedLog,
    topics: &[String],
    counts: &[i32],
) -> Result<Vec<Vec<i64>>> {
    let mut wanted = TopicPartitionList::new();
    for (topic, count) in topics.iter().zip(counts) {
        for p in 0..*count {
            wanted
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| kafka("assigning partitions", e))?;
        }
    }
    let starts: Vec<Vec<i64>> = if replica.head().await? == Position::ORIGIN {
        counts.iter().map(|n| vec![0; *n as usize]).collect()
    } else {
        let committed = {
            let consumer = Arc::clone(consumer);
            let wanted = wanted.clone();
            tokio::task::spawn_blocking(move || consumer.committed_offsets(wanted, BROKER_TIMEOUT))
                .await
                .map_err(|e| kafka("reading the replica's offsets", e))?
                .map_err(|e| kafka("reading the replica's offsets", e))?
        };
        topics
            .iter()
            .zip(counts)
            .map(|(topic, n)| {
                (0..*n)
                    .map(
                        |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                            Some(Offset::Offset(o)) => o,
                            _ => 0,
                        },
                    )
                    .collect()
            })
            .collect()
    };
    let mut assignment = TopicPartitionList::new();
    for ((topic, count), starts) in topics.iter().zip(counts).zip(&starts) {
        for p in 0..*count {
            assignment
                .add_partition_offset(topic, p, Offset::Offset(starts[p as usize]))
                .map_err(|e| kafka("assigning partitions", e))?;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(|e| kafka("assigning partitions", e))?;
    Ok(starts)
}

/// The replica's consumer: takes records in batches, stores each batch in
/// the replica (one append per stream, streams side by side), then commits
/// the offsets. Runs until the log is closed or dropped.
pub(super) async fn replicate(
    consumer: Arc<StreamConsumer>,
    replica: EmbeddedLog,
    topics: Vec<String>,
    progress: Arc<Progress>,
    stages: Arc<Stages>,
    verdicts: Arc<Verdicts>,
) {
    loop {
        let batch = next_batch(&consumer, REPLICA_BATCH, "the replica's consumer").await;
        // Stored, or retried until it is: a batch is never skipped.
        let storing = std::time::Instant::now();
        loop {
            match store(&replica, &batch, &verdicts).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "the replica could not store a batch; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        stages.since(Stage::ReplicaStore, storing);
        stages.add_raw(Stage::ReplicaBatch, batch.len() as u64);
        let commit = next_offsets(&batch);
        for e in commit.elements() {
            let (Some(c), Offset::Offset(end)) =
                (topics.iter().position(|t| t == e.topic()), e.offset())
            else {
                continue;
            };
            if let Some(next) = progress
                .next
                .get(c)
                .and_then(|n| n.get(e.partition() as usize))
            {
                next.fetch_max(end, Ordering::AcqRel);
            }
        }
        progress.changed.send_modify(|n| *n += 1);
        if let Err(e) = consumer.commit(&commit, CommitMode::Async) {
            // The next commit covers it; a restart before then re-reads
            // records the replica already holds, which changes nothing.
            tracing::warn!(error = %e, "committing the replica's offsets failed");
        }
    }
}

/// The records that are there, up to `max`, waiting for the first;
/// `consumer_name` names the consumer in a warning while it fails.
pub(super) async fn next_batch(
    consumer: &StreamConsumer,
    max: usize,
    consumer_name: &str,
) -> Vec<OwnedMessage> {
    let first = loop {
        match consumer.recv().await {
            Ok(m) => break m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "{consumer_name} failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut batch = vec![first];
    while batch.len() < max {
        match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m.detach()),
            _ => break,
        }
    }
    batch
}

/// The offsets to commit once `batch` is done with: per partition, the one
/// after the last record taken.
pub(super) fn next_offsets(batch: &[OwnedMessage]) -> TopicPartitionList {
    let mut ends: HashMap<(&str, i32), i64> = HashMap::new();
    for m in batch {
        let end = ends.entry((m.topic(), m.partition())).or_default();
        *end = (*end).max(m.offset() + 1);
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), end) in ends {
        // Only a partition number out of range fails, and these came from Kafka.
        let _ = list.add_partition_offset(topic, partition, Offset::Offset(end));
    }
    list
}

/// Stores a batch of records in the replica, per stream in offset order,
/// by one rule every process applies alike: a record goes in when its
/// version is the stream's next and it follows the stream's last event;
/// a record whose event is stored already, or that another writer's record
/// overtook, is left out. The whole batch is one request to the replica's
/// writer, one transaction; what became of each record this process sent is
/// told to `verdicts`.
async fn store(replica: &EmbeddedLog, batch: &[OwnedMessage], verdicts: &Verdicts) -> Result<()> {
    let mut streams: Vec<(StreamId, Vec<Conditional>)> = Vec::new();
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    for m in batch {
        match record::from_message(m) {
            Ok(record) => {
                let i = *index.entry(record.stream.clone()).or_insert_with(|| {
                    streams.push((record.stream.clone(), Vec::new()));
                    streams.len() - 1
                });
                streams[i].1.push(Conditional {
                    event: record.event,
                    version: record.version,
                    after: record.after,
                });
            }
            Err(e) => tracing::error!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                error = %e,
                "a record that is not an event was skipped"
            ),
        }
    }
    let ids: Vec<Vec<EventId>> = streams
        .iter()
        .map(|(_, records)| records.iter().map(|r| r.event.event_id).collect())
        .collect();
    let taken = replica.replicate(streams).await?;
    verdicts.tell(ids.iter().flatten().zip(taken.iter().flatten()));
    Ok(())
}

impl KafkaLog {
    /// Waits until the replica holds what Kafka held, when called, in the
    /// given partitions (category slot, partition): a read after it sees
    /// every append acknowledged before it, whichever process made it.
    pub(super) async fn up_to_date(&self, partitions: Vec<(usize, u32)>) -> Result<()> {
        let asked = std::time::Instant::now();
        let ends = self.partition_ends(asked).await?;
        self.inner.stages.since(Stage::Watermark, asked);
        let waiting = std::time::Instant::now();
        for (c, p) in partitions {
            let high = ends
                .get(c)
                .and_then(|e| e.get(p as usize))
                .copied()
                .unwrap_or_default();
            if high > 0 {
                self.replicated_through(c, p, high - 1).await?;
            }
        }
        self.inner.stages.since(Stage::ReplicaWait, waiting);
        Ok(())
    }

    /// The end of every partition of the category topics (per category
    /// slot, per partition) as Kafka answered a request sent after
    /// `called`. Reads share requests: one request asks for every
    /// partition at once, and a caller takes the answer of a request that
    /// left after it called, so many reads at once cost the broker one
    /// request per round instead of two per read.
    async fn partition_ends(&self, called: std::time::Instant) -> Result<Arc<Vec<Vec<i64>>>> {
        let mut last = self.inner.ends.lock().await;
        if let Some((sent, ends)) = &*last
            && *sent >= called
        {
            return Ok(Arc::clone(ends));
        }
        let sent = std::time::Instant::now();
        let client = Arc::clone(&self.inner.ends_client);
        let topics = self.inner.topics.clone();
        let counts: Vec<usize> = self.inner.partitions.iter().map(|n| *n as usize).collect();
        let ends = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<i64>>> {
            let mut latest = TopicPartitionList::new();
            for (topic, n) in topics.iter().zip(&counts) {
                for p in 0..*n {
                    latest
                        .add_partition_offset(topic, p as i32, Offset::End)
                        .map_err(|e| kafka("reading the end of a partition", e))?;
                }
            }
            let answer = client
                .offsets_for_times(latest, BROKER_TIMEOUT)
                .map_err(|e| kafka("reading the end of a partition", e))?;
            topics
                .iter()
                .zip(&counts)
                .map(|(topic, n)| {
                    (0..*n)
                        .map(|p| {
                            let e = answer.find_partition(topic, p as i32).ok_or_else(|| {
                                kafka(
                                    "reading the end of a partition",
                                    format!("no answer for {topic} partition {p}"),
                                )
                            })?;
                            if let Err(err) = e.error() {
                                return Err(kafka(
                                    "reading the end of a partition",
                                    format!("{topic} partition {p}: {err}"),
                                ));
                            }
                            match e.offset() {
                                Offset::Offset(o) => Ok(o),
                                // An empty partition has no end offset yet.
                                _ => Ok(0),
                            }
                        })
                        .collect()
                })
                .collect()
        })
        .await
        .map_err(|e| kafka("reading the end of a partition", e))??;
        let ends = Arc::new(ends);
        *last = Some((sent, Arc::clone(&ends)));
        Ok(ends)
    }

    /// Waits until the replica has taken partition `partition` of category
    /// slot `c` through `offset`, for as long as it keeps taking records.
    pub(super) async fn replicated_through(
        &self,
        c: usize,
        partition: u32,
        offset: i64,
    ) -> Result<()> {
        let progress = &self.inner.progress;
        let mut changed = progress.changed.subscribe();
        while progress.next[c][partition as usize].load(Ordering::Acquire) <= offset {
            if tokio::time::timeout(READ_BACK_TIMEOUT, changed.changed())
                .await
                .is_err()
            {
                return Err(kafka(
                    "reading back from Kafka",
                    format!(
                        "the replica took no record for {} s while offset {offset} of {} \
                         partition {partition} was still to come; a resend with the same \
                         event ids is safe",
                        READ_BACK_TIMEOUT.as_secs(),
                        self.inner.topics[c],
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    fn message(topic: &str, partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            topic.to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn a_batch_commits_the_offset_after_its_last_record_of_each_partition() {
        let batch = [
            message("t.parcel", 0, 7),
            message("t.parcel", 1, 3),
            message("t.parcel", 0, 9),
            message("t.parcel", 0, 8),
            message("t.route", 0, 2),
        ];
        let list = next_offsets(&batch);
        let offset = |topic: &str, partition: i32| {
            list.find_partition(topic, partition)
                .map(|e| e.offset())
                .unwrap_or_else(|| panic!("{topic} {partition} is not committed"))
        };
        assert_eq!(offset("t.parcel", 0), Offset::Offset(10));
        assert_eq!(offset("t.parcel", 1), Offset::Offset(4));
        assert_eq!(offset("t.route", 0), Offset::Offset(3));
        assert_eq!(list.count(), 3, "one entry per partition taken from");
    }
}
