//! An append on Kafka: decided against the replica (with this process's
//! appends still on their way back counted as the stream's head), sent to
//! the stream's partition under this process's turn there, and answered
//! by what the replica took.
//!
//! The replica takes a partition's records only in Kafka's order, by the
//! one rule every process applies. Kafka's acknowledgement says at which
//! offset each record landed; where every offset before it in the
//! partition is in the replica already or is another of this process's
//! acknowledged records, what lies there is known without reading it
//! back, and the replica takes the records at once. Otherwise another
//! process's record may lie between, and the replica's consumer reads it
//! first. Either way an append that lost its race to another process's
//! record is answered as lost, never as stored.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use threshold_domain::{EventId, StreamId};
use tokio::sync::Mutex;

use super::log::{kafka, slot};
use super::options::{LINGER_MS, RECONNECT_BACKOFF_MAX_MS};
use super::record::{self, Layout};
use super::replica::READ_BACK_TIMEOUT;
use super::stages::{Observed, Stage};
use super::{KafkaLog, KafkaOptions};
use crate::embedded::{Conditional, Planned};
use crate::{Ack, AppendOutcome, Error, ExpectedVersion, NewEvent, Result};

/// Rounds an append without an expected version makes when other writers'
/// records keep landing first.
const MAX_ROUNDS: u32 = 32;

/// A producer of this log, observed (see [`Observed`]).
pub(super) type Producer = FutureProducer<Observed>;

/// The producer of this process's appends: idempotent, acknowledged by
/// every in-sync replica, sent at once.
pub(super) fn producer(options: &KafkaOptions, what: &str) -> Result<Producer> {
    producer_config(options)
        .create_with_context(Observed {
            what: what.to_owned(),
        })
        .map_err(|e| kafka("creating the producer", e))
}

/// What every producer of this process is made with.
fn producer_config(options: &KafkaOptions) -> ClientConfig {
    let mut config = ClientConfig::new();
    if super::stages::logged() {
        config.set("statistics.interval.ms", super::stages::STATISTICS_MS);
    }
    config
        .set("bootstrap.servers", &options.brokers)
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .set("client.id", &options.name)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", LINGER_MS)
        // Without Nagle's algorithm (librdkafka keeps it by default): with
        // it, a produce request smaller than a segment, sent while the one
        // before is not yet ACKed by the broker, waits for that ACK (up to
        // the broker's delayed-ACK timeout), so the five requests the
        // producer may have in flight do not overlap.
        .set("socket.nagle.disable", "true")
        .set("message.timeout.ms", "30000");
    config
}

/// How an append started.
enum Started<'a> {
    /// Every event is stored already.
    Stored(Planned),
    /// One of its events is on its way back from an earlier append.
    InFlight,
    /// Its new events were sent.
    Sent {
        flight: Flight<'a>,
        deliveries: Vec<DeliveryFuture>,
        /// The records sent, each's events as a reader takes them.
        records: Vec<Vec<Conditional>>,
        /// Per id of the call: where it was stored already when decided.
        before: Vec<Option<Ack>>,
        expected: Expected<'a>,
    },
}

/// This process's appends to one stream that are not back yet.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    /// The version of the last event sent.
    version: u64,
    /// The last event sent.
    last: Option<EventId>,
    /// Every event sent.
    ids: HashSet<EventId>,
    /// Appends not back yet.
    appends: usize,
}

/// An append's records on their way back: in flight for their stream
/// until the guard goes, when the append is answered, fails, or is dropped
/// (a caller that went away). A resend of them waits only as long as that.
pub(super) struct Flight<'a> {
    log: &'a KafkaLog,
    stream: StreamId,
    /// The ids of the records sent; taken when they land.
    fresh: Option<Vec<EventId>>,
}

impl Flight<'_> {
    /// Back, or failed: no longer in flight. The ids sent.
    fn land(mut self) -> Vec<EventId> {
        let fresh = self.fresh.take().unwrap_or_default();
        self.log.landed(&self.stream, &fresh);
        fresh
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if let Some(fresh) = self.fresh.take() {
            self.log.landed(&self.stream, &fresh);
        }
    }
}

/// What the replica made of this process's records on their way back: an
/// append expects its events' ids before it sends them, the replica tells
/// what became of each as it takes them (stored, stored already, or left
/// out), and the append takes the answers once the replica is past its
/// records. So an append is answered without asking the replica again.
#[derive(Debug, Default)]
pub(crate) struct Verdicts(std::sync::Mutex<HashMap<EventId, Option<Option<Ack>>>>);

impl Verdicts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, Option<Option<Ack>>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `ids` are about to be sent; their verdicts are wanted. They are
    /// forgotten when the guard goes, answered or not.
    fn expect(&self, ids: &[EventId]) -> Expected<'_> {
        let mut map = self.lock();
        for id in ids {
            map.insert(*id, None);
        }
        Expected {
            verdicts: self,
            ids: ids.to_vec(),
        }
    }

    /// The replica took these records: per event id, `Some(ack)` where
    /// its event is stored (by this record or before), `None` where the
    /// record was left out.
    pub(super) fn tell<'a>(&self, taken: impl Iterator<Item = (&'a EventId, &'a Option<Ack>)>) {
        let mut map = self.lock();
        if map.is_empty() {
            return;
        }
        for (id, verdict) in taken {
            if let Some(slot) = map.get_mut(id) {
                *slot = Some(*verdict);
            }
        }
    }
}

/// Ids whose verdicts an append waits for.
pub(super) struct Expected<'a> {
    verdicts: &'a Verdicts,
    ids: Vec<EventId>,
}

impl Expected<'_> {
    /// Each id's verdict, if the replica gave one.
    fn verdicts(&self) -> Vec<Option<Option<Ack>>> {
        let map = self.verdicts.lock();
        self.ids
            .iter()
            .map(|id| map.get(id).cloned().flatten())
            .collect()
    }
}

impl Drop for Expected<'_> {
    fn drop(&mut self) {
        let mut map = self.verdicts.lock();
        for id in &self.ids {
            map.remove(id);
        }
    }
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

fn ack_version(ack: &Ack) -> u64 {
    match ack {
        Ack::Appended { version, .. } | Ack::Duplicate { version, .. } => *version,
    }
}

/// The turn of `stream` among `turns`.
fn turn_of(stream: &StreamId, turns: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    stream.hash(&mut h);
    (h.finish() % turns as u64) as usize
}

/// Waits for Kafka to acknowledge every record; the offset of the last.
pub(super) async fn delivered(deliveries: Vec<DeliveryFuture>) -> Result<i64> {
    Ok(offsets(deliveries).await?.into_iter().max().unwrap_or(-1))
}

/// Waits for Kafka to acknowledge every record; the offset of each (-1
/// where Kafka did not say, e.g. a retry found stored already).
async fn offsets(deliveries: Vec<DeliveryFuture>) -> Result<Vec<i64>> {
    let mut offsets = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(d)) => offsets.push(d.offset),
            Ok(Err((e, _))) => return Err(kafka("producing", e)),
            Err(_) => return Err(kafka("producing", "the producer was closed")),
        }
    }
    Ok(offsets)
}

impl KafkaLog {
    /// [`crate::EventLog::append`] on Kafka.
    pub(super) async fn append_events(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome> {
        crate::event::check_append(stream, &events)?;
        let began = std::time::Instant::now();
        let c = slot(stream.category());
        let partition = record::partition(stream, self.inner.partitions[c]);
        // This process's appends to one stream take turns to decide and
        // send; another process's are ordered by Kafka.
        let turn = &self.inner.turns[turn_of(stream, self.inner.turns.len())];
        let ids: Vec<EventId> = events.iter().map(|e| e.event_id).collect();
        let mut ours: HashSet<EventId> = HashSet::new();
        let mut round = 0;
        let mut resent_in_flight: Option<std::time::Instant> = None;
        let mut caught_up = false;
        loop {
            round += 1;
            let started = match self
                .start(stream, partition, turn, expected, &events, &ids)
                .await
            {
                // An expected version past the head this process knows:
                // another process's appends may be on their way to the
                // replica, so a conflict is only told once it holds what
                // Kafka held.
                Err(Error::Conflict {
                    expected: v,
                    actual,
                    ..
                }) if v > actual && !caught_up => {
                    round -= 1;
                    self.up_to_date(vec![(c, partition)]).await?;
                    caught_up = true;
                    continue;
                }
                started => started?,
            };
            let fresh = match started {
                Started::InFlight => {
                    // A resend of an event still on its way: answer once it
                    // landed, which the append that sent it waits for no
                    // longer than a read-back may take.
                    round -= 1;
                    let since = *resent_in_flight.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > 2 * READ_BACK_TIMEOUT {
                        return Err(kafka(
                            "appending",
                            format!(
                                "{stream}: an event resent while on its way was not back after {:?}",
                                2 * READ_BACK_TIMEOUT
                            ),
                        ));
                    }
                    let mut changed = self.inner.progress.changed.subscribe();
                    let _ = tokio::time::timeout(READ_BACK_TIMEOUT, changed.changed()).await;
                    continue;
                }
                // Every event is stored already: a resend.
                Started::Stored(plan) => return answer(plan, &ids, &ours),
                Started::Sent {
                    flight,
                    deliveries,
                    records,
                    before,
                    expected: awaited,
                } => {
                    // Acknowledged by Kafka; the partition's order decides
                    // whether these records follow the stream's head or lost
                    // it to another writer. The replica takes them by the
                    // rule, at once where it knows every record before them
                    // in the partition, else as its consumer reads them
                    // back, and says which.
                    let stages = &self.inner.stages;
                    let back = async {
                        let sent = std::time::Instant::now();
                        let offsets = offsets(deliveries).await?;
                        stages.since(Stage::BrokerAck, sent);
                        let acked = std::time::Instant::now();
                        let through = offsets.iter().copied().max().unwrap_or(-1);
                        let known = offsets
                            .into_iter()
                            .zip(records)
                            .filter(|(offset, _)| *offset >= 0)
                            .map(|(offset, record)| (offset, stream.clone(), record))
                            .collect();
                        self.acknowledged(c, partition, known);
                        let r = self.replicated_through(c, partition, through).await;
                        stages.since(Stage::ReadBack, acked);
                        r
                    }
                    .await;
                    let fresh = flight.land();
                    back?;
                    // The replica said what became of each record: when all
                    // went in, that is the answer.
                    let told = awaited.verdicts();
                    drop(awaited);
                    if let Some(acks) = told
                        .into_iter()
                        .map(Option::flatten)
                        .collect::<Option<Vec<Ack>>>()
                    {
                        self.inner.stages.since(Stage::Append, began);
                        ours.extend(fresh.iter().copied());
                        // As a plan would say it: stored, at its place;
                        // `answer` names the first mention of each ours.
                        let by_id: HashMap<EventId, Ack> = fresh
                            .iter()
                            .copied()
                            .zip(acks)
                            .map(|(id, ack)| {
                                let stored = Ack::Duplicate {
                                    position: ack.position(),
                                    version: ack_version(&ack),
                                };
                                (id, stored)
                            })
                            .collect();
                        let current = by_id.values().map(ack_version).max().unwrap_or_default();
                        let stored = ids
                            .iter()
                            .zip(before)
                            .map(|(id, b)| b.or_else(|| by_id.get(id).cloned()))
                            .collect();
                        let plan = Planned {
                            current,
                            last: None,
                            stored,
                        };
                        return answer(plan, &ids, &ours);
                    }
                    fresh
                }
            };
            let checking = std::time::Instant::now();
            let check = self
                .inner
                .replica
                .plan(stream, ExpectedVersion::Any, ids.clone())
                .await?;
            self.inner.stages.since(Stage::Check, checking);
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
                self.inner.stages.since(Stage::Append, began);
                return answer(check, &ids, &ours);
            }
            // Another writer came first: this process's appends chained on
            // the lost records are lost too, so the next decisions start
            // from the replica, which now holds the winner.
            self.lost(stream);
            match expected {
                // Only an append of several records (over
                // `record::APPEND_RECORD_BYTES`) can be taken in part.
                ExpectedVersion::Exactly(_) if won > 0 => {
                    return Err(kafka(
                        "appending",
                        format!(
                            "{stream}: {won} of {} events were stored before another writer's \
                             record came between this append's records; a resend with the same \
                             event ids and no expected version stores the rest",
                            fresh.len()
                        ),
                    ));
                }
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
    ) -> Result<Started<'_>> {
        let waited = std::time::Instant::now();
        let _turn = turn.lock().await;
        self.inner.stages.since(Stage::Turn, waited);
        let deciding = std::time::Instant::now();
        let plan = self
            .inner
            .replica
            .plan(stream, ExpectedVersion::Any, ids.to_vec())
            .await?;
        self.inner.stages.since(Stage::Decide, deciding);
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
        let fresh_ids: Vec<EventId> = fresh.iter().map(|(e, _, _)| e.event_id).collect();
        let expected_verdicts = self.inner.verdicts.expect(&fresh_ids);
        let producing = std::time::Instant::now();
        let (deliveries, records) = self.send(stream, partition as i32, &fresh).await?;
        self.inner.stages.since(Stage::Produce, producing);
        let mut flights = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let f = flights.entry(stream.clone()).or_default();
        (f.version, f.last) = (version, after);
        f.ids.extend(fresh_ids.iter().copied());
        f.appends += 1;
        drop(flights);
        Ok(Started::Sent {
            flight: Flight {
                log: self,
                stream: stream.clone(),
                fresh: Some(fresh_ids),
            },
            deliveries,
            records,
            before: plan.stored,
            expected: expected_verdicts,
        })
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

    /// An append's records are back, failed, or their append was dropped:
    /// no longer in flight. Only a [`Flight`] going calls it.
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
    /// partition, in order: as one record, or, in [`Layout::Append`], as
    /// few as [`record::APPEND_RECORD_BYTES`] allows. The futures resolve when
    /// Kafka acknowledged each record. With them, each record's events as a
    /// reader of the partition takes them ([`record::as_read`], what a
    /// reader decodes from the value sent, so the replica stores what every
    /// other process's stores).
    async fn send(
        &self,
        stream: &StreamId,
        partition: i32,
        fresh: &[(&NewEvent, u64, Option<EventId>)],
    ) -> Result<(Vec<DeliveryFuture>, Vec<Vec<Conditional>>)> {
        let topic = &self.inner.topics[slot(stream.category())];
        let key = stream.to_string();
        let source = &self.inner.source;
        // In the append layout, each event's `LogRecord` first, to split
        // the append by what its records will weigh.
        let values: Vec<Vec<u8>> = match self.inner.layout {
            Layout::Append => fresh
                .iter()
                .map(|(event, version, after)| record::value(*version, *after, event, source))
                .collect(),
            Layout::LogRecord | Layout::CloudEvents => Vec::new(),
        };
        let groups = match self.inner.layout {
            Layout::Append => by_size(values.iter().map(Vec::len), record::APPEND_RECORD_BYTES),
            Layout::LogRecord | Layout::CloudEvents => (0..fresh.len()).map(|i| i..i + 1).collect(),
        };
        let mut deliveries = Vec::with_capacity(groups.len());
        let mut records = Vec::with_capacity(groups.len());
        // A record's events as a reader takes them, without decoding what
        // was encoded; a refusal names the event's place in the append.
        let n = fresh.len();
        let as_read = |group: std::ops::Range<usize>| {
            group
                .map(|i| {
                    let (event, version, after) = fresh[i];
                    let event = record::as_read(version, event).map_err(|e| match e {
                        Error::Invalid { field, reason } if n > 1 => Error::Invalid {
                            field,
                            reason: format!("{reason} (event {} of {n} in the append)", i + 1),
                        },
                        other => other,
                    })?;
                    Ok(Conditional {
                        event,
                        version,
                        after,
                    })
                })
                .collect::<Result<Vec<_>>>()
        };
        for group in groups {
            let mut headers = None;
            let (event, version, after) = fresh[group.start];
            let (value, read): (Cow<'_, [u8]>, _) = match self.inner.layout {
                Layout::Append => (
                    Cow::Owned(record::append_of(&values[group.clone()])),
                    as_read(group),
                ),
                Layout::LogRecord => (
                    Cow::Owned(record::value(version, after, event, source)),
                    as_read(group),
                ),
                Layout::CloudEvents => {
                    let sent = record::headers(stream, version, after, event, source);
                    let read = record::from_record(
                        sent.iter().map(|(name, value)| (*name, value.as_slice())),
                        event.payload.clone(),
                    )
                    .map(|r| vec![r.into_conditional().1]);
                    headers = Some(record::kafka_headers(&sent));
                    (Cow::Borrowed(event.payload.as_ref()), read)
                }
            };
            let read = read.map_err(|e| {
                kafka(
                    "producing",
                    format!("{stream}: a record that does not read back: {e}"),
                )
            })?;
            records.push(read);
            let mut record = FutureRecord::to(topic)
                .partition(partition)
                .key(&key)
                .payload(value.as_ref());
            if let Some(headers) = headers {
                record = record.headers(headers);
            }
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
        Ok((deliveries, records))
    }
}

/// Items of the given `sizes`, in order, in runs whose sizes together are
/// at most `limit` (an item larger than that is a run of its own): the
/// ranges of their indices.
fn by_size(sizes: impl Iterator<Item = usize>, limit: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut total, mut end) = (0, 0, 0);
    for (i, size) in sizes.enumerate() {
        if i > start && total + size > limit {
            runs.push(start..i);
            (start, total) = (i, 0);
        }
        total += size;
        end = i + 1;
    }
    if start < end {
        runs.push(start..end);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::failed_attempt;

    #[test]
    fn producers_send_without_nagles_algorithm_and_wait_for_every_replica() {
        let config = producer_config(&KafkaOptions::new("127.0.0.1:9", "replica", "test"));
        assert_eq!(config.get("socket.nagle.disable"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
    }

    /// An append goes in as few records as the size allows, in order, none
    /// over it but an event larger than it alone, and none empty.
    #[test]
    fn an_append_is_split_into_records_of_bounded_size() {
        let sizes = [40, 40, 30, 200, 10, 100];
        let runs = by_size(sizes.iter().copied(), 100);
        assert_eq!(runs, vec![0..2, 2..3, 3..4, 4..5, 5..6]);
        assert_eq!(by_size(sizes.iter().copied(), usize::MAX), vec![0..6]);
        assert!(by_size(std::iter::empty(), 100).is_empty());
    }

    /// Events of no payload weigh their envelope: ten thousand of them
    /// (an append a Kafka record of 1 MB could not hold) go as records
    /// of at most the bound, each event once, in order.
    #[test]
    fn an_append_of_many_small_events_is_split_by_their_encoded_size() {
        let event = NewEvent {
            payload: Vec::new().into(),
            ..failed_attempt(1)
        };
        let sizes: Vec<usize> = (1..=10_000u64)
            .map(|v| record::value(v, Some(event.event_id), &event, "/threshold/handheld").len())
            .collect();
        assert!(sizes.iter().all(|s| *s > 100), "{}", sizes[0]);
        let runs = by_size(sizes.iter().copied(), record::APPEND_RECORD_BYTES);
        assert!(runs.len() > 1);
        let mut next = 0;
        for run in &runs {
            assert_eq!(run.start, next);
            assert!(sizes[run.clone()].iter().sum::<usize>() <= record::APPEND_RECORD_BYTES);
            next = run.end;
        }
        assert_eq!(next, sizes.len());
    }
}
