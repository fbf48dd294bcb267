//! OutcomeService end to end (guarantee 8): two partners, each sees its own
//! parcels' outcomes only, catch-up then live, resumable by cursor.

use std::time::Duration;

use prost::Message;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_api::v1::{
    AttemptFailedReport, HandheldEvent, ParcelOutcome, SubscribeOutcomesRequest, parcel_outcome,
};
use threshold_auth::Role;
use threshold_domain::pb;
use threshold_testkit::Sandbox;
use threshold_testkit::fixtures::{
    delivered, handheld_event, load_manifest, manifest, not_home, planned,
};

/// Two of nordshop's parcels and one of fjallgear's.
fn day_manifest() -> String {
    manifest(
        "SE-1,nordshop,SE,STO-1,2026-11-23,Gatan 1,111 51,Stockholm,59.33,18.06,doorstep,1,,
SE-2,nordshop,SE,STO-1,2026-11-23,Gatan 2,111 51,Stockholm,59.33,18.06,doorstep,1,,
NO-1,fjallgear,NO,OSL-1,2026-11-23,Gate 1,0150,Oslo,59.91,10.75,doorstep,1,,
",
    )
}

/// What a driver's device reports about `parcel`, naming the driver and
/// the device: neither may reach a partner.
fn event(parcel: &str, report: Report) -> HandheldEvent {
    HandheldEvent {
        device_id: "hh-secret-device".into(),
        driver_id: "drv-secret-driver".into(),
        ..handheld_event(parcel, report)
    }
}

/// The day's parcels on the route of the driver [`event`] names.
async fn on_route(server: &Sandbox) {
    planned(
        server.log().as_ref(),
        "r-1",
        "drv-secret-driver",
        &["SE-1", "SE-2", "NO-1"],
    )
    .await;
}

async fn drive(server: &Sandbox, events: Vec<HandheldEvent>) {
    // One at a time, each sent once the one before is acknowledged, so the
    // log holds them in this order (a stream's events on different parcels
    // sent at once are decided side by side).
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut acks = HandheldServiceClient::new(server.handheld())
        .stream_attempts(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    for e in events {
        tx.send(e).await.expect("send");
        let a = acks.message().await.expect("ack").expect("an ack");
        assert!(a.error.is_empty(), "{}", a.error);
    }
}

fn subscribe_request(token: Option<&str>, from: u64) -> tonic::Request<SubscribeOutcomesRequest> {
    let mut r = tonic::Request::new(SubscribeOutcomesRequest { from_cursor: from });
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    r
}

async fn take(stream: &mut tonic::Streaming<ParcelOutcome>, n: usize) -> Vec<ParcelOutcome> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an outcome arrives")
            .expect("stream ok")
            .expect("stream open");
        out.push(next);
    }
    out
}

async fn nothing_more(stream: &mut tonic::Streaming<ParcelOutcome>) {
    let more = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(more.is_err(), "unexpected outcome {more:?}");
}

#[tokio::test]
async fn each_partner_sees_only_its_own_parcels_catch_up_live_and_resumed() {
    let server = Sandbox::start().await;
    let nordshop = server.mint("nordshop", Role::Partner, "nordshop");
    let fjallgear = server.mint("fjallgear", Role::Partner, "fjallgear");
    load_manifest(server.planner(), "day.csv", &day_manifest()).await;
    on_route(&server).await;
    drive(
        &server,
        vec![
            event("SE-1", not_home()),
            event("SE-1", delivered()),
            event("NO-1", delivered()),
            event("SE-2", not_home()),
        ],
    )
    .await;

    let mut outcomes = OutcomeServiceClient::new(server.unauthenticated());
    let mut ns = outcomes
        .subscribe(subscribe_request(Some(&nordshop), 0))
        .await
        .expect("subscribe")
        .into_inner();
    let seen = take(&mut ns, 3).await;
    let summary: Vec<(&str, i32, u32)> = seen
        .iter()
        .map(|o| (o.parcel_id.as_str(), o.kind, o.attempt))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("SE-1", parcel_outcome::Kind::AttemptFailed as i32, 1),
            ("SE-1", parcel_outcome::Kind::Delivered as i32, 2),
            ("SE-2", parcel_outcome::Kind::AttemptFailed as i32, 1),
        ]
    );
    assert_eq!(seen[0].reason, pb::FailureReason::NotHome as i32);
    assert_eq!(seen[1].method, pb::DeliveryMethod::Doorstep as i32);
    assert_eq!(seen[0].country, pb::Country::Se as i32);
    assert_eq!(seen[0].local_time.len(), "2026-11-23T10:15".len());
    for o in &seen {
        let bytes = o.encode_to_vec();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("secret"),
            "nothing about drivers or devices leaves: {o:?}"
        );
    }
    nothing_more(&mut ns).await;

    let mut fg = outcomes
        .subscribe(subscribe_request(Some(&fjallgear), 0))
        .await
        .expect("subscribe")
        .into_inner();
    let theirs = take(&mut fg, 1).await;
    assert_eq!(theirs[0].parcel_id, "NO-1");
    nothing_more(&mut fg).await;

    // Live: a new outcome reaches its partner's open subscription only.
    drive(&server, vec![event("SE-2", delivered())]).await;
    let live = take(&mut ns, 1).await;
    assert_eq!((live[0].parcel_id.as_str(), live[0].attempt), ("SE-2", 2));
    nothing_more(&mut fg).await;

    // Resume after the second outcome: the third and the live one, no repeat.
    let mut resumed = outcomes
        .subscribe(subscribe_request(Some(&nordshop), seen[1].cursor))
        .await
        .expect("resume")
        .into_inner();
    let again = take(&mut resumed, 2).await;
    assert_eq!(again[0].cursor, seen[2].cursor);
    assert_eq!(again[1].cursor, live[0].cursor);
    nothing_more(&mut resumed).await;
}

#[tokio::test]
async fn no_or_unknown_credentials_get_unauthenticated_never_data() {
    let server = Sandbox::start().await;
    server.mint("nordshop", Role::Partner, "nordshop");
    let mut outcomes = OutcomeServiceClient::new(server.unauthenticated());
    for request in [
        subscribe_request(None, 0),
        subscribe_request(Some("guessed-token"), 0),
    ] {
        let err = outcomes.subscribe(request).await.expect_err("refused");
        assert_eq!(
            err.code(),
            tonic::Code::Unauthenticated,
            "{}",
            err.message()
        );
    }
}

#[tokio::test]
async fn partners_see_outcomes_redacted_and_the_carriers_analysts_see_them_whole() {
    let server = Sandbox::start().await;
    let nordshop = server.mint("nordshop", Role::Partner, "nordshop");
    load_manifest(server.planner(), "day.csv", &day_manifest()).await;
    on_route(&server).await;
    // The driver's note names the resident and a door code.
    let failed = Report::Failed(AttemptFailedReport {
        reason: pb::FailureReason::NoAccess as i32,
        note: "Mrs Lind, door code 4711, not answering".into(),
    });
    drive(
        &server,
        vec![event("SE-1", failed), event("NO-1", delivered())],
    )
    .await;

    let mut outcomes = OutcomeServiceClient::new(server.unauthenticated());
    let mut partner = outcomes
        .subscribe(subscribe_request(Some(&nordshop), 0))
        .await
        .expect("subscribe")
        .into_inner();
    let seen = take(&mut partner, 1).await;
    assert_eq!(seen[0].reason, pb::FailureReason::NoAccess as i32);
    let text = String::from_utf8_lossy(&seen[0].encode_to_vec()).into_owned();
    for secret in ["4711", "Lind", "drv-secret", "hh-secret"] {
        assert!(
            !text.contains(secret),
            "{secret} reached a partner: {:?}",
            seen[0]
        );
    }
    assert!(seen[0].note.is_empty() && seen[0].driver_id.is_empty());

    let analyst = server.tokens();
    let mut carrier = outcomes
        .subscribe(subscribe_request(analyst.token(Role::Analyst), 0))
        .await
        .expect("subscribe")
        .into_inner();
    let whole = take(&mut carrier, 2).await;
    let se1 = whole
        .iter()
        .find(|o| o.parcel_id == "SE-1")
        .expect("SE-1's outcome");
    assert_eq!(se1.note, "Mrs Lind, door code 4711, not answering");
    assert_eq!(se1.driver_id, "drv-secret-driver");
    assert!(
        whole.iter().any(|o| o.parcel_id == "NO-1"),
        "every partner's parcels: {whole:?}"
    );
    // A handheld's token subscribes to nothing.
    let err = outcomes
        .subscribe(subscribe_request(analyst.token(Role::Handheld), 0))
        .await
        .expect_err("not a subscriber");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}
