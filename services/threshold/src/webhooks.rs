//! `threshold partner webhook ...`: a partner's webhook endpoints over the
//! server's WebhookService. With the partner's token it manages its own;
//! with `--partner` the carrier (an analyst's token) manages that
//! partner's. Every command prints JSON.

use threshold_api::v1::webhook_service_client::WebhookServiceClient;
use threshold_api::v1::{
    AddEndpointRequest, EndpointRequest, ListAttemptsRequest, ListEndpointsRequest,
    ListWebhookAlertsRequest, ReplayRequest, RotateSecretRequest, WebhookEndpoint, replay_request,
};
use threshold_auth::Role;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every webhook command takes.
#[derive(clap::Args)]
pub(crate) struct Common {
    /// For the carrier: the partner acted for (with an analyst's token).
    /// A partner's own token needs none.
    #[arg(long, default_value = "")]
    partner: String,
    /// The server, and the partner's (or the carrier's) token.
    #[command(flatten)]
    server: crate::ServerArgs,
}

/// `threshold partner webhook <command>`.
#[derive(clap::Subcommand)]
pub(crate) enum WebhookCmd {
    /// Register an endpoint; prints it and its signing secret (shown once).
    Add {
        /// https:// URL (http:// only to a loopback host).
        #[arg(long)]
        url: String,
        /// Event kinds, comma-separated (default: all): parcel.out_for_delivery,
        /// parcel.delivery_attempted, parcel.rescheduled, parcel.delivered,
        /// parcel.returned.
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        /// Deliver from the beginning of the log, not only what happens next.
        #[arg(long)]
        from_start: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List the partner's endpoints.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Stop delivering to an endpoint; its events wait.
    Pause {
        /// The endpoint.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Deliver again to a paused or disabled endpoint, from where it stopped.
    Resume {
        /// The endpoint.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete an endpoint.
    Delete {
        /// The endpoint.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// A new signing secret; the old one keeps signing for --overlap-hours.
    Rotate {
        /// The endpoint.
        #[arg(long)]
        id: String,
        /// Hours the old secret stays valid (at most 720).
        #[arg(long, default_value_t = 24)]
        overlap_hours: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Redeliver the partner's outcomes after a cursor or since a time.
    Replay {
        /// The endpoint.
        #[arg(long)]
        id: String,
        /// Redeliver the events after this cursor (a payload's data.cursor).
        #[arg(long, conflicts_with = "since", required_unless_present = "since")]
        after_cursor: Option<u64>,
        /// Redeliver the events recorded since this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Delivery attempts of an endpoint, oldest first, one JSON line each.
    Attempts {
        /// The endpoint.
        #[arg(long)]
        id: String,
        /// Attempts after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Alerts about the partner's endpoints (one disabled after a 410 or
    /// after failing for days), oldest first, one JSON line each; the last
    /// line's seq is what --after reads on from.
    Alerts {
        /// Alerts after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// For the carrier (an analyst's token): every partner's alerts.
        #[arg(long, conflicts_with = "partner")]
        every_partner: bool,
        #[command(flatten)]
        common: Common,
    },
}

async fn client(common: &Common) -> Result<WebhookServiceClient<threshold_auth::Authed>, BoxError> {
    carrier_or_partner(common, false).await
}

/// A client with the partner's token, or the carrier's (an analyst's) when
/// it names a partner or acts for `every` partner.
async fn carrier_or_partner(
    common: &Common,
    every: bool,
) -> Result<WebhookServiceClient<threshold_auth::Authed>, BoxError> {
    // The carrier names a partner with an analyst's token.
    let role = if common.partner.is_empty() && !every {
        Role::Partner
    } else {
        Role::Analyst
    };
    Ok(WebhookServiceClient::new(
        common.server.connect(role).await?,
    ))
}

fn json(e: &WebhookEndpoint) -> serde_json::Value {
    serde_json::json!({
        "id": e.id, "partner": e.partner, "url": e.url, "kinds": e.kinds,
        "state": e.state, "reason": e.reason, "cursor": e.cursor,
    })
}

fn failed(s: tonic::Status) -> BoxError {
    s.message().to_owned().into()
}

/// Runs a webhook command.
pub(crate) async fn run(cmd: WebhookCmd) -> Result<(), BoxError> {
    match cmd {
        WebhookCmd::Add {
            url,
            kinds,
            from_start,
            common,
        } => {
            let reply = client(&common)
                .await?
                .add_endpoint(AddEndpointRequest {
                    partner: common.partner.clone(),
                    url,
                    kinds,
                    from_start,
                })
                .await
                .map_err(failed)?
                .into_inner();
            let mut out = reply.endpoint.as_ref().map(json).unwrap_or_default();
            out["secret"] = reply.secret.into();
            println!("{out}");
            eprintln!(
                "the secret is shown once: configure it in the receiver's Standard Webhooks library"
            );
        }
        WebhookCmd::List { common } => {
            let reply = client(&common)
                .await?
                .list_endpoints(ListEndpointsRequest {
                    partner: common.partner.clone(),
                })
                .await
                .map_err(failed)?
                .into_inner();
            for e in &reply.endpoints {
                println!("{}", json(e));
            }
        }
        WebhookCmd::Pause { id, common } => {
            let e = client(&common)
                .await?
                .pause_endpoint(EndpointRequest {
                    partner: common.partner.clone(),
                    id,
                })
                .await
                .map_err(failed)?
                .into_inner();
            println!("{}", json(&e));
        }
        WebhookCmd::Resume { id, common } => {
            let e = client(&common)
                .await?
                .resume_endpoint(EndpointRequest {
                    partner: common.partner.clone(),
                    id,
                })
                .await
                .map_err(failed)?
                .into_inner();
            println!("{}", json(&e));
        }
        WebhookCmd::Delete { id, common } => {
            client(&common)
                .await?
                .delete_endpoint(EndpointRequest {
                    partner: common.partner.clone(),
                    id: id.clone(),
                })
                .await
                .map_err(failed)?;
            println!("{}", serde_json::json!({ "deleted": id }));
        }
        WebhookCmd::Rotate {
            id,
            overlap_hours,
            common,
        } => {
            let reply = client(&common)
                .await?
                .rotate_secret(RotateSecretRequest {
                    partner: common.partner.clone(),
                    id: id.clone(),
                    overlap_seconds: overlap_hours.saturating_mul(3600),
                })
                .await
                .map_err(failed)?
                .into_inner();
            println!(
                "{}",
                serde_json::json!({ "id": id, "secret": reply.secret, "old_secret_valid_hours": overlap_hours })
            );
        }
        WebhookCmd::Replay {
            id,
            after_cursor,
            since,
            common,
        } => {
            let from = match (after_cursor, since) {
                (Some(c), _) => replay_request::From::AfterCursor(c),
                (None, Some(t)) => {
                    let t = chrono::DateTime::parse_from_rfc3339(&t)
                        .map_err(|e| format!("--since {t:?}: not an RFC 3339 time: {e}"))?;
                    replay_request::From::Since(threshold_domain::country::timestamp(
                        t.with_timezone(&chrono::Utc),
                    ))
                }
                (None, None) => return Err("give --after-cursor or --since".into()),
            };
            let reply = client(&common)
                .await?
                .replay(ReplayRequest {
                    partner: common.partner.clone(),
                    id: id.clone(),
                    from: Some(from),
                })
                .await
                .map_err(failed)?
                .into_inner();
            println!(
                "{}",
                serde_json::json!({ "id": id, "replaying_after_cursor": reply.cursor })
            );
        }
        WebhookCmd::Attempts {
            id,
            after,
            limit,
            common,
        } => {
            let reply = client(&common)
                .await?
                .list_attempts(ListAttemptsRequest {
                    partner: common.partner.clone(),
                    id,
                    after,
                    max: limit,
                })
                .await
                .map_err(failed)?
                .into_inner();
            for a in &reply.attempts {
                let at = rfc3339(a.at.as_ref().map(|t| t.seconds));
                println!(
                    "{}",
                    serde_json::json!({
                        "seq": a.seq, "webhook_id": a.event_id, "cursor": a.cursor,
                        "parcel_id": a.parcel_id, "attempt": a.attempt, "at": at,
                        "status": (a.status != 0).then_some(a.status), "error": a.error,
                        "latency_ms": a.latency_ms, "excerpt": a.excerpt, "result": a.result,
                    })
                );
            }
        }
        WebhookCmd::Alerts {
            after,
            limit,
            every_partner,
            common,
        } => {
            let reply = carrier_or_partner(&common, every_partner)
                .await?
                .list_webhook_alerts(ListWebhookAlertsRequest {
                    partner: common.partner.clone(),
                    after,
                    max: limit,
                })
                .await
                .map_err(failed)?
                .into_inner();
            for a in &reply.alerts {
                let at = rfc3339(a.at.as_ref().map(|t| t.seconds));
                println!(
                    "{}",
                    serde_json::json!({
                        "seq": a.seq, "endpoint_id": a.endpoint_id, "partner": a.partner,
                        "at": at, "message": a.message,
                    })
                );
            }
        }
    }
    Ok(())
}

/// A reply's timestamp (its seconds) as RFC 3339, or empty when it has none.
fn rfc3339(seconds: Option<i64>) -> String {
    seconds
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}
