//! Partners' webhooks across services, on the production server: an
//! in-home delivery's payload carries the chain head of the resident's
//! receipt (read independently, over `AccessService.GetReceipt`), a
//! doorstep delivery's carries none; and an endpoint that answers 410 is
//! disabled with an alert its partner and the carrier can list, and no
//! other partner can.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt as _, Full};
use threshold_access_service::device::Signed as _;
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::webhook_service_client::WebhookServiceClient;
use threshold_api::v1::{
    AddEndpointRequest, ListEndpointsRequest, ListWebhookAlertsRequest, ReceiptRequest,
    RedeemUnlockRequest,
};
use threshold_auth::Role;
use threshold_domain::pb;
use threshold_testkit::Sandbox;
use threshold_testkit::fixtures::{
    HandheldStream, address, delivered, delivered_by, device, door, grant, handheld_event, key,
    manifested_at, manifested_on_route, not_home, planned, started, unlock,
};
use threshold_webhook_service::{Options, Policy, Schedule};

/// What a receiver got: verified bodies, in arrival order.
type Got = Arc<Mutex<Vec<serde_json::Value>>>;

/// A partner's receiver on 127.0.0.1:0 answering `status` to every
/// request; it keeps each body whose signature the `standardwebhooks`
/// crate verifies under the secret set in the returned slot.
async fn receiver(status: u16) -> (SocketAddr, Got, Arc<Mutex<String>>) {
    let got: Got = Arc::default();
    let secret: Arc<Mutex<String>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (g, s) = (Arc::clone(&got), Arc::clone(&secret));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (g, s) = (Arc::clone(&g), Arc::clone(&s));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (g, s) = (Arc::clone(&g), Arc::clone(&s));
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let secret = s.lock().expect("secret").clone();
                            let verified = standardwebhooks::Webhook::new(&secret)
                                .and_then(|w| w.verify(&body, &parts.headers))
                                .is_ok();
                            if verified {
                                let v: serde_json::Value =
                                    serde_json::from_slice(&body).expect("json");
                                g.lock().expect("got").push(v);
                            }
                            let mut answer = hyper::Response::new(Full::new(Bytes::new()));
                            *answer.status_mut() =
                                hyper::StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(answer)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, got, secret)
}

/// The production server, delivering webhooks to loopback (as a test's
/// receivers are) on a retry schedule run 10 000 times faster.
async fn server() -> Sandbox {
    Sandbox::builder()
        .webhooks(Options {
            policy: Policy {
                allow_private: true,
            },
            timeout: Duration::from_secs(2),
            schedule: Schedule::accelerated(10_000),
        })
        .start()
        .await
}

/// Registers `addr` for `partner`'s outcomes as that partner, with the
/// receiver's secret set; the endpoint's id.
async fn register(
    server: &Sandbox,
    partner: &str,
    addr: SocketAddr,
    secret: &Mutex<String>,
) -> String {
    let added = WebhookServiceClient::new(server.partner(partner))
        .add_endpoint(AddEndpointRequest {
            partner: String::new(),
            url: format!("http://{addr}/hooks"),
            kinds: vec![],
            from_start: false,
        })
        .await
        .expect("the partner's endpoint")
        .into_inner();
    *secret.lock().expect("secret") = added.secret;
    added.endpoint.expect("an endpoint").id
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_home_delivery_carries_its_receipts_chain_head_and_a_doorstep_one_none() {
    let server = server().await;
    let log = server.log();
    let vault = server.vault();
    let now = Utc::now();
    let mut vendor = AccessServiceClient::new(server.client_as(Role::LockVendor, "acme-locks"));
    let mut resident = AccessServiceClient::new(server.client_as(Role::Resident, "res-1"));
    let mut handheld = AccessServiceClient::new(server.client_as(Role::Handheld, "drv-1"));
    // SE-1 (in home-1, under grant g-1) and SE-2 (at the door) are nordshop's.
    door(log.as_ref(), &vault, &mut vendor, &mut resident, now, false).await;
    manifested_at(log.as_ref(), &vault, &["SE-2"], &address()).await;
    // Both on drv-1's route, dated and from a depot, as the handheld
    // service's custody check reads plans.
    planned(log.as_ref(), "r-1", "drv-1", &["SE-1", "SE-2"]).await;
    let (addr, got, secret) = receiver(200).await;
    register(&server, "nordshop", addr, &secret).await;

    // The entry: authorized, redeemed by the lock, opened and relocked.
    resident.issue_grant(grant("g-1")).await.expect("issue");
    let yes = handheld
        .authorize_unlock(unlock("g-1", "drv-1"))
        .await
        .expect("decided")
        .into_inner();
    assert!(yes.authorized, "{}", yes.detail);
    let mut redeem = RedeemUnlockRequest {
        home_id: "home-1".into(),
        lock_id: "lock-1".into(),
        grant_id: "g-1".into(),
        nonce: yes.nonce.clone(),
        signature: vec![],
    };
    redeem.sign(&key());
    assert!(
        vendor
            .redeem_unlock(redeem)
            .await
            .expect("redeem")
            .into_inner()
            .open
    );
    for e in [
        pb::home_event::Event::Unlocked(pb::LockUnlocked {
            lock_id: "lock-1".into(),
            grant_id: "g-1".into(),
            nonce: yes.nonce.clone(),
        }),
        pb::home_event::Event::Relocked(pb::LockRelocked {
            lock_id: "lock-1".into(),
        }),
    ] {
        vendor
            .record_device_event(device(e, Utc::now(), &key()))
            .await
            .expect("the lock's report");
    }

    // The handheld reports both deliveries.
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    for (parcel, report) in [
        ("SE-1", delivered_by(pb::DeliveryMethod::InHome, "g-1")),
        ("SE-2", started()),
        ("SE-2", delivered()),
    ] {
        let ack = hh.send(&handheld_event(parcel, report)).await;
        assert!(ack.error.is_empty(), "{parcel}: {}", ack.error);
    }
    until("both deliveries", || got.lock().expect("got").len() >= 2).await;

    // The receipt, as the resident reads it, independently of the webhook.
    let receipt = resident
        .get_receipt(ReceiptRequest {
            grant_id: "g-1".into(),
            parcel_id: "SE-1".into(),
        })
        .await
        .expect("the receipt")
        .into_inner();
    assert_eq!(receipt.chain_head.len(), 64);
    let bodies = got.lock().expect("got").clone();
    let in_home = bodies
        .iter()
        .find(|b| b["data"]["parcel_id"] == "SE-1")
        .expect("SE-1's webhook");
    assert_eq!(in_home["data"]["status"], "delivered_in_home");
    let proof = &in_home["data"]["proof_of_delivery"];
    assert_eq!(proof["receipt_chain_head"], receipt.chain_head.as_str());
    assert_eq!(proof["receipt_chain_version"], receipt.chain_version);
    // And the stored chain still leads there.
    let home = log
        .read_stream(&"home/home-1".parse().expect("stream"), 0, 1000)
        .await
        .expect("home");
    threshold_log::audit::check_receipt(
        &home,
        proof["receipt_chain_head"].as_str().expect("head"),
        proof["receipt_chain_version"].as_u64().expect("version"),
    )
    .expect("the payload's head is on the stored chain");
    let text = in_home.to_string();
    for private in ["home-1", "g-1", "lock-1", "res-1", "drv-1"] {
        assert!(!text.contains(private), "{private} in {text}");
    }
    let doorstep = bodies
        .iter()
        .find(|b| b["data"]["parcel_id"] == "SE-2")
        .expect("SE-2's webhook");
    assert_eq!(doorstep["data"]["status"], "delivered");
    assert!(doorstep["data"]["proof_of_delivery"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_gone_is_disabled_with_an_alert_its_partner_and_the_carrier_list() {
    let server = server().await;
    let log = server.log();
    manifested_on_route(log.as_ref(), "r-1", "drv-1", &["SE-1"]).await;
    let (gone, _, secret) = receiver(410).await;
    let id = register(&server, "nordshop", gone, &secret).await;
    // fjallgear has an endpoint too, which answers: it sees no alert.
    let (fine, _, fine_secret) = receiver(200).await;
    register(&server, "fjallgear", fine, &fine_secret).await;
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    let ack = hh.send(&handheld_event("SE-1", not_home())).await;
    assert!(ack.error.is_empty(), "{}", ack.error);

    let mut mine = WebhookServiceClient::new(server.partner("nordshop"));
    let list = |partner: &str, after: u64, max: u32| ListWebhookAlertsRequest {
        partner: partner.into(),
        after,
        max,
    };
    // Disabled at the first answer: a 410 is not retried.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let alerts = loop {
        let got = mine
            .list_webhook_alerts(list("", 0, 0))
            .await
            .expect("the partner's alerts")
            .into_inner();
        if !got.alerts.is_empty() {
            break got;
        }
        assert!(std::time::Instant::now() < deadline, "no alert");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(alerts.alerts.len(), 1, "{alerts:?}");
    let alert = &alerts.alerts[0];
    assert_eq!(
        (alert.endpoint_id.as_str(), alert.partner.as_str()),
        (id.as_str(), "nordshop")
    );
    assert!(alert.message.contains("410"), "{}", alert.message);
    assert_eq!(alerts.next_after, alert.seq);
    let listed = mine
        .list_endpoints(ListEndpointsRequest::default())
        .await
        .expect("endpoints")
        .into_inner();
    assert_eq!(listed.endpoints[0].state, "disabled");
    // Read on from the last one: nothing more, and the cursor stays.
    let on = mine
        .list_webhook_alerts(list("", alert.seq, 10))
        .await
        .expect("read on")
        .into_inner();
    assert!(on.alerts.is_empty());
    assert_eq!(on.next_after, alert.seq);

    // The carrier sees it among every partner's, and naming the partner.
    let mut carrier = WebhookServiceClient::new(server.analyst());
    for partner in ["", "nordshop"] {
        let seen = carrier
            .list_webhook_alerts(list(partner, 0, 0))
            .await
            .expect("the carrier's alerts")
            .into_inner();
        assert_eq!(seen.alerts, alerts.alerts, "carrier, partner {partner:?}");
    }
    let none = carrier
        .list_webhook_alerts(list("fjallgear", 0, 0))
        .await
        .expect("fjallgear's alerts")
        .into_inner();
    assert!(none.alerts.is_empty());

    // Another partner sees none of it, asking for its own or naming nordshop.
    let mut theirs = WebhookServiceClient::new(server.partner("fjallgear"));
    let own = theirs
        .list_webhook_alerts(list("", 0, 0))
        .await
        .expect("fjallgear's own alerts")
        .into_inner();
    assert!(own.alerts.is_empty(), "{own:?}");
    let refused = theirs
        .list_webhook_alerts(list("nordshop", 0, 0))
        .await
        .expect_err("another partner's alerts");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    // Neither a driver's handheld nor a resident may ask at all.
    for role in [Role::Handheld, Role::Resident] {
        let refused = WebhookServiceClient::new(server.client_as(role, "drv-1"))
            .list_webhook_alerts(list("", 0, 0))
            .await
            .expect_err("not a partner's or the carrier's");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{role}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_whose_credentials_are_revoked_is_sent_nothing_more_until_one_is_added() {
    let server = server().await;
    let log = server.log();
    manifested_on_route(log.as_ref(), "r-1", "drv-1", &["SE-1", "SE-2"]).await;
    let (addr, got, secret) = receiver(200).await;
    let id = register(&server, "nordshop", addr, &secret).await;
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    let ack = hh.send(&handheld_event("SE-1", not_home())).await;
    assert!(ack.error.is_empty(), "{}", ack.error);
    until("the first outcome", || !got.lock().expect("got").is_empty()).await;

    // The partner's contract ends: its credentials go. Its endpoint is
    // still registered, and the server's local credential of every
    // partner (`*`, the carrier's own) keeps it sending nothing.
    assert!(server.revoke_every(Role::Partner, "nordshop").await >= 1);
    let ack = hh.send(&handheld_event("SE-2", not_home())).await;
    assert!(ack.error.is_empty(), "{}", ack.error);
    let mut carrier = WebhookServiceClient::new(server.analyst());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let alert = loop {
        let alerts = carrier
            .list_webhook_alerts(ListWebhookAlertsRequest {
                partner: "nordshop".into(),
                after: 0,
                max: 0,
            })
            .await
            .expect("the carrier's alerts")
            .into_inner()
            .alerts;
        if let Some(a) = alerts.into_iter().next() {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "no alert");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(alert.endpoint_id, id);
    assert!(
        alert.message.contains("holds no partner credential"),
        "{}",
        alert.message
    );
    tokio::time::sleep(3 * threshold_auth::STANDING_EVERY).await;
    let sent: Vec<String> = got
        .lock()
        .expect("got")
        .iter()
        .map(|b| b["data"]["parcel_id"].to_string())
        .collect();
    assert_eq!(sent, ["\"SE-1\""], "nothing after the last credential went");

    // A new contract, a new credential: what waited is sent.
    server.mint("nordshop-renewed", Role::Partner, "nordshop");
    until("the outcome that waited", || {
        got.lock().expect("got").len() >= 2
    })
    .await;
    assert_eq!(got.lock().expect("got")[1]["data"]["parcel_id"], "SE-2");
}
