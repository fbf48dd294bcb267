//! Inputs out of the order the domain defines: an unlock asked before the
//! driver scanned the parcel, a nonce presented before any was
//! authorized, a receipt asked before any entry, an in-home delivery
//! reported before the door was relocked, an attempt reported on a parcel
//! already delivered, an unlock under a revoked grant. Each is refused;
//! the refusals of a way in are recorded on the grant; then the entry in
//! the right order goes through.

use threshold_access_service::device::Signed;
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::{
    AttemptAck, ReceiptRequest, RedeemUnlockRequest, RevokeGrantRequest, attempt_ack,
};
use threshold_domain::pb;
use threshold_testkit::fixtures::{delivered_by, started};
use tonic::Code;

use crate::calls::{opened, relocked, send, unlock_of};
use crate::recorded;
use crate::world::{World, assert_stored, device};

fn assert_rejected(ack: &AttemptAck) {
    assert_eq!(
        attempt_ack::Result::try_from(ack.result),
        Ok(attempt_ack::Result::Rejected),
        "{ack:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_inputs_are_refused_and_the_entry_in_order_goes_through() {
    recorded::install();
    let w = World::build().await;
    let b = &w.b;
    let mut resident = AccessServiceClient::new(w.resident_of(b));
    let mut driver = AccessServiceClient::new(w.driver_of(b));
    let mut vendor = AccessServiceClient::new(w.vendor_of(b));
    let denied = || {
        [(
            format!("grant/{}", b.grant),
            "grant.unlock_denied".to_owned(),
        )]
    };
    let nothing: [(String, String); 0] = [];
    let receipt = ReceiptRequest {
        grant_id: b.grant.into(),
        parcel_id: b.parcel.into(),
    };
    let in_home = || {
        w.handheld(
            b,
            b.parcel,
            delivered_by(pb::DeliveryMethod::InHome, b.grant),
        )
    };

    // An unlock before the parcel was scanned at the door.
    let head = w.head().await;
    let early = driver
        .authorize_unlock(unlock_of(b))
        .await
        .expect("decided")
        .into_inner();
    assert_eq!(
        (early.authorized, early.reason),
        (false, pb::UnlockDenyReason::ParcelNotScanned as i32),
        "{early:?}"
    );
    assert_eq!(w.stored_since(head).await, denied());
    assert!(
        recorded::value(
            "threshold_unlock_authorizations_total",
            &[("result", "denied"), ("reason", "parcel_not_scanned")]
        ) >= 1.0
    );

    // A nonce presented before any was authorized.
    let mut forged = RedeemUnlockRequest {
        home_id: b.home.into(),
        lock_id: b.lock.into(),
        grant_id: b.grant.into(),
        nonce: threshold_domain::EventId::new().to_string(),
        signature: vec![],
    };
    forged.sign(&b.key());
    let head = w.head().await;
    let shut = vendor
        .redeem_unlock(forged)
        .await
        .expect("decided")
        .into_inner();
    assert!(!shut.open, "{shut:?}");
    assert_eq!(w.stored_since(head).await, denied());

    // A receipt before any entry; an in-home delivery before any unlock.
    let head = w.head().await;
    let none = resident
        .get_receipt(receipt.clone())
        .await
        .expect_err("no entry yet");
    assert_eq!(none.code(), Code::FailedPrecondition, "{none:?}");
    assert_rejected(&send(w.driver_of(b), in_home()).await.expect("ack"));
    assert_eq!(w.stored_since(head).await, nothing);

    // In order: at the door, unlocked, opened...
    assert_stored(
        &send(w.driver_of(b), w.handheld(b, b.parcel, started()))
            .await
            .expect("ack"),
    );
    w.heartbeat(b).await;
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
    assert!(
        vendor
            .redeem_unlock(redeem)
            .await
            .expect("decided")
            .into_inner()
            .open
    );
    vendor
        .record_device_event(device(
            b.home,
            opened(b.lock, b.grant, &yes.nonce),
            chrono::Utc::now(),
            &b.key(),
        ))
        .await
        .expect("opened");
    // ... delivered before the door is locked again: refused.
    let head = w.head().await;
    assert_rejected(&send(w.driver_of(b), in_home()).await.expect("ack"));
    let open = resident
        .get_receipt(receipt.clone())
        .await
        .expect_err("the door is open");
    assert_eq!(open.code(), Code::FailedPrecondition, "{open:?}");
    assert_eq!(w.stored_since(head).await, nothing);
    // Relocked, then delivered: stored.
    vendor
        .record_device_event(device(
            b.home,
            relocked(b.lock),
            chrono::Utc::now(),
            &b.key(),
        ))
        .await
        .expect("relocked");
    assert_stored(&send(w.driver_of(b), in_home()).await.expect("ack"));
    resident
        .get_receipt(receipt)
        .await
        .expect("the receipt, once relocked");

    // An attempt on a parcel already delivered.
    let head = w.head().await;
    assert_rejected(
        &send(w.driver_of(b), w.handheld(b, b.parcel, started()))
            .await
            .expect("ack"),
    );
    assert_eq!(w.stored_since(head).await, nothing);

    // An unlock under a grant revoked before it: refused and recorded.
    resident
        .revoke_grant(RevokeGrantRequest {
            grant_id: b.spare_grant.into(),
            by: b.resident.into(),
            reason: "not needed".into(),
        })
        .await
        .expect("revoked");
    let head = w.head().await;
    let mut late = unlock_of(b);
    late.grant_id = b.spare_grant.into();
    let revoked = driver
        .authorize_unlock(late)
        .await
        .expect("decided")
        .into_inner();
    assert_eq!(
        (revoked.authorized, revoked.reason),
        (false, pb::UnlockDenyReason::Revoked as i32),
        "{revoked:?}"
    );
    assert_eq!(
        w.stored_since(head).await,
        [(
            format!("grant/{}", b.spare_grant),
            "grant.unlock_denied".to_owned()
        )]
    );
}
