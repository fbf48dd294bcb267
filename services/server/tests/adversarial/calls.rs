//! Every RPC of the API, and for each one call made with one party's
//! identifiers in every field (grant, home, lock, parcel, route, driver,
//! depot, resident), on whatever channel the caller has: what an attacker
//! of the other party would send to reach it. The answer is reduced to what the
//! matrix judges ([`Answer`]); nothing here decides whether it is right.

use threshold_access_service::device::Signed;
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_api::v1::planning_service_client::PlanningServiceClient;
use threshold_api::v1::webhook_service_client::WebhookServiceClient;
use threshold_api::v1::{
    AddEndpointRequest, EndpointRequest, ListAttemptsRequest, ListEndpointsRequest,
    ListWebhookAlertsRequest, ReplayRequest, RotateSecretRequest, replay_request,
};
use threshold_api::v1::{
    AttemptsReportRequest, AuthorizeUnlockRequest, ClaimHomeRequest, ClockRequest, GetRouteRequest,
    HandheldEvent, ParcelOutcome, PlanDayRequest, ReceiptRequest, RedeemUnlockRequest,
    RevokeGrantRequest, SubscribeOutcomesRequest, TrackDayRequest, TrackRequest, attempt_ack,
};
use threshold_auth::{Authed, Role};
use threshold_domain::country::date_to_proto;
use threshold_domain::pb;
use threshold_testkit::fixtures::{delivered, manifest};
use tonic::Code;

use crate::world::{Party, QUIET, World, device, grant_request};

/// One RPC of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Rpc {
    IssueGrant,
    RevokeGrant,
    AuthorizeUnlock,
    RedeemUnlock,
    RecordDeviceEvent,
    GetReceipt,
    ClaimHome,
    Clock,
    StreamAttempts,
    GetRoute,
    LoadManifest,
    PlanDay,
    Subscribe,
    Track,
    TrackDay,
    AttemptsReport,
    AddEndpoint,
    ListEndpoints,
    PauseEndpoint,
    ResumeEndpoint,
    RotateSecret,
    Replay,
    ListAttempts,
    ListWebhookAlerts,
    DeleteEndpoint,
}

impl Rpc {
    /// Every RPC the suite knows.
    pub(crate) const ALL: [Rpc; 25] = [
        Rpc::IssueGrant,
        Rpc::RevokeGrant,
        Rpc::AuthorizeUnlock,
        Rpc::RedeemUnlock,
        Rpc::RecordDeviceEvent,
        Rpc::GetReceipt,
        Rpc::ClaimHome,
        Rpc::Clock,
        Rpc::StreamAttempts,
        Rpc::GetRoute,
        Rpc::LoadManifest,
        Rpc::PlanDay,
        Rpc::Subscribe,
        Rpc::Track,
        Rpc::TrackDay,
        Rpc::AttemptsReport,
        Rpc::AddEndpoint,
        Rpc::ListEndpoints,
        Rpc::PauseEndpoint,
        Rpc::ResumeEndpoint,
        Rpc::RotateSecret,
        Rpc::Replay,
        Rpc::ListAttempts,
        Rpc::ListWebhookAlerts,
        Rpc::DeleteEndpoint,
    ];

    /// `threshold.v1.AccessService/IssueGrant`: its service and method, as
    /// the API's descriptors name them.
    pub(crate) fn path(self) -> (&'static str, &'static str) {
        let service = match self {
            Rpc::IssueGrant
            | Rpc::RevokeGrant
            | Rpc::AuthorizeUnlock
            | Rpc::RedeemUnlock
            | Rpc::RecordDeviceEvent
            | Rpc::GetReceipt
            | Rpc::ClaimHome
            | Rpc::Clock => "threshold.v1.AccessService",
            Rpc::StreamAttempts | Rpc::GetRoute => "threshold.v1.HandheldService",
            Rpc::LoadManifest => "threshold.v1.ManifestService",
            Rpc::PlanDay => "threshold.v1.PlanningService",
            Rpc::Subscribe | Rpc::Track | Rpc::TrackDay => "threshold.v1.OutcomeService",
            Rpc::AttemptsReport => "threshold.v1.AnalyticsService",
            Rpc::AddEndpoint
            | Rpc::ListEndpoints
            | Rpc::PauseEndpoint
            | Rpc::ResumeEndpoint
            | Rpc::RotateSecret
            | Rpc::Replay
            | Rpc::ListAttempts
            | Rpc::ListWebhookAlerts
            | Rpc::DeleteEndpoint => "threshold.v1.WebhookService",
        };
        (service, self.method())
    }

    /// The method's name.
    pub(crate) fn method(self) -> &'static str {
        match self {
            Rpc::IssueGrant => "IssueGrant",
            Rpc::RevokeGrant => "RevokeGrant",
            Rpc::AuthorizeUnlock => "AuthorizeUnlock",
            Rpc::RedeemUnlock => "RedeemUnlock",
            Rpc::RecordDeviceEvent => "RecordDeviceEvent",
            Rpc::GetReceipt => "GetReceipt",
            Rpc::ClaimHome => "ClaimHome",
            Rpc::Clock => "Clock",
            Rpc::StreamAttempts => "StreamAttempts",
            Rpc::GetRoute => "GetRoute",
            Rpc::LoadManifest => "LoadManifest",
            Rpc::PlanDay => "PlanDay",
            Rpc::Subscribe => "Subscribe",
            Rpc::Track => "Track",
            Rpc::TrackDay => "TrackDay",
            Rpc::AttemptsReport => "AttemptsReport",
            Rpc::AddEndpoint => "AddEndpoint",
            Rpc::ListEndpoints => "ListEndpoints",
            Rpc::PauseEndpoint => "PauseEndpoint",
            Rpc::ResumeEndpoint => "ResumeEndpoint",
            Rpc::RotateSecret => "RotateSecret",
            Rpc::Replay => "Replay",
            Rpc::ListAttempts => "ListAttempts",
            Rpc::ListWebhookAlerts => "ListWebhookAlerts",
            Rpc::DeleteEndpoint => "DeleteEndpoint",
        }
    }

    /// The roles the RPC takes, as the README's "Who may do what" says.
    pub(crate) fn roles(self) -> &'static [Role] {
        match self {
            Rpc::IssueGrant | Rpc::GetReceipt | Rpc::ClaimHome => &[Role::Resident],
            Rpc::RevokeGrant => &[Role::Resident, Role::Planner],
            Rpc::AuthorizeUnlock | Rpc::StreamAttempts => &[Role::Handheld],
            Rpc::RedeemUnlock | Rpc::RecordDeviceEvent => &[Role::LockVendor],
            Rpc::Clock => &Role::ALL,
            Rpc::GetRoute => &[Role::Handheld, Role::Planner],
            Rpc::LoadManifest | Rpc::PlanDay => &[Role::Planner],
            Rpc::Subscribe => &[Role::Partner, Role::Analyst],
            Rpc::Track => &[Role::Partner, Role::Planner, Role::Analyst],
            Rpc::TrackDay => &[Role::Planner, Role::Analyst],
            Rpc::AttemptsReport => &[Role::Analyst, Role::Planner],
            Rpc::AddEndpoint
            | Rpc::ListEndpoints
            | Rpc::PauseEndpoint
            | Rpc::ResumeEndpoint
            | Rpc::RotateSecret
            | Rpc::Replay
            | Rpc::ListAttempts
            | Rpc::ListWebhookAlerts
            | Rpc::DeleteEndpoint => &[Role::Partner, Role::Analyst],
        }
    }

    /// A role the RPC does not take (a partner for the clock, which every
    /// role may read).
    pub(crate) fn wrong_role(self) -> Role {
        Role::ALL
            .into_iter()
            .find(|r| !self.roles().contains(r))
            .unwrap_or(Role::Partner)
    }

    /// The tenant `b`'s identifiers in this RPC belong to: what a token of
    /// the wrong role would name to pass for `b`.
    pub(crate) fn tenant_of(self, b: &Party) -> String {
        match self {
            Rpc::IssueGrant | Rpc::RevokeGrant | Rpc::GetReceipt | Rpc::ClaimHome => {
                b.resident.into()
            }
            Rpc::AuthorizeUnlock | Rpc::StreamAttempts | Rpc::GetRoute | Rpc::Clock => {
                b.driver.clone()
            }
            Rpc::RedeemUnlock | Rpc::RecordDeviceEvent => b.vendor.into(),
            Rpc::LoadManifest | Rpc::PlanDay | Rpc::AttemptsReport => b.depot.into(),
            Rpc::Subscribe | Rpc::Track => b.partner.into(),
            Rpc::TrackDay => b.depot.into(),
            Rpc::AddEndpoint
            | Rpc::ListEndpoints
            | Rpc::PauseEndpoint
            | Rpc::ResumeEndpoint
            | Rpc::RotateSecret
            | Rpc::Replay
            | Rpc::ListAttempts
            | Rpc::ListWebhookAlerts
            | Rpc::DeleteEndpoint => b.partner.into(),
        }
    }
}

/// What a call came to, as the matrix judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Refused with this status.
    Status(Code),
    /// Answered with a refusal: an unlock or an opening denied, an event
    /// rejected in its acknowledgement, a manifest row rejected.
    Denied,
    /// Answered with nothing of the attacked party's.
    Withheld,
    /// Answered with what was asked.
    Answered,
}

impl<T> From<Result<T, tonic::Status>> for Answer {
    fn from(r: Result<T, tonic::Status>) -> Self {
        match r {
            Ok(_) => Answer::Answered,
            Err(s) => Answer::Status(s.code()),
        }
    }
}

/// Calls `rpc` on `channel` with party `b`'s identifiers, as someone of
/// party `a` (whose device key it holds, not `b`'s).
pub(crate) async fn call(w: &World, channel: Authed, rpc: Rpc, a: &Party, b: &Party) -> Answer {
    let mut access = AccessServiceClient::new(channel.clone());
    match rpc {
        Rpc::IssueGrant => access
            .issue_grant(grant_request(b, "g-b-hijacked"))
            .await
            .into(),
        Rpc::RevokeGrant => access
            .revoke_grant(RevokeGrantRequest {
                grant_id: b.spare_grant.into(),
                by: "someone".into(),
                reason: "adversarial".into(),
            })
            .await
            .into(),
        Rpc::AuthorizeUnlock => match access.authorize_unlock(unlock_of(b)).await {
            Ok(r) if r.get_ref().authorized => Answer::Answered,
            Ok(_) => Answer::Denied,
            Err(s) => Answer::Status(s.code()),
        },
        Rpc::RedeemUnlock => {
            let mut r = RedeemUnlockRequest {
                home_id: b.home.into(),
                lock_id: b.lock.into(),
                grant_id: b.grant.into(),
                nonce: threshold_domain::EventId::new().to_string(),
                signature: vec![],
            };
            r.sign(&a.key());
            match access.redeem_unlock(r).await {
                Ok(r) if r.get_ref().open => Answer::Answered,
                Ok(_) => Answer::Denied,
                Err(s) => Answer::Status(s.code()),
            }
        }
        Rpc::RecordDeviceEvent => access
            .record_device_event(device(
                b.home,
                opened(b.lock, "", ""),
                chrono::Utc::now(),
                &a.key(),
            ))
            .await
            .into(),
        Rpc::GetReceipt => access
            .get_receipt(ReceiptRequest {
                grant_id: b.grant.into(),
                parcel_id: b.parcel.into(),
            })
            .await
            .into(),
        // B's home, claimed for B's resident, with the code B's household
        // claimed it with: what an attacker who read the code off B's lock
        // would send.
        Rpc::ClaimHome => access
            .claim_home(ClaimHomeRequest {
                home_id: b.home.into(),
                resident_ref: b.resident.into(),
                claim_code: w.claim_codes.get(b.resident).cloned().unwrap_or_default(),
            })
            .await
            .into(),
        Rpc::Clock => access.clock(ClockRequest {}).await.into(),
        Rpc::StreamAttempts => {
            let event = w.handheld(b, b.parcel, delivered());
            match send(channel, event).await {
                Ok(ack) => match attempt_ack::Result::try_from(ack.result) {
                    Ok(attempt_ack::Result::Rejected) => Answer::Denied,
                    _ => Answer::Answered,
                },
                Err(s) => Answer::Status(s.code()),
            }
        }
        Rpc::GetRoute => match HandheldServiceClient::new(channel)
            .get_route(GetRouteRequest {
                driver_id: b.driver.clone(),
                date: Some(date_to_proto(w.day)),
            })
            .await
        {
            Ok(r) if r.get_ref().routes.is_empty() => Answer::Withheld,
            other => other.into(),
        },
        Rpc::LoadManifest => {
            // The other party's parcel, to its depot, at another address.
            let csv = manifest(&format!("{}\n", w.manifest_row(b, b.parcel, "99")));
            let mut rejected = Vec::new();
            match threshold_manifest_service::client::load(
                &mut ManifestServiceClient::new(channel),
                "theirs.csv",
                std::io::Cursor::new(csv.into_bytes()),
                |r| rejected.push(r),
            )
            .await
            {
                Ok(s) if s.accepted == 0 && s.unchanged == 0 && s.rejected == 1 => {
                    assert_eq!(rejected.len(), 1, "{rejected:?}");
                    Answer::Denied
                }
                other => other.into(),
            }
        }
        // Carrying the day before over too: another party's parcels must
        // not be rescheduled by a caller who may not plan their depot.
        Rpc::PlanDay => PlanningServiceClient::new(channel)
            .plan_day(PlanDayRequest {
                date: Some(date_to_proto(w.day)),
                depot_ids: vec![b.depot.into()],
                seconds_per_depot: 0.2,
                objective: String::new(),
                carry_over_from: w.day.pred_opt().map(date_to_proto),
                ..Default::default()
            })
            .await
            .into(),
        Rpc::Subscribe => match outcomes(channel).await {
            Ok(seen) if seen.iter().any(|o| b.owns(&o.parcel_id)) => Answer::Answered,
            Ok(_) => Answer::Withheld,
            Err(s) => Answer::Status(s.code()),
        },
        // B's parcel by its id: what a partner or planner would send to
        // follow a parcel that is not theirs.
        Rpc::Track => OutcomeServiceClient::new(channel)
            .track(TrackRequest {
                parcel_id: b.parcel.into(),
            })
            .await
            .into(),
        // B's depot's day, every parcel on it.
        Rpc::TrackDay => match OutcomeServiceClient::new(channel)
            .track_day(TrackDayRequest {
                country: b.country.to_proto() as i32,
                depot_id: b.depot.into(),
                delivery_date: Some(date_to_proto(w.day)),
                page_size: 1_000,
                ..Default::default()
            })
            .await
        {
            Ok(r) if !r.get_ref().parcels.iter().any(|p| b.owns(&p.parcel_id)) => Answer::Withheld,
            other => other.into(),
        },
        Rpc::AttemptsReport => AnalyticsServiceClient::new(channel)
            .attempts_report(AttemptsReportRequest {
                by: "depot".into(),
                depot_id: b.depot.into(),
                up_to_head: true,
                ..Default::default()
            })
            .await
            .into(),
        // B's partner named, and B's endpoint: what a partner would send
        // to read, redirect or silence another partner's deliveries.
        Rpc::AddEndpoint => WebhookServiceClient::new(channel)
            .add_endpoint(AddEndpointRequest {
                partner: b.partner.into(),
                url: "https://collector.example/theirs".into(),
                kinds: vec![],
                from_start: true,
            })
            .await
            .into(),
        Rpc::ListEndpoints => WebhookServiceClient::new(channel)
            .list_endpoints(ListEndpointsRequest {
                partner: b.partner.into(),
            })
            .await
            .into(),
        Rpc::PauseEndpoint => WebhookServiceClient::new(channel)
            .pause_endpoint(endpoint_of(w, b))
            .await
            .into(),
        Rpc::ResumeEndpoint => WebhookServiceClient::new(channel)
            .resume_endpoint(endpoint_of(w, b))
            .await
            .into(),
        Rpc::RotateSecret => WebhookServiceClient::new(channel)
            .rotate_secret(RotateSecretRequest {
                partner: b.partner.into(),
                id: w.endpoint_of(b),
                overlap_seconds: 0,
            })
            .await
            .into(),
        Rpc::Replay => WebhookServiceClient::new(channel)
            .replay(ReplayRequest {
                partner: b.partner.into(),
                id: w.endpoint_of(b),
                from: Some(replay_request::From::AfterCursor(0)),
            })
            .await
            .into(),
        Rpc::ListAttempts => WebhookServiceClient::new(channel)
            .list_attempts(ListAttemptsRequest {
                partner: b.partner.into(),
                id: w.endpoint_of(b),
                after: 0,
                max: 10,
            })
            .await
            .into(),
        // B's partner named: what a partner would send to learn that
        // another partner's endpoints are failing, and where they point.
        Rpc::ListWebhookAlerts => WebhookServiceClient::new(channel)
            .list_webhook_alerts(ListWebhookAlertsRequest {
                partner: b.partner.into(),
                after: 0,
                max: 10,
            })
            .await
            .into(),
        Rpc::DeleteEndpoint => WebhookServiceClient::new(channel)
            .delete_endpoint(endpoint_of(w, b))
            .await
            .into(),
    }
}

/// `b`'s partner's endpoint, named with `b`'s partner.
fn endpoint_of(w: &World, b: &Party) -> EndpointRequest {
    EndpointRequest {
        partner: b.partner.into(),
        id: w.endpoint_of(b),
    }
}

/// `b`'s driver's unlock of `b`'s grant for its parcel, from beside its
/// door.
pub(crate) fn unlock_of(b: &Party) -> AuthorizeUnlockRequest {
    AuthorizeUnlockRequest {
        grant_id: b.grant.into(),
        parcel_id: b.parcel.into(),
        driver_id: b.driver.clone(),
        route_id: b.route.clone(),
        position: Some(b.beside_the_door()),
        pet_acknowledged: false,
    }
}

/// A lock's report that it opened under `grant` on `nonce`.
pub(crate) fn opened(lock: &str, grant: &str, nonce: &str) -> pb::home_event::Event {
    pb::home_event::Event::Unlocked(pb::LockUnlocked {
        lock_id: lock.into(),
        grant_id: grant.into(),
        nonce: nonce.into(),
    })
}

/// A lock's report that it locked again.
pub(crate) fn relocked(lock: &str) -> pb::home_event::Event {
    pb::home_event::Event::Relocked(pb::LockRelocked {
        lock_id: lock.into(),
    })
}

/// Opens `StreamAttempts` on `channel`, sends `event` and reads its ack:
/// a refusal of the stream, or of the event, as the server gave it.
pub(crate) async fn send(
    channel: Authed,
    event: HandheldEvent,
) -> Result<threshold_api::v1::AttemptAck, tonic::Status> {
    let mut acks = HandheldServiceClient::new(channel)
        .stream_attempts(tokio_stream::iter(vec![event]))
        .await?
        .into_inner();
    acks.message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("the stream ended without an ack"))
}

/// Every outcome a subscription from the start delivers until it has
/// been quiet for [`QUIET`].
pub(crate) async fn outcomes(channel: Authed) -> Result<Vec<ParcelOutcome>, tonic::Status> {
    let mut stream = OutcomeServiceClient::new(channel)
        .subscribe(SubscribeOutcomesRequest { from_cursor: 0 })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while let Ok(next) = tokio::time::timeout(QUIET, stream.message()).await {
        match next? {
            Some(o) => seen.push(o),
            None => break,
        }
    }
    Ok(seen)
}
