//! A server killed mid-day: every event it acknowledged is stored once
//! after the restart.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_day_loses_nothing_it_acknowledged() {
    use threshold_api::v1::handheld_event::Report;
    use threshold_api::v1::handheld_service_client::HandheldServiceClient;
    use threshold_api::v1::{AttemptFailedReport, HandheldEvent, attempt_ack};

    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let server = Served::start(&data);
    let sample = samples().join("2026-11-23-no.csv");
    let out = load_manifest(&sample, &server.url, &server.data, &[]);
    assert!(out.status.success());
    let manifested = std::fs::read_to_string(&sample)
        .expect("sample")
        .lines()
        .skip(1)
        .count();
    // Each planned parcel with the driver whose handheld reports on it.
    let planned: Vec<(String, String)> = plan_day(&server).await.into_iter().collect();
    assert!(!planned.is_empty(), "nothing planned");
    let routes = planned
        .iter()
        .map(|(_, driver)| driver)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    // A long day of failed attempts: every event is valid, none closes a parcel.
    let events: Vec<HandheldEvent> = (0..2000)
        .map(|i| HandheldEvent {
            event_id: threshold_domain::EventId::new().to_string(),
            device_id: "hh-1".into(),
            sequence: i + 1,
            parcel_id: planned[i as usize % planned.len()].0.clone(),
            driver_id: planned[i as usize % planned.len()].1.clone(),
            route_id: String::new(),
            occurred_at: Some(threshold_domain::country::timestamp(chrono::Utc::now())),
            report: Some(Report::Failed(AttemptFailedReport {
                reason: threshold_domain::pb::FailureReason::NotHome as i32,
                note: String::new(),
            })),
        })
        .collect();

    // Stream them; SIGKILL the server part-way, with events still in flight.
    let channel = server.channel(threshold_auth::Role::Handheld).await;
    let mut acks = HandheldServiceClient::new(channel)
        .stream_attempts(sent_now(tokio_stream::iter(events.clone())))
        .await
        .expect("stream")
        .into_inner();
    let mut acked = std::collections::HashMap::new();
    let mut server = Some(server);
    while let Ok(Some(a)) = acks.message().await {
        assert_eq!(a.result, attempt_ack::Result::Stored as i32, "{}", a.error);
        acked.insert(a.event_id.clone(), a.position);
        if acked.len() == 200
            && let Some(mut s) = server.take()
        {
            s.child.kill().expect("SIGKILL");
        }
    }
    assert!(
        acked.len() >= 200 && acked.len() < events.len(),
        "killed mid-stream: {}",
        acked.len()
    );

    // Back up on the same data: the handheld resends everything it has.
    let server = Served::start(&data);
    let channel = server.channel(threshold_auth::Role::Handheld).await;
    let mut acks = HandheldServiceClient::new(channel)
        .stream_attempts(sent_now(tokio_stream::iter(events.clone())))
        .await
        .expect("stream")
        .into_inner();
    let mut second = Vec::new();
    while let Some(a) = acks.message().await.expect("ack") {
        second.push(a);
    }
    assert_eq!(second.len(), events.len());
    for a in &second {
        if let Some(position) = acked.get(&a.event_id) {
            assert_eq!(
                a.result,
                attempt_ack::Result::Duplicate as i32,
                "acknowledged before the kill, so stored"
            );
            assert_eq!(a.position, *position, "where it was acknowledged");
        } else {
            assert_ne!(
                a.result,
                attempt_ack::Result::Rejected as i32,
                "{}",
                a.error
            );
        }
    }
    assert!(server.stop().success());
    // Manifested parcels, each put on its route, and a plan per route, plus
    // a started and a failed event per handheld event, each once.
    let out = threshold(&["log", "stats", "--data", data.to_str().expect("path")]);
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(
        stats.contains(&format!(
            "{} events",
            2 * manifested + routes + 2 * events.len()
        )),
        "{stats}"
    );
}
