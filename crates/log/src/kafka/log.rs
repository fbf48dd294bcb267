//! [`KafkaLog`]: what one process holds of the Kafka log (producer,
//! replica, its turns on the partitions), how it opens, and the
//! [`EventLog`] it is, appends delegated to `append` and reads answered by
//! the replica once it is up to date.
//!
//! It only assembles and routes: the rules of an append, of the replica
//! and of the topics live in their own modules, never here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use rdkafka::consumer::BaseConsumer;
use threshold_domain::{Category, StreamId};
use tokio::sync::Mutex;

use super::KafkaOptions;
use super::admin::{create_topics, partition_counts};
use super::append::{InFlight, producer};
use super::record;
use super::replica::{self, Progress, replicate};
use super::stages::{self, StageTiming, Stages};
use crate::embedded::{EmbeddedLog, EmbeddedOptions};
use crate::{
    AppendOutcome, Error, EventLog, ExpectedVersion, NewEvent, Position, RecordedEvent, Result,
    Subscription,
};

/// The log's error for a Kafka `operation` that failed.
pub(super) fn kafka(operation: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Kafka {
        operation,
        detail: e.to_string(),
    }
}

/// Index of a category in [`Category::ALL`].
pub(super) fn slot(category: Category) -> usize {
    Category::ALL
        .iter()
        .position(|c| *c == category)
        .unwrap_or_default()
}

/// Turns to decide and send (streams share one by hash).
const TURNS: usize = 1024;

/// The event log on Kafka. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KafkaLog {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) options: KafkaOptions,
    pub(super) topics: Vec<String>,
    pub(super) producer: super::append::Producer,
    pub(super) replica: EmbeddedLog,
    /// Per category: its topic's partitions.
    pub(super) partitions: Vec<u32>,
    /// Turns to decide and send, by a hash of the stream: one append of a
    /// stream at a time, so its records leave in the order decided.
    pub(super) turns: Vec<Mutex<()>>,
    /// What the replica made of this process's records in flight.
    pub(super) verdicts: Arc<super::append::Verdicts>,
    /// This process's appends on their way back, by stream.
    pub(super) in_flight: std::sync::Mutex<HashMap<StreamId, InFlight>>,
    pub(super) progress: Arc<Progress>,
    pub(super) source: String,
    /// How this process writes log records.
    pub(super) layout: record::Layout,
    /// The client that asks Kafka where the partitions end.
    pub(super) ends_client: Arc<BaseConsumer>,
    /// The last answer to that, and when its request left.
    #[allow(clippy::type_complexity)]
    pub(super) ends: Mutex<Option<(std::time::Instant, Arc<Vec<Vec<i64>>>)>>,
    /// Where appends' and reads' time goes.
    pub(super) stages: Arc<Stages>,
    /// Fetch requests the replica's and the publishers' consumers sent.
    pub(super) fetches: Arc<AtomicU64>,
    /// The replica's consumer task, until [`KafkaLog::close`] takes it.
    tail: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    report: tokio::task::JoinHandle<()>,
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
        if let Some(tail) = self.tail.get_mut().ok().and_then(Option::take) {
            tail.abort();
        }
        self.report.abort();
    }
}

impl KafkaLog {
    /// Connects, creates the topics that are missing, opens the replica and
    /// returns once the replica holds everything Kafka held at the start.
    pub async fn open(options: KafkaOptions) -> Result<Self> {
        options.check()?;
        let topics: Vec<String> = Category::ALL.iter().map(|c| options.topic(*c)).collect();
        // Partners' outcome topics are made by the publisher as it meets
        // each partner.
        create_topics(&options, &topics).await?;

        let producer = producer(&options, "log")?;
        let fetches = Arc::new(AtomicU64::new(0));
        let consumer = Arc::new(replica::consumer(&options, Arc::clone(&fetches))?);

        let counts = {
            let consumer = Arc::clone(&consumer);
            let topics = topics.clone();
            tokio::task::spawn_blocking(move || partition_counts(&*consumer, &topics))
                .await
                .map_err(|e| kafka("reading topic metadata", e))??
        };
        let replica = EmbeddedLog::open(&options.replica, EmbeddedOptions::default())?;
        let starts = replica::assign(&consumer, &replica, &topics, &counts).await?;

        let progress = Arc::new(Progress::new(&starts));
        let stages = Arc::new(Stages::default());
        let verdicts = Arc::new(super::append::Verdicts::default());
        let tail = tokio::spawn(replicate(
            Arc::clone(&consumer),
            replica.clone(),
            topics.clone(),
            Arc::clone(&progress),
            Arc::clone(&stages),
            Arc::clone(&verdicts),
        ));
        let report = tokio::spawn(report(Arc::clone(&stages)));
        let ends_client = Arc::new(replica::ends_client(&options)?);
        let log = Self {
            inner: Arc::new(Inner {
                source: format!("/threshold/{}", options.name),
                layout: options.layout,
                partitions: counts.iter().map(|n| *n as u32).collect(),
                turns: (0..TURNS).map(|_| Mutex::new(())).collect(),
                verdicts,
                in_flight: std::sync::Mutex::default(),
                options,
                topics,
                producer,
                replica,
                progress,
                ends_client,
                ends: Mutex::new(None),
                stages,
                fetches,
                tail: std::sync::Mutex::new(Some(tail)),
                report,
            }),
        };
        // Everything Kafka held at the start is in the replica before the
        // first read.
        log.up_to_date(log.all_partitions()).await?;
        tokio::spawn(replica_lag(Arc::downgrade(&log.inner)));
        Ok(log)
    }

    /// Stops taking records into the replica and closes it: what it
    /// stored is on disk, and a record it had not stored is read again at
    /// the next start (its offset was not committed). Reads and appends
    /// fail after this.
    pub async fn close(&self) -> Result<()> {
        let tail = self.inner.tail.lock().ok().and_then(|mut t| t.take());
        if let Some(tail) = tail {
            tail.abort();
            let _ = tail.await;
        }
        self.inner.replica.close().await
    }

    /// The replica this process reads from.
    pub fn replica(&self) -> &EmbeddedLog {
        &self.inner.replica
    }

    /// Where appends' and reads' time went since the last call: count and
    /// mean per stage.
    pub fn stage_timings(&self) -> Vec<StageTiming> {
        self.inner.stages.take()
    }

    /// How many fetch requests the replica's consumer and this log's
    /// publishers have sent, as librdkafka last counted them (every
    /// second): an idle consumer sends one per fetch wait to each broker it
    /// reads from. Also the metric `threshold.kafka.fetch.requests`.
    pub fn fetch_requests(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// The options it was opened with.
    pub fn options(&self) -> &KafkaOptions {
        &self.inner.options
    }

    /// Every (category slot, partition) of the category topics.
    fn all_partitions(&self) -> Vec<(usize, u32)> {
        self.inner
            .partitions
            .iter()
            .enumerate()
            .flat_map(|(c, parts)| (0..*parts).map(move |p| (c, p)))
            .collect()
    }
}

/// How often [`replica_lag`] asks where the partitions end.
const LAG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Records `threshold.log.replica.lag`, the records Kafka holds in the
/// category topics that this process's replica has not taken yet, every
/// [`LAG_EVERY`]: one request for every partition's end, where a read
/// model's lag (`threshold.projection.lag`) is measured against the
/// replica without asking the broker. Ends with the log.
async fn replica_lag(inner: std::sync::Weak<Inner>) {
    let gauge = opentelemetry::global::meter("threshold.log")
        .u64_gauge("threshold.log.replica.lag")
        .with_description(
            "Records in the log's Kafka partitions this process's replica has not taken yet",
        )
        .build();
    loop {
        tokio::time::sleep(LAG_EVERY).await;
        // What the request needs, and not the log: a request the broker
        // is slow to answer does not keep a dropped log open.
        let (client, topics, counts, progress) = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            // Closed: the replica takes no more records.
            if !inner.tail.lock().is_ok_and(|t| t.is_some()) {
                return;
            }
            (
                Arc::clone(&inner.ends_client),
                inner.topics.clone(),
                inner.partitions.clone(),
                Arc::clone(&inner.progress),
            )
        };
        let asked =
            tokio::task::spawn_blocking(move || replica::ends_of(&client, &topics, &counts)).await;
        // Unanswered: the gauge keeps its last value; the log's own
        // requests say what fails.
        if let Ok(Ok(ends)) = asked {
            gauge.record(unreplicated(&ends, &progress.next), &[]);
        }
    }
}

/// Records before each partition's end (`ends`, per category slot, per
/// partition) from the replica's next offset on.
fn unreplicated(ends: &[Vec<i64>], next: &[Vec<std::sync::atomic::AtomicI64>]) -> u64 {
    ends.iter()
        .zip(next)
        .flat_map(|(ends, next)| ends.iter().zip(next))
        .map(|(end, next)| {
            let behind = end - next.load(Ordering::Acquire);
            u64::try_from(behind).unwrap_or(0)
        })
        .sum()
}

/// Logs the stage timings every five seconds when
/// `threshold_log::kafka::stages` is logged at debug level and something
/// ran; otherwise leaves them for [`KafkaLog::stage_timings`].
async fn report(stages: Arc<Stages>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        every.tick().await;
        if tracing::enabled!(target: "threshold_log::kafka::stages", tracing::Level::DEBUG) {
            let line = stages::line(&stages.take());
            if !line.is_empty() {
                tracing::debug!(target: "threshold_log::kafka::stages", "{line}");
            }
        }
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome> {
        self.append_events(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let c = slot(stream.category());
        let partition = record::partition(stream, self.inner.partitions[c]);
        self.up_to_date(vec![(c, partition)]).await?;
        self.read_stream_recent(stream, after_version, max).await
    }

    /// The replica as it is: every append this process acknowledged is in
    /// it (an append is answered once the replica took it back), other
    /// processes' latest may not be yet.
    async fn read_stream_recent(
        &self,
        stream: &StreamId,
        after_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
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

    /// The replica's head as it is: every append this process acknowledged
    /// is in it, other processes' latest may not be yet.
    async fn head_recent(&self) -> Result<Position> {
        self.inner.replica.head().await
    }

    fn subscribe(&self, after: Position) -> Subscription {
        self.inner.replica.subscribe(after)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::unreplicated;

    /// What the replica lacks is counted per partition; a partition the
    /// replica read past the end asked (the end was asked before its last
    /// records came) counts nothing, not less than nothing.
    #[test]
    fn the_replica_lag_counts_what_each_partition_lacks() {
        let next = |v: &[i64]| v.iter().map(|n| AtomicI64::new(*n)).collect::<Vec<_>>();
        let ends = vec![vec![10, 4, 0], vec![7]];
        assert_eq!(unreplicated(&ends, &[next(&[10, 1, 0]), next(&[2])]), 3 + 5);
        assert_eq!(unreplicated(&ends, &[next(&[12, 4, 0]), next(&[7])]), 0);
        assert_eq!(unreplicated(&ends, &[next(&[0, 0, 0]), next(&[0])]), 21);
    }
}
