//! Any log, measured: events appended by category and country, duplicates,
//! and append latency, recorded through the OpenTelemetry metrics API (the
//! process decides where they go).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use threshold_domain::StreamId;

use crate::{
    Ack, AppendOutcome, EventLog, ExpectedVersion, NewEvent, Position, RecordedEvent, Result,
    Subscription,
};

/// `log` with its appends counted and timed.
pub struct Metered {
    log: Arc<dyn EventLog>,
    appended: Counter<u64>,
    duplicates: Counter<u64>,
    duration: Histogram<f64>,
}

impl Metered {
    /// Measures `log` with the global meter provider's `threshold.log` meter.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        let meter = opentelemetry::global::meter("threshold.log");
        Self {
            log,
            appended: meter
                .u64_counter("threshold.events.appended")
                .with_description("Events appended to the log, by category and country")
                .build(),
            duplicates: meter
                .u64_counter("threshold.events.duplicates")
                .with_description("Appends answered as duplicates of an event already stored")
                .build(),
            duration: meter
                .f64_histogram("threshold.log.append.duration")
                .with_unit("s")
                .with_description("Time from append to durable acknowledgement")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ])
                .build(),
        }
    }
}

#[async_trait]
impl EventLog for Metered {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome> {
        let started = Instant::now();
        let countries: Vec<Option<&'static str>> =
            events.iter().map(|e| e.country.map(|c| c.code())).collect();
        let out = self.log.append(stream, expected, events).await;
        let category = stream.category().as_str();
        self.duration.record(
            started.elapsed().as_secs_f64(),
            &[
                KeyValue::new("category", category),
                KeyValue::new("outcome", if out.is_ok() { "ok" } else { "error" }),
            ],
        );
        if let Ok(o) = &out {
            for (ack, country) in o.acks.iter().zip(countries) {
                let attrs = [
                    KeyValue::new("category", category),
                    KeyValue::new("country", country.unwrap_or("none")),
                ];
                match ack {
                    Ack::Appended { .. } => self.appended.add(1, &attrs),
                    Ack::Duplicate { .. } => self.duplicates.add(1, &attrs),
                }
            }
        }
        out
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.log.read_stream(stream, after_version, max).await
    }

    async fn read_stream_recent(
        &self,
        stream: &StreamId,
        after_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.log
            .read_stream_recent(stream, after_version, max)
            .await
    }

    async fn read_all(&self, after: Position, max: usize) -> Result<Vec<RecordedEvent>> {
        self.log.read_all(after, max).await
    }

    async fn head(&self) -> Result<Position> {
        self.log.head().await
    }

    async fn head_recent(&self) -> Result<Position> {
        self.log.head_recent().await
    }

    fn subscribe(&self, after: Position) -> Subscription {
        self.log.subscribe(after)
    }
}
