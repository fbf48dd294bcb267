//! Publishing derived records to a topic of their own, as a consumer group:
//! how partners' outcomes reach `threshold.outcome`.
//!
//! The processes that publish form one consumer group over a category
//! topic; Kafka shares the partitions among them and moves a partition to
//! another member when one leaves or dies. For each record, a publisher
//! waits until its replica has taken the record's offset, keeps the record
//! only if the replica took it (a record another writer's overtook is not
//! an event), publishes what `derive` makes of the event, and commits the
//! record's offset only after the publication was acknowledged. A
//! publisher killed between the two publishes that record again from its
//! successor: at least once, with the event id as `ce_id`, so readers
//! deduplicate on it.
//!
//! A publisher never appends to the log and never touches the replica's
//! offsets: it reads the category topics in a group of its own and writes
//! only to the topic it publishes to.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use threshold_domain::Category;

use super::KafkaLog;
use super::log::{kafka, slot};
use super::options::RECONNECT_BACKOFF_MAX_MS;
use super::record as kafka_record;
use crate::{EventLog, NewEvent, RecordedEvent, Result};

/// What a publisher makes of one event: the record's CloudEvents type
/// suffix (`outcome.delivered` gives `threshold.v1.outcome.delivered`) and
/// its value.
pub type Derived = (String, Vec<u8>);

impl KafkaLog {
    /// Publishes `derive` of every event of `category` to `topic`, as a
    /// member of consumer group `group`, until the returned task is aborted
    /// or the consumer fails for good.
    pub fn publish<F>(
        &self,
        group: &str,
        category: Category,
        topic: &str,
        derive: F,
    ) -> Result<tokio::task::JoinHandle<()>>
    where
        F: Fn(&RecordedEvent) -> Option<Derived> + Send + Sync + 'static,
    {
        let options = &self.inner.options;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &options.brokers)
            .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
            .set("client.id", &options.name)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .create()
            .map_err(|e| kafka("creating a publisher's consumer", e))?;
        let from = self.inner.topics[slot(category)].clone();
        consumer
            .subscribe(&[&from])
            .map_err(|e| kafka("subscribing a publisher", e))?;
        let log = self.clone();
        let topic = topic.to_owned();
        let derive = Arc::new(derive);
        Ok(tokio::spawn(async move {
            loop {
                let message = match consumer.recv().await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "a publisher's consumer failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                // Published (or nothing to publish), else tried again: a
                // record's offset is never committed before.
                loop {
                    match log.publish_one(&message, &topic, derive.as_ref()).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "publishing failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                if let Err(e) = consumer.commit_message(&message, CommitMode::Async) {
                    tracing::warn!(error = %e, "committing a publisher's offset failed");
                }
            }
        }))
    }

    async fn publish_one<M: Message>(
        &self,
        message: &M,
        topic: &str,
        derive: &(dyn Fn(&RecordedEvent) -> Option<Derived> + Send + Sync),
    ) -> Result<()> {
        let headers: Vec<(&str, &[u8])> = message
            .headers()
            .map(|h| {
                h.iter()
                    .filter_map(|h| h.value.map(|v| (h.key, v)))
                    .collect()
            })
            .unwrap_or_default();
        let value = bytes::Bytes::copy_from_slice(message.payload().unwrap_or_default());
        let Ok(record) = kafka_record::from_record(headers, value) else {
            return Ok(()); // the replica logs it; nothing to publish
        };
        let Some(c) = self.inner.topics.iter().position(|t| t == message.topic()) else {
            return Ok(());
        };
        self.replicated_through(c, message.partition() as u32, message.offset())
            .await?;
        let stored = self
            .inner
            .replica
            .read_stream(&record.stream, record.version.saturating_sub(1), 1)
            .await?;
        let Some(event) = stored
            .into_iter()
            .find(|e| e.event.event_id == record.event.event_id)
        else {
            return Ok(()); // overtaken by another writer's record: not an event
        };
        let Some((kind, value)) = derive(&event) else {
            return Ok(());
        };
        let published = NewEvent {
            event_type: kind,
            payload: value.into(),
            ..event.event.clone()
        };
        let mut headers = OwnedHeaders::new_with_capacity(16);
        for (name, v) in kafka_record::headers(
            &event.stream,
            event.stream_version,
            None,
            &published,
            &self.inner.source,
        ) {
            headers = headers.insert(Header {
                key: name,
                value: Some(&v),
            });
        }
        let key = event.stream.to_string();
        self.inner
            .producer
            .send(
                FutureRecord::to(topic)
                    .key(&key)
                    .payload(published.payload.as_ref())
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| kafka("publishing", e))?;
        Ok(())
    }
}

/// Reads a published topic from the start as consumer group `group` until
/// it has been quiet for `quiet`, and returns each record's `ce_id` with
/// its value: how a partner's plain Kafka client sees it.
pub async fn read_published(
    brokers: &str,
    group: &str,
    topic: &str,
    quiet: Duration,
) -> Result<Vec<(String, Vec<u8>)>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| kafka("creating a reader", e))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| kafka("subscribing a reader", e))?;
    let mut out = Vec::new();
    while let Ok(next) = tokio::time::timeout(quiet, consumer.recv()).await {
        let m = next.map_err(|e| kafka("reading", e))?;
        let id = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "ce_id").and_then(|h| h.value))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        out.push((id, m.payload().unwrap_or_default().to_vec()));
    }
    Ok(out)
}
