//! Inputs dated where they should not be: device reports beyond the skew
//! the server allows (ahead and behind), a request bringing its own clock
//! (the simulated-time header) to a server on the real clock (an unlock, a
//! grant, a manifest load, a plan), and
//! handheld events dated a year off. Refused, recorded where the platform
//! records it, and B's day goes on.

use chrono::{Duration, Utc};
use threshold_api::SIMULATED_TIME_HEADER;
use threshold_api::v1::PlanDayRequest;
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::attempt_ack;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::planning_service_client::PlanningServiceClient;
use threshold_domain::country::{date_to_proto, timestamp};
use threshold_domain::home::DEVICE_CLOCK_SKEW;
use threshold_domain::pb;
use threshold_testkit::fixtures::{at, manifest, not_home, started};
use tonic::Code;

use crate::calls::{send, unlock_of};
use crate::owners::bs_day_goes_on;
use crate::recorded;
use crate::world::{World, device, grant_request, heartbeat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_reports_beyond_the_skew_and_requests_bringing_their_own_clock_are_refused() {
    recorded::install();
    let w = World::build().await;
    let b = &w.b;
    let mut vendor = AccessServiceClient::new(w.vendor_of(b));
    let off = DEVICE_CLOCK_SKEW + Duration::minutes(5);

    // B's own camera, dated ahead and behind: refused on occurred_at, the
    // first recorded as a clock-skew alert on B's home.
    let head = w.head().await;
    for when in [
        Utc::now() + off,
        Utc::now() - off,
        Utc::now() + Duration::days(365),
    ] {
        let refused = vendor
            .record_device_event(device(b.home, heartbeat(b), when, &b.key()))
            .await
            .expect_err("beyond the skew");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().starts_with("occurred_at"), "{refused:?}");
    }
    assert_eq!(
        w.stored_since(head).await,
        [(format!("home/{}", b.home), "home.alert_raised".to_owned())]
    );
    assert_eq!(alerts(&w, b.home).await, [pb::AlertKind::DeviceClockSkew]);
    assert!(
        recorded::value(
            "threshold_home_alerts_total",
            &[("kind", "device_clock_skew")]
        ) >= 1.0
    );

    // A driver's unlock and a resident's grant carrying a time of their
    // own, into the grant's window or a day ahead: this server keeps its
    // own clock.
    let head = w.head().await;
    for when in [Utc::now(), Utc::now() + Duration::days(1)] {
        let refused = AccessServiceClient::new(w.driver_of(b))
            .authorize_unlock(at(unlock_of(b), when))
            .await
            .expect_err("its own clock");
        refused_for_its_clock(&refused);
        let refused = AccessServiceClient::new(w.resident_of(b))
            .issue_grant(at(grant_request(b, "g-b-dated"), when))
            .await
            .expect_err("its own clock");
        refused_for_its_clock(&refused);
        // B's planner loading a manifest row and planning the day, dated:
        // refused before a row is read, nothing stamped with its time.
        let csv = manifest(&format!(
            "{}\n",
            w.manifest_row(b, &format!("{}9", b.prefix), "9")
        ));
        let (metadata, ..) = at((), when).into_parts();
        let refused = threshold_manifest_service::client::load_with(
            &mut ManifestServiceClient::new(w.planner_of(b)),
            "dated.csv",
            std::io::Cursor::new(csv.into_bytes()),
            metadata,
            |r| panic!("a row was read: {r:?}"),
        )
        .await
        .expect_err("its own clock");
        refused_for_its_clock(&refused);
        let plan = PlanDayRequest {
            date: Some(date_to_proto(w.day)),
            depot_ids: vec![b.depot.into()],
            seconds_per_depot: 0.2,
            ..Default::default()
        };
        let refused = PlanningServiceClient::new(w.planner_of(b))
            .plan_day(at(plan, when))
            .await
            .expect_err("its own clock");
        refused_for_its_clock(&refused);
    }
    assert_eq!(w.stored_since(head).await, []);

    bs_day_goes_on(&w).await;
}

/// A request refused for bringing its own time to a server on the real
/// clock: FAILED_PRECONDITION, naming the header (not a plan that failed).
fn refused_for_its_clock(refused: &tonic::Status) {
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains(SIMULATED_TIME_HEADER),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handheld_events_dated_a_year_off_are_refused() {
    let w = World::build().await;
    let b = &w.b;
    for (report, when) in [
        (started(), Utc::now() + Duration::days(365)),
        (not_home(), Utc::now() - Duration::days(365)),
    ] {
        let head = w.head().await;
        let mut event = w.handheld(b, b.parcel, report);
        event.occurred_at = Some(timestamp(when));
        let ack = send(w.driver_of(b), event).await.expect("the stream opens");
        assert_eq!(
            attempt_ack::Result::try_from(ack.result),
            Ok(attempt_ack::Result::Rejected),
            "{ack:?}"
        );
        assert!(ack.error.starts_with("occurred_at"), "{}", ack.error);
        assert_eq!(w.stored_since(head).await, []);
    }
    bs_day_goes_on(&w).await;
}

/// The alert kinds on `home`'s stream.
async fn alerts(w: &World, home: &str) -> Vec<pb::AlertKind> {
    w.sandbox
        .log()
        .read_stream(&format!("home/{home}").parse().expect("stream"), 0, 1000)
        .await
        .expect("read")
        .into_iter()
        .filter_map(|r| match r.decode().expect("decode") {
            threshold_domain::DomainEvent::Home(pb::home_event::Event::AlertRaised(a)) => {
                pb::AlertKind::try_from(a.kind).ok()
            }
            _ => None,
        })
        .collect()
}
