//! An actor of party A naming itself (its own driver id, resident ref,
//! vendor) on party B's objects: the token's tenant matches the request,
//! so what refuses is the binding of the identity to the object, which
//! the domain holds. Refused, recorded where the platform records it, and
//! B's day goes on.
//!
//! The bindings of home enrolment and claims: a grant only on a home
//! claimed by the resident, for parcels addressed to its household; a home
//! a vendor enrols takes no grant until its household claims it with the
//! code; a payload names the request's home; a handheld reports only on
//! parcels planned on its route.

use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::{AuthorizeUnlockRequest, LoadedReport, attempt_ack};
use threshold_domain::pb;
use threshold_testkit::fixtures::{delivered, started};
use tonic::Code;

use crate::calls::send;
use crate::owners::bs_day_goes_on;
use crate::recorded;
use crate::world::{World, device, grant_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_naming_itself_on_another_routes_grant_is_denied_recorded_and_told_nothing() {
    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    let mut driver = AccessServiceClient::new(w.driver_of(a));
    // On B's route, and on its own: the first recorded, the second told
    // the same and not recorded again.
    for (route, recorded) in [(b.route.clone(), true), (a.route.clone(), false)] {
        let head = w.head().await;
        let reply = driver
            .authorize_unlock(AuthorizeUnlockRequest {
                grant_id: b.grant.into(),
                parcel_id: b.parcel.into(),
                driver_id: a.driver.clone(),
                route_id: route.clone(),
                position: Some(b.beside_the_door()),
                pet_acknowledged: false,
            })
            .await
            .expect("decided")
            .into_inner();
        assert!(!reply.authorized, "{reply:?}");
        assert!(!reply.detail.is_empty());
        // The refusal names nothing of B's.
        let told = format!("{reply:?}");
        for secret in [
            b.driver.as_str(),
            b.route.as_str(),
            b.resident,
            b.home,
            b.lock,
        ] {
            assert!(!told.contains(secret), "{told} names {secret}");
        }
        assert_eq!(
            reply.reason,
            pb::UnlockDenyReason::WrongDriver as i32,
            "{reply:?}"
        );
        // Recorded on B's grant once, and nothing else stored.
        let stored = w.stored_since(head).await;
        if recorded {
            assert_eq!(
                stored,
                [(format!("grant/{}", b.grant), "grant.unlock_denied".into())],
                "on route {route}"
            );
        } else {
            assert_eq!(stored, [], "on route {route}");
        }
    }
    bs_day_goes_on(&w).await;
}

/// However often drivers who are not a grant's own ask to open it, the
/// household's grant grows by a bounded number of refusals: each asks and
/// is told WRONG_DRIVER every time, recorded once; the grant's own driver
/// and resident are not held up behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_asking_again_and_again_on_another_households_grant_grow_it_by_one_refusal_each() {
    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    let head = w.head().await;
    let ask = AuthorizeUnlockRequest {
        grant_id: b.grant.into(),
        parcel_id: b.parcel.into(),
        driver_id: a.driver.clone(),
        route_id: a.route.clone(),
        position: Some(b.beside_the_door()),
        pet_acknowledged: false,
    };
    let mut driver = AccessServiceClient::new(w.driver_of(a));
    for _ in 0..200 {
        let reply = driver
            .authorize_unlock(ask.clone())
            .await
            .expect("decided")
            .into_inner();
        assert_eq!(
            reply.reason,
            pb::UnlockDenyReason::WrongDriver as i32,
            "{reply:?}"
        );
    }
    // A credential of every driver naming new drivers: one each, to the
    // grant's bound.
    let mut fleet = AccessServiceClient::new(
        w.sandbox
            .client_as(threshold_auth::Role::Handheld, threshold_auth::ANY_TENANT),
    );
    let most = threshold_domain::grant::MAX_WRONG_DRIVERS_RECORDED;
    for n in 0..most + 20 {
        let reply = fleet
            .authorize_unlock(AuthorizeUnlockRequest {
                driver_id: format!("drv-made-up-{n}"),
                ..ask.clone()
            })
            .await
            .expect("decided")
            .into_inner();
        assert!(!reply.authorized, "{reply:?}");
    }
    let stored = w.stored_since(head).await;
    assert_eq!(stored.len(), most, "{} refusals recorded", stored.len());
    assert!(
        stored
            .iter()
            .all(|(s, t)| *s == format!("grant/{}", b.grant) && t == "grant.unlock_denied")
    );
    // They used up nothing of the household's own driver: its refusal is
    // still on record.
    let head = w.head().await;
    let reply = AccessServiceClient::new(w.driver_of(b))
        .authorize_unlock(AuthorizeUnlockRequest {
            driver_id: b.driver.clone(),
            route_id: b.route.clone(),
            position: Some(threshold_domain::geo::point(b.at.0 + 0.1, b.at.1)),
            ..ask.clone()
        })
        .await
        .expect("decided")
        .into_inner();
    assert!(!reply.authorized, "{reply:?}");
    assert_eq!(
        w.stored_since(head).await,
        [(format!("grant/{}", b.grant), "grant.unlock_denied".into())]
    );
    bs_day_goes_on(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handheld_reporting_as_itself_on_another_routes_parcel_is_refused_counted_and_not_stored()
{
    recorded::install();
    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    let loaded = || Report::Loaded(LoadedReport {});
    for report in [loaded(), started(), delivered()] {
        let head = w.head().await;
        let ack = send(w.driver_of(a), w.handheld(a, b.parcel, report))
            .await
            .expect("the stream opens");
        assert_eq!(
            attempt_ack::Result::try_from(ack.result),
            Ok(attempt_ack::Result::Rejected),
            "{ack:?}"
        );
        assert!(ack.error.contains("permission denied"), "{}", ack.error);
        assert!(!ack.error.contains(&b.driver), "{}", ack.error);
        assert!(!ack.error.contains(&b.route), "{}", ack.error);
        assert_eq!(w.stored_since(head).await, []);
    }
    assert!(
        recorded::value(
            "threshold_handheld_refused_total",
            &[("reason", "not_the_route_driver")]
        ) >= 3.0
    );
    // A's own parcel loaded into the van of B's route: refused by the
    // parcel's state, which names only A's own route.
    let head = w.head().await;
    let mut into_bs_van = w.handheld(a, a.parcel, loaded());
    into_bs_van.route_id = b.route.clone();
    let ack = send(w.driver_of(a), into_bs_van)
        .await
        .expect("the stream opens");
    assert_eq!(ack.code, Code::FailedPrecondition as i32, "{ack:?}");
    assert!(
        ack.error
            .contains(&format!("on route {}, not {}", a.route, b.route)),
        "{}",
        ack.error
    );
    assert!(!ack.error.contains(&b.driver), "{}", ack.error);
    assert_eq!(w.stored_since(head).await, []);
    bs_day_goes_on(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_cannot_take_over_a_home_whose_lock_is_another_vendors() {
    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    let mut vendor = AccessServiceClient::new(w.vendor_of(a));
    // A's vendor registers B's home as its own, with its own key.
    let takeover = pb::home_event::Event::LockRegistered(pb::LockRegistered {
        home_id: b.home.into(),
        lock_id: "lock-of-a".into(),
        vendor: a.vendor.into(),
        public_key: threshold_access_service::device::public_key(&a.key()),
        country: b.country.to_proto() as i32,
        address: Some(w.home_address(b)),
        ..Default::default()
    });
    let head = w.head().await;
    let refused = vendor
        .record_device_event(device(b.home, takeover, chrono::Utc::now(), &a.key()))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(w.stored_since(head).await, []);
    bs_day_goes_on(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resident_naming_itself_cannot_grant_on_another_households_home_or_parcels() {
    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    let mut resident = AccessServiceClient::new(w.resident_of(a));
    // B's home for B's parcel; B's home for A's own parcel (the critical
    // case: A's parcel opens B's door); A's home for B's parcel.
    let mut cases = Vec::new();
    for (id, home, parcel) in [
        ("g-a-on-b", b.home, b.parcel),
        ("g-a-opens-b", b.home, a.parcel),
        ("g-a-takes-b", a.home, b.parcel),
    ] {
        let mut g = grant_request(a, id);
        g.home_id = home.into();
        g.parcel_ids = vec![parcel.into()];
        cases.push(g);
    }
    for g in cases {
        let head = w.head().await;
        let refused = resident
            .issue_grant(g.clone())
            .await
            .expect_err("another household's home or parcel");
        assert_eq!(refused.code(), Code::PermissionDenied, "{g:?}: {refused:?}");
        assert_eq!(w.stored_since(head).await, [], "{g:?}");
    }
    bs_day_goes_on(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_a_vendor_enrols_takes_no_grant_until_its_household_claims_it() {
    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    // A's vendor enrols a home it does not serve, at B's address: the
    // server gives the vendor a claim code, and the home is B's
    // household's, not the vendor's.
    let register = pb::home_event::Event::LockRegistered(pb::LockRegistered {
        home_id: "home-c".into(),
        lock_id: "lock-c".into(),
        vendor: a.vendor.into(),
        public_key: threshold_access_service::device::public_key(&a.key()),
        country: b.country.to_proto() as i32,
        address: Some(w.home_address(b)),
        ..Default::default()
    });
    AccessServiceClient::new(w.vendor_of(a))
        .record_device_event(device("home-c", register, chrono::Utc::now(), &a.key()))
        .await
        .expect("an enrolment is the vendor's to make");
    // Unclaimed, it takes no grant, even from the household it is at.
    let mut g = grant_request(b, "g-b-at-c");
    g.home_id = "home-c".into();
    let head = w.head().await;
    let refused = AccessServiceClient::new(w.resident_of(b))
        .issue_grant(g)
        .await
        .expect_err("an unclaimed home");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("home_id"), "{refused:?}");
    // A claim without the code is refused and recorded on the home's
    // stream, without the code tried.
    let wrong = AccessServiceClient::new(w.resident_of(a))
        .claim_home(threshold_api::v1::ClaimHomeRequest {
            home_id: "home-c".into(),
            resident_ref: a.resident.into(),
            claim_code: "0000-0000-0000-0000".into(),
        })
        .await
        .expect_err("a guessed code");
    assert_eq!(wrong.code(), Code::PermissionDenied, "{wrong:?}");
    let stored = w.stored_since(head).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].0, "home/home-c", "{stored:?}");
    bs_day_goes_on(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_payload_naming_another_home_is_refused() {
    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    // Registered on A's stream, the payload says B's home: B's stream
    // would be unusable if it were taken.
    let register = pb::home_event::Event::LockRegistered(pb::LockRegistered {
        home_id: b.home.into(),
        lock_id: "lock-x".into(),
        vendor: a.vendor.into(),
        public_key: threshold_access_service::device::public_key(&a.key()),
        country: a.country.to_proto() as i32,
        address: Some(w.home_address(a)),
        ..Default::default()
    });
    let head = w.head().await;
    let refused = AccessServiceClient::new(w.vendor_of(a))
        .record_device_event(device("home-x", register, chrono::Utc::now(), &a.key()))
        .await
        .expect_err("the payload names another home");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(w.stored_since(head).await, []);
    bs_day_goes_on(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handheld_on_a_parcel_no_plan_names_is_refused() {
    recorded::install();
    let w = World::build().await;
    let (a, b) = (&w.a, &w.b);
    // B's planner manifests a parcel and does not plan it yet.
    let csv =
        threshold_testkit::fixtures::manifest(&format!("{}\n", w.manifest_row(b, "NO-B7", "7")));
    threshold_testkit::fixtures::load_manifest(w.planner_of(b), "late.csv", &csv).await;
    for driver in [a, b] {
        let head = w.head().await;
        let ack = send(
            w.driver_of(driver),
            w.handheld(driver, "NO-B7", delivered()),
        )
        .await
        .expect("the stream opens");
        assert_eq!(
            attempt_ack::Result::try_from(ack.result),
            Ok(attempt_ack::Result::Rejected),
            "{ack:?}"
        );
        assert!(ack.error.contains("permission denied"), "{}", ack.error);
        assert_eq!(w.stored_since(head).await, []);
    }
    bs_day_goes_on(&w).await;
}
