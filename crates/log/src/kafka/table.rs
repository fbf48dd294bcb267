//! [`KafkaTable`]: a compacted topic kept whole in memory and followed, for
//! the state every process of a deployment shares (credentials, the
//! vault's keys) with nothing shared on disk.
//!
//! A record's key is the entry's key, its value the entry; a record without
//! a value (a tombstone) removes the key. Later records win, which is what
//! compaction keeps, so every process that reads the topic from its start
//! holds the same table once it has read as far. Each entry keeps the
//! offset of the record that set it, so a user can also let the first of
//! several records win (the vault's claims: unique keys, the lowest offset
//! wins), which compaction keeps too, since it never reorders records.
//!
//! Opening reads to the end the topic had when asked. After that a thread
//! of its own applies new records as they come (within about the fetch
//! wait of the broker taking them), and a put returns once this process's
//! table holds the write. The thread is not a task of the async runtime,
//! so [`KafkaTable::put_blocking`] may wait for it from any thread.
//!
//! No state is kept on disk: a process reads the whole topic at every
//! start. The topic is created, when missing, with one partition and
//! `cleanup.policy=compact`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaOptions;
use super::admin::{BROKER_TIMEOUT, partition_counts};
use super::fetches::{Counted, STATISTICS_MS};
use super::log::kafka;
use super::options::RECONNECT_BACKOFF_MAX_MS;
use crate::{Error, Result};

/// How long the follower's fetch waits at the broker for new records, in
/// milliseconds, unless opened with another or the options set one
/// ([`KafkaOptions::fetch_wait_ms`]): on a broker that holds every fetch
/// for its whole wait (the test broker), a change reaches every process
/// within about this.
pub const FETCH_WAIT_MS: u64 = 100;

/// An entry and the offset of the record that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The value.
    pub value: Vec<u8>,
    /// The record's offset in its partition.
    pub offset: i64,
}

/// The entries as one process holds them.
#[derive(Debug, Default, Clone)]
pub struct TableState {
    /// Key → value.
    pub entries: Arc<BTreeMap<String, Stored>>,
    /// Bumped on every change of `entries`.
    pub version: u64,
}

/// How far the follower has applied each partition, and a way to wait for
/// it to go further.
#[derive(Default)]
struct Applied {
    next: Mutex<Vec<i64>>,
    moved: Condvar,
}

/// A compacted topic, held whole in memory. Cheap to clone; the follower
/// stops when the last clone goes.
#[derive(Clone)]
pub struct KafkaTable {
    topic: String,
    partitions: i32,
    producer: super::append::Producer,
    state: Arc<RwLock<TableState>>,
    applied: Arc<Applied>,
    /// Asks where the partitions end.
    probe: Arc<BaseConsumer>,
    /// Fetch requests the follower sent, as last counted.
    fetches: Arc<AtomicU64>,
    _follower: Arc<Follower>,
}

impl std::fmt::Debug for KafkaTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTable")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Stops the follower thread when dropped.
struct Follower(Arc<AtomicBool>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl KafkaTable {
    /// Opens `topic` on the options' brokers (creating it compacted when
    /// missing) and reads it to the end it had when asked.
    pub async fn open(options: &KafkaOptions, topic: &str) -> Result<Self> {
        Self::open_with(options, topic, FETCH_WAIT_MS).await
    }

    /// [`KafkaTable::open`] with the follower's fetch waiting at most
    /// `fetch_wait_ms` at the broker unless the options set a wait for
    /// every follower: less for tables whose writers wait for their own
    /// writes.
    pub async fn open_with(
        options: &KafkaOptions,
        topic: &str,
        fetch_wait_ms: u64,
    ) -> Result<Self> {
        options.check()?;
        create_compacted(options, topic).await?;
        let options = options.clone();
        let topic = topic.to_owned();
        let table =
            tokio::task::spawn_blocking(move || Self::start(&options, &topic, fetch_wait_ms))
                .await
                .map_err(|e| kafka("opening a table", e))??;
        let ready = table.clone();
        tokio::task::spawn_blocking(move || ready.barrier_blocking())
            .await
            .map_err(|e| kafka("opening a table", e))??;
        Ok(table)
    }

    fn start(options: &KafkaOptions, topic: &str, fetch_wait_ms: u64) -> Result<Self> {
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
                .set("fetch.wait.max.ms", options.fetch_wait(fetch_wait_ms));
            c
        };
        let probe: BaseConsumer = config()
            .create()
            .map_err(|e| kafka("creating a table's client", e))?;
        let fetches = Arc::new(AtomicU64::new(0));
        let consumer: BaseConsumer<Counted> = config()
            .set("statistics.interval.ms", STATISTICS_MS)
            .create_with_context(Counted::new(
                topic.rsplit('.').next().unwrap_or(topic),
                Arc::clone(&fetches),
            ))
            .map_err(|e| kafka("creating a table's consumer", e))?;
        let partitions = partition_counts(&probe, &[topic.to_owned()])?[0];
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| kafka("assigning a table's partitions", e))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| kafka("assigning a table's partitions", e))?;
        let state = Arc::new(RwLock::new(TableState::default()));
        let applied = Arc::new(Applied {
            next: Mutex::new(vec![0; partitions as usize]),
            moved: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (state, applied, stop) =
                (Arc::clone(&state), Arc::clone(&applied), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("table {topic}"))
                .spawn(move || follow(&consumer, &state, &applied, &stop))
                .map_err(|e| kafka("starting a table's follower", e))?;
        }
        Ok(Self {
            topic: topic.to_owned(),
            partitions,
            producer: super::append::producer(options, &format!("table {topic}"))?,
            state,
            applied,
            probe: Arc::new(probe),
            fetches,
            _follower: Arc::new(Follower(stop)),
        })
    }

    /// How many fetch requests the follower has sent, as librdkafka last
    /// counted them (every second): an idle follower sends one per fetch
    /// wait.
    pub fn fetch_requests(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
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

    /// Writes `value` under `key` (`None` removes it) and returns, with
    /// the record's offset, once this process's table holds the write.
    pub async fn put(&self, key: &str, value: Option<&[u8]>) -> Result<i64> {
        let (partition, offset) = self.send(key, value)?.await?;
        let table = self.clone();
        tokio::task::spawn_blocking(move || table.wait_for_record(partition, offset))
            .await
            .map_err(|e| kafka("writing a table entry", e))??;
        Ok(offset)
    }

    /// [`KafkaTable::put`] for a caller that is not async: blocks this
    /// thread (never the follower's) until the table holds the write.
    pub fn put_blocking(&self, key: &str, value: Option<&[u8]>) -> Result<i64> {
        let (partition, offset) = block_on(self.send(key, value)?)?;
        self.wait_for_record(partition, offset)?;
        Ok(offset)
    }

    /// Several writes at once, in order: one round trip for all of them.
    /// Returns their offsets once this process's table holds the last.
    pub fn put_many_blocking(&self, writes: &[(&str, Option<&[u8]>)]) -> Result<Vec<i64>> {
        let sent = writes
            .iter()
            .map(|(key, value)| self.send(key, *value))
            .collect::<Result<Vec<_>>>()?;
        let mut until = vec![0; self.partitions as usize];
        let mut offsets = Vec::with_capacity(sent.len());
        for delivery in sent {
            let (partition, offset) = block_on(delivery)?;
            if let Some(slot) = until.get_mut(partition as usize) {
                *slot = (*slot).max(offset + 1);
            }
            offsets.push(offset);
        }
        self.wait_until(&until)?;
        Ok(offsets)
    }

    /// Sends the record; the future gives its partition and offset once
    /// the broker has it.
    fn send(
        &self,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<impl Future<Output = Result<(i32, i64)>> + use<>> {
        self.send_to(key, value, None)
    }

    /// [`KafkaTable::send`] to `partition`, or to the key's.
    fn send_to(
        &self,
        key: &str,
        value: Option<&[u8]>,
        partition: Option<i32>,
    ) -> Result<impl Future<Output = Result<(i32, i64)>> + use<>> {
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic).key(key);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| kafka("writing a table entry", e))?;
        Ok(async move {
            match delivery.await {
                Ok(Ok(d)) => Ok((d.partition, d.offset)),
                Ok(Err((e, _))) => Err(kafka("writing a table entry", e)),
                Err(_) => Err(kafka("writing a table entry", "the producer was closed")),
            }
        })
    }

    fn wait_for_record(&self, partition: i32, offset: i64) -> Result<()> {
        let mut until = vec![0; self.partitions as usize];
        if let Some(slot) = until.get_mut(partition as usize) {
            *slot = offset + 1;
        }
        self.wait_until(&until)
    }

    /// Waits, up to the broker timeout, until this process has applied every
    /// partition up to `ends` (exclusive).
    fn wait_until(&self, ends: &[i64]) -> Result<()> {
        let deadline = Instant::now() + BROKER_TIMEOUT;
        let mut next = self.applied.next.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if next.iter().zip(ends).all(|(applied, end)| applied >= end) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Kafka {
                    operation: "following a table",
                    detail: format!(
                        "{}: not read up to {ends:?} within {BROKER_TIMEOUT:?} (at {:?})",
                        self.topic, *next
                    ),
                });
            }
            next = self
                .applied
                .moved
                .wait_timeout(next, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Where each partition ends now.
    fn ends_blocking(&self) -> Result<Vec<i64>> {
        (0..self.partitions)
            .map(|p| {
                self.probe
                    .fetch_watermarks(&self.topic, p, BROKER_TIMEOUT)
                    .map(|(_, high)| high)
                    .map_err(|e| kafka("reading a table's end", e))
            })
            .collect()
    }

    /// Waits until the table holds every write acknowledged before the
    /// call, by writing a record of its own and waiting for it to come back
    /// (a record that removes a key no entry has): everything acknowledged
    /// before it is ahead of it in the partition. Stronger than
    /// [`KafkaTable::sync_blocking`], which trusts the broker's answer of
    /// where the partition ends; it costs a write.
    pub async fn sync(&self) -> Result<()> {
        let table = self.clone();
        tokio::task::spawn_blocking(move || table.barrier_blocking())
            .await
            .map_err(|e| kafka("reading a table's end", e))?
    }

    /// [`KafkaTable::sync`] for a caller that is not async.
    pub fn barrier_blocking(&self) -> Result<()> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = format!("barrier/{}-{nanos}", std::process::id());
        // A barrier in each partition.
        let mut until = vec![0; self.partitions as usize];
        let sent = (0..self.partitions)
            .map(|p| self.send_to(&key, None, Some(p)))
            .collect::<Result<Vec<_>>>()?;
        for delivery in sent {
            let (partition, offset) = block_on(delivery)?;
            if let Some(slot) = until.get_mut(partition as usize) {
                *slot = (*slot).max(offset + 1);
            }
        }
        self.wait_until(&until)
    }

    /// Waits until the table holds what the broker says the topic held when
    /// called: no write, one request per partition. Where the broker's
    /// answer lags what it acknowledged, use [`KafkaTable::sync`].
    pub fn sync_blocking(&self) -> Result<()> {
        let ends = self.ends_blocking()?;
        self.wait_until(&ends)
    }
}

/// Runs `future` to its end on this thread (for futures that need no
/// runtime, such as a delivery report).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// Applies records as they come, in each partition's order, until `stop`.
fn follow(
    consumer: &BaseConsumer<Counted>,
    state: &RwLock<TableState>,
    applied: &Applied,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "table consumer");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        match message.key().and_then(|k| std::str::from_utf8(k).ok()) {
            None => tracing::warn!(
                topic = message.topic(),
                partition,
                offset,
                "table record without a UTF-8 key, skipped"
            ),
            Some(key) => {
                let mut s = state.write().unwrap_or_else(|p| p.into_inner());
                // Copied only while a reader holds the previous entries.
                let entries = Arc::make_mut(&mut s.entries);
                match message.payload() {
                    Some(value) => {
                        entries.insert(
                            key.to_owned(),
                            Stored {
                                value: value.to_vec(),
                                offset,
                            },
                        );
                    }
                    None => {
                        entries.remove(key);
                    }
                }
                s.version += 1;
            }
        }
        let mut next = applied.next.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = next.get_mut(partition as usize) {
            *slot = offset + 1;
        }
        applied.moved.notify_all();
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
