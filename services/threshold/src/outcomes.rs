//! `threshold outcomes follow`.

use std::io::Write;

use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_api::v1::{SubscribeOutcomesRequest, parcel_outcome};
use threshold_auth::Role;
use threshold_domain::pb;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Options of `threshold outcomes follow`.
#[derive(clap::Args)]
pub(crate) struct FollowArgs {
    /// Resume after this cursor (0: from the beginning).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// The server, and the partner's (or an analyst's) token.
    #[command(flatten)]
    server: crate::ServerArgs,
}

/// Prints the partner's outcomes as JSON lines until the server closes:
/// {"cursor", "parcel_id", "outcome", "attempt", "method", "reason", "country", "local_time"}.
pub(crate) async fn follow(args: FollowArgs) -> Result<(), BoxError> {
    let channel = args.server.connect(Role::Partner).await?;
    let request = SubscribeOutcomesRequest {
        from_cursor: args.from,
    };
    let mut stream = OutcomeServiceClient::new(channel)
        .subscribe(request)
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let name = |full: &str, prefix: &str| {
        full.strip_prefix(prefix)
            .unwrap_or(full)
            .to_ascii_lowercase()
    };
    while let Some(o) = stream.message().await.map_err(|s| s.message().to_owned())? {
        let kind = parcel_outcome::Kind::try_from(o.kind)
            .map_or_else(|_| o.kind.to_string(), |k| name(k.as_str_name(), "KIND_"));
        let method = pb::DeliveryMethod::try_from(o.method)
            .ok()
            .filter(|m| *m != pb::DeliveryMethod::Unspecified)
            .map(|m| name(m.as_str_name(), "DELIVERY_METHOD_"));
        let reason = pb::FailureReason::try_from(o.reason)
            .ok()
            .filter(|r| *r != pb::FailureReason::Unspecified)
            .map(|r| name(r.as_str_name(), "FAILURE_REASON_"));
        let country = pb::Country::try_from(o.country)
            .ok()
            .filter(|c| *c != pb::Country::Unspecified)
            .map(|c| name(c.as_str_name(), "COUNTRY_").to_ascii_uppercase());
        let line = serde_json::json!({
            "cursor": o.cursor, "parcel_id": o.parcel_id, "outcome": kind,
            "attempt": o.attempt, "method": method, "reason": reason,
            "country": country, "local_time": o.local_time,
        });
        // Whoever reads us went away (`| head`): stop following, quietly.
        let mut out = std::io::stdout();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    Ok(())
}
