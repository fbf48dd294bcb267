//! A credential revoked, or expiring, while its stream is open: a stolen
//! handheld's attempts stream and a former partner's outcome subscription
//! end with UNAUTHENTICATED within seconds, and nothing more is stored or
//! sent under it; the party's day goes on.

use std::time::Duration;

use threshold_api::v1::SubscribeOutcomesRequest;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_auth::Role;
use threshold_testkit::fixtures::{delivered, not_home};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::owners::bs_day_goes_on;
use crate::world::{World, assert_stored};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_handhelds_open_stream_ends_and_stores_nothing_more() {
    let w = World::build().await;
    let b = &w.b;
    let token = w.sandbox.mint("stolen-handheld", Role::Handheld, &b.driver);
    let (events, mut acks) = reporting(&w, &token).await;

    let head = w.head().await;
    assert!(w.sandbox.revoke("stolen-handheld").await);
    // Idle, the stream ends on its own within seconds.
    let ended = tokio::time::timeout(Duration::from_secs(10), acks.message())
        .await
        .expect("ended within seconds")
        .expect_err("the stream ends");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    // What the handheld sends after is not taken.
    let _ = events.send(w.handheld(b, b.parcel, delivered())).await;
    tokio::time::sleep(threshold_auth::STANDING_EVERY).await;
    assert_eq!(w.stored_since(head).await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_partners_open_subscription_ends() {
    let w = World::build().await;
    let b = &w.b;
    let token = w.sandbox.mint("former-partner", Role::Partner, b.partner);
    let channel = threshold_auth::authed(w.sandbox.channel(), Some(&token)).expect("a token");
    let mut outcomes = OutcomeServiceClient::new(channel)
        .subscribe(SubscribeOutcomesRequest { from_cursor: 0 })
        .await
        .expect("subscribed")
        .into_inner();
    assert!(w.sandbox.revoke("former-partner").await);
    let ended = subscription_ended(&mut outcomes).await;
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    bs_day_goes_on(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handhelds_stream_and_a_partners_subscription_end_when_their_credentials_expire() {
    let w = World::build().await;
    let b = &w.b;
    let until = chrono::Utc::now() + chrono::Duration::seconds(3);
    let handheld = w
        .sandbox
        .mint_until("shift-handheld", Role::Handheld, &b.driver, until);
    let partner = w
        .sandbox
        .mint_until("trial-partner", Role::Partner, b.partner, until);
    let as_ =
        |token: &str| threshold_auth::authed(w.sandbox.channel(), Some(token)).expect("a token");
    let mut outcomes = OutcomeServiceClient::new(as_(&partner))
        .subscribe(SubscribeOutcomesRequest { from_cursor: 0 })
        .await
        .expect("subscribed")
        .into_inner();
    let (_events, mut acks) = reporting(&w, &handheld).await;

    // Idle, both end on their own within seconds of the expiry, saying so.
    let ended = tokio::time::timeout(Duration::from_secs(10), acks.message())
        .await
        .expect("ended within seconds")
        .expect_err("the stream ends");
    assert!(chrono::Utc::now() >= until, "not before it expired");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("expired at"), "{ended:?}");
    let ended = subscription_ended(&mut outcomes).await;
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("expired at"), "{ended:?}");

    // A new stream is refused; nothing sent after the expiry is stored.
    let head = w.head().await;
    let (events, inbound) = tokio::sync::mpsc::channel(4);
    let _ = events.send(w.handheld(b, b.parcel, delivered())).await;
    let refused = HandheldServiceClient::new(as_(&handheld))
        .stream_attempts(ReceiverStream::new(inbound))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("\"shift-handheld\" expired at"),
        "{refused:?}"
    );
    tokio::time::sleep(threshold_auth::STANDING_EVERY).await;
    assert_eq!(w.stored_since(head).await, []);
}

/// The status an outcome subscription ends with, read to its end within
/// seconds.
async fn subscription_ended(
    outcomes: &mut tonic::Streaming<threshold_api::v1::ParcelOutcome>,
) -> tonic::Status {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match outcomes.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the subscription ended without a status"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("ended within seconds")
}

/// B's driver's attempts stream opened with `token`, one event sent on it
/// and stored: what to send on, and the acks.
async fn reporting(
    w: &World,
    token: &str,
) -> (
    tokio::sync::mpsc::Sender<threshold_api::v1::HandheldEvent>,
    tonic::Streaming<threshold_api::v1::AttemptAck>,
) {
    let b = &w.b;
    let channel = threshold_auth::authed(w.sandbox.channel(), Some(token)).expect("a token");
    let (events, inbound) = tokio::sync::mpsc::channel(4);
    let mut acks = HandheldServiceClient::new(channel)
        .stream_attempts(ReceiverStream::new(inbound))
        .await
        .expect("the stream opens")
        .into_inner();
    events
        .send(w.handheld(b, b.other_parcel, not_home()))
        .await
        .expect("sent");
    assert_stored(&acks.message().await.expect("an ack").expect("one"));
    (events, acks)
}
