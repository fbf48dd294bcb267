//! Read models folded from the event log.
//!
//! [`Routes`] answers a handheld's "my route today"; [`DepotDays`] holds
//! the parcels the route planner plans. [`Attempts`] is the analysts' model: for every parcel, where and when it
//! was due, how often it was attempted and how it ended, and from that a cube
//! of counters by country, depot, local day, booked service and delivery
//! method (plus failed attempts by reason), so a report reads a few hundred
//! cells, never every parcel. It is pure: [`Attempts::apply`] takes events in
//! log order; [`follow`] keeps one up to date from a subscription. Folding
//! the same events always gives the same model (guarantee 6), which the
//! tests check by comparing an incremental model with a rebuild.

mod attempts;
mod depot_days;
mod facts;
mod routes;
pub mod track;

pub use attempts::{Attempts, Dimension, Filter, ParcelRecord, Report, ReportRow};
pub use depot_days::{DepotDays, LeftOut, PlannableParcel};
pub use facts::{
    AttemptFact, AttemptOutcome, Facts, GrantFact, GrantStatus, ParcelFact, fallback_name,
    method_name, reason_name, service_name,
};
pub use routes::{PlannedRoute, Routes};
pub use track::{
    Checkpoint, Milestone, ParcelSummary, ParcelTrack, SqliteTrackStore, StoreError, TrackEvent,
    TrackRow, TrackStore, Tracker,
};

use std::sync::{Arc, RwLock};

use threshold_log::{EventLog, Position};

/// A local day as recorded, when it is one.
pub(crate) fn day(d: Option<&threshold_domain::pb::LocalDate>) -> Option<chrono::NaiveDate> {
    d.and_then(|d| threshold_domain::country::date_from_proto(d).ok())
}

/// The country and local day a manifested parcel is due, when both are valid.
pub(crate) fn due(
    m: &threshold_domain::pb::ParcelManifested,
) -> Option<(threshold_domain::Country, chrono::NaiveDate)> {
    Some((
        threshold_domain::Country::from_proto(m.country).ok()?,
        day(m.delivery_date.as_ref())?,
    ))
}

/// A read model folded from the log, event by event, in log order.
pub trait Projection: Send + Sync + 'static {
    /// Applies one event; events at or before the last applied are ignored.
    fn apply(&mut self, event: &threshold_log::RecordedEvent);
    /// The position of the last event applied.
    fn position(&self) -> Position;
}

impl Projection for Attempts {
    fn apply(&mut self, event: &threshold_log::RecordedEvent) {
        Attempts::apply(self, event);
    }
    fn position(&self) -> Position {
        Attempts::position(self)
    }
}

impl Projection for DepotDays {
    fn apply(&mut self, event: &threshold_log::RecordedEvent) {
        DepotDays::apply(self, event);
    }
    fn position(&self) -> Position {
        DepotDays::position(self)
    }
}

impl Projection for Routes {
    fn apply(&mut self, event: &threshold_log::RecordedEvent) {
        Routes::apply(self, event);
    }
    fn position(&self) -> Position {
        Routes::position(self)
    }
}

/// Waits until `model` has applied the log up to `target`, for at most
/// `within`; on time-out, says how far it got. For reads that must reflect
/// writes the caller knows about.
pub async fn caught_up<P: Projection>(
    model: &RwLock<P>,
    target: Position,
    within: std::time::Duration,
) -> Result<(), Position> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let at = model.read().unwrap_or_else(|p| p.into_inner()).position();
        if at >= target {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(at);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Keeps `model` up to date with `log` from `after` on, until the log closes
/// or fails. Returns the error that stopped it, if any.
///
/// An event that carries trace context is applied in a `projection.apply`
/// span of that trace; how far the model is behind the head of what this
/// process holds of the log ([`EventLog::head_recent`]: on Kafka, its
/// replica, whose own lag is `threshold.log.replica.lag`) is recorded
/// every second as `threshold.projection.lag`.
pub async fn follow<P: Projection>(
    log: Arc<dyn EventLog>,
    model: Arc<RwLock<P>>,
    after: Position,
) -> Option<threshold_log::Error> {
    let name = std::any::type_name::<P>()
        .rsplit("::")
        .next()
        .unwrap_or("projection");
    let lag = {
        let log = Arc::clone(&log);
        let model = Arc::clone(&model);
        let gauge = opentelemetry::global::meter("threshold.projections")
            .u64_gauge("threshold.projection.lag")
            .with_description("Log positions a read model is behind the head of what this process holds of the log")
            .build();
        tokio::spawn(async move {
            let attrs = [opentelemetry::KeyValue::new("projection", name)];
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let Ok(head) = log.head_recent().await else {
                    return;
                };
                let at = model.read().unwrap_or_else(|p| p.into_inner()).position();
                gauge.record(head.0.saturating_sub(at.0), &attrs);
            }
        })
    };
    let mut sub = log.subscribe(after);
    let mut stopped = None;
    while let Some(next) = sub.next().await {
        match next {
            Ok(event) => {
                let span = threshold_telemetry::in_recorded_trace(
                    event.event.traceparent.as_deref(),
                    || {
                        tracing::info_span!(
                            "projection.apply",
                            projection = name,
                            position = event.position.0,
                            event_type = %event.event.event_type,
                        )
                    },
                );
                let _entered = span.enter();
                model
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(&event);
            }
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    lag.abort();
    stopped
}
