//! The Kafka backend: the log kept in Kafka, read through a local replica.
//!
//! # How it works
//!
//! - **Kafka holds the log.** One topic per category
//!   (`threshold.parcel`, …; the layout is [`crate::kafka_record`]), the
//!   stream id as key, CloudEvents headers on every record. The producer is
//!   idempotent with `acks=all`; an append answers only after Kafka
//!   acknowledged every record of it.
//! - **Each process keeps a replica.** A consumer reads every partition of
//!   the category topics into an [`EmbeddedLog`] under the process's data
//!   directory, and commits its offsets (in the group
//!   `<prefix>.replica.<name>`) only once what it read is durable there. An
//!   event already in the replica (same `event_id`) is not stored twice, so
//!   a record Kafka delivers again changes nothing. Reads, subscriptions and
//!   the head are the replica's.
//! - **Reads are up to date.** `read_stream` first waits for the replica to
//!   hold what Kafka held in the stream's partition when called, and `head`
//!   the same for every partition, so a read sees every append acknowledged
//!   before it, in any process. `read_all` and `subscribe` follow the
//!   replica as it goes.
//! - **Positions are the process's own.** The replica numbers events in the
//!   order it stored them; two processes may number the same events
//!   differently. Stream versions and event ids are the same everywhere:
//!   they travel in the record (`ce_streamversion`, `ce_id`).
//! - **A record is a conditional append.** It carries its stream version
//!   and the id of the event it follows (`ce_afterid`). Every replica takes
//!   a partition's records in Kafka's order by one rule: a record goes in
//!   when it is the stream's next version and follows the stream's last
//!   event; otherwise another writer's record came first, and it is left
//!   out. Kafka's order of the partition is the only arbiter, so every
//!   process's replica holds the same events at the same versions.
//! - **An append is answered after its read-back.** Under a lock per
//!   partition, the replica says what the append would do
//!   ([`EmbeddedLog::plan`]: stream version, last event, ids stored
//!   already), with this process's appends still on their way back counted
//!   as the stream's head, and the new events are sent, so records leave in
//!   the order decided and appends pipeline. Once Kafka acknowledged them
//!   (the lock is not held meanwhile), the append waits for the replica to
//!   take them back and answers by what it took: stored (the caller then reads
//!   its own write), or a [`Error::Conflict`] when another process's record
//!   came first. Two processes deciding on one grant at once therefore
//!   never both succeed; an append without an expected version tries again.
//!
//! # What Kafka does not give
//!
//! No Kafka transactions are used, so an append of several events is not
//! atomic: a producer failure part-way can leave a prefix of them in Kafka,
//! and the caller gets an error. A resend with the same event ids completes
//! it (the prefix is recognised by id). A record that lost its race stays
//! in the topic: a reader of the topics applies the rule above, or reads a
//! replica.

mod publish;
#[cfg(test)]
mod tests;

pub use publish::{Derived, read_published};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use threshold_domain::{Category, EventId, StreamId};
use tokio::sync::{Mutex, watch};

use crate::embedded::{EmbeddedLog, EmbeddedOptions, Planned};
use crate::kafka_record::{self, OUTCOME_TOPIC, Record};
use crate::{
    Ack, AppendOutcome, Error, EventLog, ExpectedVersion, NewEvent, Position, RecordedEvent,
    Result, Subscription,
};

/// Most records the replica takes in one batch.
const REPLICA_BATCH: usize = 8_192;

/// Rounds an append without an expected version makes when other writers'
/// records keep landing first.
const MAX_ROUNDS: u32 = 32;

/// How long the replica's consumer may take no record while a read waits
/// for one.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a metadata or watermark request may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the log is and how this process takes part.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// The replica's directory.
    pub replica: PathBuf,
    /// This process's name: its client id, its replica's consumer group and
    /// the CloudEvents `ce_source` of what it writes (`/threshold/<name>`).
    pub name: String,
    /// What topic names start with: `threshold` gives `threshold.parcel`.
    pub topic_prefix: String,
    /// Partitions of a topic this process creates (an existing topic keeps
    /// its own).
    pub partitions: i32,
    /// Replication factor of a topic this process creates.
    pub replication: i32,
}

impl KafkaOptions {
    /// The defaults for a single-broker setup: topics of 12 partitions,
    /// replication factor 1. Production topics are created as
    /// `deploy/README.md` shows, before the services start.
    pub fn new(brokers: impl Into<String>, replica: impl Into<PathBuf>, name: &str) -> Self {
        Self {
            brokers: brokers.into(),
            replica: replica.into(),
            name: name.to_owned(),
            topic_prefix: "threshold".into(),
            partitions: 12,
            replication: 1,
        }
    }

    /// The topic of a category.
    pub fn topic(&self, category: Category) -> String {
        format!("{}.{}", self.topic_prefix, category.as_str())
    }

    /// The topic partners read outcomes from.
    pub fn outcome_topic(&self) -> String {
        match self.topic_prefix.as_str() {
            "threshold" => OUTCOME_TOPIC.to_owned(),
            prefix => format!("{prefix}.outcome"),
        }
    }
}

/// The brokers of a `kafka://host:port[,host:port…]` address.
pub fn brokers_from_url(url: &str) -> Result<String> {
    let bad = |reason: String| Error::Invalid {
        field: "--log",
        reason,
    };
    let rest = url
        .strip_prefix("kafka://")
        .ok_or_else(|| bad(format!("{url:?} does not start with kafka://")))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(bad(format!("{url:?} names no broker")));
    }
    for broker in rest.split(',') {
        let (host, port) = broker
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("broker {broker:?} in {url:?} has no :port")))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad(format!(
                "broker {broker:?} in {url:?} is not host:port"
            )));
        }
    }
    Ok(rest.to_owned())
}

fn kafka(operation: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Kafka {
        operation,
        detail: e.to_string(),
    }
}

/// How an append started.
enum Started {
    /// Every event is stored already.
    Stored(Planned),
    /// One of its events is on its way back from an earlier append.
    InFlight,
    /// Its new events (ids) were sent.
    Sent {
        fresh: Vec<EventId>,
        deliveries: Vec<DeliveryFuture>,
    },
}

/// This process's appends to one stream that are not back yet.
#[derive(Debug, Default)]
struct InFlight {
    /// The version of the last event sent.
    version: u64,
    /// The last event sent.
    last: Option<EventId>,
    /// Every event sent.
    ids: HashSet<EventId>,
    /// Appends not back yet.
    appends: usize,
}

/// The answer to an append whose events are all stored, as `plan` found
/// them: those in `ours` (their first mention in the call) were appended by
/// it, the others were stored before.
fn answer(plan: Planned, ids: &[EventId], ours: &HashSet<EventId>) -> Result<AppendOutcome> {
    let mut answered = HashSet::new();
    let acks = plan
        .stored
        .into_iter()
        .zip(ids)
        .map(|(ack, id)| match ack {
            Some(ack) if ours.contains(id) && answered.insert(*id) => Ok(Ack::Appended {
                position: ack.position(),
                version: ack_version(&ack),
            }),
            Some(ack) => Ok(ack),
            None => Err(kafka("appending", "an event vanished from the replica")),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AppendOutcome {
        stream_version: plan.current,
        acks,
    })
}

/// Waits for Kafka to acknowledge every record; the offset of the last.
async fn delivered(deliveries: Vec<DeliveryFuture>) -> Result<i64> {
    let mut through = -1;
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(d)) => through = through.max(d.offset),
            Ok(Err((e, _))) => return Err(kafka("producing", e)),
            Err(_) => return Err(kafka("producing", "the producer was closed")),
        }
    }
    Ok(through)
}

/// Index of a category in [`Category::ALL`].
fn slot(category: Category) -> usize {
    Category::ALL
        .iter()
        .position(|c| *c == category)
        .unwrap_or_default()
}

/// What the replica has taken from each partition.
#[derive(Debug)]
struct Progress {
    /// Per category, per partition: the next offset the replica will take.
    next: Vec<Vec<AtomicI64>>,
    /// Bumped after every batch the replica stored.
    changed: watch::Sender<u64>,
}

/// The event log on Kafka. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

struct Inner {
    options: KafkaOptions,
    topics: Vec<String>,
    producer: FutureProducer,
    replica: EmbeddedLog,
    /// Per category, per partition: one append decides at a time.
    locks: Vec<Vec<Mutex<()>>>,
    /// This process's appends on their way back, by stream.
    in_flight: std::sync::Mutex<HashMap<StreamId, InFlight>>,
    progress: Arc<Progress>,
    source: String,
    tail: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("brokers", &self.options.brokers)
            .field("topics", &self.topics)
            .field("replica", &self.options.replica)
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tail.abort();
    }
}

impl KafkaLog {
    /// Connects, creates the topics that are missing, opens the replica and
    /// returns once the replica holds everything Kafka held at the start.
    pub async fn open(options: KafkaOptions) -> Result<Self> {
        let topics: Vec<String> = Category::ALL.iter().map(|c| options.topic(*c)).collect();
        let mut all = topics.clone();
        all.push(options.outcome_topic());
        create_topics(&options, &all).await?;

        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &options.brokers)
            .set("client.id", &options.name)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| kafka("creating the producer", e))?;

        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &options.brokers)
            .set("client.id", &options.name)
            .set(
                "group.id",
                format!("{}.replica.{}", options.topic_prefix, options.name),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "1")
            .create()
            .map_err(|e| kafka("creating the replica's consumer", e))?;
        let consumer = Arc::new(consumer);

        let counts = {
            let consumer = Arc::clone(&consumer);
            let topics = topics.clone();
            tokio::task::spawn_blocking(move || partition_counts(&consumer, &topics))
                .await
                .map_err(|e| kafka("reading topic metadata", e))??
        };
        // Resume where the replica's committed offsets say, unless the
        // replica is new: then from the beginning of every partition.
        let replica = EmbeddedLog::open(&options.replica, EmbeddedOptions::default())?;
        let mut wanted = TopicPartitionList::new();
        for (topic, count) in topics.iter().zip(&counts) {
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
                let consumer = Arc::clone(&consumer);
                let wanted = wanted.clone();
                tokio::task::spawn_blocking(move || {
                    consumer.committed_offsets(wanted, BROKER_TIMEOUT)
                })
                .await
                .map_err(|e| kafka("reading the replica's offsets", e))?
                .map_err(|e| kafka("reading the replica's offsets", e))?
            };
            topics
                .iter()
                .zip(&counts)
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
        for ((topic, count), starts) in topics.iter().zip(&counts).zip(&starts) {
            for p in 0..*count {
                assignment
                    .add_partition_offset(topic, p, Offset::Offset(starts[p as usize]))
                    .map_err(|e| kafka("assigning partitions", e))?;
            }
        }
        consumer
            .assign(&assignment)
            .map_err(|e| kafka("assigning partitions", e))?;

        let progress = Arc::new(Progress {
            next: starts
                .iter()
                .map(|parts| parts.iter().map(|o| AtomicI64::new(*o)).collect())
                .collect(),
            changed: watch::channel(0).0,
        });
        let tail = tokio::spawn(replicate(
            Arc::clone(&consumer),
            replica.clone(),
            topics.clone(),
            Arc::clone(&progress),
        ));
        let log = Self {
            inner: Arc::new(Inner {
                source: format!("/threshold/{}", options.name),
                locks: counts
                    .iter()
                    .map(|n| (0..*n).map(|_| Mutex::new(())).collect())
                    .collect(),
                in_flight: std::sync::Mutex::default(),
                options,
                topics,
                producer,
                replica,
                progress,
                tail,
            }),
        };
        // Everything Kafka held at the start is in the replica before the
        // first read.
        log.up_to_date(log.all_partitions()).await?;
        Ok(log)
    }

    /// The replica this process reads from.
    pub fn replica(&self) -> &EmbeddedLog {
        &self.inner.replica
    }

    /// The options it was opened with.
    pub fn options(&self) -> &KafkaOptions {
        &self.inner.options
    }

    /// Every (category slot, partition) of the category topics.
    fn all_partitions(&self) -> Vec<(usize, u32)> {
        self.inner
            .locks
            .iter()
            .enumerate()
            .flat_map(|(c, parts)| (0..parts.len() as u32).map(move |p| (c, p)))
            .collect()
    }

    /// Decides an append and sends its new events, under this process's
    /// turn on the partition so records go out in the order decided. The
    /// stream's head is the replica's, or, past it, this process's appends
    /// still on their way back: appends to one stream pipeline.
    async fn start(
        &self,
        stream: &StreamId,
        partition: u32,
        turn: &Mutex<()>,
        expected: ExpectedVersion,
        events: &[NewEvent],
        ids: &[EventId],
    ) -> Result<Started> {
        let _turn = turn.lock().await;
        let plan = self
            .inner
            .replica
            .plan(stream, ExpectedVersion::Any, ids.to_vec())
            .await?;
        let (mut version, mut after) = (plan.current, plan.last);
        {
            let flights = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(f) = flights.get(stream) {
                if ids.iter().any(|id| f.ids.contains(id)) {
                    return Ok(Started::InFlight);
                }
                if f.version > version {
                    (version, after) = (f.version, f.last);
                }
            }
        }
        let current = version;
        let mut seen = HashSet::new();
        let mut fresh = Vec::new();
        for (event, stored) in events.iter().zip(&plan.stored) {
            if stored.is_none() && seen.insert(event.event_id) {
                version += 1;
                fresh.push((event, version, after));
                after = Some(event.event_id);
            }
        }
        if fresh.is_empty() {
            return Ok(Started::Stored(plan));
        }
        if let ExpectedVersion::Exactly(v) = expected
            && v != current
        {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected: v,
                actual: current,
            });
        }
        let deliveries = self.send(stream, partition as i32, &fresh).await?;
        let fresh: Vec<EventId> = fresh.iter().map(|(e, _, _)| e.event_id).collect();
        let mut flights = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let f = flights.entry(stream.clone()).or_default();
        (f.version, f.last) = (version, after);
        f.ids.extend(fresh.iter().copied());
        f.appends += 1;
        Ok(Started::Sent { fresh, deliveries })
    }

    /// An append's records lost to another writer's: what is still in
    /// flight for `stream` follows them and is lost as well, so it no
    /// longer counts as the stream's head.
    fn lost(&self, stream: &StreamId) {
        let mut flights = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(f) = flights.get_mut(stream) {
            (f.version, f.last) = (0, None);
        }
    }

    /// An append's records are back (or failed): no longer in flight.
    fn landed(&self, stream: &StreamId, fresh: &[EventId]) {
        let mut flights = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(f) = flights.get_mut(stream) {
            for id in fresh {
                f.ids.remove(id);
            }
            f.appends = f.appends.saturating_sub(1);
            if f.appends == 0 {
                flights.remove(stream);
            }
        }
    }

    /// Sends `fresh` (event, version, the event it follows) to `stream`'s
    /// partition, in order; the futures resolve when Kafka acknowledged.
    async fn send(
        &self,
        stream: &StreamId,
        partition: i32,
        fresh: &[(&NewEvent, u64, Option<EventId>)],
    ) -> Result<Vec<DeliveryFuture>> {
        let topic = &self.inner.topics[slot(stream.category())];
        let key = stream.to_string();
        let mut deliveries = Vec::with_capacity(fresh.len());
        for (event, version, after) in fresh {
            let mut headers = OwnedHeaders::new_with_capacity(16);
            for (name, value) in
                kafka_record::headers(stream, *version, *after, event, &self.inner.source)
            {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(&value),
                });
            }
            let mut record = FutureRecord::to(topic)
                .partition(partition)
                .key(&key)
                .payload(event.payload.as_ref())
                .headers(headers);
            loop {
                match self.inner.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(kafka("producing", e)),
                }
            }
        }
        Ok(deliveries)
    }

    /// Waits until the replica holds what Kafka held, when called, in the
    /// given partitions (category slot, partition): a read after it sees
    /// every append acknowledged before it, whichever process made it.
    async fn up_to_date(&self, partitions: Vec<(usize, u32)>) -> Result<()> {
        let client = self.inner.producer.clone();
        let topics = self.inner.topics.clone();
        let ends = tokio::task::spawn_blocking(move || -> Result<Vec<(usize, u32, i64)>> {
            partitions
                .into_iter()
                .map(|(c, p)| {
                    client
                        .client()
                        .fetch_watermarks(&topics[c], p as i32, BROKER_TIMEOUT)
                        .map(|(_, high)| (c, p, high))
                        .map_err(|e| kafka("reading the end of a partition", e))
                })
                .collect()
        })
        .await
        .map_err(|e| kafka("reading the end of a partition", e))??;
        for (c, p, high) in ends {
            if high > 0 {
                self.replicated_through(c, p, high - 1).await?;
            }
        }
        Ok(())
    }

    /// Waits until the replica has taken partition `partition` of category
    /// slot `c` through `offset`, for as long as it keeps taking records.
    async fn replicated_through(&self, c: usize, partition: u32, offset: i64) -> Result<()> {
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

async fn create_topics(options: &KafkaOptions, topics: &[String]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .set("client.id", &options.name)
        .create()
        .map_err(|e| kafka("creating the admin client", e))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                options.partitions,
                TopicReplication::Fixed(options.replication),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().request_timeout(Some(BROKER_TIMEOUT)),
        )
        .await
        .map_err(|e| kafka("creating topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(kafka("creating topics", format!("{topic}: {code}")));
            }
        }
    }
    Ok(())
}

/// Partitions of each topic, waiting for topics just created to appear.
fn partition_counts(consumer: &StreamConsumer, topics: &[String]) -> Result<Vec<i32>> {
    let deadline = std::time::Instant::now() + BROKER_TIMEOUT;
    topics
        .iter()
        .map(|topic| {
            loop {
                let metadata = consumer
                    .fetch_metadata(Some(topic), BROKER_TIMEOUT)
                    .map_err(|e| kafka("reading topic metadata", e))?;
                let n = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map_or(0, |t| t.partitions().len() as i32);
                if n > 0 {
                    return Ok(n);
                }
                if std::time::Instant::now() > deadline {
                    return Err(kafka(
                        "reading topic metadata",
                        format!("topic {topic} has no partitions"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .collect()
}

/// The replica's consumer: takes records in batches, stores each batch in
/// the replica (one append per stream, streams side by side), then commits
/// the offsets. Runs until the log is dropped.
async fn replicate(
    consumer: Arc<StreamConsumer>,
    replica: EmbeddedLog,
    topics: Vec<String>,
    progress: Arc<Progress>,
) {
    loop {
        let first = match consumer.recv().await {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "the replica's consumer failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < REPLICA_BATCH {
            match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                _ => break,
            }
        }
        // Stored, or retried until it is: a batch is never skipped.
        loop {
            match store(&replica, &batch).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "the replica could not store a batch; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let mut commit = TopicPartitionList::new();
        let mut ends: HashMap<(usize, i32), i64> = HashMap::new();
        for m in &batch {
            if let Some(c) = topics.iter().position(|t| t == m.topic()) {
                let end = ends.entry((c, m.partition())).or_default();
                *end = (*end).max(m.offset() + 1);
            }
        }
        for ((c, p), end) in &ends {
            if let Some(next) = progress.next.get(*c).and_then(|n| n.get(*p as usize)) {
                next.fetch_max(*end, Ordering::AcqRel);
            }
            let _ = commit.add_partition_offset(&topics[*c], *p, Offset::Offset(*end));
        }
        progress.changed.send_modify(|n| *n += 1);
        if let Err(e) = consumer.commit(&commit, CommitMode::Async) {
            // The next commit covers it; a restart before then re-reads
            // records the replica already holds, which changes nothing.
            tracing::warn!(error = %e, "committing the replica's offsets failed");
        }
    }
}

/// Stores a batch of records in the replica, per stream in offset order,
/// by one rule every process applies alike: a record goes in when its
/// version is the stream's next and it follows the stream's last event;
/// a record whose event is stored already, or that another writer's record
/// overtook, is left out.
async fn store(replica: &EmbeddedLog, batch: &[OwnedMessage]) -> Result<()> {
    let mut streams: Vec<(StreamId, Vec<Record>)> = Vec::new();
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    for m in batch {
        let headers = m.headers().map(|h| {
            h.iter()
                .filter_map(|h| h.value.map(|v| (h.key, v)))
                .collect::<Vec<_>>()
        });
        let value = bytes::Bytes::copy_from_slice(m.payload().unwrap_or_default());
        match kafka_record::from_record(headers.unwrap_or_default(), value) {
            Ok(record) => {
                let i = *index.entry(record.stream.clone()).or_insert_with(|| {
                    streams.push((record.stream.clone(), Vec::new()));
                    streams.len() - 1
                });
                streams[i].1.push(record);
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
    // Where each stream stands, then what goes in: streams side by side, so
    // the replica commits them together.
    let decided =
        futures::future::join_all(streams.into_iter().map(|(stream, records)| async move {
            let ids = records.iter().map(|r| r.event.event_id).collect();
            let plan = replica.plan(&stream, ExpectedVersion::Any, ids).await?;
            let mut version = plan.current;
            let mut last = plan.last;
            let mut taken = HashSet::new();
            let mut accepted = Vec::new();
            for (record, stored) in records.into_iter().zip(plan.stored) {
                let id = record.event.event_id;
                if stored.is_some() || taken.contains(&id) {
                    continue;
                }
                if record.version == version + 1 && record.after == last {
                    version += 1;
                    last = Some(id);
                    taken.insert(id);
                    accepted.push(record.event);
                } else {
                    tracing::debug!(
                        %stream,
                        version = record.version,
                        head = version,
                        event_id = %id,
                        "a record another writer's overtook was left out"
                    );
                }
            }
            Ok::<_, Error>((stream, plan.current, accepted))
        }))
        .await;
    let appends = decided.into_iter().map(|d| async move {
        let (stream, current, accepted) = d?;
        if !accepted.is_empty() {
            replica
                .append(&stream, ExpectedVersion::Exactly(current), accepted)
                .await?;
        }
        Ok::<(), Error>(())
    });
    for r in futures::future::join_all(appends).await {
        r?;
    }
    Ok(())
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome> {
        crate::event::check_append(stream, &events)?;
        let c = slot(stream.category());
        let locks = &self.inner.locks[c];
        let partition = kafka_record::partition(stream, locks.len() as u32);
        // This process's appends to one partition take turns; another
        // process's are ordered by Kafka.
        let turn = &locks[partition as usize];
        let ids: Vec<EventId> = events.iter().map(|e| e.event_id).collect();
        let mut ours: HashSet<EventId> = HashSet::new();
        let mut round = 0;
        loop {
            round += 1;
            let fresh = match self
                .start(stream, partition, turn, expected, &events, &ids)
                .await?
            {
                Started::InFlight => {
                    // A resend of an event still on its way: answer once it landed.
                    round -= 1;
                    let mut changed = self.inner.progress.changed.subscribe();
                    let _ = tokio::time::timeout(READ_BACK_TIMEOUT, changed.changed()).await;
                    continue;
                }
                // Every event is stored already: a resend.
                Started::Stored(plan) => return answer(plan, &ids, &ours),
                Started::Sent { fresh, deliveries } => {
                    // Acknowledged by Kafka; the partition's order decides
                    // whether these records follow the stream's head or lost
                    // it to another writer. The replica reads them back and
                    // says which.
                    let back = async {
                        let through = delivered(deliveries).await?;
                        self.replicated_through(c, partition, through).await
                    }
                    .await;
                    self.landed(stream, &fresh);
                    back?;
                    fresh
                }
            };
            let check = self
                .inner
                .replica
                .plan(stream, ExpectedVersion::Any, ids.clone())
                .await?;
            let stored: HashSet<EventId> = ids
                .iter()
                .zip(&check.stored)
                .filter(|(_, ack)| ack.is_some())
                .map(|(id, _)| *id)
                .collect();
            let mut won = 0;
            for id in &fresh {
                if stored.contains(id) {
                    ours.insert(*id);
                    won += 1;
                }
            }
            if won == fresh.len() {
                return answer(check, &ids, &ours);
            }
            // Another writer came first: this process's appends chained on
            // the lost records are lost too, so the next decisions start
            // from the replica, which now holds the winner.
            self.lost(stream);
            match expected {
                ExpectedVersion::Exactly(v) => {
                    return Err(Error::Conflict {
                        stream: stream.clone(),
                        expected: v,
                        actual: check.current,
                    });
                }
                ExpectedVersion::Any if round < MAX_ROUNDS => {
                    // Writers racing on one stream take turns by backing off
                    // by different amounts.
                    let jitter = u64::from(ids[0].as_bytes()[15]) % (4 * u64::from(round));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                ExpectedVersion::Any => {
                    return Err(kafka(
                        "appending",
                        format!("{stream}: other writers came first {MAX_ROUNDS} times"),
                    ));
                }
            }
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let c = slot(stream.category());
        let partition = kafka_record::partition(stream, self.inner.locks[c].len() as u32);
        self.up_to_date(vec![(c, partition)]).await?;
        self.inner
            .replica
            .read_stream(stream, after_version, max)
            .await
    }

    async fn read_all(&self, after: Position, max: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.replica.read_all(after, max).await
    }

    /// The replica's head once it holds everything Kafka held when called.
    async fn head(&self) -> Result<Position> {
        self.up_to_date(self.all_partitions()).await?;
        self.inner.replica.head().await
    }

    fn subscribe(&self, after: Position) -> Subscription {
        self.inner.replica.subscribe(after)
    }
}

fn ack_version(ack: &Ack) -> u64 {
    match ack {
        Ack::Appended { version, .. } | Ack::Duplicate { version, .. } => *version,
    }
}
