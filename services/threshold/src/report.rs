//! `threshold report attempts`: attempts per parcel from a server.

use chrono::NaiveDate;
use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_api::v1::{AttemptsReportRequest, AttemptsRow};
use threshold_domain::country::date_to_proto;
use threshold_domain::{Country, pb};

/// Options of `threshold report attempts`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Group by: country, depot, day, service (as booked), method (as
    /// delivered), reason (of failed attempts) or partner.
    #[arg(long, default_value = "country")]
    by: String,
    /// Only this country (DK, FI, NO, SE).
    #[arg(long)]
    country: Option<Country>,
    /// Only this depot.
    #[arg(long)]
    depot: Option<String>,
    /// Only local days from this one (YYYY-MM-DD).
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Only local days up to this one (YYYY-MM-DD).
    #[arg(long)]
    to: Option<NaiveDate>,
    /// Only this booked service: in_home, doorstep, locker, pickup_point.
    #[arg(long)]
    service: Option<String>,
    #[command(flatten)]
    server: crate::ServerArgs,
    /// Print JSON: {"rows": [{"<by>": value, "parcels", "attempted", "attempts",
    /// "attempts_per_parcel", "repeat_attempt_rate", "first_attempt_success_rate",
    /// "delivered", "returned"}], "total": {...}, "position": n}.
    #[arg(long)]
    json: bool,
}

fn service(s: &str) -> Result<pb::Service, String> {
    match s {
        "in_home" => Ok(pb::Service::InHome),
        "doorstep" => Ok(pb::Service::Doorstep),
        "locker" => Ok(pb::Service::Locker),
        "pickup_point" => Ok(pb::Service::PickupPoint),
        other => Err(format!(
            "--service {other:?} is not one of in_home, doorstep, locker, pickup_point"
        )),
    }
}

fn json_row(key: &str, r: &AttemptsRow) -> serde_json::Value {
    serde_json::json!({
        key: r.group,
        "parcels": r.parcels,
        "attempted": r.attempted,
        "attempts": r.attempts,
        "attempts_per_parcel": r.attempts_per_parcel,
        "repeat_attempt_rate": r.repeat_attempt_rate,
        "first_attempt_success_rate": r.first_attempt_success_rate,
        "delivered": r.delivered,
        "returned": r.returned,
    })
}

pub(crate) async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let service = args.service.as_deref().map(service).transpose()?;
    let request = AttemptsReportRequest {
        by: args.by.clone(),
        country: args.country.map_or(0, |c| c.to_proto() as i32),
        depot_id: args.depot.clone().unwrap_or_default(),
        from: args.from.map(date_to_proto),
        to: args.to.map(date_to_proto),
        service: service.map_or(0, |s| s as i32),
        at_least_position: 0,
        up_to_head: true,
    };
    let channel = args.server.connect(threshold_auth::Role::Analyst).await?;
    let report = AnalyticsServiceClient::new(channel)
        .attempts_report(request)
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let total = report.total.unwrap_or_default();
    if args.json {
        let rows: Vec<_> = report
            .rows
            .iter()
            .map(|r| json_row(&report.by, r))
            .collect();
        let mut total = json_row(&report.by, &total);
        total[report.by.as_str()] = serde_json::Value::String("total".into());
        println!(
            "{}",
            serde_json::json!({ "rows": rows, "total": total, "position": report.position })
        );
        return Ok(());
    }
    println!(
        "{:<14} {:>8} {:>9} {:>9} {:>11} {:>9} {:>14} {:>9} {:>9}",
        report.by,
        "parcels",
        "attempted",
        "attempts",
        "per parcel",
        "repeat",
        "first-attempt",
        "delivered",
        "returned"
    );
    for r in report.rows.iter().chain(std::iter::once(&total)) {
        println!(
            "{:<14} {:>8} {:>9} {:>9} {:>11.2} {:>8.1}% {:>13.1}% {:>9} {:>9}",
            r.group,
            r.parcels,
            r.attempted,
            r.attempts,
            r.attempts_per_parcel,
            100.0 * r.repeat_attempt_rate,
            100.0 * r.first_attempt_success_rate,
            r.delivered,
            r.returned
        );
    }
    Ok(())
}
