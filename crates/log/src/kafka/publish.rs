//! Publishing derived records to topics of their own, as a consumer group:
//! how partners' outcomes reach `threshold.outcome.<partner>`, each
//! partner's topic its own.
//!
//! The processes that publish form one consumer group over a category
//! topic; Kafka shares the partitions among them and moves a partition to
//! another member when one leaves or dies. A publisher takes the records
//! that are there (up to [`PUBLISH_BATCH`]), passes over those of types it
//! derives nothing from, waits until its replica has taken the rest, keeps
//! each record only if the replica took it (a record
//! another writer's overtook is not an event), publishes what `derive`
//! makes of each event, in the records' order, and commits the records'
//! offsets only after every publication was acknowledged. A publisher
//! killed between the two publishes those records again from its
//! successor: at least once, with the event id as `ce_id`, so readers
//! deduplicate on it. (One record at a time, with a broker round trip and
//! an offset commit for each, a publisher took 130–250 records a second
//! while the log took 2,000 events a second: `deploy/README.md`.)
//!
//! A publisher never appends to the log and never touches the replica's
//! offsets: it reads the category topics in a group of its own and writes
//! only to the topic it publishes to.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};

use super::fetches::{Counted, STATISTICS_MS};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::FutureRecord;
use threshold_domain::Category;

use super::KafkaLog;
use super::append::delivered;
use super::log::{kafka, slot};
use super::options::RECONNECT_BACKOFF_MAX_MS;
use super::record as kafka_record;
use super::replica::next_batch;
use super::stages::Stage;
use crate::{NewEvent, RecordedEvent, Result};

/// What a publisher makes of one event: the record's CloudEvents type
/// suffix (`outcome.delivered` gives `threshold.v1.outcome.delivered`) and
/// its value.
pub type Derived = (String, Vec<u8>);

/// Names the topic an event is published to, if any.
type TopicOf = dyn Fn(&RecordedEvent) -> Option<String> + Send + Sync;

/// Partitions of a topic a publisher creates (at most; fewer when the
/// process's own are fewer): one partner's outcomes are a small share of
/// the log's.
const OUTCOME_TOPIC_PARTITIONS: i32 = 3;

/// Most records a publisher takes, publishes and commits at once.
const PUBLISH_BATCH: usize = 1_024;

/// How long a publisher's fetch waits at the broker for records. Kafka
/// answers a fetch as soon as it has records, so this is how long an idle
/// publisher's fetches are apart, not how late a busy one publishes; on the
/// test broker, which waits the whole of it every time, it is a
/// publication's latency. Every fetch costs the broker a look at every
/// partition of the topic. At 2,000
/// events/s on the test broker, 100 ms instead of 20 took the appends'
/// p99 from 224 to 159 ms (median of three pairs of 30 s runs).
const PUBLISH_FETCH_WAIT_MS: u64 = 100;

impl KafkaLog {
    /// Publishes `derive` of every event of `category` to the topic
    /// `topic_of` names for it (none: not published), as a member of
    /// consumer group `group`, until the returned task is aborted or the
    /// consumer fails for good. A topic not there yet is created first,
    /// with this process's partitions and replication. `types` are the
    /// event types `derive` makes something of: a record of any other type
    /// is passed over without waiting for the replica or reading it.
    ///
    /// A published record carries the event's own envelope except what
    /// ties it to the carrier's side of the interaction: its causation and
    /// correlation ids (a handheld's event and device) and `tracestate`
    /// are left out; the W3C `traceparent` stays, so a partner's trace
    /// joins the carrier's.
    pub fn publish<F, T>(
        &self,
        group: &str,
        category: Category,
        topic_of: T,
        types: &'static [&'static str],
        derive: F,
    ) -> Result<tokio::task::JoinHandle<()>>
    where
        F: Fn(&RecordedEvent) -> Option<Derived> + Send + Sync + 'static,
        T: Fn(&RecordedEvent) -> Option<String> + Send + Sync + 'static,
    {
        let options = &self.inner.options;
        let consumer: StreamConsumer<Counted> = ClientConfig::new()
            .set("bootstrap.servers", &options.brokers)
            .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
            .set("client.id", &options.name)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "fetch.wait.max.ms",
                options.fetch_wait(PUBLISH_FETCH_WAIT_MS),
            )
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("statistics.interval.ms", STATISTICS_MS)
            .create_with_context(Counted::new("publisher", Arc::clone(&self.inner.fetches)))
            .map_err(|e| kafka("creating a publisher's consumer", e))?;
        // A producer of its own: a batch of publications queued in front of
        // the log's appends on one connection would hold them up.
        let producer = super::append::producer(options, "publisher")?;
        let from = self.inner.topics[slot(category)].clone();
        consumer
            .subscribe(&[&from])
            .map_err(|e| kafka("subscribing a publisher", e))?;
        let log = self.clone();
        let derive = Arc::new(derive);
        let topic_of = Arc::new(topic_of);
        Ok(tokio::spawn(async move {
            // Topics known to be there; the rest are created before a
            // record goes to them.
            let mut there = HashSet::new();
            loop {
                // A record of types it derives nothing from is passed over
                // on its types, without copying or decoding the rest.
                let batch = next_batch(&consumer, PUBLISH_BATCH, "a publisher's consumer", |m| {
                    kafka_record::event_types_of(m)
                        .is_none_or(|ts| ts.iter().any(|t| types.contains(&t.as_ref())))
                })
                .await;
                // Published (or nothing to publish), else tried again: a
                // record's offset is never committed before.
                let publishing = std::time::Instant::now();
                let mut tries = 0u32;
                loop {
                    match log
                        .publish_batch(
                            &producer,
                            &batch.kept,
                            (topic_of.as_ref(), &mut there),
                            types,
                            derive.as_ref(),
                        )
                        .await
                    {
                        Ok(()) => break,
                        Err(e) => {
                            // A topic deleted meanwhile is looked for, and
                            // made, again.
                            there.clear();
                            tries += 1;
                            if tries.is_multiple_of(20) {
                                tracing::error!(
                                    error = %e, tries,
                                    "publishing is stuck: this batch's partitions publish nothing until it goes"
                                );
                            } else {
                                tracing::warn!(error = %e, "publishing failed; retrying");
                            }
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                let stages = &log.inner.stages;
                stages.since(Stage::Publish, publishing);
                stages.add_raw(Stage::PublishBatch, batch.read as u64);
                if let Err(e) = consumer.commit(&batch.offsets(), CommitMode::Async) {
                    tracing::warn!(error = %e, "committing a publisher's offset failed");
                }
            }
        }))
    }

    /// Publishes what `derive` makes of every event of `types` in `batch`,
    /// in the batch's order, each to the topic `topics.0` names for it
    /// (created first unless in `topics.1`), and waits until Kafka
    /// acknowledged every publication.
    async fn publish_batch(
        &self,
        producer: &super::append::Producer,
        batch: &[OwnedMessage],
        topics: (&TopicOf, &mut HashSet<String>),
        types: &[&str],
        derive: &(dyn Fn(&RecordedEvent) -> Option<Derived> + Send + Sync),
    ) -> Result<()> {
        let (topic_of, there) = topics;
        let mut records = Vec::with_capacity(batch.len());
        let mut through: HashMap<(usize, u32), i64> = HashMap::new();
        for message in batch {
            // Where each event goes is enough: the event is read from the
            // replica, as the replica took it.
            let Some(read) = kafka_record::places_of(message) else {
                continue; // the replica logs it; nothing to publish
            };
            let Some(c) = self.inner.topics.iter().position(|t| t == message.topic()) else {
                continue;
            };
            let wanted: Vec<_> = read
                .into_iter()
                .filter(|r| types.contains(&r.event_type.as_str()))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let end = through
                .entry((c, message.partition() as u32))
                .or_insert(message.offset());
            *end = (*end).max(message.offset());
            records.extend(wanted);
        }
        for ((c, partition), offset) in through {
            self.replicated_through(c, partition, offset).await?;
        }
        // Each record's place in the replica, read in one go.
        let stored = self
            .inner
            .replica
            .read_versions(
                records
                    .iter()
                    .map(|r| (r.stream.clone(), r.version))
                    .collect(),
            )
            .await?;
        let mut publications = Vec::new();
        for (record, stored) in records.iter().zip(stored) {
            let Some(event) = stored.filter(|e| e.event.event_id == record.event_id) else {
                continue; // overtaken by another writer's record: not an event
            };
            let Some((kind, value)) = derive(&event) else {
                continue;
            };
            let Some(topic) = topic_of(&event) else {
                tracing::debug!(event_id = %event.event.event_id, "no topic to publish to");
                continue;
            };
            publications.push((topic, kind, value, event));
        }
        let new: Vec<String> = publications
            .iter()
            .map(|(topic, ..)| topic)
            .filter(|t| !there.contains(*t))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        if !new.is_empty() {
            // Created only where missing: a deployment may give the
            // publisher no right to create the topics it made beforehand.
            let missing = super::admin::missing_topics(producer, &new).await?;
            if !missing.is_empty() {
                let options = &self.inner.options;
                super::admin::create_topics_of(
                    options,
                    &missing,
                    options.partitions.min(OUTCOME_TOPIC_PARTITIONS),
                )
                .await?;
            }
            there.extend(new);
        }
        let mut deliveries = Vec::new();
        for (topic, kind, value, event) in publications {
            let published = NewEvent {
                event_type: kind,
                payload: value.into(),
                causation_id: None,
                correlation_id: None,
                tracestate: None,
                ..event.event.clone()
            };
            let headers = kafka_record::kafka_headers(&kafka_record::headers(
                &event.stream,
                event.stream_version,
                None,
                &published,
                &self.inner.source,
            ));
            let key = event.stream.to_string();
            let delivery = producer
                .send_result(
                    FutureRecord::to(&topic)
                        .key(&key)
                        .payload(published.payload.as_ref())
                        .headers(headers),
                )
                .map_err(|(e, _)| kafka("publishing", e))?;
            deliveries.push(delivery);
        }
        delivered(deliveries).await.map(|_| ())
    }
}

/// A record of a published topic, as a partner's plain client reads it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The topic it was read from.
    pub topic: String,
    /// Its headers, by name (the last of a name).
    pub headers: HashMap<String, String>,
    /// Its value.
    pub value: Vec<u8>,
}

impl Published {
    /// Its `ce_id`: the event id.
    pub fn id(&self) -> &str {
        self.headers.get("ce_id").map_or("", String::as_str)
    }
}

/// Reads the topics `pattern` names (a topic, or `^` and a regular
/// expression, as librdkafka subscribes) from the start as consumer group
/// `group` until they have been quiet for `quiet`: how a partner's plain
/// Kafka client sees them.
pub async fn read_published(
    brokers: &str,
    group: &str,
    pattern: &str,
    quiet: Duration,
) -> Result<Vec<Published>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| kafka("creating a reader", e))?;
    consumer
        .subscribe(&[pattern])
        .map_err(|e| kafka("subscribing a reader", e))?;
    let mut out = Vec::new();
    while let Ok(next) = tokio::time::timeout(quiet, consumer.recv()).await {
        let m = next.map_err(|e| kafka("reading", e))?;
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Published {
            topic: m.topic().to_owned(),
            headers,
            value: m.payload().unwrap_or_default().to_vec(),
        });
    }
    Ok(out)
}
