//! OutcomeService end to end (guarantee 8): two partners, each sees its own
//! parcels' outcomes only, catch-up then live, resumable by cursor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prost::Message;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_api::v1::{
    AttemptFailedReport, DeliveredReport, HandheldEvent, ParcelOutcome, SubscribeOutcomesRequest,
    parcel_outcome,
};
use threshold_auth::{AuthLayer, Authed, Authenticator, Credentials, LocalTokens, Role};
use threshold_domain::country::timestamp;
use threshold_domain::{EventId, pb};
use threshold_handheld_service::Handhelds;
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog};
use threshold_manifest_service::{Manifests, client};
use threshold_outcome_service::Outcomes;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};

/// A connection as each role a test plays, with the local credentials a
/// first serve makes in `dir`.
#[derive(Clone)]
#[allow(dead_code)]
struct Conn {
    planner: Authed,
    handheld: Authed,
    analyst: Authed,
    plain: Channel,
}

impl Conn {
    fn new(channel: Channel, dir: &std::path::Path) -> Self {
        let tokens = LocalTokens::load(dir).expect("tokens");
        let as_role = |role| tokens.channel(channel.clone(), role).expect("token");
        Self {
            planner: as_role(Role::Planner),
            handheld: as_role(Role::Handheld),
            analyst: as_role(Role::Analyst),
            plain: channel,
        }
    }
}

const MANIFEST: &str = "parcel_id,partner_id,country,depot_id,delivery_date,address,postal_code,city,latitude,longitude,service,weight_kg,window_start,window_end
SE-1,nordshop,SE,STO-1,2026-11-23,Gatan 1,111 51,Stockholm,59.33,18.06,doorstep,1,,
SE-2,nordshop,SE,STO-1,2026-11-23,Gatan 2,111 51,Stockholm,59.33,18.06,doorstep,1,,
NO-1,fjallgear,NO,OSL-1,2026-11-23,Gate 1,0150,Oslo,59.91,10.75,doorstep,1,,
";

async fn serve(dir: &std::path::Path) -> Channel {
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(dir.join("log"), EmbeddedOptions::default()).expect("log"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    LocalTokens::ensure(dir).expect("credentials");
    let router = Server::builder()
        .layer(AuthLayer::new(Authenticator::new(dir)))
        .add_service(
            Manifests::new(
                Arc::clone(&log),
                Arc::new(threshold_privacy::Vault::open(dir).expect("vault")),
            )
            .into_server(),
        )
        .add_service(Handhelds::new(Arc::clone(&log)).into_server())
        .add_service(Outcomes::new(log).into_server());
    tokio::spawn(async move {
        router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("server");
    });
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

fn event(parcel: &str, report: Report) -> HandheldEvent {
    HandheldEvent {
        event_id: EventId::new().to_string(),
        device_id: "hh-secret-device".into(),
        sequence: 0,
        parcel_id: parcel.into(),
        driver_id: "drv-secret-driver".into(),
        route_id: String::new(),
        occurred_at: Some(timestamp(Utc::now())),
        report: Some(report),
    }
}

fn delivered() -> Report {
    Report::Delivered(DeliveredReport {
        method: pb::DeliveryMethod::Doorstep as i32,
        grant_id: String::new(),
        position: None,
    })
}

fn not_home() -> Report {
    Report::Failed(AttemptFailedReport {
        reason: pb::FailureReason::NotHome as i32,
        note: String::new(),
    })
}

async fn drive(channel: &Conn, events: Vec<HandheldEvent>) {
    let mut acks = HandheldServiceClient::new(channel.handheld.clone())
        .stream_attempts(tokio_stream::iter(events))
        .await
        .expect("stream")
        .into_inner();
    while let Some(a) = acks.message().await.expect("ack") {
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
    let dir = tempfile::tempdir().expect("dir");
    let channel = Conn::new(serve(dir.path()).await, dir.path());
    let nordshop =
        Credentials::add(dir.path(), "nordshop", Role::Partner, "nordshop").expect("token");
    let fjallgear =
        Credentials::add(dir.path(), "fjallgear", Role::Partner, "fjallgear").expect("token");
    client::load(
        &mut ManifestServiceClient::new(channel.planner.clone()),
        "day.csv",
        std::io::Cursor::new(MANIFEST.as_bytes().to_vec()),
        |r| panic!("{r:?}"),
    )
    .await
    .expect("manifest");
    drive(
        &channel,
        vec![
            event("SE-1", not_home()),
            event("SE-1", delivered()),
            event("NO-1", delivered()),
            event("SE-2", not_home()),
        ],
    )
    .await;

    let mut outcomes = OutcomeServiceClient::new(
        threshold_auth::authed(channel.plain.clone(), None).expect("channel"),
    );
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
    drive(&channel, vec![event("SE-2", delivered())]).await;
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
    let dir = tempfile::tempdir().expect("dir");
    let channel = Conn::new(serve(dir.path()).await, dir.path());
    Credentials::add(dir.path(), "nordshop", Role::Partner, "nordshop").expect("token");
    let mut outcomes = OutcomeServiceClient::new(
        threshold_auth::authed(channel.plain.clone(), None).expect("channel"),
    );
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
    let dir = tempfile::tempdir().expect("dir");
    let channel = Conn::new(serve(dir.path()).await, dir.path());
    let nordshop =
        Credentials::add(dir.path(), "nordshop", Role::Partner, "nordshop").expect("token");
    client::load(
        &mut ManifestServiceClient::new(channel.planner.clone()),
        "day.csv",
        std::io::Cursor::new(MANIFEST.as_bytes().to_vec()),
        |r| panic!("{r:?}"),
    )
    .await
    .expect("manifest");
    // The driver's note names the resident and a door code.
    let failed = Report::Failed(AttemptFailedReport {
        reason: pb::FailureReason::NoAccess as i32,
        note: "Mrs Lind, door code 4711, not answering".into(),
    });
    drive(
        &channel,
        vec![event("SE-1", failed), event("NO-1", delivered())],
    )
    .await;

    let mut outcomes = OutcomeServiceClient::new(
        threshold_auth::authed(channel.plain.clone(), None).expect("channel"),
    );
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

    let analyst = LocalTokens::load(dir.path()).expect("tokens");
    let mut carrier = outcomes
        .subscribe(subscribe_request(analyst.token(Role::Analyst), 0))
        .await
        .expect("subscribe")
        .into_inner();
    let whole = take(&mut carrier, 2).await;
    assert_eq!(whole[0].note, "Mrs Lind, door code 4711, not answering");
    assert_eq!(whole[0].driver_id, "drv-secret-driver");
    assert_eq!(whole[1].parcel_id, "NO-1", "every partner's parcels");
    // A handheld's token subscribes to nothing.
    let err = outcomes
        .subscribe(subscribe_request(analyst.token(Role::Handheld), 0))
        .await
        .expect_err("not a subscriber");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}
