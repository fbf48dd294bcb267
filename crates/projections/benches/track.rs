//! Track-and-trace figures on the SQLite store: events folded and stored
//! per second (as a process's reader feeds it, 512 events a write), and the
//! latency of `track` (one parcel) and `day` (a page of 100 of a depot's
//! day) on the filled store.
//!
//! `cargo bench -p threshold-projections --bench track`; `BENCH_PARCELS`
//! (default 200,000, about 700,000 events). Prints the figures and writes
//! `target/bench/track.json`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{NaiveDate, TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_domain::country::date_to_proto;
use threshold_domain::{Country, DomainEvent, EventId, StreamId, pb};
use threshold_log::{NewEvent, Position, RecordedEvent};
use threshold_projections::{SqliteTrackStore, TrackStore, Tracker};

const DEPOTS: usize = 40;
const DAYS: u32 = 30;

fn day(n: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1 + n).expect("day")
}

fn depot(i: usize) -> (Country, String) {
    let c = Country::ALL[i % 4];
    (c, format!("{}-{i:02}", c.code()))
}

/// Each parcel manifested for one of 30 days at one of 40 depots, then one
/// to three attempts, each started and delivered or failed.
fn events(parcels: u64) -> Vec<RecordedEvent> {
    let mut rng = SmallRng::seed_from_u64(7);
    let at = Utc
        .with_ymd_and_hms(2026, 11, 1, 9, 0, 0)
        .single()
        .expect("instant");
    let mut out = Vec::with_capacity(parcels as usize * 4);
    let mut position = 0;
    for n in 0..parcels {
        let (country, depot) = depot(rng.random_range(0..DEPOTS));
        let id = format!("{}-{n:09}", country.code());
        let stream: StreamId = format!("parcel/{id}").parse().expect("stream");
        let mut version = 0;
        let mut push = |e: pb::parcel_event::Event, out: &mut Vec<RecordedEvent>| {
            position += 1;
            version += 1;
            let d = DomainEvent::Parcel(e);
            out.push(RecordedEvent {
                position: Position(position),
                stream: stream.clone(),
                stream_version: version,
                recorded_at: at,
                event: NewEvent {
                    payload: Bytes::from(d.encode()),
                    ..NewEvent::new(EventId::new(), &d, at).country(country)
                },
            });
        };
        push(
            pb::parcel_event::Event::Manifested(pb::ParcelManifested {
                parcel_id: id.clone(),
                partner_id: "nordshop".into(),
                country: country.to_proto() as i32,
                depot_id: depot,
                delivery_date: Some(date_to_proto(day(rng.random_range(0..DAYS)))),
                service: pb::Service::Doorstep as i32,
                weight_grams: 1000,
                ..Default::default()
            }),
            &mut out,
        );
        for attempt in 1..=3u32 {
            push(
                pb::parcel_event::Event::AttemptStarted(pb::AttemptStarted {
                    attempt,
                    ..Default::default()
                }),
                &mut out,
            );
            if rng.random_bool(0.64) {
                push(
                    pb::parcel_event::Event::Delivered(pb::ParcelDelivered {
                        attempt,
                        method: pb::DeliveryMethod::Doorstep as i32,
                        ..Default::default()
                    }),
                    &mut out,
                );
                break;
            }
            push(
                pb::parcel_event::Event::AttemptFailed(pb::AttemptFailed {
                    attempt,
                    reason: pb::FailureReason::NotHome as i32,
                    ..Default::default()
                }),
                &mut out,
            );
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let parcels: u64 = std::env::var("BENCH_PARCELS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(200_000);
    let events = events(parcels);
    println!(
        "track: {} events of {parcels} parcels over {DEPOTS} depots and {DAYS} days",
        events.len()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Feeding: three runs on fresh files, the median.
        let mut rates = Vec::new();
        let mut kept = None;
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("dir");
            let store = SqliteTrackStore::open(&dir.path().join("track.sqlite")).expect("store");
            let mut tracker = Tracker::new();
            let t = Instant::now();
            for batch in events.chunks(512) {
                let rows = tracker.rows(batch, &store).await.expect("rows");
                store.put(&rows).await.expect("put");
            }
            rates.push(events.len() as f64 / t.elapsed().as_secs_f64());
            kept = Some((dir, store));
        }
        rates.sort_by(f64::total_cmp);
        let feed = rates[1];
        println!(
            "  fed: {feed:.0} events/s (median of 3, 512 events a write, fsync per WAL checkpoint)"
        );
        let (_dir, store) = kept.expect("a store");

        let mut rng = SmallRng::seed_from_u64(11);
        let mut track = Vec::new();
        for _ in 0..20_000 {
            let n = rng.random_range(0..parcels);
            let country = Country::ALL[(n as usize) % 4];
            // Ids of other countries miss: both hits and misses are timed.
            let id = format!("{}-{n:09}", country.code());
            let t = Instant::now();
            let _ = store.track(&id).await.expect("track");
            track.push(t.elapsed());
        }
        track.sort();
        let mut pages = Vec::new();
        for _ in 0..2_000 {
            let (country, depot) = depot(rng.random_range(0..DEPOTS));
            let t = Instant::now();
            let page = store
                .day(country, &depot, day(rng.random_range(0..DAYS)), None, 100)
                .await
                .expect("day");
            pages.push(t.elapsed());
            assert!(page.len() <= 100);
        }
        pages.sort();
        let (t50, t99) = (percentile(&track, 0.5), percentile(&track, 0.99));
        let (d50, d99) = (percentile(&pages, 0.5), percentile(&pages, 0.99));
        println!("  track one parcel: p50 {t50:.0} µs, p99 {t99:.0} µs (20,000 lookups)");
        println!("  a depot's day, a page of 100: p50 {d50:.0} µs, p99 {d99:.0} µs (2,000 pages)");
        let json = serde_json::json!({
            "benchmark": "track",
            "parcels": parcels,
            "events": events.len(),
            "fed_events_per_s": feed,
            "fed_runs": rates,
            "track_p50_us": t50,
            "track_p99_us": t99,
            "day_page_p50_us": d50,
            "day_page_p99_us": d99,
        });
        let target = std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned());
        let dir = std::path::Path::new(&target).join("bench");
        std::fs::create_dir_all(&dir).expect("target/bench");
        std::fs::write(
            dir.join("track.json"),
            serde_json::to_string_pretty(&json).expect("json"),
        )
        .expect("write json");
        println!("wrote {}", dir.join("track.json").display());
    });
}
