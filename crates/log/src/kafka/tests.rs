//! The Kafka backend against a real Kafka-protocol broker on loopback
//! (`make test` starts one and sets `THRESHOLD_TEST_KAFKA`). Every test
//! gets topics of its own, so tests run side by side on one broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use threshold_domain::Category;

use super::{KafkaLog, KafkaOptions, brokers_from_url};
use crate::contract::{Backend, contract_suite, failed_attempt, parcel};
use crate::{Error, EventLog, ExpectedVersion, NewEvent, Position};

/// The test broker's address, from `THRESHOLD_TEST_KAFKA`.
pub(crate) fn test_brokers() -> String {
    std::env::var("THRESHOLD_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "THRESHOLD_TEST_KAFKA is not set: these tests need a Kafka broker; \
             `make test` starts one on loopback (or run scripts/test-broker.sh start \
             and export what it prints)"
        )
    })
}

struct Kafka {
    brokers: String,
    prefix: String,
    dir: tempfile::TempDir,
}

impl Kafka {
    fn new() -> Self {
        Self {
            brokers: test_brokers(),
            prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn options(&self, process: &str) -> KafkaOptions {
        let mut o = KafkaOptions::new(&self.brokers, self.dir.path().join(process), process);
        o.topic_prefix = self.prefix.clone();
        o.partitions = 3;
        o
    }

    /// A plain Kafka consumer of `topic` from its beginning, in a group of
    /// its own (`<prefix>.<group>`), as another tool would run one.
    fn plain_consumer(&self, group: &str, topic: &str) -> StreamConsumer {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}.{group}", self.prefix))
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        consumer
    }

    async fn process(&self, name: &str) -> KafkaLog {
        KafkaLog::open(self.options(name))
            .await
            .expect("open the Kafka log")
    }
}

/// The next record `consumer` reads, within 30 s.
async fn next_record(consumer: &StreamConsumer) -> rdkafka::message::BorrowedMessage<'_> {
    tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record within 30 s")
        .expect("a record")
}

#[async_trait]
impl Backend for Kafka {
    async fn open(&self) -> Arc<dyn EventLog> {
        Arc::new(self.process("p1").await)
    }

    async fn reopen(&self, log: Arc<dyn EventLog>) -> Arc<dyn EventLog> {
        drop(log);
        // The old replica's writer lets go of its directory as it exits.
        for _ in 0..500 {
            match KafkaLog::open(self.options("p1")).await {
                Ok(log) => return Arc::new(log),
                Err(Error::Locked { .. }) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
        panic!("the replica stayed locked");
    }
}

contract_suite!(Kafka::new());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_reads_every_acknowledged_event_from_kafka() {
    let kafka = Kafka::new();
    let writer = kafka.process("writer").await;
    let mut acked = HashMap::new();
    for n in 0..200u32 {
        let stream = parcel(n % 17);
        let event = failed_attempt(n);
        let out = writer
            .append(&stream, ExpectedVersion::Any, vec![event.clone()])
            .await
            .expect("append");
        acked.insert(event.event_id, (stream, out.stream_version, event));
    }

    // One writer alone: each of its records follows only its own, so the
    // replica took them from Kafka's acknowledgements, not read back.
    let from_acks = writer.taken_from_acknowledgements();
    assert!(
        from_acks > 0,
        "no record of a lone writer was taken from its acknowledgement"
    );
    eprintln!("{from_acks} of 200 records taken from their acknowledgements");
    assert_eq!(writer.mismatched_acknowledgements(), 0);

    // A second process, with an empty replica, builds it from Kafka alone.
    let reader = kafka.process("reader").await;
    assert_eq!(reader.head().await.expect("head"), Position(200));
    for n in 0..17 {
        let stream = parcel(n);
        let mine = writer.read_stream(&stream, 0, 1000).await.expect("read");
        let theirs = reader.read_stream(&stream, 0, 1000).await.expect("read");
        assert_eq!(mine.len(), theirs.len(), "{stream}");
        for (a, b) in mine.iter().zip(&theirs) {
            assert_eq!(a.stream_version, b.stream_version);
            assert_eq!(a.event, b.event, "the same event, envelope and payload");
            let (s, v, e) = &acked[&b.event.event_id];
            assert_eq!((s, *v >= b.stream_version), (&stream, true));
            assert_eq!(e, &b.event);
        }
    }
    // What the reader wrote, the writer reads: one log, two replicas.
    let out = reader
        .append(
            &parcel(99),
            ExpectedVersion::NO_STREAM,
            vec![failed_attempt(1)],
        )
        .await
        .expect("append from the second process");
    assert_eq!(out.stream_version, 1);
    // A read sees every append acknowledged before it, in any process.
    assert_eq!(
        writer
            .read_stream(&parcel(99), 0, 10)
            .await
            .expect("read")
            .len(),
        1,
        "the writer's replica saw the reader's event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_process_stops_replicating_and_starts_again_at_once_where_it_stopped() {
    let kafka = Kafka::new();
    let first = kafka.process("p").await;
    for n in 0..50u32 {
        first
            .append(
                &parcel(n % 7),
                ExpectedVersion::Any,
                vec![failed_attempt(n)],
            )
            .await
            .expect("append");
    }
    first.close().await.expect("close");
    let refused = first
        .append(&parcel(0), ExpectedVersion::Any, vec![failed_attempt(99)])
        .await;
    assert!(
        refused.is_err(),
        "a closed log appends nothing: {refused:?}"
    );
    // Its replica is free at once (no wait for a lock), holds the 50, and
    // the process goes on from there.
    let again = KafkaLog::open(kafka.options("p"))
        .await
        .expect("reopen at once");
    assert_eq!(again.head().await.expect("head"), Position(50));
    let out = again
        .append(&parcel(0), ExpectedVersion::Any, vec![failed_attempt(50)])
        .await
        .expect("append after the restart");
    assert_eq!(out.stream_version, 9, "parcel 0 had 8 events");
    assert_eq!(again.head().await.expect("head"), Position(51));
    drop(first);
    again.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_after_its_caller_went_away_mid_append_is_answered_and_stored_once() {
    // A handheld's connection drops while its events are on their way to
    // Kafka: the server drops the append's future after the records were
    // sent, before they were read back. The handheld sends them again.
    let kafka = Kafka::new();
    let log = kafka.process("p").await;
    let stream = parcel(1);
    let in_flight = |log: &KafkaLog| {
        log.inner
            .in_flight
            .lock()
            .expect("in flight")
            .contains_key(&stream)
    };
    let mut dropped = None;
    for n in 0..20u32 {
        let event = failed_attempt(n);
        let append = log.append(&stream, ExpectedVersion::Any, vec![event.clone()]);
        tokio::pin!(append);
        let sent = loop {
            tokio::select! {
                biased;
                answered = &mut append => {
                    answered.expect("append");
                    break false;
                }
                _ = tokio::time::sleep(Duration::from_micros(200)) => {
                    if in_flight(&log) {
                        break true;
                    }
                }
            }
        };
        if sent {
            dropped = Some(event);
            break;
        }
    }
    let event = dropped.expect("an append caught on its way back in 20 tries");
    assert!(!in_flight(&log), "a dropped append is no longer in flight");
    let resent = tokio::time::timeout(
        Duration::from_secs(20),
        log.append(&stream, ExpectedVersion::Any, vec![event.clone()]),
    )
    .await
    .expect("the resend is answered, not left waiting for the dropped append")
    .expect("the resend");
    assert_eq!(resent.acks.len(), 1);
    let stored = log.read_stream(&stream, 0, 100).await.expect("read");
    assert_eq!(
        stored
            .iter()
            .filter(|e| e.event.event_id == event.event_id)
            .count(),
        1,
        "stored once"
    );
    assert_eq!(resent.stream_version, stored.len() as u64);
}

/// An append is one record, a `threshold.v1.LogAppend` of its events, that
/// a plain Kafka consumer and protobuf decoder read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_is_one_record_that_any_client_reads() {
    let kafka = Kafka::new();
    let log = kafka.process("writer").await;
    let stream = parcel(7);
    let events = vec![failed_attempt(1), failed_attempt(2), failed_attempt(3)];
    log.append(&stream, ExpectedVersion::Any, events.clone())
        .await
        .expect("append");
    let next = failed_attempt(4);
    log.append(&stream, ExpectedVersion::Exactly(3), vec![next.clone()])
        .await
        .expect("append");

    // A plain Kafka consumer and protobuf decoder, as another tool would
    // run them: the first record holds the first append whole, the second
    // the next.
    let consumer =
        kafka.plain_consumer("partner", &kafka.options("writer").topic(Category::Parcel));
    let mut appends = Vec::new();
    for _ in 0..2 {
        let message = next_record(&consumer).await;
        assert_eq!(message.key(), Some(stream.to_string().as_bytes()));
        assert!(message.headers().is_none(), "no headers");
        assert_eq!(
            message.partition() as u32,
            super::record::partition(&stream, 3),
            "the partition Kafka's default partitioner picks for the key"
        );
        appends.push(
            <threshold_domain::pb::LogAppend as prost::Message>::decode(
                message.payload().expect("a value"),
            )
            .expect("a threshold.v1.LogAppend"),
        );
    }
    let first = &appends[0].events;
    assert_eq!(first.len(), 3, "one record for the append of three");
    let mut after = String::new();
    for (n, (record, event)) in first.iter().zip(&events).enumerate() {
        assert_eq!(record.event_id, event.event_id.to_string());
        assert_eq!(record.stream_version, n as u64 + 1);
        assert_eq!(record.after_id, after, "each follows the one before");
        assert_eq!(record.source, "/threshold/writer");
        assert_eq!(record.event_type, "parcel.attempt_failed");
        assert_eq!(record.payload, event.payload.to_vec());
        assert_eq!(
            record.traceparent,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        after = record.event_id.clone();
    }
    let second = &appends[1].events;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].event_id, next.event_id.to_string());
    assert_eq!((second[0].stream_version, &second[0].after_id), (4, &after));
}

/// An append larger than a record may be goes as several, in order, each
/// under the bound, and reads back whole in every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_append_goes_as_records_of_bounded_size() {
    let kafka = Kafka::new();
    let log = kafka.process("writer").await;
    let stream = parcel(8);
    let bytes = super::record::APPEND_RECORD_BYTES * 2 / 5;
    let events: Vec<NewEvent> = (0..5u32)
        .map(|n| NewEvent {
            payload: vec![n as u8; bytes].into(),
            ..failed_attempt(n)
        })
        .collect();
    let out = log
        .append(&stream, ExpectedVersion::Exactly(0), events.clone())
        .await
        .expect("append");
    assert_eq!(out.stream_version, 5);

    let consumer = kafka.plain_consumer("look", &kafka.options("writer").topic(Category::Parcel));
    let mut per_record = Vec::new();
    while per_record.iter().sum::<usize>() < 5 {
        let message = next_record(&consumer).await;
        let value = message.payload().expect("a value");
        assert!(value.len() < 2 * super::record::APPEND_RECORD_BYTES);
        let append = <threshold_domain::pb::LogAppend as prost::Message>::decode(value)
            .expect("a threshold.v1.LogAppend");
        per_record.push(append.events.len());
    }
    assert_eq!(per_record, vec![2, 2, 1]);

    let other = kafka.process("reader").await;
    for replica in [&log, &other] {
        let read = replica.read_stream(&stream, 0, 10).await.expect("read");
        let read: Vec<_> = read.into_iter().map(|e| e.event).collect();
        assert_eq!(read, events);
    }
}

/// A topic written in the CloudEvents layout of before (the payload as the
/// value, the envelope as `ce_*` headers) reads on: its records go into
/// every replica, and a stream goes on after them in `LogRecord`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_written_in_the_cloudevents_layout_reads_on() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let kafka = Kafka::new();
    let a = kafka.process("a").await;
    let stream = parcel(5);
    let before = failed_attempt(1);
    let headers = super::record::kafka_headers(&super::record::headers(
        &stream,
        1,
        None,
        &before,
        "/threshold/before",
    ));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .expect("producer");
    let key = stream.to_string();
    producer
        .send(
            FutureRecord::to(&kafka.options("a").topic(Category::Parcel))
                .partition(super::record::partition(&stream, 3) as i32)
                .key(&key)
                .payload(before.payload.as_ref())
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .expect("acknowledged");

    // A read sees what Kafka acknowledged before it; the stream goes on.
    let read = a.read_stream(&stream, 0, 10).await.expect("read");
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].event, before);
    let after = failed_attempt(2);
    let out = a
        .append(&stream, ExpectedVersion::Exactly(1), vec![after.clone()])
        .await
        .expect("the next version, after the record of before");
    assert_eq!(out.stream_version, 2);

    // A new replica takes both layouts from Kafka alone.
    let b = kafka.process("b").await;
    let theirs = b.read_stream(&stream, 0, 10).await.expect("read");
    let events: Vec<_> = theirs
        .iter()
        .map(|e| (e.stream_version, &e.event))
        .collect();
    assert_eq!(events, vec![(1, &before), (2, &after)]);
    let mine = a.read_stream(&stream, 0, 10).await.expect("read");
    let events_of_a: Vec<_> = mine.iter().map(|e| (e.stream_version, &e.event)).collect();
    assert_eq!(events_of_a, events, "both replicas hold the same events");
}

/// The first steps of upgrades: processes writing the CloudEvents layout,
/// `LogRecord`s and `LogAppend`s share the topics, decide on each other's
/// records and hold the same log; a replica built afterwards too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_writing_any_layout_share_one_log() {
    let kafka = Kafka::new();
    let open = |name: &str, layout: super::Layout| {
        let mut options = kafka.options(name);
        options.layout = layout;
        KafkaLog::open(options)
    };
    let cloudevents = open("cloudevents", super::Layout::CloudEvents)
        .await
        .expect("open");
    let logrecord = open("logrecord", super::Layout::LogRecord)
        .await
        .expect("open");
    let append = kafka.process("append").await;
    let writers = [&cloudevents, &logrecord, &append];
    let mut sent = Vec::new();
    for n in 0..18u32 {
        let stream = parcel(n % 3);
        // Two events an append: one record in the append layout, two in
        // the others.
        let events = vec![failed_attempt(2 * n), failed_attempt(2 * n + 1)];
        writers[(n / 3 % 3) as usize]
            .append(&stream, ExpectedVersion::Any, events.clone())
            .await
            .expect("append");
        sent.extend(events.into_iter().map(|e| (stream.clone(), e)));
    }
    // A conditional append on another layout's head is decided right, also
    // by a process whose replica may not hold that head yet: it catches up
    // before it calls the expected version a conflict.
    let head = append.read_stream(&parcel(0), 0, 100).await.expect("read");
    let next = failed_attempt(99);
    let out = cloudevents
        .append(
            &parcel(0),
            ExpectedVersion::Exactly(head.len() as u64),
            vec![next.clone()],
        )
        .await
        .expect("the next version");
    assert_eq!(out.stream_version, head.len() as u64 + 1);
    for stale_writer in [&append, &logrecord] {
        let stale = stale_writer
            .append(
                &parcel(0),
                ExpectedVersion::Exactly(head.len() as u64),
                vec![failed_attempt(100), failed_attempt(101)],
            )
            .await;
        assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");
    }

    // Every layout is on the topic, as each process wrote them: 12 records
    // each from the processes writing one event a record, 6 from the one
    // writing an append a record, and the one after (a stale append may
    // have been sent and lost, or refused before it was sent).
    let consumer = kafka.plain_consumer("look", &kafka.options("append").topic(Category::Parcel));
    let mut layouts = HashMap::new();
    for _ in 0..31 {
        let m = next_record(&consumer).await;
        let layout = if m.headers().is_some() {
            "cloudevents"
        } else if super::record::from_message(&m).expect("an event").len() == 2 {
            "append"
        } else {
            "logrecord or an append of one"
        };
        *layouts.entry(layout).or_insert(0) += 1;
    }
    assert_eq!(layouts.len(), 3, "every layout: {layouts:?}");

    let later = kafka.process("later").await;
    for n in 0..3 {
        let stream = parcel(n);
        let of = |events: Vec<crate::RecordedEvent>| -> Vec<_> {
            events
                .into_iter()
                .map(|e| (e.stream_version, e.event))
                .collect()
        };
        let a = of(cloudevents
            .read_stream(&stream, 0, 100)
            .await
            .expect("read"));
        let expected: Vec<_> = sent
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, e)| e.clone())
            .chain((n == 0).then(|| next.clone()))
            .collect();
        let ids = |v: &[(u64, NewEvent)]| v.iter().map(|(_, e)| e.event_id).collect::<Vec<_>>();
        assert_eq!(
            ids(&a),
            expected.iter().map(|e| e.event_id).collect::<Vec<_>>(),
            "{stream}"
        );
        for other in [&logrecord, &append, &later] {
            let b = of(other.read_stream(&stream, 0, 100).await.expect("read"));
            assert_eq!(a, b, "{stream}");
        }
    }
}

/// An expected version past what a process's replica holds is another
/// process's append on its way, or a conflict: the process catches up
/// before it says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_version_past_the_replica_is_decided_once_it_caught_up() {
    let kafka = Kafka::new();
    let a = kafka.process("a").await;
    let b = kafka.process("b").await;
    let stream = parcel(4);
    for round in 0..5u32 {
        // `b` appends right after `a`'s acknowledgement, before its
        // replica's fetch (up to 100 ms on the test broker) brought it.
        let at = u64::from(round) * 2;
        a.append(
            &stream,
            ExpectedVersion::Exactly(at),
            vec![failed_attempt(4 * round)],
        )
        .await
        .expect("append");
        let out = b
            .append(
                &stream,
                ExpectedVersion::Exactly(at + 1),
                vec![failed_attempt(4 * round + 1)],
            )
            .await
            .expect("the version a wrote is the head once b caught up");
        assert_eq!(out.stream_version, at + 2);
    }
    let far = b
        .append(
            &stream,
            ExpectedVersion::Exactly(100),
            vec![failed_attempt(99)],
        )
        .await;
    assert!(
        matches!(
            far,
            Err(Error::Conflict {
                expected: 100,
                actual: 10,
                ..
            })
        ),
        "{far:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_an_error_naming_kafka() {
    // Nothing listens on port 1: the open fails, it does not hang.
    let dir = tempfile::tempdir().expect("temp dir");
    let options = KafkaOptions::new("127.0.0.1:1", dir.path().join("replica"), "lonely");
    let err = tokio::time::timeout(Duration::from_secs(60), KafkaLog::open(options))
        .await
        .expect("an answer within 60 s")
        .expect_err("no broker");
    assert!(matches!(err, Error::Kafka { .. }), "{err}");
}

#[test]
fn kafka_addresses_are_checked_with_the_fault_named() {
    assert_eq!(
        brokers_from_url("kafka://127.0.0.1:9092").unwrap(),
        "127.0.0.1:9092"
    );
    assert_eq!(
        brokers_from_url("kafka://a:9092,b:9093/").unwrap(),
        "a:9092,b:9093"
    );
    for (url, says) in [
        ("127.0.0.1:9092", "does not start with kafka://"),
        ("kafka://", "names no broker"),
        ("kafka://host", "has no :port"),
        ("kafka://host:port", "is not host:port"),
        ("kafka://a:1,:2", "is not host:port"),
    ] {
        let err = brokers_from_url(url).unwrap_err().to_string();
        assert!(err.contains(says) && err.contains("--log"), "{url}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_on_one_stream_never_both_succeed() {
    // Two processes decide on the same stream at the same moment, each from
    // its own replica, each with the version it read: a grant's unlock
    // against its revoke, say. Kafka's order picks one; the other is told.
    let kafka = Kafka::new();
    let a = kafka.process("a").await;
    let b = kafka.process("b").await;
    let stream = parcel(1);
    let mut conflicts = 0u64;
    for round in 0..40u32 {
        // Both start from the same version: one more per round.
        let target = u64::from(round);
        for log in [&a, &b] {
            let read = log.read_stream(&stream, 0, 1000).await.expect("read");
            assert_eq!(
                read.len() as u64,
                target,
                "round {round}: a replica fell behind"
            );
        }
        let (ra, rb) = tokio::join!(
            a.append(
                &stream,
                ExpectedVersion::Exactly(target),
                vec![failed_attempt(round)]
            ),
            b.append(
                &stream,
                ExpectedVersion::Exactly(target),
                vec![failed_attempt(round)]
            ),
        );
        let won = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: exactly one wins: {ra:?} / {rb:?}");
        for r in [ra, rb] {
            match r {
                Ok(out) => assert_eq!(out.stream_version, target + 1),
                Err(Error::Conflict { actual, .. }) => {
                    assert_eq!(actual, target + 1);
                    conflicts += 1;
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
    }
    assert_eq!(conflicts, 40);
    // Both replicas hold the same stream: the winners, gap-free.
    let mine = a.read_stream(&stream, 0, 1000).await.expect("read");
    let theirs = b.read_stream(&stream, 0, 1000).await.expect("read");
    assert_eq!(theirs.len(), mine.len(), "b's replica fell behind");
    assert_eq!(mine.len(), 40);
    for (i, (x, y)) in mine.iter().zip(&theirs).enumerate() {
        assert_eq!(x.stream_version, i as u64 + 1);
        assert_eq!((x.stream_version, &x.event), (y.stream_version, &y.event));
    }
    // A third process, from Kafka alone, agrees.
    let c = kafka.process("c").await;
    let third = c.read_stream(&stream, 0, 1000).await.expect("read");
    assert_eq!(
        third.iter().map(|e| e.event.event_id).collect::<Vec<_>>(),
        mine.iter().map(|e| e.event.event_id).collect::<Vec<_>>()
    ); // What each took from acknowledgements, its consumer read the same.
    for log in [&a, &b] {
        assert_eq!(log.mismatched_acknowledgements(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_without_an_expected_version_from_two_processes_all_land() {
    let kafka = Kafka::new();
    let a = kafka.process("a").await;
    let b = kafka.process("b").await;
    let stream = parcel(2);
    let mut tasks = Vec::new();
    for n in 0..60u32 {
        let log = if n % 2 == 0 { a.clone() } else { b.clone() };
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            log.append(&stream, ExpectedVersion::Any, vec![failed_attempt(n)])
                .await
                .expect("an append without an expected version lands")
        }));
    }
    let mut versions = std::collections::BTreeSet::new();
    for t in tasks {
        let out = t.await.expect("task");
        match out.acks[0] {
            crate::Ack::Appended { version, .. } => assert!(versions.insert(version)),
            ack => panic!("a first append answered {ack:?}"),
        }
    }
    let stored = a.read_stream(&stream, 0, 1000).await.expect("read");
    assert_eq!(stored.len(), 60, "every event once");
    let ids: std::collections::HashSet<_> = stored.iter().map(|e| e.event.event_id).collect();
    assert_eq!(ids.len(), 60);
    assert_eq!(
        versions.into_iter().collect::<Vec<_>>(),
        (1..=60).collect::<Vec<u64>>(),
        "each append was told its own version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recent_read_holds_every_append_of_its_process_and_what_it_lacks_conflicts() {
    // Two processes take turns appending to one stream, each deciding on a
    // recent read (no round trip to the broker), as a handheld's first read
    // does: what a recent read lacks of the other process's appends makes
    // the append conflict, and a read from the log puts it right.
    let kafka = Kafka::new();
    let a = kafka.process("a").await;
    let b = kafka.process("b").await;
    let stream = parcel(3);
    let mut behind = 0;
    for round in 0..30u32 {
        let writer = if round % 2 == 0 { &a } else { &b };
        let mut read = writer
            .read_stream_recent(&stream, 0, 1000)
            .await
            .expect("recent read");
        let mut stored = false;
        for _ in 0..2 {
            match writer
                .append(
                    &stream,
                    ExpectedVersion::Exactly(read.len() as u64),
                    vec![failed_attempt(round)],
                )
                .await
            {
                Ok(out) => {
                    assert_eq!(out.stream_version, u64::from(round) + 1);
                    stored = true;
                    break;
                }
                Err(Error::Conflict { .. }) => {
                    behind += 1;
                    read = writer.read_stream(&stream, 0, 1000).await.expect("read");
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert!(stored, "round {round}: stored after reading from the log");
        let own = writer
            .read_stream_recent(&stream, 0, 1000)
            .await
            .expect("recent read");
        assert_eq!(
            own.len() as u64,
            u64::from(round) + 1,
            "round {round}: a recent read holds what its process acknowledged"
        );
    }
    println!("{behind} of 30 recent reads lacked the other process's last append");
    let all = a.read_stream(&stream, 0, 1000).await.expect("read");
    assert_eq!(
        all.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<u64>>()
    );
}

/// A recent head (a read model's lag gauge) is the replica's: it holds
/// every append its process acknowledged and asks the broker nothing,
/// where a head asks where every partition ends; another process's
/// appends reach it as the replica takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recent_head_asks_the_broker_nothing_and_holds_its_process_appends() {
    let kafka = Kafka::new();
    let a = kafka.process("a").await;
    let b = kafka.process("b").await;
    let watermarks = |log: &KafkaLog| {
        log.stage_timings()
            .into_iter()
            .find(|t| t.stage == super::Stage::Watermark)
            .map_or(0, |t| t.count)
    };
    let out = a
        .append(
            &parcel(7),
            ExpectedVersion::Any,
            vec![failed_attempt(1), failed_attempt(2)],
        )
        .await
        .expect("append");
    let last = out.acks.last().expect("two acks").position();
    watermarks(&a);
    let recent = a.head_recent().await.expect("recent head");
    assert!(recent >= last, "{recent:?} holds the append at {last:?}");
    assert_eq!(watermarks(&a), 0, "a recent head asks the broker nothing");
    let head = a.head().await.expect("head");
    assert_eq!(watermarks(&a), 1, "a head asks where the partitions end");
    assert!(head >= recent);

    // Another process's append: the recent head gets it once the replica
    // has read it back, and a head waits for that.
    b.append(&parcel(8), ExpectedVersion::Any, vec![failed_attempt(3)])
        .await
        .expect("append in b");
    let head = a.head().await.expect("head");
    assert_eq!(a.head_recent().await.expect("recent head"), head);
    assert_eq!(
        a.read_all(recent, 10).await.expect("read all").len(),
        1,
        "the other process's event is in the replica after the head"
    );
}

/// Two processes' tables of one compacted topic: each holds what the other
/// wrote, later writes win, a tombstone removes the key everywhere, and a
/// table opened afterwards reads the same state from the topic alone.
#[tokio::test]
async fn a_table_is_the_same_in_every_process_and_a_tombstone_removes_a_key() {
    use super::KafkaTable;
    let kafka = Kafka::new();
    let topic = format!("{}.table", kafka.prefix);
    let a = KafkaTable::open(&kafka.options("a"), &topic)
        .await
        .expect("open a");
    let b = KafkaTable::open(&kafka.options("b"), &topic)
        .await
        .expect("open b");
    assert!(a.state().entries.is_empty());

    a.put("k1", Some(b"one")).await.expect("put");
    // The writer holds its write when put returns.
    let value = |t: &KafkaTable, k: &str| t.state().entries.get(k).map(|s| s.value.clone());
    assert_eq!(value(&a, "k1").as_deref(), Some(&b"one"[..]));
    let two = b.put("k2", Some(b"two")).await.expect("put");
    let uno = b.put("k1", Some(b"uno")).await.expect("put");
    assert!(uno > two, "offsets {two} then {uno}");
    // A caller that is not async waits on its own thread.
    let blocking = a.clone();
    tokio::task::spawn_blocking(move || blocking.put_blocking("k2", None))
        .await
        .expect("thread")
        .expect("remove");

    // The other process holds the same within a moment.
    for table in [&a, &b] {
        table.sync().await.expect("sync");
        let state = table.state();
        assert_eq!(state.entries.len(), 1, "{:?}", state.entries);
        // Each entry keeps the offset of the record that set it.
        assert_eq!(state.entries["k1"].offset, uno);
        assert_eq!(value(table, "k1").as_deref(), Some(&b"uno"[..]));
    }

    let c = KafkaTable::open(&kafka.options("c"), &topic)
        .await
        .expect("open c");
    assert_eq!(c.state().entries, a.state().entries);
    assert!(c.state().version >= 3, "{}", c.state().version);
}

/// A fetch wait set for every follower is the one an idle follower keeps:
/// a table fetches about once per wait, so the longer wait sends a small
/// fraction of the shorter one's requests (the test broker, like Kafka,
/// holds an idle fetch for its whole wait). Writes still reach both.
#[tokio::test]
async fn an_idle_table_fetches_once_per_the_wait_its_options_set() {
    use super::KafkaTable;
    let kafka = Kafka::new();
    let topic = format!("{}.table", kafka.prefix);
    let waiting = |name: &str, ms: u64| {
        let mut options = kafka.options(name);
        options.fetch_wait_ms = Some(ms);
        options
    };
    // The table's own default (5 ms) is overridden by the options' wait.
    let short = KafkaTable::open_with(&waiting("short", 20), &topic, 5)
        .await
        .expect("open short");
    let long = KafkaTable::open_with(&waiting("long", 1_000), &topic, 5)
        .await
        .expect("open long");
    let (short0, long0) = (short.fetch_requests(), long.fetch_requests());
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let (short1, long1) = (short.fetch_requests(), long.fetch_requests());
    let (short_sent, long_sent) = (short1 - short0, long1 - long0);
    println!("table idle 4.5 s: {short_sent} fetch requests at 20 ms, {long_sent} at 1 s");
    // 4.5 s, counted every second: ~3.5-4.5 s of fetches, ~175-225 at
    // 20 ms and ~4-6 at 1 s.
    assert!(short_sent >= 50, "20 ms: {short_sent} fetch requests");
    assert!(long_sent <= 10, "1 s: {long_sent} fetch requests");
    assert!(
        short_sent >= 10 * long_sent.max(1),
        "20 ms: {short_sent}, 1 s: {long_sent}"
    );

    long.put("k", Some(b"v")).await.expect("put");
    short.sync().await.expect("sync");
    assert_eq!(
        short.state().entries.get("k").map(|s| s.value.clone()),
        Some(b"v".to_vec())
    );
}

/// The fetch wait the options set is the replica's and every publisher's:
/// an idle process's consumers fetch about once per wait, so the longer
/// wait sends a small fraction of the shorter one's requests.
#[tokio::test]
async fn an_idle_replica_and_publisher_fetch_once_per_the_wait_its_options_set() {
    let kafka = Kafka::new();
    let open = |name: &str, ms: u64| {
        let mut options = kafka.options(name);
        options.fetch_wait_ms = Some(ms);
        KafkaLog::open(options)
    };
    let (short, long) = (
        open("short", 20).await.expect("open short"),
        open("long", 1_000).await.expect("open long"),
    );
    let publish = |log: &KafkaLog, name: &str| {
        let topic = format!("{}.out.{name}", kafka.prefix);
        log.publish(
            &format!("{}.{name}", kafka.prefix),
            Category::Parcel,
            move |_| Some(topic.clone()),
            &["AttemptFailed"],
            |e| Some((e.stream.to_string(), e.event.payload.to_vec())),
        )
        .expect("publish")
    };
    let publishers = [publish(&short, "short"), publish(&long, "long")];
    // Past the publishers' group joins, then 4.5 s idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (short0, long0) = (short.fetch_requests(), long.fetch_requests());
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let (short_sent, long_sent) = (
        short.fetch_requests() - short0,
        long.fetch_requests() - long0,
    );
    for p in publishers {
        p.abort();
    }
    println!(
        "replica and publisher idle 4.5 s: {short_sent} fetch requests at 20 ms, {long_sent} at 1 s"
    );
    // Two consumers each: ~350-450 requests at 20 ms, ~8 at 1 s.
    assert!(short_sent >= 100, "20 ms: {short_sent} fetch requests");
    assert!(long_sent <= 20, "1 s: {long_sent} fetch requests");
    assert!(
        short_sent >= 10 * long_sent.max(1),
        "20 ms: {short_sent}, 1 s: {long_sent}"
    );
}

/// A fetch wait no client could use is refused before anything connects,
/// naming the setting and its range.
#[tokio::test]
async fn a_fetch_wait_out_of_range_is_refused_before_connecting() {
    use super::KafkaTable;
    for ms in [0, 10_001] {
        let mut options = KafkaOptions::new("127.0.0.1:1", "unused", "p");
        options.fetch_wait_ms = Some(ms);
        let refused = |e: Error| {
            let text = e.to_string();
            assert!(
                text.contains("fetch wait") && text.contains("1..=10000"),
                "{text}"
            );
        };
        refused(KafkaLog::open(options.clone()).await.expect_err("log"));
        refused(KafkaTable::open(&options, "any").await.expect_err("table"));
    }
}

/// Each partner's outcomes go to a topic of its own, made as the publisher
/// meets the partner, so a partner's client may be let read its own topic
/// only; a published record carries neither the causation and correlation
/// ids (a handheld's event and device) nor `tracestate`, and keeps the
/// trace; an event of no partner is published nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_partner_reads_only_its_own_outcomes_without_the_carriers_ids() {
    let kafka = Kafka::new();
    let log = kafka.process("publisher").await;
    let options = log.options().clone();
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    // With a trace state, which the carrier's and not a partner's.
    let event = |n| NewEvent {
        tracestate: Some("congo=t61rcWkgMzE".into()),
        ..failed_attempt(n)
    };
    for n in 0..30u32 {
        let (partner, event) = match n % 3 {
            0 => ("nordshop", event(n).tenant("nordshop")),
            1 => ("fjall:gear", event(n).tenant("fjall:gear")),
            _ => (
                "",
                NewEvent {
                    tenant: None,
                    ..failed_attempt(n)
                },
            ),
        };
        log.append(&parcel(n), ExpectedVersion::Any, vec![event.clone()])
            .await
            .expect("append");
        sent.entry(partner.to_owned())
            .or_default()
            .push(event.event_id.to_string());
    }
    let topics = options.clone();
    let publisher = log
        .publish(
            &format!("{}.outcome-publisher", kafka.prefix),
            Category::Parcel,
            move |e| Some(topics.outcome_topic_of(e.event.tenant.as_deref()?)),
            &["parcel.attempt_failed"],
            |e| Some(("outcome.attempt_failed".into(), e.event.payload.to_vec())),
        )
        .expect("publish");
    for partner in ["nordshop", "fjall:gear"] {
        let topic = options.outcome_topic_of(partner);
        let mut got = Vec::new();
        // Until the publisher has made the topic, a reader is told it is
        // unknown.
        for round in 0..15 {
            match super::read_published(
                &kafka.brokers,
                &format!("{}.{partner}-{round}", kafka.prefix),
                &topic,
                Duration::from_secs(2),
            )
            .await
            {
                Ok(read) if read.len() >= 10 => {
                    got = read;
                    break;
                }
                Ok(read) => got = read,
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        let mut ids: Vec<&str> = got.iter().map(|r| r.id()).collect();
        ids.sort_unstable();
        let mut own = sent[partner].clone();
        own.sort_unstable();
        assert_eq!(ids, own, "{partner}: its own and no other's");
        for r in &got {
            assert_eq!(r.topic, topic);
            assert_eq!(
                r.headers.get("ce_tenant").map(String::as_str),
                Some(partner)
            );
            for gone in ["ce_causationid", "ce_correlationid", "tracestate"] {
                assert!(!r.headers.contains_key(gone), "{gone} in {:?}", r.headers);
            }
            assert!(r.headers["traceparent"].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736"));
        }
    }
    // Every topic under the outcomes' name: the two partners', nothing of
    // the events without one.
    let all = super::read_published(
        &kafka.brokers,
        &format!("{}.carrier", kafka.prefix),
        &format!("^{}\\.outcome\\..*", kafka.prefix.replace('.', "\\.")),
        Duration::from_secs(3),
    )
    .await
    .expect("read all");
    let mut topics: Vec<&str> = all.iter().map(|r| r.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    assert_eq!(
        topics,
        [
            format!("{}.outcome.fjall_3agear", kafka.prefix),
            format!("{}.outcome.nordshop", kafka.prefix),
        ]
    );
    assert_eq!(all.len(), 20, "none of the 10 events of no partner");
    publisher.abort();
}
