//! Read models folded from the event log.
//!
//! [`Attempts`] is the analysts' model: for every parcel, where and when it
//! was due, how often it was attempted and how it ended, and from that a cube
//! of counters by country, depot, local day, booked service and delivery
//! method (plus failed attempts by reason), so a report reads a few hundred
//! cells, never every parcel. It is pure: [`Attempts::apply`] takes events in
//! log order; [`follow`] keeps one up to date from a subscription. Folding
//! the same events always gives the same model (guarantee 6), which the
//! tests check by comparing an incremental model with a rebuild.

mod attempts;

pub use attempts::{Attempts, Dimension, Filter, ParcelRecord, Report, ReportRow};

use std::sync::{Arc, RwLock};

use threshold_log::{EventLog, Position};

/// Keeps `model` up to date with `log` from `after` on, until the log closes
/// or fails. Returns the error that stopped it, if any.
pub async fn follow(
    log: Arc<dyn EventLog>,
    model: Arc<RwLock<Attempts>>,
    after: Position,
) -> Option<threshold_log::Error> {
    let mut sub = log.subscribe(after);
    while let Some(next) = sub.next().await {
        match next {
            Ok(event) => model
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .apply(&event),
            Err(e) => return Some(e),
        }
    }
    None
}
