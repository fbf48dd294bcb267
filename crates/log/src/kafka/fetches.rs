//! How many fetch requests a process's followers send the brokers: each
//! follower's consumer counts them from librdkafka's statistics (every
//! second) into `threshold.kafka.fetch.requests` (attribute `follower`:
//! `replica`, `publisher`, or a table's name such as `credentials`), and
//! into a total its owner can read. An idle follower sends one per fetch
//! wait to each broker it reads from ([`super::KafkaOptions::fetch_wait_ms`];
//! `deploy/README.md`, *Scaling model*).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;

/// How often librdkafka tells a follower's client what it sent, in
/// milliseconds.
pub(super) const STATISTICS_MS: &str = "1000";

/// A follower's client context: adds the fetch requests its client sent
/// since the last statistics to the metric and to `total`.
pub(super) struct Counted {
    follower: opentelemetry::KeyValue,
    counter: opentelemetry::metrics::Counter<u64>,
    /// What the client had sent at the last statistics.
    seen: AtomicU64,
    total: Arc<AtomicU64>,
}

impl Counted {
    /// Counts for `follower`, into `total` as well.
    pub(super) fn new(follower: &str, total: Arc<AtomicU64>) -> Self {
        Self {
            follower: opentelemetry::KeyValue::new("follower", follower.to_owned()),
            counter: opentelemetry::global::meter("threshold.log")
                .u64_counter("threshold.kafka.fetch.requests")
                .with_description("Fetch requests this process's followers sent the brokers")
                .build(),
            seen: AtomicU64::new(0),
            total,
        }
    }
}

impl ClientContext for Counted {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let sent: i64 = statistics
            .brokers
            .values()
            .filter_map(|b| b.req.get("Fetch"))
            .sum();
        let sent = u64::try_from(sent).unwrap_or(0);
        let before = self.seen.swap(sent, Ordering::Relaxed);
        let new = sent.saturating_sub(before);
        if new > 0 {
            self.counter.add(new, std::slice::from_ref(&self.follower));
            self.total.fetch_add(new, Ordering::Relaxed);
        }
    }
}

impl ConsumerContext for Counted {}
