//! The plain-client peer of the Kafka backend: what librdkafka alone moves
//! through the broker at `THRESHOLD_TEST_KAFKA`, the figure `make
//! bench-kafka` sets Threshold's rate against.
//!
//! An idempotent `acks=all` producer sends `PEER_RECORDS` records of ~200
//! bytes (default 1,000,000), keyed over 12 partitions of a fresh topic,
//! while a consumer reads every record back; the rate is records
//! acknowledged *and* read back per second, from the first send to the
//! later of the last acknowledgement and the last record read. First
//! `PEER_WARMUP` records (default 20,000) are sent, acknowledged and read
//! untimed: the producer's start (metadata, its idempotent producer id)
//! and the consumer's joining its group, ~0.4 s here, are not a rate, as
//! Threshold's rate is taken after its server and load have started.
//!
//! The consumer's fetch waits [`FETCH_WAIT_MS`] at most. The test broker
//! (tansu 0.6) waits the whole of a fetch's wait every time, even with
//! records to give, so at librdkafka's default (500 ms) the peer's rate was
//! its fetch wait, not the broker: 84,000–87,000 records/s over a million
//! after the warm-up, where the same client reading with a 10 ms wait moves
//! 410,000–493,000 (`deploy/README.md`, "Then: the peer held back by its
//! own fetch wait"). `PEER_FETCH_WAIT_MS` sets it.
//!
//! Then the latency floor at a steady rate: the same producer sends
//! `PEER_RATE` records/s (default 2,000) for `PEER_SECONDS` (default 10) to
//! a second topic, with the producer's linger and the consumer's fetch wait
//! Threshold's log uses ([`LINGER_MS`], [`REPLICA_FETCH_WAIT_MS`]), and a
//! consumer reads them back;
//! each record's acknowledgement latency and its send-to-read latency are
//! measured. An append to Threshold's Kafka log is answered after both (the
//! broker's acknowledgement, then its own replica reading it back), so the
//! second is the floor under its acknowledgement at that rate.
//!
//! With `PEER_TANSU_PID` (the broker's pid) and `PEER_HZ` (clock ticks a
//! second), the first phase's CPU is measured too: this process's and the
//! broker's, per record acknowledged and read back, the cost the machine
//! pays for one record of a plain client.
//!
//! Writes `target/bench/kafka_peer.json` (or `PEER_OUT`).
//!
//! What a record costs by its shape: `PEER_BYTES` sets the value's size
//! (default 200) and `PEER_HEADERS=N` adds N headers named as CloudEvents
//! attributes with a 36-byte value each (the layout of Threshold's records
//! before `threshold.v1.LogRecord`: fourteen). `make bench-kafka` runs the
//! default.
//!
//! `PEER_COUNT=PREFIX` only counts: for each topic named `PREFIX.*`, the
//! records its partitions hold (the sum of their high watermarks), one
//! line `records TOPIC N` each. `make bench-kafka` counts Threshold's
//! topics with it, so what Threshold wrote per event is measured with the
//! same client.
//!
//! `cargo bench -p threshold-log --features kafka --bench kafka_peer`, with
//! a broker (`scripts/test-broker.sh run …`).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use threshold_log::kafka::{LINGER_MS, REPLICA_FETCH_WAIT_MS};

const PARTITIONS: i32 = 12;
/// The longest the peer's consumer waits at the broker for records, in
/// milliseconds: short enough that its reading back does not bound its rate
/// on the test broker (20 ms and less moved the same within the noise).
const FETCH_WAIT_MS: u64 = 10;
const RECORD_BYTES: usize = 200;
/// Each `PEER_HEADERS` header's value: as long as an event id.
const HEADER_VALUE: &[u8] = b"019a0c1e-7d2b-7c4e-9f1a-3b5d6e7f8a9b";

/// The names `PEER_HEADERS` takes, in turn.
const HEADER_NAMES: [&str; 14] = [
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_subject",
    "content-type",
    "ce_streamversion",
    "ce_schemaversion",
    "ce_afterid",
    "ce_country",
    "ce_causationid",
    "ce_correlationid",
    "traceparent",
];

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let brokers = std::env::var("THRESHOLD_TEST_KAFKA")
        .expect("THRESHOLD_TEST_KAFKA=host:port names the broker (scripts/test-broker.sh run)");
    if let Ok(prefix) = std::env::var("PEER_COUNT") {
        for (topic, records) in tokio::task::block_in_place(|| count(&brokers, &prefix)) {
            println!("records {topic} {records}");
        }
        return;
    }
    let hz = env_or("PEER_HZ", 100) as f64;
    let tansu: Option<u32> = std::env::var("PEER_TANSU_PID")
        .ok()
        .and_then(|p| p.parse().ok());
    let records = env_or("PEER_RECORDS", 1_000_000) as usize;
    let warmup = env_or("PEER_WARMUP", 20_000) as usize;
    let fetch_wait = env_or("PEER_FETCH_WAIT_MS", FETCH_WAIT_MS);
    let record_bytes = env_or("PEER_BYTES", RECORD_BYTES as u64) as usize;
    let header_count = env_or("PEER_HEADERS", 0) as usize;
    let topic = format!("peer.{}", std::process::id());

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin client");
    create_topic(&admin, &topic).await;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{topic}.reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait.to_string())
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let producer: FutureProducer = producer(&brokers).create().expect("producer");

    let payload = vec![b'x'; record_bytes];
    let (warmed, warm) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let (mut read, mut warmed) = (0usize, Some(warmed));
        while read < warmup + records {
            match tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await {
                Ok(Ok(_)) => read += 1,
                Ok(Err(e)) => panic!("reading: {e}"),
                Err(_) => panic!("no record for 60 s after {read} of {}", warmup + records),
            }
            if read == warmup {
                let _ = warmed.take().map(|w| w.send(()));
            }
        }
        Instant::now()
    });
    let send = async |range: std::ops::Range<usize>| {
        let mut deliveries = Vec::with_capacity(range.len());
        for i in range {
            let key = format!("parcel/SE-{:08}", i % 10_000);
            let mut record = FutureRecord::to(&topic).key(&key).payload(&payload);
            if header_count > 0 {
                let mut headers = OwnedHeaders::new_with_capacity(header_count);
                for name in HEADER_NAMES.iter().cycle().take(header_count) {
                    headers = headers.insert(Header {
                        key: name,
                        value: Some(HEADER_VALUE),
                    });
                }
                record = record.headers(headers);
            }
            loop {
                match producer.send_result(record) {
                    Ok(d) => {
                        deliveries.push(d);
                        break;
                    }
                    Err((_, back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
        deliveries
    };
    let acknowledged = |deliveries: Vec<rdkafka::producer::DeliveryFuture>| async move {
        for d in deliveries {
            d.await.expect("producer closed").expect("acknowledged");
        }
    };
    // Untimed: the first records, acknowledged and read back.
    acknowledged(send(0..warmup).await).await;
    if warmup > 0 {
        warm.await.expect("reader");
    }
    let cpu_before = (
        cpu_seconds(None, hz),
        tansu.and_then(|t| cpu_seconds(Some(t), hz)),
    );
    let started = Instant::now();
    acknowledged(send(warmup..warmup + records).await).await;
    let acked = started.elapsed().as_secs_f64();
    let done = reader.await.expect("reader");
    let cpu_after = (
        cpu_seconds(None, hz),
        tansu.and_then(|t| cpu_seconds(Some(t), hz)),
    );
    let read_back = (done - started).as_secs_f64();
    let seconds = acked.max(read_back);
    let rate = records as f64 / seconds;
    println!(
        "peer: {records} records of {record_bytes} bytes and {header_count} headers over \
         {PARTITIONS} partitions, idempotent acks=all, after {warmup} untimed, fetch wait \
         {fetch_wait} ms: acknowledged in {acked:.2} s, read back in {read_back:.2} s: \
         {rate:.0} records/s"
    );
    // CPU per record, where both were measured: the client's, the broker's.
    let cpu = match (cpu_before, cpu_after) {
        ((Some(c0), Some(b0)), (Some(c1), Some(b1))) => {
            let per_record = |s: f64| 1e6 * s / records as f64;
            println!(
                "peer's CPU: the client {:.0}% of a core, the broker {:.0}%; per record the client \
                 {:.1} us, the broker {:.1} us",
                100.0 * (c1 - c0) / seconds,
                100.0 * (b1 - b0) / seconds,
                per_record(c1 - c0),
                per_record(b1 - b0)
            );
            serde_json::json!({
                "client_cores": (c1 - c0) / seconds,
                "broker_cores": (b1 - b0) / seconds,
                "client_us_per_record": per_record(c1 - c0),
                "broker_us_per_record": per_record(b1 - b0),
            })
        }
        _ => serde_json::Value::Null,
    };
    let rate_asked: u64 = env_or("PEER_RATE", 2_000);
    let open_seconds: u64 = env_or("PEER_SECONDS", 10);
    let open = open_loop(&admin, &brokers, &topic, rate_asked, open_seconds).await;
    println!(
        "peer at {rate_asked} records/s for {open_seconds} s (linger {LINGER_MS} ms, fetch wait {REPLICA_FETCH_WAIT_MS} ms): \
         acknowledged p50 {:.2} ms, p99 {:.2} ms; read back p50 {:.2} ms, p99 {:.2} ms",
        open.ack.0, open.ack.1, open.read_back.0, open.read_back.1
    );

    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned());
    let out_dir = std::path::Path::new(&target).join("bench");
    std::fs::create_dir_all(&out_dir).expect("bench dir");
    let json = serde_json::json!({
        "benchmark": "kafka_peer",
        "records": records,
        "record_bytes": record_bytes,
        "headers": header_count,
        "partitions": PARTITIONS,
        "acknowledged_seconds": acked,
        "read_back_seconds": read_back,
        "warmup_records": warmup,
        "fetch_wait_ms": fetch_wait,
        "records_per_s": rate,
        "cpu": cpu,
        "open_loop": {
            "records_per_s": rate_asked,
            "seconds": open_seconds,
            "records": open.records,
            "ack_ms": { "p50": open.ack.0, "p99": open.ack.1 },
            "read_back_ms": { "p50": open.read_back.0, "p99": open.read_back.1 },
        },
    });
    let path = std::env::var("PEER_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| out_dir.join("kafka_peer.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write json");
    println!("wrote {}", path.display());
}

/// The peer's topic: `PARTITIONS` partitions, replication factor 1.
async fn create_topic(admin: &AdminClient<DefaultClientContext>, topic: &str) {
    admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");
}

/// The plain client's producer: idempotent, `acks=all`.
fn producer(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all");
    config
}

/// The CPU time process `pid` (this one when `None`) has used, in seconds:
/// `utime` and `stime` of `/proc/PID/stat`, at `hz` ticks a second.
fn cpu_seconds(pid: Option<u32>, hz: f64) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // The fields after the command's name (which may hold spaces), from the
    // third: `utime` and `stime` are the 14th and 15th.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / hz)
}

/// The records each topic named `prefix.*` holds: per topic, the sum of its
/// partitions' high watermarks.
fn count(brokers: &str, prefix: &str) -> Vec<(String, i64)> {
    use rdkafka::consumer::BaseConsumer;
    let timeout = Duration::from_secs(15);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    let metadata = consumer.fetch_metadata(None, timeout).expect("metadata");
    let mut counts: Vec<(String, i64)> = metadata
        .topics()
        .iter()
        .filter(|t| {
            t.name()
                .strip_prefix(prefix)
                .is_some_and(|r| r.starts_with('.'))
        })
        .map(|t| {
            let records = t
                .partitions()
                .iter()
                .map(|p| {
                    let (_, high) = consumer
                        .fetch_watermarks(t.name(), p.id(), timeout)
                        .expect("watermarks");
                    high
                })
                .sum();
            (t.name().to_owned(), records)
        })
        .collect();
    counts.sort();
    counts
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Latencies at a steady rate: (p50, p99) in milliseconds.
struct OpenLoop {
    records: usize,
    ack: (f64, f64),
    read_back: (f64, f64),
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    (at(0.50), at(0.99))
}

/// Sends `rate` records/s for `seconds` to a fresh topic, each carrying the
/// instant it was sent, and times its acknowledgement and its reading back.
async fn open_loop(
    admin: &AdminClient<DefaultClientContext>,
    brokers: &str,
    topic: &str,
    rate: u64,
    seconds: u64,
) -> OpenLoop {
    let topic = format!("{topic}.open");
    create_topic(admin, &topic).await;
    let producer: FutureProducer = producer(brokers)
        .set("linger.ms", LINGER_MS)
        .create()
        .expect("producer");
    // Every partition assigned from the start, as Threshold's replica is.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}.reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", REPLICA_FETCH_WAIT_MS.to_string())
        .create()
        .expect("consumer");
    let mut all = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        all.add_partition_offset(&topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&all).expect("assign");
    let clock = Instant::now();
    let warm = 200usize;
    let total = warm + (rate * seconds) as usize;
    let reader = tokio::spawn(async move {
        let mut read_back = Vec::with_capacity(total);
        while read_back.len() < total {
            match tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await {
                Ok(Ok(m)) => {
                    let now = clock.elapsed().as_micros() as u64;
                    let p = m.payload().expect("a payload");
                    let sent = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
                    read_back.push((p[8] == 1, now.saturating_sub(sent) as f64 / 1000.0));
                }
                Ok(Err(e)) => panic!("reading: {e}"),
                Err(_) => panic!("no record for 60 s after {} of {total}", read_back.len()),
            }
        }
        read_back
    });
    let acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(total)));
    let mut sent = 0usize;
    let mut pending = Vec::with_capacity(total);
    // A warm-up (connections, metadata, the first fetches), then the rate.
    let mut started: Option<Instant> = None;
    while sent < total {
        let due = match started {
            None => warm,
            Some(at) => {
                warm + ((at.elapsed().as_secs_f64() * rate as f64) as usize).min(total - warm)
            }
        };
        while sent < due {
            let mut payload = vec![b'x'; RECORD_BYTES];
            let at = clock.elapsed().as_micros() as u64;
            payload[..8].copy_from_slice(&at.to_le_bytes());
            let timed = sent >= warm;
            payload[8] = u8::from(timed);
            let key = format!("parcel/SE-{:08}", sent % 10_000);
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("the producer's queue has room at this rate");
            let acks = std::sync::Arc::clone(&acks);
            pending.push(tokio::spawn(async move {
                delivery
                    .await
                    .expect("producer closed")
                    .expect("acknowledged");
                if timed {
                    let ms =
                        (clock.elapsed().as_micros() as u64).saturating_sub(at) as f64 / 1000.0;
                    acks.lock().expect("lock").push(ms);
                }
            }));
            sent += 1;
        }
        if started.is_none() {
            for p in pending.drain(..) {
                p.await.expect("warm-up");
            }
            started = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for p in pending {
        p.await.expect("delivery");
    }
    let read_back = reader.await.expect("reader");
    let acks = std::mem::take(&mut *acks.lock().expect("lock"));
    OpenLoop {
        records: acks.len(),
        ack: percentiles(acks),
        read_back: percentiles(
            read_back
                .into_iter()
                .filter_map(|(timed, ms)| timed.then_some(ms))
                .collect(),
        ),
    }
}
