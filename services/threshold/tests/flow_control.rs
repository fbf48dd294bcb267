//! A flood of handheld streams on one connection is slowed down by flow
//! control, not dropped.

mod common;

use common::*;

/// 64 handheld streams on one connection each send two events every
/// millisecond, far more than a (debug) server stores: the server must slow
/// them down with flow control, never drop the connection. (Each paced event
/// is its own small DATA frame; h2 closes a connection that buffers more
/// small frames than its windows' budget allows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_connection_is_slowed_down_not_dropped() {
    use threshold_api::v1::handheld_event::Report;
    use threshold_api::v1::handheld_service_client::HandheldServiceClient;
    use threshold_api::v1::manifest_service_client::ManifestServiceClient;
    use threshold_api::v1::{AttemptFailedReport, HandheldEvent, attempt_ack};

    const STREAMS: usize = 64;
    // Each stream floods parcels of its own in turn: a parcel takes at most
    // 100 attempts (`parcel::MAX_ATTEMPTS`), and a debug server stores a
    // few hundred events a stream in the flood.
    const PARCELS: usize = 8;
    const FLOOD: std::time::Duration = std::time::Duration::from_millis(2500);
    let dir = tempfile::tempdir().expect("dir");
    let server = Served::start(&dir.path().join("data"));
    // One connection, as the planner and as the handhelds.
    let plain = server.plain().await;
    let tokens = threshold_auth::LocalTokens::load(&server.data).expect("tokens");
    let planner = tokens
        .channel(plain.clone(), threshold_auth::Role::Planner)
        .expect("token");
    let channel = tokens
        .channel(plain, threshold_auth::Role::Handheld)
        .expect("token");
    let mut csv = String::from(
        "parcel_id,partner_id,country,depot_id,delivery_date,address,postal_code,city,latitude,longitude,service,weight_kg,window_start,window_end\n",
    );
    for p in 0..STREAMS * PARCELS {
        csv.push_str(&format!(
            "SE-FLOOD-{p},nordshop,SE,STO-1,2026-11-23,Gatan {p},111 51,Stockholm,59.33,18.06,doorstep,1,,\n"
        ));
    }
    threshold_manifest_service::client::load(
        &mut ManifestServiceClient::new(planner),
        "flood.csv",
        std::io::Cursor::new(csv.into_bytes()),
        |r| panic!("unexpected rejection {r:?}"),
    )
    .await
    .expect("load");
    // Each flooding handheld reports on its parcel as the driver of its route.
    let drivers = plan_day(&server).await;
    assert_eq!(drivers.len(), STREAMS * PARCELS, "every parcel planned");

    let until = tokio::time::Instant::now() + FLOOD;
    let mut tasks = Vec::new();
    for s in 0..STREAMS {
        let channel = channel.clone();
        let mine: Vec<(String, String)> = (0..PARCELS)
            .map(|k| {
                let parcel = format!("SE-FLOOD-{}", s * PARCELS + k);
                let driver = drivers[&parcel].clone();
                (parcel, driver)
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let sender = tokio::spawn(async move {
                let mut sequence = 0;
                while tokio::time::Instant::now() < until {
                    sequence += 1;
                    let (parcel, driver) = &mine[sequence as usize % PARCELS];
                    let event = HandheldEvent {
                        event_id: threshold_domain::EventId::new().to_string(),
                        device_id: format!("hh-flood-{s}"),
                        sequence,
                        parcel_id: parcel.clone(),
                        driver_id: driver.clone(),
                        route_id: String::new(),
                        occurred_at: Some(threshold_domain::country::timestamp(chrono::Utc::now())),
                        report: Some(Report::Failed(AttemptFailedReport {
                            reason: threshold_domain::pb::FailureReason::NotHome as i32,
                            note: String::new(),
                        })),
                    };
                    if tx.send(event).is_err() {
                        break;
                    }
                    // Two a millisecond: on parcels of its own in turn, a
                    // stream's events are decided side by side, so one a
                    // millisecond is about what a debug server stores.
                    if sequence % 2 == 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                }
                sequence
            });
            let mut acks = HandheldServiceClient::new(channel)
                .stream_attempts(sent_now(
                    tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
                ))
                .await?
                .into_inner();
            let mut stored = 0u64;
            // Acknowledgements while the flood lasts, and a little after.
            let stop = until + std::time::Duration::from_millis(300);
            while let Ok(next) = tokio::time::timeout_at(stop, acks.message()).await {
                match next? {
                    Some(a) => {
                        assert_eq!(a.result, attempt_ack::Result::Stored as i32, "{}", a.error);
                        stored += 1;
                    }
                    None => break,
                }
            }
            let sent = sender.await.expect("sender");
            Ok::<(u64, u64), tonic::Status>((sent, stored))
        }));
    }
    let (mut sent, mut stored) = (0, 0);
    for t in tasks {
        let (s, a) = t
            .await
            .expect("task")
            .expect("the stream survives the flood");
        sent += s;
        stored += a;
    }
    // The flood was real: far more offered than stored in the time.
    assert!(
        stored > 0 && sent > 2 * stored,
        "sent {sent}, stored {stored}"
    );
}
