//! Where an append's and a read's time goes on Kafka: a sum and a count per
//! stage, kept in atomics (a few nanoseconds per stage), reported as one
//! log line every few seconds while the log is busy and readable as a
//! snapshot ([`KafkaLog::stage_timings`]) by a benchmark.
//!
//! Measurement only: nothing here changes what an append or a read does.
//!
//! [`KafkaLog::stage_timings`]: super::KafkaLog::stage_timings

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A stage of an append or a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for this process's turn on the partition.
    Turn,
    /// Deciding: the replica's plan of the stream, in-flight appends counted.
    Decide,
    /// Handing the records to the producer.
    Produce,
    /// From handing them over to Kafka's acknowledgement.
    BrokerAck,
    /// From the acknowledgement to the replica holding the records.
    ReadBack,
    /// The replica's check of what it took.
    Check,
    /// A whole append.
    Append,
    /// A read's request for the partitions' ends (one per read).
    Watermark,
    /// A read's wait for the replica to reach those ends.
    ReplicaWait,
    /// The replica's consumer: storing one batch.
    ReplicaStore,
    /// The replica's consumer: records per batch it stored (a count, not a
    /// time).
    ReplicaBatch,
    /// Storing this process's acknowledged records without reading them
    /// back: one batch.
    OwnStore,
    /// Records per such batch (a count, not a time).
    OwnBatch,
    /// A publisher: publishing one batch, from taking it to every
    /// publication acknowledged.
    Publish,
    /// A publisher: records per batch (a count, not a time).
    PublishBatch,
}

impl Stage {
    const ALL: [Stage; 15] = [
        Stage::Turn,
        Stage::Decide,
        Stage::Produce,
        Stage::BrokerAck,
        Stage::ReadBack,
        Stage::Check,
        Stage::Append,
        Stage::Watermark,
        Stage::ReplicaWait,
        Stage::ReplicaStore,
        Stage::ReplicaBatch,
        Stage::OwnStore,
        Stage::OwnBatch,
        Stage::Publish,
        Stage::PublishBatch,
    ];

    /// The stage's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Turn => "turn",
            Stage::Decide => "decide",
            Stage::Produce => "produce",
            Stage::BrokerAck => "broker_ack",
            Stage::ReadBack => "read_back",
            Stage::Check => "check",
            Stage::Append => "append",
            Stage::Watermark => "watermark",
            Stage::ReplicaWait => "replica_wait",
            Stage::ReplicaStore => "replica_store",
            Stage::ReplicaBatch => "replica_batch",
            Stage::OwnStore => "own_store",
            Stage::OwnBatch => "own_batch",
            Stage::Publish => "publish",
            Stage::PublishBatch => "publish_batch",
        }
    }
}

/// One stage's figures: how many times it ran and their mean.
#[derive(Debug, Clone, Copy)]
pub struct StageTiming {
    /// The stage.
    pub stage: Stage,
    /// How many times it ran.
    pub count: u64,
    /// Mean time (for [`Stage::ReplicaBatch`], [`Stage::OwnBatch`] and
    /// [`Stage::PublishBatch`],
    /// mean records per batch in microseconds' place).
    pub mean_us: f64,
    /// The longest run (in the same units as the mean): where a tail is.
    pub max_us: u64,
}

/// Sums and counts per stage.
#[derive(Debug, Default)]
pub(super) struct Stages {
    sums: [AtomicU64; 15],
    counts: [AtomicU64; 15],
    maxes: [AtomicU64; 15],
}

impl Stages {
    fn index(stage: Stage) -> usize {
        Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0)
    }

    /// Adds one run of `stage` that started at `since`.
    pub(super) fn since(&self, stage: Stage, since: Instant) {
        self.add(stage, since.elapsed());
    }

    /// Adds one run of `stage` that took `took`.
    pub(super) fn add(&self, stage: Stage, took: Duration) {
        self.add_raw(stage, took.as_micros() as u64);
    }

    /// Adds `value` (microseconds, or a count) to `stage`.
    pub(super) fn add_raw(&self, stage: Stage, value: u64) {
        let i = Self::index(stage);
        self.sums[i].fetch_add(value, Ordering::Relaxed);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.maxes[i].fetch_max(value, Ordering::Relaxed);
    }

    /// The figures since the last `take`, and starts again from zero.
    pub(super) fn take(&self) -> Vec<StageTiming> {
        Stage::ALL
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let sum = self.sums[i].swap(0, Ordering::Relaxed);
                let count = self.counts[i].swap(0, Ordering::Relaxed);
                let max_us = self.maxes[i].swap(0, Ordering::Relaxed);
                StageTiming {
                    stage: *stage,
                    count,
                    mean_us: if count == 0 {
                        0.0
                    } else {
                        sum as f64 / count as f64
                    },
                    max_us,
                }
            })
            .collect()
    }
}

/// One line of figures: `stage=COUNTxMEANus/MAXus` for the stages that ran.
pub(super) fn line(timings: &[StageTiming]) -> String {
    timings
        .iter()
        .filter(|t| t.count > 0)
        .map(|t| {
            format!(
                "{}={}x{:.0}us/{}us",
                t.stage.name(),
                t.count,
                t.mean_us,
                t.max_us
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The client context of this log's producers: when stage timings are
/// logged, librdkafka's own statistics are too, every few seconds, per
/// broker: how long a batch waited in the producer's queue, how long a
/// request waited to be written, and the broker's round trip. So a slow
/// acknowledgement shows whether the time went in this process or at the
/// broker.
pub(super) struct Observed {
    /// Which producer: the log's, a publisher's, a table's.
    pub(super) what: String,
}

/// How often librdkafka's statistics are taken when they are logged.
pub(super) const STATISTICS_MS: &str = "5000";

/// Whether stage timings (and librdkafka's statistics) are logged.
pub(super) fn logged() -> bool {
    tracing::enabled!(target: "threshold_log::kafka::stages", tracing::Level::DEBUG)
}

impl rdkafka::ClientContext for Observed {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let ms = |w: &Option<rdkafka::statistics::Window>| match w {
            Some(w) if w.cnt > 0 => format!(
                "{:.1}/{:.1}/{:.1}ms",
                w.p50 as f64 / 1000.0,
                w.p99 as f64 / 1000.0,
                w.max as f64 / 1000.0
            ),
            _ => "-".to_owned(),
        };
        for broker in statistics.brokers.values().filter(|b| b.nodeid >= 0) {
            let Some(rtt) = &broker.rtt else { continue };
            if rtt.cnt == 0 {
                continue;
            }
            tracing::debug!(
                target: "threshold_log::kafka::stages",
                "librdkafka {} producer, broker {} (p50/p99/max): queue={} outbuf={} rtt={} \
                 requests={} waiting={}",
                self.what,
                broker.nodeid,
                ms(&broker.int_latency),
                ms(&broker.outbuf_latency),
                ms(&broker.rtt),
                rtt.cnt,
                broker.waitresp_cnt,
            );
        }
    }
}
