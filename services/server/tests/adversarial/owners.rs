//! Nothing valid lost: after whatever an attacker tried, the attacked party's own
//! people still go through their whole day, every RPC of it, and get what
//! they are owed: the driver's route, an attempt, an unlock authorized and
//! redeemed, the door's reports, the delivery, the resident's receipt, the
//! partner's outcome, the planner's report, replan and next manifest, a
//! new grant and its revoke.

use threshold_access_service::device::Signed;
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_api::v1::planning_service_client::PlanningServiceClient;
use threshold_api::v1::{
    AttemptsReportRequest, ClaimHomeRequest, ClockRequest, GetRouteRequest, PlanDayRequest,
    ReceiptRequest, RedeemUnlockRequest, RevokeGrantRequest, TrackDayRequest, TrackRequest,
    parcel_outcome,
};
use threshold_domain::country::date_to_proto;
use threshold_domain::pb;
use threshold_testkit::fixtures::{delivered_by, manifest, started};

use threshold_api::v1::webhook_service_client::WebhookServiceClient;
use threshold_api::v1::{
    AddEndpointRequest, EndpointRequest, ListAttemptsRequest, ListEndpointsRequest,
    ListWebhookAlertsRequest, ReplayRequest, RotateSecretRequest, replay_request,
};

use crate::calls::{Rpc, opened, outcomes, relocked, send, unlock_of};
use crate::world::{Party, World, assert_stored, device, grant_request};

/// Party B's whole day (the party the tests attack); the RPCs it called.
pub(crate) async fn bs_day_goes_on(w: &World) -> Vec<Rpc> {
    day_goes_on(w, &w.b).await
}

/// `b`'s whole day; returns the RPCs it called, each of which succeeded.
pub(crate) async fn day_goes_on(w: &World, b: &Party) -> Vec<Rpc> {
    let mut called = Vec::new();
    let mut access = AccessServiceClient::new(w.driver_of(b));
    let mut vendor = AccessServiceClient::new(w.vendor_of(b));
    let mut resident = AccessServiceClient::new(w.resident_of(b));

    access.clock(ClockRequest {}).await.expect("the clock");
    called.push(Rpc::Clock);

    let routes = HandheldServiceClient::new(w.driver_of(b))
        .get_route(GetRouteRequest {
            driver_id: b.driver.clone(),
            date: Some(date_to_proto(w.day)),
        })
        .await
        .expect("the party's driver reads the route")
        .into_inner()
        .routes;
    assert_eq!(
        routes
            .iter()
            .map(|r| r.route_id.as_str())
            .collect::<Vec<_>>(),
        [b.route.as_str()]
    );
    called.push(Rpc::GetRoute);

    let at_the_door = send(w.driver_of(b), w.handheld(b, b.parcel, started()))
        .await
        .expect("an attempt");
    assert_stored(&at_the_door);
    called.push(Rpc::StreamAttempts);

    w.heartbeat(b).await;
    let yes = access
        .authorize_unlock(unlock_of(b))
        .await
        .expect("decided")
        .into_inner();
    assert!(yes.authorized, "the party's driver is refused: {yes:?}");
    called.push(Rpc::AuthorizeUnlock);

    let mut redeem = RedeemUnlockRequest {
        home_id: b.home.into(),
        lock_id: b.lock.into(),
        grant_id: b.grant.into(),
        nonce: yes.nonce.clone(),
        signature: vec![],
    };
    redeem.sign(&b.key());
    let open = vendor
        .redeem_unlock(redeem)
        .await
        .expect("decided")
        .into_inner();
    assert!(open.open, "the party's lock is refused: {open:?}");
    called.push(Rpc::RedeemUnlock);

    for event in [opened(b.lock, b.grant, &yes.nonce), relocked(b.lock)] {
        let reply = vendor
            .record_device_event(device(b.home, event, chrono::Utc::now(), &b.key()))
            .await
            .expect("the door's report")
            .into_inner();
        assert_eq!(reply.alerts_raised, [] as [i32; 0], "{reply:?}");
    }
    called.push(Rpc::RecordDeviceEvent);

    let handed_over = send(
        w.driver_of(b),
        w.handheld(
            b,
            b.parcel,
            delivered_by(pb::DeliveryMethod::InHome, b.grant),
        ),
    )
    .await
    .expect("the delivery");
    assert_stored(&handed_over);

    let receipt = resident
        .get_receipt(ReceiptRequest {
            grant_id: b.grant.into(),
            parcel_id: b.parcel.into(),
        })
        .await
        .expect("the party's receipt")
        .into_inner();
    assert_eq!(receipt.home_id, b.home);
    assert_eq!(receipt.alerts, [] as [i32; 0]);
    called.push(Rpc::GetReceipt);

    let seen = outcomes(w.partner_of(b))
        .await
        .expect("the party's partner subscribes");
    let theirs: Vec<(&str, i32)> = seen
        .iter()
        .map(|o| (o.parcel_id.as_str(), o.kind))
        .collect();
    assert_eq!(
        theirs,
        [
            (b.other_parcel, parcel_outcome::Kind::AttemptFailed as i32),
            (b.parcel, parcel_outcome::Kind::Delivered as i32),
        ]
    );
    called.push(Rpc::Subscribe);

    // The partner tracks its delivered parcel (the model follows the log
    // within moments), and the planner lists the depot's day.
    let mut tracking = OutcomeServiceClient::new(w.partner_of(b));
    let mut track = None;
    for _ in 0..200 {
        let t = tracking
            .track(TrackRequest {
                parcel_id: b.parcel.into(),
            })
            .await;
        match t {
            Ok(t) if t.get_ref().status == "delivered" => {
                track = Some(t.into_inner());
                break;
            }
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => panic!("the party's partner tracks its parcel: {s}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let track = track.expect("the party's parcel tracked as delivered");
    assert_eq!(track.partner_id, b.partner);
    let steps: Vec<&str> = track.steps.iter().map(|s| s.milestone.as_str()).collect();
    assert_eq!(steps.first(), Some(&"manifested"), "{steps:?}");
    assert_eq!(steps.last(), Some(&"delivered"), "{steps:?}");
    assert_eq!(
        track.steps.last().map(|s| s.detail.as_str()),
        Some("in_home")
    );
    called.push(Rpc::Track);
    let day = OutcomeServiceClient::new(w.planner_of(b))
        .track_day(TrackDayRequest {
            country: b.country.to_proto() as i32,
            depot_id: b.depot.into(),
            delivery_date: Some(date_to_proto(w.day)),
            ..Default::default()
        })
        .await
        .expect("the party's planner lists the depot's day")
        .into_inner();
    let listed: Vec<(&str, &str)> = day
        .parcels
        .iter()
        .map(|p| (p.parcel_id.as_str(), p.status.as_str()))
        .collect();
    assert!(listed.contains(&(b.parcel, "delivered")), "{listed:?}");
    assert!(
        listed.iter().any(|(id, _)| *id == b.other_parcel),
        "{listed:?}"
    );
    assert!(listed.iter().all(|(id, _)| b.owns(id)), "{listed:?}");
    called.push(Rpc::TrackDay);

    // The partner's webhooks: a new endpoint, managed through its life.
    let mut hooks = WebhookServiceClient::new(w.partner_of(b));
    let ep = hooks
        .add_endpoint(AddEndpointRequest {
            partner: String::new(),
            url: format!("https://day.{}.example/hooks", b.partner),
            kinds: vec!["parcel.delivered".into()],
            from_start: true,
        })
        .await
        .expect("the partner's new endpoint")
        .into_inner();
    assert!(
        ep.secret.starts_with("whsec_"),
        "a Standard Webhooks secret"
    );
    let id = ep.endpoint.expect("the endpoint").id;
    called.push(Rpc::AddEndpoint);
    let listed = hooks
        .list_endpoints(ListEndpointsRequest::default())
        .await
        .expect("the partner's endpoints")
        .into_inner();
    assert!(listed.endpoints.iter().any(|e| e.id == id));
    assert!(listed.endpoints.iter().all(|e| e.partner == b.partner));
    called.push(Rpc::ListEndpoints);
    let own = || EndpointRequest {
        partner: String::new(),
        id: id.clone(),
    };
    let paused = hooks
        .pause_endpoint(own())
        .await
        .expect("pause")
        .into_inner();
    assert_eq!(paused.state, "paused");
    called.push(Rpc::PauseEndpoint);
    let resumed = hooks
        .resume_endpoint(own())
        .await
        .expect("resume")
        .into_inner();
    assert_eq!(resumed.state, "active");
    called.push(Rpc::ResumeEndpoint);
    let rotated = hooks
        .rotate_secret(RotateSecretRequest {
            partner: String::new(),
            id: id.clone(),
            overlap_seconds: 3600,
        })
        .await
        .expect("rotate")
        .into_inner();
    assert!(rotated.secret.starts_with("whsec_") && rotated.secret != ep.secret);
    called.push(Rpc::RotateSecret);
    hooks
        .replay(ReplayRequest {
            partner: String::new(),
            id: id.clone(),
            from: Some(replay_request::From::AfterCursor(0)),
        })
        .await
        .expect("replay");
    called.push(Rpc::Replay);
    hooks
        .list_attempts(ListAttemptsRequest {
            partner: String::new(),
            id: id.clone(),
            after: 0,
            max: 10,
        })
        .await
        .expect("attempts");
    called.push(Rpc::ListAttempts);
    // The world's endpoints point at hosts that do not answer, which are
    // retried, not disabled: the partner's own alerts are none yet.
    let alerts = hooks
        .list_webhook_alerts(ListWebhookAlertsRequest::default())
        .await
        .expect("the partner's alerts")
        .into_inner();
    assert!(
        alerts.alerts.iter().all(|a| a.partner == b.partner),
        "{alerts:?}"
    );
    called.push(Rpc::ListWebhookAlerts);
    hooks.delete_endpoint(own()).await.expect("delete");
    called.push(Rpc::DeleteEndpoint);

    let report = AnalyticsServiceClient::new(w.planner_of(b))
        .attempts_report(AttemptsReportRequest {
            by: "depot".into(),
            depot_id: b.depot.into(),
            up_to_head: true,
            ..Default::default()
        })
        .await
        .expect("the party's planner's report")
        .into_inner();
    let total = report.total.expect("a total");
    assert!(total.parcels >= 2 && total.delivered == 1, "{total:?}");
    called.push(Rpc::AttemptsReport);

    let later = format!("{}3", b.prefix);
    let csv = manifest(&format!("{}\n", w.manifest_row(b, &later, "3")));
    let summary = threshold_manifest_service::client::load(
        &mut ManifestServiceClient::new(w.planner_of(b)),
        "later.csv",
        std::io::Cursor::new(csv.into_bytes()),
        |r| panic!("the party's row is rejected: {r:?}"),
    )
    .await
    .expect("the party's planner loads");
    assert_eq!(summary.accepted, 1, "{summary:?}");
    called.push(Rpc::LoadManifest);

    PlanningServiceClient::new(w.planner_of(b))
        .plan_day(PlanDayRequest {
            date: Some(date_to_proto(w.day)),
            depot_ids: vec![b.depot.into()],
            seconds_per_depot: 0.2,
            objective: String::new(),
            ..Default::default()
        })
        .await
        .expect("the party's planner replans");
    called.push(Rpc::PlanDay);

    let next = format!("{}-next", b.grant);
    resident
        .issue_grant(grant_request(b, &next))
        .await
        .expect("the party's resident grants again");
    called.push(Rpc::IssueGrant);

    let revoked = resident
        .revoke_grant(RevokeGrantRequest {
            grant_id: next.clone(),
            by: b.resident.into(),
            reason: "changed plans".into(),
        })
        .await
        .expect("the party's resident revokes")
        .into_inner();
    assert!(!revoked.unchanged);
    called.push(Rpc::RevokeGrant);

    // The household claims its home again, with its code: nothing changes.
    let again = resident
        .claim_home(ClaimHomeRequest {
            home_id: b.home.into(),
            resident_ref: b.resident.into(),
            claim_code: w.claim_codes[b.resident].clone(),
        })
        .await
        .expect("the party's resident claims its home again")
        .into_inner();
    assert!(again.unchanged, "{again:?}");
    called.push(Rpc::ClaimHome);
    called
}
