//! Outcome subscriptions end when their caller goes: a cancelled call or a
//! closed connection ends the server's task at once, even on a quiet log,
//! and the subscription is counted out (`threshold.outcome.subscribers`).
//!
//! Against the production server (the sandbox), whose outcome service's
//! count of open subscriptions the test reads.

use std::time::Duration;

use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_api::v1::{SubscribeOutcomesRequest, parcel_outcome};
use threshold_auth::Role;
use threshold_domain::{DomainEvent, EventId, StreamId, pb};
use threshold_log::{ExpectedVersion, NewEvent};
use threshold_outcome_service::Outcomes;
use threshold_testkit::Sandbox;
use threshold_testkit::fixtures::manifested;
use tonic::transport::Channel;

/// The production server (every service), its outcome service and its URL.
async fn serve() -> (Sandbox, Outcomes, String) {
    let sandbox = Sandbox::start().await;
    let outcomes = sandbox.outcomes();
    let url = sandbox.url().to_owned();
    (sandbox, outcomes, url)
}

/// A partner client for nordshop on a connection of its own.
async fn partner(sandbox: &Sandbox, url: &str) -> OutcomeServiceClient<threshold_auth::Authed> {
    let token = sandbox.mint("nordshop-feed", Role::Partner, "nordshop");
    let channel = Channel::from_shared(url.to_owned())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    OutcomeServiceClient::new(threshold_auth::authed(channel, Some(&token)).expect("token"))
}

/// Waits up to two seconds for the service to count `n` subscriptions.
async fn counted(outcomes: &Outcomes, n: usize) -> bool {
    for _ in 0..200 {
        if outcomes.subscribers() == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// SE-1 delivered, recorded for nordshop.
async fn deliver_se1(sandbox: &Sandbox) {
    let log = sandbox.log();
    manifested(log.as_ref(), &["SE-1"]).await;
    let delivered = DomainEvent::Parcel(pb::parcel_event::Event::Delivered(pb::ParcelDelivered {
        attempt: 1,
        method: pb::DeliveryMethod::Doorstep as i32,
        driver_id: "drv-1".into(),
        ..Default::default()
    }));
    log.append(
        &"parcel/SE-1".parse::<StreamId>().expect("stream"),
        ExpectedVersion::Exactly(1),
        vec![
            NewEvent::new(
                EventId::new(),
                &delivered,
                std::time::SystemTime::now().into(),
            )
            .tenant("nordshop".to_owned()),
        ],
    )
    .await
    .expect("append");
}

#[tokio::test]
async fn a_cancelled_subscription_ends_at_once_on_a_quiet_log() {
    let (sandbox, outcomes, url) = serve().await;
    deliver_se1(&sandbox).await;
    let mut client = partner(&sandbox, &url).await;
    let mut feed = client
        .subscribe(SubscribeOutcomesRequest { from_cursor: 0 })
        .await
        .expect("subscribe")
        .into_inner();
    let first = feed.message().await.expect("an outcome").expect("one");
    assert_eq!(
        (first.parcel_id.as_str(), first.kind),
        ("SE-1", parcel_outcome::Kind::Delivered as i32)
    );
    assert_eq!(outcomes.subscribers(), 1);

    // Cancelled; nothing more is appended, so only the cancel can end it.
    drop(feed);
    assert!(
        counted(&outcomes, 0).await,
        "a cancelled subscription still runs: {} open",
        outcomes.subscribers()
    );
    // The connection is still good for a new subscription.
    let _again = client
        .subscribe(SubscribeOutcomesRequest { from_cursor: 0 })
        .await
        .expect("subscribe again")
        .into_inner();
    assert!(counted(&outcomes, 1).await);
}

#[tokio::test]
async fn a_closed_connection_ends_its_subscriptions() {
    let (sandbox, outcomes, url) = serve().await;
    let mut client = partner(&sandbox, &url).await;
    let mut feeds = Vec::new();
    for _ in 0..3 {
        feeds.push(
            client
                .subscribe(SubscribeOutcomesRequest { from_cursor: 0 })
                .await
                .expect("subscribe")
                .into_inner(),
        );
    }
    assert!(
        counted(&outcomes, 3).await,
        "{} open",
        outcomes.subscribers()
    );

    // The partner's process goes away: its streams and its connection.
    drop(feeds);
    drop(client);
    assert!(
        counted(&outcomes, 0).await,
        "subscriptions outlive their connection: {} open",
        outcomes.subscribers()
    );
}
