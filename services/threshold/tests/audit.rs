//! `threshold audit verify`: a home's hash chain recomputed from the store,
//! and a resident's receipt checked against it.

mod common;

use common::*;

#[tokio::test]
async fn audit_verify_recomputes_a_homes_chain_from_the_store() {
    use threshold_access_service::device::{Signed, key_from_seed, public_key};
    use threshold_api::v1::access_service_client::AccessServiceClient;
    use threshold_api::v1::{DeviceEventRequest, HomeEvent, home_event};
    use threshold_domain::pb;

    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let server = Served::start(&data);
    let mut access =
        AccessServiceClient::new(server.channel(threshold_auth::Role::LockVendor).await);
    let facts = [
        home_event::Event::LockRegistered(pb::LockRegistered {
            home_id: "home-7".into(),
            lock_id: "lock-7".into(),
            vendor: "acme-locks".into(),
            public_key: public_key(&key_from_seed([7; 32])),
            country: pb::Country::No as i32,
            // A home's first registration enrols it at its address.
            address: Some(pb::Address {
                street: "Gate 7".into(),
                postal_code: "0150".into(),
                city: "Oslo".into(),
                position: None,
            }),
            ..Default::default()
        }),
        home_event::Event::CameraOnline(pb::CameraOnline {
            camera_id: "cam-7".into(),
            recording: true,
        }),
        home_event::Event::CameraOffline(pb::CameraOffline {
            camera_id: "cam-7".into(),
            ..Default::default()
        }),
    ];
    for fact in facts {
        let mut event = DeviceEventRequest {
            event_id: threshold_domain::EventId::new().to_string(),
            home_id: "home-7".into(),
            occurred_at: Some(threshold_domain::country::timestamp(chrono::Utc::now())),
            event: Some(HomeEvent {
                event: Some(fact),
                prev_hash: Vec::new(),
            }),
            signature: Vec::new(),
        };
        event.sign(&key_from_seed([7; 32]));
        // The server runs a simulation: every access request carries the
        // simulator's clock.
        let mut request = tonic::Request::new(event);
        request.metadata_mut().insert(
            threshold_api::SIMULATED_TIME_HEADER,
            chrono::Utc::now().to_rfc3339().parse().expect("ascii"),
        );
        access.record_device_event(request).await.expect("recorded");
    }
    // A graceful stop waits for open connections: close ours, and keep this
    // runtime free to do it while the server stops.
    drop(access);
    let stopped = tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop");
    assert!(stopped.success());

    let data = data.to_str().expect("path");
    let out = threshold(&["audit", "verify", "--home", "home-7", "--data", data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 events, chain intact, head "), "{text}");
    let head = text.trim().rsplit(' ').next().expect("head");
    assert_eq!(head.len(), 64, "{text}");
    // A resident's receipt holding that head checks out; a made-up one does not.
    let receipt = format!("{head}@3");
    let ok = threshold(&[
        "audit", "verify", "--home", "home-7", "--data", data, "--head", &receipt,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("holds"));
    let forged = format!("{}@3", "0".repeat(64));
    let bad = threshold(&[
        "audit", "verify", "--home", "home-7", "--data", data, "--head", &forged,
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("the receipt does not hold"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let none = threshold(&["audit", "verify", "--home", "home-8", "--data", data]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no events of home home-8"));
}
