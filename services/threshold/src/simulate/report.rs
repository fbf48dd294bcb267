//! The simulated days' report: how the drivers' days went (events, resends,
//! homes enrolled and claimed, in-home grants, unlocks, refusals, entries, alerts), then the server's
//! attempts report by service and by country.
//!
//! It only prints what the day counted and what the server answers; it
//! never drives or changes anything.

use std::collections::BTreeMap;

use threshold_api::v1::AttemptsReportRequest;
use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;

use super::BoxError;
use super::conn::Conn;
use super::drivers::DriverDay;

/// Prints the days of `routes` routes driven, `total` their drivers' tally,
/// and the server's attempts report up to the last event they stored.
pub(super) async fn print(conn: &Conn, routes: usize, total: &DriverDay) -> Result<(), BoxError> {
    println!(
        "{routes} routes driven: {} events stored, {} resends answered as duplicates, {} rejected, {} handhelds reconnected",
        total.stored, total.duplicates, total.rejected, total.reconnects
    );
    let denied: u64 = total.denied.values().sum();
    let listed = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                m.iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    println!(
        "in-home homes: {} enrolled by their lock's vendor, {} claimed by their household",
        total.enrolled, total.claimed
    );
    println!(
        "in-home: {} grants issued, {} revoked by their resident; {} unlocks authorized, {} refused{}",
        total.grants,
        total.revoked,
        total.unlocks,
        denied,
        listed(&total.denied),
    );
    println!(
        "in-home refusals became the grant's fallback:{}",
        listed(&total.fallbacks)
    );
    println!(
        "in-home entries: {} redeemed by the lock, {} replayed unlock requests refused, {} closings refused until the relock, {} receipts",
        total.entries, total.replays_refused, total.closings_refused, total.receipts
    );
    let raised: u64 = total.alerts.values().sum();
    println!("alerts raised: {raised}{}", listed(&total.alerts));

    let mut analytics = AnalyticsServiceClient::new(conn.analyst.clone());
    for by in ["service", "country"] {
        let report = analytics
            .attempts_report(AttemptsReportRequest {
                by: by.into(),
                at_least_position: total.last_position,
                up_to_head: true,
                ..AttemptsReportRequest::default()
            })
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        println!();
        println!(
            "{:<12} {:>8} {:>9} {:>11} {:>14} {:>9}",
            by, "parcels", "attempts", "per parcel", "first-attempt", "delivered"
        );
        let t = report.total.unwrap_or_default();
        for r in report.rows.iter().chain(std::iter::once(&t)) {
            println!(
                "{:<12} {:>8} {:>9} {:>11.2} {:>13.1}% {:>9}",
                r.group,
                r.parcels,
                r.attempts,
                r.attempts_per_parcel,
                100.0 * r.first_attempt_success_rate,
                r.delivered
            );
        }
    }
    Ok(())
}
