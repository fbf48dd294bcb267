//! Inputs sent again: a grant issued twice (by its resident, and under its
//! id by another resident), a manifest loaded twice, a handheld event and
//! a device report resent, a redeemed nonce redeemed again, and a lock
//! opening again on a spent nonce. A resend stores nothing new; a replay
//! meant to get in is refused and recorded; B's delivery still completes,
//! once.

use threshold_access_service::device::Signed;
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::{ReceiptRequest, RedeemUnlockRequest, attempt_ack, parcel_outcome};
use threshold_domain::pb;
use threshold_testkit::fixtures::{delivered_by, started};
use tonic::Code;

use crate::calls::{opened, outcomes, relocked, send, unlock_of};
use crate::recorded;
use crate::world::{World, assert_stored, device, grant_request, heartbeat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_inputs_store_nothing_twice_and_replays_to_get_in_are_refused_and_recorded() {
    recorded::install();
    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    let mut resident = AccessServiceClient::new(w.resident_of(b));
    let mut driver = AccessServiceClient::new(w.driver_of(b));
    let mut vendor = AccessServiceClient::new(w.vendor_of(b));
    let nothing: [(String, String); 0] = [];

    // B's grant issued again as it was: unchanged.
    let head = w.head().await;
    let again = resident
        .issue_grant(w.grants[b.grant].clone())
        .await
        .expect("the same grant")
        .into_inner();
    assert!(again.unchanged, "{again:?}");
    assert_eq!(w.stored_since(head).await, nothing);

    // A's resident issues under B's grant id, naming itself and its own
    // home and parcel: the id is taken.
    let hijack = grant_request(a, b.grant);
    let refused = AccessServiceClient::new(w.resident_of(a))
        .issue_grant(hijack)
        .await
        .expect_err("the id is B's");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(!refused.message().contains(b.resident), "{refused:?}");
    assert_eq!(w.stored_since(head).await, nothing);

    // B's manifest loaded again: every row unchanged.
    let summary = threshold_manifest_service::client::load(
        &mut ManifestServiceClient::new(w.planner_of(b)),
        "again.csv",
        std::io::Cursor::new(w.manifest_of(b).into_bytes()),
        |r| panic!("rejected on reload: {r:?}"),
    )
    .await
    .expect("reload");
    assert_eq!((summary.accepted, summary.unchanged), (0, 2), "{summary:?}");
    assert_eq!(w.stored_since(head).await, nothing);

    // The driver's attempt, resent: the original's position.
    let start = w.handheld(b, b.parcel, started());
    let first = send(w.driver_of(b), start.clone()).await.expect("stored");
    assert_stored(&first);
    let head = w.head().await;
    let resent = send(w.driver_of(b), start.clone()).await.expect("resent");
    assert_eq!(
        (
            attempt_ack::Result::try_from(resent.result),
            resent.position
        ),
        (Ok(attempt_ack::Result::Duplicate), first.position)
    );
    assert_eq!(w.stored_since(head).await, nothing);

    // A's driver reports on A's own parcel under the id of B's attempt:
    // refused, not taken for B's (nor for a new event), and B's parcel
    // goes unnamed.
    let mut borrowed = w.handheld(a, a.parcel, started());
    borrowed.event_id = start.event_id.clone();
    let refused = send(w.driver_of(a), borrowed).await.expect("answered");
    assert_eq!(
        attempt_ack::Result::try_from(refused.result),
        Ok(attempt_ack::Result::Rejected),
        "{refused:?}"
    );
    assert!(refused.error.contains("event_id"), "{}", refused.error);
    assert!(!refused.error.contains(b.parcel), "{}", refused.error);
    assert_eq!(w.stored_since(head).await, nothing);

    // The camera's heartbeat, resent: a duplicate.
    let beat = device(b.home, heartbeat(b), chrono::Utc::now(), &b.key());
    vendor
        .record_device_event(beat.clone())
        .await
        .expect("heartbeat");
    let head = w.head().await;
    let dup = vendor
        .record_device_event(beat)
        .await
        .expect("resent")
        .into_inner();
    assert!(dup.duplicate, "{dup:?}");
    assert_eq!(w.stored_since(head).await, nothing);

    // The nonce, redeemed, then redeemed again: refused and recorded.
    let yes = driver
        .authorize_unlock(unlock_of(b))
        .await
        .expect("decided")
        .into_inner();
    assert!(yes.authorized, "{yes:?}");
    let mut redeem = RedeemUnlockRequest {
        home_id: b.home.into(),
        lock_id: b.lock.into(),
        grant_id: b.grant.into(),
        nonce: yes.nonce.clone(),
        signature: vec![],
    };
    redeem.sign(&b.key());
    let open = vendor
        .redeem_unlock(redeem.clone())
        .await
        .expect("decided")
        .into_inner();
    assert!(open.open, "{open:?}");
    let head = w.head().await;
    let twice = vendor
        .redeem_unlock(redeem)
        .await
        .expect("decided")
        .into_inner();
    assert!(!twice.open, "{twice:?}");
    assert!(
        recorded::value(
            "threshold_unlock_authorizations_total",
            &[("result", "redeem_refused")]
        ) >= 1.0
    );
    assert_eq!(
        w.stored_since(head).await,
        [(format!("grant/{}", b.grant), "grant.unlock_denied".into())]
    );

    // The lock's opening, resent: a duplicate; opening again on the spent
    // nonce: an alert.
    let unlocked = device(
        b.home,
        opened(b.lock, b.grant, &yes.nonce),
        chrono::Utc::now(),
        &b.key(),
    );
    vendor
        .record_device_event(unlocked.clone())
        .await
        .expect("opened");
    let head = w.head().await;
    let dup = vendor
        .record_device_event(unlocked)
        .await
        .expect("resent")
        .into_inner();
    assert!(dup.duplicate, "{dup:?}");
    assert_eq!(w.stored_since(head).await, nothing);
    vendor
        .record_device_event(device(
            b.home,
            relocked(b.lock),
            chrono::Utc::now(),
            &b.key(),
        ))
        .await
        .expect("relocked");
    let again = vendor
        .record_device_event(device(
            b.home,
            opened(b.lock, b.grant, &yes.nonce),
            chrono::Utc::now(),
            &b.key(),
        ))
        .await
        .expect("recorded")
        .into_inner();
    assert_eq!(again.alerts_raised, [pb::AlertKind::NonceReused as i32]);
    assert!(recorded::value("threshold_home_alerts_total", &[("kind", "nonce_reused")]) >= 1.0);
    vendor
        .record_device_event(device(
            b.home,
            relocked(b.lock),
            chrono::Utc::now(),
            &b.key(),
        ))
        .await
        .expect("relocked");

    // Nothing valid lost: the delivery, once, resent as a duplicate; the
    // receipt tells of the reuse; the partner sees one delivery.
    let handed = w.handheld(
        b,
        b.parcel,
        delivered_by(pb::DeliveryMethod::InHome, b.grant),
    );
    let stored = send(w.driver_of(b), handed.clone()).await.expect("stored");
    assert_stored(&stored);
    let head = w.head().await;
    let dup = send(w.driver_of(b), handed).await.expect("resent");
    assert_eq!(dup.position, stored.position);
    assert_eq!(w.stored_since(head).await, nothing);
    let receipt = resident
        .get_receipt(ReceiptRequest {
            grant_id: b.grant.into(),
            parcel_id: b.parcel.into(),
        })
        .await
        .expect("receipt")
        .into_inner();
    assert_eq!(receipt.alerts, [pb::AlertKind::NonceReused as i32]);
    let seen = outcomes(w.partner_of(b)).await.expect("B's partner");
    let delivered: Vec<&str> = seen
        .iter()
        .filter(|o| o.kind == parcel_outcome::Kind::Delivered as i32)
        .map(|o| o.parcel_id.as_str())
        .collect();
    assert_eq!(delivered, [b.parcel]);
}
