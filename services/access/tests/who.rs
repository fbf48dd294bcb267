//! Who may call what on AccessService: every call carries a credential, and
//! each RPC checks the caller's role and tenant.

mod common;

use chrono::Utc;
use common::*;
use threshold_access_service::device::{Signed, key_from_seed, public_key};
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::{ClockRequest, ReceiptRequest, RevokeGrantRequest};
use threshold_auth::Role;
use threshold_domain::pb;
use tonic::Code;

#[tokio::test]
async fn no_or_unknown_credentials_get_unauthenticated_and_no_data() {
    let s = serve().await;
    for token in [None, Some("not-a-token")] {
        let mut c = AccessServiceClient::new(
            threshold_auth::authed(s.channel.clone(), token).expect("channel"),
        );
        let err = c.clock(ClockRequest {}).await.expect_err("no credentials");
        assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
        let err = c
            .issue_grant(grant("g-1"))
            .await
            .expect_err("no credentials");
        assert_eq!(err.code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn each_rpc_takes_its_role_and_tenant_only() {
    let mut s = serve_at_the_door().await;
    // A partner or an analyst has no business with doors.
    for role in [Role::Partner, Role::Analyst, Role::Planner] {
        let err = s
            .client_as(role, "*")
            .issue_grant(grant("g-1"))
            .await
            .expect_err("wrong role");
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "{role}: {}",
            err.message()
        );
    }
    // A resident issues grants for themself only.
    let err = s
        .client_as(Role::Resident, "res-2")
        .issue_grant(grant("g-1"))
        .await
        .expect_err("another resident");
    assert_eq!(err.code(), Code::PermissionDenied);
    s.resident
        .issue_grant(grant("g-1"))
        .await
        .expect("own grant");
    // Nor revokes, nor reads the receipts of, another's.
    let mut other = s.client_as(Role::Resident, "res-2");
    let err = other
        .revoke_grant(RevokeGrantRequest {
            grant_id: "g-1".into(),
            by: "res-2".into(),
            reason: "mischief".into(),
        })
        .await
        .expect_err("not theirs");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = other
        .get_receipt(ReceiptRequest {
            grant_id: "g-1".into(),
            parcel_id: "SE-1".into(),
        })
        .await
        .expect_err("not theirs");
    assert_eq!(err.code(), Code::PermissionDenied);
    // A handheld cannot issue, a resident cannot ask to unlock.
    let err = s
        .handheld
        .issue_grant(grant("g-2"))
        .await
        .expect_err("handheld");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = s
        .resident
        .authorize_unlock(unlock("g-1", "drv-1"))
        .await
        .expect_err("resident");
    assert_eq!(err.code(), Code::PermissionDenied);
    // Another lock vendor cannot speak for acme-locks' lock, even with the
    // home's key.
    let beat = device(
        pb::home_event::Event::CameraOnline(pb::CameraOnline {
            camera_id: "cam-1".into(),
            recording: true,
        }),
        Utc::now(),
        &key(),
    );
    let err = s
        .client_as(Role::LockVendor, "other-locks")
        .record_device_event(beat.clone())
        .await
        .expect_err("another vendor");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    s.vendor.record_device_event(beat).await.expect("own lock");
    // Nor take a home over by registering its own lock there.
    let mut takeover = device(
        pb::home_event::Event::LockRegistered(pb::LockRegistered {
            home_id: "home-1".into(),
            lock_id: "lock-9".into(),
            vendor: "other-locks".into(),
            public_key: public_key(&key_from_seed([9; 32])),
            country: pb::Country::Se as i32,
            ..Default::default()
        }),
        Utc::now(),
        &key(),
    );
    takeover.sign(&key());
    let err = s
        .client_as(Role::LockVendor, "other-locks")
        .record_device_event(takeover)
        .await
        .expect_err("takeover");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    // The carrier's planner may revoke on the resident's behalf.
    s.client_as(Role::Planner, "*")
        .revoke_grant(RevokeGrantRequest {
            grant_id: "g-1".into(),
            by: "carrier".into(),
            reason: "address closed".into(),
        })
        .await
        .expect("carrier revoke");
}

#[tokio::test]
async fn a_forgotten_residents_home_position_is_unreadable_and_opens_nothing() {
    let mut s = serve_at_the_door().await;
    s.resident.issue_grant(grant("g-1")).await.expect("issue");
    // Issued again, the same grant changes nothing, sealed or not.
    let again = issue(&mut s, grant("g-1")).await;
    assert!(again.unchanged);
    // The log holds the home's position sealed only.
    let stored = s
        .log
        .read_stream(&"grant/g-1".parse().expect("stream"), 0, 10)
        .await
        .expect("read");
    let threshold_domain::DomainEvent::Grant(pb::grant_event::Event::Issued(g)) =
        stored[0].decode().expect("decode")
    else {
        panic!("not issued")
    };
    let fence = g.geofence.expect("fence");
    assert!(fence.center.is_none() && fence.sealed_center.is_some());
    let yes = ask(&mut s, unlock("g-1", "drv-1")).await;
    assert!(yes.authorized, "{}", yes.detail);

    // res-1 asks to be forgotten.
    assert_eq!(
        s.vault
            .forget(&threshold_access_service::resident_subject("res-1"))
            .expect("forget"),
        1
    );
    let no = ask(&mut s, unlock("g-1", "drv-1")).await;
    assert_eq!(no.reason, pb::UnlockDenyReason::OutsideGeofence as i32);
    // Why is for the carrier's record; the driver is not told of the erasure.
    assert!(!no.detail.contains("erased"), "{}", no.detail);
    let denied = grant_history(s.log.as_ref(), "g-1").await;
    match denied.last() {
        Some(pb::grant_event::Event::UnlockDenied(d)) => {
            assert!(d.detail.contains("erased"), "{}", d.detail)
        }
        other => panic!("expected the refusal recorded, got {other:?}"),
    }
    // Nothing new is sealed for res-1: a new grant is refused as a
    // precondition the caller can act on, not as a server fault.
    let refused = s
        .resident
        .issue_grant(grant("g-2"))
        .await
        .expect_err("nothing new for a forgotten resident");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // The grant's stream is whole and the home's chain still verifies.
    let home = s
        .log
        .read_stream(&"home/home-1".parse().expect("stream"), 0, 100)
        .await
        .expect("read");
    threshold_log::audit::verify(&home).expect("intact chain");
}
