//! The process's replica: the consumer that takes every partition of the
//! category topics into the local [`EmbeddedLog`] by the one rule every
//! process applies alike, where it resumes, and the waits for it to hold
//! what Kafka held.
//!
//! It only reads from Kafka: it never produces a record, and it never
//! stores an event the rule leaves out, so every process's replica holds
//! the same events at the same versions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use threshold_domain::{EventId, StreamId};
use tokio::sync::watch;

use super::admin::BROKER_TIMEOUT;
use super::append::Verdicts;
use super::fetches::{Counted, STATISTICS_MS};
use super::log::kafka;
use super::options::{RECONNECT_BACKOFF_MAX_MS, REPLICA_FETCH_WAIT_MS};
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

/// What the replica has taken from each partition, and this process's own
/// records on their way to it.
#[derive(Debug)]
pub(super) struct Progress {
    /// Per category, per partition: the next offset the replica will take.
    pub(super) next: Vec<Vec<AtomicI64>>,
    /// Bumped after every batch the replica stored.
    pub(super) changed: watch::Sender<u64>,
    /// Held while the replica stores a partition's records, by its
    /// consumer or from acknowledgements, so each partition's go in in
    /// offset order.
    storing: tokio::sync::Mutex<()>,
    /// This process's records Kafka acknowledged, not in the replica yet.
    own: std::sync::Mutex<Own>,
    /// Told when records were acknowledged.
    wake: tokio::sync::Notify,
    /// Records the consumer read at an offset taken from an
    /// acknowledgement that held another event there: none, unless the
    /// broker named a wrong offset.
    pub(super) mismatched: AtomicU64,
    /// Records taken into the replica from acknowledgements, since open.
    pub(super) from_acks: AtomicU64,
}

/// One of this process's records at the offset Kafka acknowledged it at:
/// its stream and its events, in order.
pub(super) type Acked = (i64, StreamId, Vec<Conditional>);

/// What the replica makes of a record its consumer read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// The replica holds it.
    Taken,
    /// Not in the replica yet.
    Unread,
    /// At an offset taken from an acknowledgement, but another event than
    /// the one taken there: stored by the rule.
    Mismatched,
}

/// What the consumer's looks at one batch found.
#[derive(Debug, Default)]
struct Looked {
    /// (topic, partition, offset) of each mismatched record.
    mismatched: Vec<(String, i32, i64)>,
    /// (topic, partition) of each partition a record was kept from.
    kept: Vec<(String, i32)>,
}

/// One of this process's records: its stream and its events, in order.
type OwnRecord = (StreamId, Vec<Conditional>);

/// A partition's acknowledged records with no offset missing from its next:
/// (category slot, partition, records in offset order).
type Run = (usize, usize, Vec<Acked>);

/// This process's records at the offsets Kafka acknowledged them at, per
/// category, per partition.
#[derive(Debug, Default)]
struct Own {
    /// Acknowledged, not in the replica yet: offset → (stream, events).
    acked: Vec<Vec<BTreeMap<i64, OwnRecord>>>,
    /// Taken into the replica from acknowledgements, ahead of the
    /// consumer: (offset, id of the record's first event), for the
    /// consumer to check that it reads the same there.
    ahead: Vec<Vec<VecDeque<(i64, EventId)>>>,
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
            storing: tokio::sync::Mutex::new(()),
            own: std::sync::Mutex::new(Own {
                acked: starts
                    .iter()
                    .map(|parts| parts.iter().map(|_| BTreeMap::new()).collect())
                    .collect(),
                ahead: starts
                    .iter()
                    .map(|parts| parts.iter().map(|_| VecDeque::new()).collect())
                    .collect(),
            }),
            wake: tokio::sync::Notify::new(),
            mismatched: AtomicU64::new(0),
            from_acks: AtomicU64::new(0),
        }
    }

    fn own(&self) -> std::sync::MutexGuard<'_, Own> {
        self.own.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_of(&self, c: usize, partition: usize) -> i64 {
        self.next[c][partition].load(Ordering::Acquire)
    }

    /// What the replica makes of record `m` the consumer read, on its
    /// event id alone. A record before its partition's next offset was
    /// taken already: from an acknowledgement (checked to be the event
    /// taken there), or by the consumer before. One that is not the event
    /// taken there (a broker that named a wrong offset) is counted and
    /// logged here, once, and is to be stored by the rule like any other.
    fn look(&self, own: &mut Own, topics: &[String], m: &impl Message) -> Look {
        let Some(c) = topics.iter().position(|t| t == m.topic()) else {
            return Look::Taken;
        };
        let p = m.partition() as usize;
        let Some(next) = self.next.get(c).and_then(|n| n.get(p)) else {
            return Look::Taken;
        };
        if m.offset() >= next.load(Ordering::Acquire) {
            return Look::Unread;
        }
        let ahead = &mut own.ahead[c][p];
        while ahead.front().is_some_and(|(o, _)| *o < m.offset()) {
            ahead.pop_front();
        }
        let Some((o, id)) = ahead.front().copied().filter(|(o, _)| *o == m.offset()) else {
            return Look::Taken;
        };
        ahead.pop_front();
        let read = record::event_id_of(m);
        if read == Some(id) {
            return Look::Taken;
        }
        self.mismatched.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            topic = m.topic(),
            partition = p,
            offset = o,
            acknowledged = %id,
            read = ?read,
            "Kafka acknowledged this process's record at an offset that holds \
             another; the record read there is stored by the rule"
        );
        Look::Mismatched
    }

    /// Whether the consumer may pass over `m` without copying it out of
    /// the client: the replica holds it ([`Progress::look`]). Once a
    /// record of a partition is kept, the partition's later records in the
    /// batch are kept without a look, so that [`Progress::unread`] looks at
    /// them all in offset order (a look passes over what an acknowledgement
    /// brought below the record it looks at).
    fn passes_over(&self, topics: &[String], m: &impl Message, looked: &mut Looked) -> bool {
        if looked
            .kept
            .iter()
            .any(|(t, p)| *p == m.partition() && t == m.topic())
        {
            return false;
        }
        let look = self.look(&mut self.own(), topics, m);
        if look == Look::Taken {
            return true;
        }
        if look == Look::Mismatched {
            looked
                .mismatched
                .push((m.topic().to_owned(), m.partition(), m.offset()));
        }
        looked.kept.push((m.topic().to_owned(), m.partition()));
        false
    }

    /// Of `kept` (what the consumer kept of a batch, with what it `looked`
    /// found), the records the replica does not hold yet: those at or past
    /// each partition's next offset, and the mismatched. Called with
    /// `storing` held: a record may have been taken from an acknowledgement
    /// since the consumer looked.
    fn unread<'a>(
        &self,
        topics: &[String],
        kept: &'a [OwnedMessage],
        looked: &Looked,
    ) -> Vec<&'a OwnedMessage> {
        let mut own = self.own();
        kept.iter()
            .filter(|m| {
                looked
                    .mismatched
                    .iter()
                    .any(|(t, p, o)| t == m.topic() && *p == m.partition() && *o == m.offset())
                    || self.look(&mut own, topics, *m) != Look::Taken
            })
            .collect()
    }

    /// Takes `acked` (this process's records with the offsets Kafka
    /// acknowledged them at) as known: each goes into the replica as soon
    /// as every offset before it in its partition is in the replica or
    /// known the same way, without waiting for the consumer to read it.
    fn acknowledged(&self, c: usize, partition: u32, acked: Vec<Acked>) {
        let p = partition as usize;
        let next = self.next_of(c, p);
        let mut own = self.own();
        for (offset, stream, record) in acked {
            if offset >= next {
                own.acked[c][p].insert(offset, (stream, record));
            }
        }
    }

    /// Takes out, per partition, the run of acknowledged records that
    /// starts at its next offset with no offset missing; drops those the
    /// consumer took already. Called with `storing` held.
    fn runs(&self) -> Vec<Run> {
        let mut own = self.own();
        let mut runs = Vec::new();
        for (c, parts) in own.acked.iter_mut().enumerate() {
            for (p, acked) in parts.iter_mut().enumerate() {
                if acked.is_empty() {
                    continue;
                }
                let mut next = self.next_of(c, p);
                *acked = acked.split_off(&next);
                let mut run = Vec::new();
                while let Some((stream, record)) = acked.remove(&next) {
                    run.push((next, stream, record));
                    next += 1;
                }
                if !run.is_empty() {
                    runs.push((c, p, run));
                }
            }
        }
        runs
    }

    /// Stores what [`Progress::runs`] took out, in one request to the
    /// replica's writer, tells `verdicts` what became of each record, and
    /// moves each partition's next offset past its run. Called with
    /// `storing` held. Nothing is lost if it fails: the next offsets stay
    /// where they were, and the consumer reads the records from Kafka.
    async fn store_runs(
        &self,
        replica: &EmbeddedLog,
        runs: Vec<Run>,
        verdicts: &Verdicts,
    ) -> Result<usize> {
        // Where each run ends and what it holds, for after it is stored.
        let taken = runs
            .iter()
            .map(|(c, p, run)| {
                let ids = run
                    .iter()
                    .filter_map(|(o, _, events)| Some((*o, events.first()?.event.event_id)));
                (*c, *p, ids.collect::<Vec<_>>())
            })
            .collect::<Vec<_>>();
        let mut records = Vec::new();
        for (_, stream, events) in runs.into_iter().flat_map(|(_, _, run)| run) {
            records.extend(events.into_iter().map(|e| (stream.clone(), e)));
        }
        replicate_in_order(replica, records, verdicts).await?;
        let mut own = self.own();
        let mut stored = 0;
        for (c, p, ids) in taken {
            stored += ids.len();
            if let Some((last, _)) = ids.last() {
                self.next[c][p].fetch_max(last + 1, Ordering::AcqRel);
            }
            own.ahead[c][p].extend(ids);
        }
        self.from_acks.fetch_add(stored as u64, Ordering::Relaxed);
        Ok(stored)
    }
}

/// The replica's consumer, in the group `<prefix>.replica.<name>`; it
/// commits by hand, only once what it read is durable in the replica.
pub(super) fn consumer(
    options: &KafkaOptions,
    fetches: Arc<AtomicU64>,
) -> Result<StreamConsumer<Counted>> {
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
        .set(
            "fetch.wait.max.ms",
            options.fetch_wait(REPLICA_FETCH_WAIT_MS),
        )
        .set("statistics.interval.ms", STATISTICS_MS)
        .create_with_context(Counted::new("replica", fetches))
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
    consumer: &Arc<StreamConsumer<Counted>>,
    replica: &EmbeddedLog,
    topics: &[String],
    counts: &[i32],
) -> Result<Vec<Vec<i64>>> {
    let wanted = every_partition(
        topics,
        counts.iter().map(|n| *n as u32),
        Offset::Beginning,
        "assigning partitions",
    )?;
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

/// Keeps the replica: its consumer, and what this process's
/// acknowledgements bring ([`take_acknowledged`]), taking turns to store.
/// Runs until the log is closed or dropped.
pub(super) async fn replicate(
    consumer: Arc<StreamConsumer<Counted>>,
    replica: EmbeddedLog,
    topics: Vec<String>,
    progress: Arc<Progress>,
    stages: Arc<Stages>,
    verdicts: Arc<Verdicts>,
) {
    tokio::join!(
        consume(&consumer, &replica, &topics, &progress, &stages, &verdicts),
        take_acknowledged(&replica, &progress, &stages, &verdicts),
    );
}

/// Stores this process's acknowledged records as they become known
/// ([`Progress::runs`]): everything known when it gets its turn goes in one
/// request, so appends acknowledged together are stored together.
async fn take_acknowledged(
    replica: &EmbeddedLog,
    progress: &Progress,
    stages: &Stages,
    verdicts: &Verdicts,
) {
    loop {
        progress.wake.notified().await;
        let _storing = progress.storing.lock().await;
        let runs = progress.runs();
        if runs.is_empty() {
            continue;
        }
        let storing = std::time::Instant::now();
        match progress.store_runs(replica, runs, verdicts).await {
            Ok(stored) => {
                stages.since(Stage::OwnStore, storing);
                stages.add_raw(Stage::OwnBatch, stored as u64);
                progress.changed.send_modify(|n| *n += 1);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "the replica could not store acknowledged records; the consumer reads them"
            ),
        }
    }
}

/// The replica's consumer: takes records in batches, stores in the replica
/// those it does not hold yet (one request per batch), then commits the
/// offsets.
async fn consume(
    consumer: &StreamConsumer<Counted>,
    replica: &EmbeddedLog,
    topics: &[String],
    progress: &Progress,
    stages: &Stages,
    verdicts: &Verdicts,
) {
    loop {
        let mut looked = Looked::default();
        let batch = next_batch(consumer, REPLICA_BATCH, "the replica's consumer", |m| {
            !progress.passes_over(topics, m, &mut looked)
        })
        .await;
        let storing = std::time::Instant::now();
        {
            let _storing = progress.storing.lock().await;
            let fresh = progress.unread(topics, &batch.kept, &looked);
            // Stored, or retried until it is: a batch is never skipped.
            if !fresh.is_empty() {
                loop {
                    match store(replica, &fresh, verdicts).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "the replica could not store a batch; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                stages.add_raw(Stage::ReplicaBatch, fresh.len() as u64);
            }
            for m in &fresh {
                if let Some(c) = topics.iter().position(|t| t == m.topic())
                    && let Some(next) = progress
                        .next
                        .get(c)
                        .and_then(|n| n.get(m.partition() as usize))
                {
                    next.fetch_max(m.offset() + 1, Ordering::AcqRel);
                }
            }
            // What this process sent right after another's record may
            // follow on now.
            let runs = progress.runs();
            if !runs.is_empty()
                && let Err(e) = progress.store_runs(replica, runs, verdicts).await
            {
                tracing::warn!(error = %e, "the replica could not store acknowledged records; the consumer reads them");
            }
        }
        stages.since(Stage::ReplicaStore, storing);
        progress.changed.send_modify(|n| *n += 1);
        if let Err(e) = consumer.commit(&batch.offsets(), CommitMode::Async) {
            // The next commit covers it; a restart before then re-reads
            // records the replica already holds, which changes nothing.
            tracing::warn!(error = %e, "committing the replica's offsets failed");
        }
    }
}

/// What a consumer took in one go: the records it keeps, and where it got
/// to in each partition, the records it passed over included.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// The records kept, in the order read, copied out of the client.
    pub(super) kept: Vec<OwnedMessage>,
    /// Per partition read from: (topic, partition, the offset after the
    /// last record read there).
    ends: Vec<(String, i32, i64)>,
    /// Records read, kept or passed over.
    pub(super) read: usize,
}

impl Batch {
    /// Counts `m` as read.
    fn note(&mut self, m: &impl Message) {
        self.read += 1;
        let end = m.offset() + 1;
        // A batch holds long runs of one partition: look at the last first.
        match self
            .ends
            .iter_mut()
            .rev()
            .find(|(t, p, _)| *p == m.partition() && t == m.topic())
        {
            Some((_, _, e)) => *e = (*e).max(end),
            None => self.ends.push((m.topic().to_owned(), m.partition(), end)),
        }
    }

    /// The offsets to commit once the batch is done with: per partition,
    /// the one after the last record read, kept or not.
    pub(super) fn offsets(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (topic, partition, end) in &self.ends {
            // Only a partition number out of range fails, and these came from Kafka.
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*end));
        }
        list
    }
}

/// The records that are there, up to `max`, waiting for the first; of
/// those, `keep` says which are copied out of the client to be looked at
/// further (the rest, passed over on their event id or type, are only
/// counted as read). `consumer_name` names the consumer in a warning while it fails.
pub(super) async fn next_batch(
    consumer: &StreamConsumer<Counted>,
    max: usize,
    consumer_name: &str,
    mut keep: impl FnMut(&BorrowedMessage<'_>) -> bool,
) -> Batch {
    let mut batch = Batch::default();
    let mut take = |m: BorrowedMessage<'_>, batch: &mut Batch| {
        batch.note(&m);
        if keep(&m) {
            batch.kept.push(m.detach());
        }
    };
    loop {
        match consumer.recv().await {
            Ok(m) => {
                take(m, &mut batch);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "{consumer_name} failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    while batch.read < max {
        match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
            Ok(Ok(m)) => take(m, &mut batch),
            _ => break,
        }
    }
    batch
}

/// Stores a batch of records in the replica, per stream in offset order,
/// by one rule every process applies alike: a record goes in when its
/// version is the stream's next and it follows the stream's last event;
/// a record whose event is stored already, or that another writer's record
/// overtook, is left out. The whole batch is one request to the replica's
/// writer, one transaction; what became of each record this process sent is
/// told to `verdicts`.
async fn store(replica: &EmbeddedLog, batch: &[&OwnedMessage], verdicts: &Verdicts) -> Result<()> {
    let records = batch
        .iter()
        .copied()
        .filter_map(|m| match record::from_message(m) {
            Ok(records) => Some(records.into_iter().map(record::Record::into_conditional)),
            Err(e) => {
                tracing::error!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    error = %e,
                    "a record that is not an event was skipped"
                );
                None
            }
        })
        .flatten()
        .collect::<Vec<_>>();
    replicate_in_order(replica, records, verdicts).await
}

/// Stores `records` (in offset order within each partition) in the
/// replica in one request to its writer, each stream's in the order
/// given, by the rule; tells `verdicts` what became of each.
async fn replicate_in_order(
    replica: &EmbeddedLog,
    records: impl IntoIterator<Item = (StreamId, Conditional)>,
    verdicts: &Verdicts,
) -> Result<()> {
    let mut streams: Vec<(StreamId, Vec<Conditional>)> = Vec::new();
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    for (stream, record) in records {
        let i = match index.get(&stream) {
            Some(i) => *i,
            None => {
                index.insert(stream.clone(), streams.len());
                streams.push((stream, Vec::new()));
                streams.len() - 1
            }
        };
        streams[i].1.push(record);
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
    /// This process's records that Kafka acknowledged in `partition` of
    /// category slot `c`, with their offsets: the replica takes them at
    /// once where every offset before them is in it or is one of this
    /// process's records ([`take_acknowledged`]); the rest its consumer
    /// reads back. Either way by the same rule in the same order of
    /// offsets, so the replica holds what every other process's does.
    pub(super) fn acknowledged(&self, c: usize, partition: u32, acked: Vec<Acked>) {
        let progress = &self.inner.progress;
        progress.acknowledged(c, partition, acked);
        progress.wake.notify_one();
    }

    /// Records read at an offset an acknowledgement had named for another
    /// of this process's events (see `Progress`); zero unless the broker
    /// named a wrong offset.
    pub fn mismatched_acknowledgements(&self) -> u64 {
        self.inner.progress.mismatched.load(Ordering::Relaxed)
    }

    /// Records this process's replica took from Kafka's acknowledgements,
    /// without reading them back, since it opened.
    pub fn taken_from_acknowledgements(&self) -> u64 {
        self.inner.progress.from_acks.load(Ordering::Relaxed)
    }

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
        let counts = self.inner.partitions.clone();
        let ends = tokio::task::spawn_blocking(move || ends_of(&client, &topics, &counts))
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

/// Where every partition of `topics` (each of `counts` partitions) ends,
/// asked of Kafka in one request: per topic, per partition.
pub(super) fn ends_of(
    client: &BaseConsumer,
    topics: &[String],
    counts: &[u32],
) -> Result<Vec<Vec<i64>>> {
    let latest = every_partition(
        topics,
        counts.iter().copied(),
        Offset::End,
        "reading the end of a partition",
    )?;
    let answer = client
        .offsets_for_times(latest, BROKER_TIMEOUT)
        .map_err(|e| kafka("reading the end of a partition", e))?;
    topics
        .iter()
        .zip(counts)
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
}

/// Every partition of `topics` (`counts` partitions each), each at
/// `offset`; `operation` names what failed.
fn every_partition(
    topics: &[String],
    counts: impl IntoIterator<Item = u32>,
    offset: Offset,
    operation: &'static str,
) -> Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for (topic, count) in topics.iter().zip(counts) {
        for p in 0..count {
            list.add_partition_offset(topic, p as i32, offset)
                .map_err(|e| kafka(operation, e))?;
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;
    use crate::NewEvent;

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
        let mut read = Batch::default();
        for m in &batch {
            read.note(m);
        }
        assert_eq!(read.read, 5);
        let list = read.offsets();
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

    fn own(n: u32) -> (StreamId, Conditional) {
        (
            crate::contract::parcel(n),
            Conditional {
                event: crate::contract::failed_attempt(n),
                version: 1,
                after: None,
            },
        )
    }

    fn acked(offsets: &[i64]) -> Vec<Acked> {
        offsets
            .iter()
            .map(|o| {
                let (stream, record) = own(*o as u32);
                (*o, stream, vec![record])
            })
            .collect()
    }

    /// (category, partition, offsets) of each run taken out.
    fn shape(runs: &[Run]) -> Vec<(usize, usize, Vec<i64>)> {
        runs.iter()
            .map(|(c, p, run)| (*c, *p, run.iter().map(|(o, _, _)| *o).collect()))
            .collect()
    }

    #[test]
    fn acknowledged_records_go_in_only_from_the_partitions_next_offset_with_none_missing() {
        let progress = Progress::new(&[vec![5, 0], vec![0]]);
        // Offset 5 of partition 0 is not known: another process's, maybe.
        progress.acknowledged(0, 0, acked(&[6, 7]));
        progress.acknowledged(0, 1, acked(&[0, 1, 3]));
        assert_eq!(shape(&progress.runs()), vec![(0, 1, vec![0, 1])]);
        // The consumer read offsets 5 and 6 (6 was ours): the rest follows.
        progress.next[0][0].store(7, Ordering::Release);
        progress.next[0][1].store(2, Ordering::Release);
        assert_eq!(shape(&progress.runs()), vec![(0, 0, vec![7])]);
        // Offset 3 still waits for 2; below the next offset, nothing is kept.
        progress.acknowledged(0, 0, acked(&[1]));
        assert!(progress.runs().is_empty());
        assert_eq!(progress.own().acked[0][0].len(), 0);
        assert_eq!(
            progress.own().acked[0][1]
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            vec![3]
        );
    }

    fn record_at(topic: &str, partition: i32, offset: i64, event: &NewEvent) -> OwnedMessage {
        let stream = crate::contract::parcel(1);
        OwnedMessage::new(
            Some(record::value(1, None, event, "/test")),
            Some(stream.to_string().into_bytes()),
            topic.to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn the_consumer_skips_what_acknowledgements_brought_and_checks_it_is_the_same() {
        let topics = vec!["t.parcel".to_owned()];
        let progress = Progress::new(&[vec![0, 0]]);
        let events: Vec<NewEvent> = (0..8).map(crate::contract::failed_attempt).collect();
        // Partition 0: offsets 0, 1 and 3 taken from acknowledgements
        // (events 0, 1 and 3), offset 2 by the consumer before.
        {
            let mut own = progress.own();
            own.ahead[0][0].extend([
                (0, events[0].event_id),
                (1, events[1].event_id),
                (3, events[3].event_id),
            ]);
        }
        progress.next[0][0].store(4, Ordering::Release);
        // Partition 1: nothing taken yet.
        let batch = [
            record_at("t.parcel", 0, 0, &events[0]),
            // The broker had named offset 1 for event 1; event 5 is there.
            record_at("t.parcel", 0, 1, &events[5]),
            record_at("t.parcel", 0, 2, &events[2]),
            record_at("t.parcel", 0, 3, &events[3]),
            record_at("t.parcel", 1, 0, &events[4]),
            record_at("t.parcel", 1, 1, &events[6]),
            record_at("t.parcel", 1, 2, &events[7]),
        ];
        let offsets = |ms: &[&OwnedMessage]| {
            ms.iter()
                .map(|m| (m.partition(), m.offset()))
                .collect::<Vec<_>>()
        };
        // As the consumer reads: passed over on the event id, or kept; once
        // a partition's record is kept, so are the partition's later ones.
        let mut looked = Looked::default();
        let mut read = batch.iter();
        let mut kept: Vec<OwnedMessage> = read
            .by_ref()
            .take(6)
            .filter(|m| !progress.passes_over(&topics, *m, &mut looked))
            .cloned()
            .collect();
        assert_eq!(
            offsets(&kept.iter().collect::<Vec<_>>()),
            vec![(0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
        );
        assert_eq!(looked.mismatched, vec![("t.parcel".to_owned(), 0, 1)]);
        assert_eq!(progress.mismatched.load(Ordering::Relaxed), 1);
        // Between two records of the batch, partition 1's offsets 0 to 2
        // were taken from acknowledgements: 0 and 2 as read, 1 another
        // event than the one read there.
        progress.own().ahead[0][1].extend([
            (0, events[4].event_id),
            (1, events[0].event_id),
            (2, events[7].event_id),
        ]);
        progress.next[0][1].store(3, Ordering::Release);
        kept.extend(
            read.filter(|m| !progress.passes_over(&topics, *m, &mut looked))
                .cloned(),
        );
        assert_eq!(kept.len(), 6, "partition 1's offset 2 kept without a look");
        let fresh = progress.unread(&topics, &kept, &looked);
        assert_eq!(
            offsets(&fresh),
            vec![(0, 1), (1, 1)],
            "each mismatched record is stored, the rest was held already"
        );
        assert_eq!(
            progress.mismatched.load(Ordering::Relaxed),
            2,
            "each counted once"
        );
        assert!(progress.own().ahead[0][0].is_empty());
        assert!(progress.own().ahead[0][1].is_empty());
    }
}
