//! Inputs too large: an id over its limit in every RPC that takes one
//! (sent by the party whose RPC it is, so the size, not the role, is what
//! refuses), gRPC messages over a service's limit, a manifest chunk over
//! its limit, and manifest records, fields and ids over theirs. Refused
//! with INVALID_ARGUMENT naming the field, or RESOURCE_EXHAUSTED for a
//! message; a refused manifest row is recorded in the load's summary with
//! its line; nothing is stored, and B's day goes on.

use threshold_access_service::device::Signed;
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::{
    AttemptFailedReport, GetRouteRequest, ManifestChunk, ReceiptRequest, RedeemUnlockRequest,
    RevokeGrantRequest, attempt_ack,
};
use threshold_domain::country::date_to_proto;
use threshold_domain::ids::MAX_ID_LEN;
use threshold_domain::pb;
use threshold_testkit::fixtures::{manifest, not_home};
use tonic::Code;

use crate::calls::{Answer, send, unlock_of};
use crate::owners::bs_day_goes_on;
use crate::world::{World, device, grant_request, heartbeat};

/// An id one byte over the limit.
fn long() -> String {
    "x".repeat(MAX_ID_LEN + 1)
}

/// Asserts `r` is INVALID_ARGUMENT naming `field` first.
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, tonic::Status>, field: &str) {
    let e = r.expect_err("an id over its limit");
    assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
    assert!(e.message().starts_with(field), "{field}: {e:?}");
}

/// Asserts the handheld's ack `ack` rejects its event naming `field` first.
fn assert_rejected(ack: &threshold_api::v1::AttemptAck, field: &str) {
    assert_eq!(
        attempt_ack::Result::try_from(ack.result),
        Ok(attempt_ack::Result::Rejected),
        "{ack:?}"
    );
    assert!(ack.error.starts_with(field), "{field}: {}", ack.error);
}

/// The status a manifest load of `chunk` ends with; `what` names the chunk
/// for the panic if the load is taken.
async fn load_refused(
    planner: threshold_auth::Authed,
    chunk: ManifestChunk,
    what: &str,
) -> tonic::Status {
    match ManifestServiceClient::new(planner)
        .load_manifest(tokio_stream::iter(vec![chunk]))
        .await
    {
        Err(e) => e,
        Ok(replies) => {
            let mut replies = replies.into_inner();
            loop {
                match replies.message().await {
                    Err(e) => break e,
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{what} was taken"),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_ids_are_refused_naming_the_field_and_nothing_is_stored() {
    let w = World::build().await;
    let b = &w.b;
    let mut resident = AccessServiceClient::new(w.resident_of(b));
    let mut driver = AccessServiceClient::new(w.driver_of(b));
    let mut vendor = AccessServiceClient::new(w.vendor_of(b));
    let head = w.head().await;

    assert_invalid(
        resident.issue_grant(grant_request(b, &long())).await,
        "grant_id",
    );
    assert_invalid(
        resident
            .revoke_grant(RevokeGrantRequest {
                grant_id: long(),
                by: b.resident.into(),
                reason: String::new(),
            })
            .await,
        "grant_id",
    );
    assert_invalid(
        resident
            .get_receipt(ReceiptRequest {
                grant_id: b.grant.into(),
                parcel_id: long(),
            })
            .await,
        "parcel_id",
    );
    let mut unlock = unlock_of(b);
    unlock.parcel_id = long();
    assert_invalid(driver.authorize_unlock(unlock).await, "parcel_id");
    let mut redeem = RedeemUnlockRequest {
        home_id: long(),
        lock_id: b.lock.into(),
        grant_id: b.grant.into(),
        nonce: "n".into(),
        signature: vec![],
    };
    redeem.sign(&b.key());
    assert_invalid(vendor.redeem_unlock(redeem).await, "home_id");
    assert_invalid(
        vendor
            .record_device_event(device(&long(), heartbeat(b), chrono::Utc::now(), &b.key()))
            .await,
        "home_id",
    );
    assert_invalid(
        HandheldServiceClient::new(w.driver_of(b))
            .get_route(GetRouteRequest {
                driver_id: long(),
                date: Some(date_to_proto(w.day)),
            })
            .await,
        "driver_id",
    );
    // A handheld event is answered in its ack, naming the field.
    let ack = send(w.driver_of(b), w.handheld(b, &long(), not_home()))
        .await
        .expect("the stream opens");
    assert_rejected(&ack, "parcel_id");
    assert_eq!(w.stored_since(head).await, []);

    bs_day_goes_on(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_chunks_and_manifest_rows_are_refused_and_the_rest_loads() {
    let w = World::build().await;
    let b = &w.b;
    let head = w.head().await;

    // A handheld event over the handheld's message limit.
    let mut huge = w.handheld(b, b.parcel, not_home());
    huge.report = Some(Report::Failed(AttemptFailedReport {
        reason: pb::FailureReason::NotHome as i32,
        note: "x".repeat(threshold_handheld_service::MAX_MESSAGE + 1),
    }));
    let refused = send(w.driver_of(b), huge).await.expect_err("too large");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // A note over its own limit, in a message under the handheld's.
    let mut long_note = w.handheld(b, b.parcel, not_home());
    long_note.report = Some(Report::Failed(AttemptFailedReport {
        reason: pb::FailureReason::NotHome as i32,
        note: "x".repeat(threshold_handheld_service::MAX_NOTE + 1),
    }));
    let ack = send(w.driver_of(b), long_note)
        .await
        .expect("the stream opens");
    assert_rejected(&ack, "failed.note");

    // A manifest chunk over the chunk limit.
    let chunk = ManifestChunk {
        manifest_id: "huge.csv".into(),
        data: vec![b'x'; threshold_manifest_service::MAX_CHUNK + 1],
    };
    let refused = load_refused(w.planner_of(b), chunk, "an oversized chunk").await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(w.stored_since(head).await, []);

    // A manifest id over its limit (it is recorded on every parcel of the
    // load), on a good row: refused naming it, and nothing stored.
    let chunk = ManifestChunk {
        manifest_id: "m".repeat(threshold_manifest_service::MAX_MANIFEST_ID + 1),
        data: manifest(&format!("{}\n", w.manifest_row(b, "NO-B9", "9"))).into_bytes(),
    };
    let refused = load_refused(w.planner_of(b), chunk, "an over-long manifest id").await;
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().starts_with("manifest_id"), "{refused:?}");
    assert_eq!(w.stored_since(head).await, []);

    // Rows over the id, field and record limits, between two good rows:
    // each refused with its line and recorded in the summary; the good
    // rows load.
    let row = |id: &str, street: &str| w.manifest_row(b, id, street);
    let csv = manifest(&format!(
        "{}\n{}\n{}\n{}\n{}\n",
        row("NO-B4", "4"),
        row(&long(), "5"),
        row(
            "NO-B6",
            &"a".repeat(threshold_manifest::MAX_FIELD_BYTES + 1)
        ),
        row("NO-B8", &"b,".repeat(threshold_manifest::MAX_RECORD_BYTES)),
        row("NO-B9", "9"),
    ));
    let mut rejected = Vec::new();
    let summary = threshold_manifest_service::client::load(
        &mut ManifestServiceClient::new(w.planner_of(b)),
        "oversized.csv",
        std::io::Cursor::new(csv.into_bytes()),
        |r| rejected.push(r),
    )
    .await
    .expect("the load ends with a summary");
    assert_eq!((summary.accepted, summary.rejected), (2, 3), "{rejected:?}");
    let lines: Vec<u64> = rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, [3, 4, 5]);
    assert_eq!(rejected[0].field, "parcel_id");
    // Rows of different parcels are decided concurrently: their events may
    // reach the log in either order.
    let mut stored = w.stored_since(head).await;
    stored.sort();
    assert_eq!(
        stored,
        [
            ("parcel/NO-B4".to_owned(), "parcel.manifested".to_owned()),
            ("parcel/NO-B9".to_owned(), "parcel.manifested".to_owned()),
        ]
    );

    bs_day_goes_on(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_message_over_the_limit_is_refused_as_resource_exhausted() {
    let w = World::build().await;
    let b = &w.b;
    let head = w.head().await;
    // 100 KiB of parcel ids in one grant: over the access service's 64 KiB.
    let mut g = grant_request(b, "g-b-huge");
    g.parcel_ids = (0..2000).map(|i| format!("NO-B-{i:045}")).collect();
    let answer: Answer = AccessServiceClient::new(w.resident_of(b))
        .issue_grant(g)
        .await
        .into();
    assert_eq!(answer, Answer::Status(Code::ResourceExhausted));
    assert_eq!(w.stored_since(head).await, []);
    bs_day_goes_on(&w).await;
}
