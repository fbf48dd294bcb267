//! The plain-client peer of the Kafka backend: what librdkafka alone moves
//! through the broker at `THRESHOLD_TEST_KAFKA`, the figure `make
//! bench-kafka` sets Threshold's rate against.
//!
//! An idempotent `acks=all` producer sends `PEER_RECORDS` records of ~200
//! bytes (default 200,000), keyed over 12 partitions of a fresh topic, while
//! a consumer reads every record back; the rate is records acknowledged
//! *and* read back per second, from the first send to the last record read.
//! Writes `target/bench/kafka_peer.json` (or `PEER_OUT`).
//!
//! `cargo bench -p threshold-log --features kafka --bench kafka_peer`, with
//! a broker (`scripts/test-broker.sh run …`).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

const PARTITIONS: i32 = 12;
const RECORD_BYTES: usize = 200;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let brokers = std::env::var("THRESHOLD_TEST_KAFKA")
        .expect("THRESHOLD_TEST_KAFKA=host:port names the broker (scripts/test-broker.sh run)");
    let records: usize = std::env::var("PEER_RECORDS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(200_000);
    let topic = format!("peer.{}", std::process::id());

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin client");
    admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("create topic");

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{topic}.reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");

    let payload = vec![b'x'; RECORD_BYTES];
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut read = 0usize;
        while read < records {
            match tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await {
                Ok(Ok(_)) => read += 1,
                Ok(Err(e)) => panic!("reading: {e}"),
                Err(_) => panic!("no record for 60 s after {read} of {records}"),
            }
        }
        Instant::now()
    });
    let mut deliveries = Vec::with_capacity(records);
    for i in 0..records {
        let key = format!("parcel/SE-{:08}", i % 10_000);
        let mut record = FutureRecord::to(&topic).key(&key).payload(&payload);
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
    for d in deliveries {
        d.await.expect("producer closed").expect("acknowledged");
    }
    let acked = started.elapsed().as_secs_f64();
    let done = reader.await.expect("reader");
    let seconds = (done - started).as_secs_f64();
    let rate = records as f64 / seconds;
    println!(
        "peer: {records} records of {RECORD_BYTES} bytes over {PARTITIONS} partitions, idempotent \
         acks=all: acknowledged in {acked:.2} s, read back in {seconds:.2} s: {rate:.0} records/s"
    );
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned());
    let out_dir = std::path::Path::new(&target).join("bench");
    std::fs::create_dir_all(&out_dir).expect("bench dir");
    let json = serde_json::json!({
        "benchmark": "kafka_peer",
        "records": records,
        "record_bytes": RECORD_BYTES,
        "partitions": PARTITIONS,
        "acknowledged_seconds": acked,
        "read_back_seconds": seconds,
        "records_per_s": rate,
    });
    let path = std::env::var("PEER_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| out_dir.join("kafka_peer.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write json");
    println!("wrote {}", path.display());
}
