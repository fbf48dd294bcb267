//! Track-and-trace figures on the SQLite store, beside PostgreSQL with the
//! same tables, keys and writes in the same run: rows stored per second
//! (512 a transaction, neither waiting
//! for the disk at each commit: SQLite WAL at `synchronous = NORMAL`,
//! PostgreSQL at `synchronous_commit = off`), and the latency of `track`
//! (one parcel) and `day` (a page of 100 of a depot's day) on the filled
//! store; the ratios SQLite / PostgreSQL.
//!
//! `make bench-track` (`scripts/pg-peer.sh run cargo bench -p
//! threshold-projections --bench track`: a throwaway PostgreSQL on a unix
//! socket, in `THRESHOLD_BENCH_PG`); without it, SQLite alone.
//! `BENCH_PARCELS` (default 200,000, about 800,000 events). Prints the
//! figures and writes `target/bench/track.json`.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_domain::Country;
use threshold_log::RecordedEvent;
use threshold_projections::{SqliteTrackStore, TrackRow, TrackStore, Tracker};

#[path = "common/journeys.rs"]
mod journeys;
use journeys::{DAYS, DEPOTS, Journeys, day, depot};

/// Each parcel manifested for one of 30 days at one of 40 depots, then one
/// to three attempts, each started and delivered or failed; to the
/// doorstep, as most parcels go.
fn events(parcels: u64) -> Vec<RecordedEvent> {
    let at = Utc
        .with_ymd_and_hms(2026, 11, 1, 9, 0, 0)
        .single()
        .expect("instant");
    let mut out = Vec::with_capacity(parcels as usize * 4);
    let mut journeys = Journeys::new(7, at);
    journeys.in_home = 0.0;
    journeys.partner = "nordshop";
    journeys.first = 0;
    while journeys.parcels() < parcels {
        journeys.parcel(|e| out.push(e));
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e6
}

/// The median of three.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What one store measured.
struct Figures {
    rows_per_s: f64,
    runs: Vec<f64>,
    track: (f64, f64),
    day: (f64, f64),
}

/// The lookups both stores answer: parcel ids (three in four in the
/// store, the fourth under a code no country has, which misses) and
/// depot days.
struct Asks {
    ids: Vec<String>,
    days: Vec<(Country, String, NaiveDate)>,
}

fn asks(events: &[RecordedEvent]) -> Asks {
    let mut rng = SmallRng::seed_from_u64(11);
    // Each parcel once: its first event.
    let parcels: Vec<&RecordedEvent> = events.iter().filter(|e| e.stream_version == 1).collect();
    let ids = (0..20_000)
        .map(|i| {
            let e = parcels[rng.random_range(0..parcels.len())];
            let stream = e.stream.to_string();
            let id = stream.strip_prefix("parcel/").expect("a parcel's stream");
            match i % 4 {
                3 => format!("XX{}", &id[2..]),
                _ => id.to_owned(),
            }
        })
        .collect();
    let days = (0..2_000)
        .map(|_| {
            let (c, d) = depot(rng.random_range(0..DEPOTS));
            (c, d, day(rng.random_range(0..DAYS)))
        })
        .collect();
    Asks { ids, days }
}

fn sqlite(rt: &tokio::runtime::Runtime, batches: &[Vec<TrackRow>], asks: &Asks) -> Figures {
    rt.block_on(async {
        let rows: usize = batches.iter().map(Vec::len).sum();
        let mut runs = Vec::new();
        let mut kept = None;
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("dir");
            let store = SqliteTrackStore::open(&dir.path().join("track.sqlite")).expect("store");
            let t = Instant::now();
            for b in batches {
                store.put(b).await.expect("put");
            }
            runs.push(rows as f64 / t.elapsed().as_secs_f64());
            kept = Some((dir, store));
        }
        let (_dir, store) = kept.expect("a store");
        let mut track = Vec::new();
        for id in &asks.ids {
            let t = Instant::now();
            let _ = store.track(id).await.expect("track");
            track.push(t.elapsed());
        }
        track.sort();
        let mut pages = Vec::new();
        for (c, d, day) in &asks.days {
            let t = Instant::now();
            let page = store.day(*c, d, *day, None, 100).await.expect("day");
            pages.push(t.elapsed());
            assert!(page.len() <= 100);
        }
        pages.sort();
        Figures {
            rows_per_s: median(runs.clone()),
            runs,
            track: (percentile(&track, 0.5), percentile(&track, 0.99)),
            day: (percentile(&pages, 0.5), percentile(&pages, 0.99)),
        }
    })
}

const PG_SCHEMA: &str = "
DROP TABLE IF EXISTS track_events, track_parcels;
CREATE TABLE track_parcels (
    parcel_id text PRIMARY KEY, partner text NOT NULL, country text NOT NULL,
    depot text NOT NULL, day text NOT NULL, status text NOT NULL,
    attempts integer NOT NULL, version bigint NOT NULL, updated_at bigint NOT NULL);
CREATE INDEX track_parcels_by_day ON track_parcels (country, depot, day, parcel_id);
CREATE TABLE track_events (
    parcel_id text NOT NULL, version bigint NOT NULL, event_id text NOT NULL,
    milestone text NOT NULL, occurred_at bigint NOT NULL, attempt integer NOT NULL,
    detail text NOT NULL, PRIMARY KEY (parcel_id, version));
";

/// The same tables and rows on PostgreSQL: one transaction per batch, as
/// the SQLite store commits.
fn postgres(url: &str, batches: &[Vec<TrackRow>], asks: &Asks) -> Figures {
    let mut db = postgres::Client::connect(url, postgres::NoTls).expect("the PostgreSQL peer");
    db.batch_execute("SET synchronous_commit = off")
        .expect("session");
    let rows: usize = batches.iter().map(Vec::len).sum();
    let mut runs = Vec::new();
    for _ in 0..3 {
        db.batch_execute(PG_SCHEMA).expect("schema");
        // Its best shape: each batch as two statements over arrays (a
        // round trip per row would measure the socket, not the database),
        // a parcel's latest row of the batch only, as one statement may
        // not update a row twice.
        let event = db
            .prepare(
                "INSERT INTO track_events
                    (parcel_id, version, event_id, milestone, occurred_at, attempt, detail)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[],
                                      $5::bigint[], $6::integer[], $7::text[])
                 ON CONFLICT (parcel_id, version) DO NOTHING",
            )
            .expect("prepare");
        let parcel = db
            .prepare(
                "INSERT INTO track_parcels
                    (parcel_id, partner, country, depot, day, status, attempts, version, updated_at)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                                      $6::text[], $7::integer[], $8::bigint[], $9::bigint[])
                 ON CONFLICT (parcel_id) DO UPDATE SET
                    partner = excluded.partner, country = excluded.country,
                    depot = excluded.depot, day = excluded.day, status = excluded.status,
                    attempts = excluded.attempts, version = excluded.version,
                    updated_at = excluded.updated_at
                 WHERE excluded.version > track_parcels.version",
            )
            .expect("prepare");
        let t = Instant::now();
        for b in batches {
            let col = |f: &dyn Fn(&TrackRow) -> String| b.iter().map(f).collect::<Vec<String>>();
            let latest: std::collections::BTreeMap<&str, &TrackRow> = b
                .iter()
                .map(|r| (r.summary.parcel_id.as_str(), r))
                .collect();
            let last: Vec<&TrackRow> = latest.into_values().collect();
            let pcol = |f: &dyn Fn(&TrackRow) -> String| {
                last.iter().map(|r| f(r)).collect::<Vec<String>>()
            };
            let mut tx = db.transaction().expect("begin");
            tx.execute(
                &event,
                &[
                    &col(&|r| r.summary.parcel_id.clone()),
                    &b.iter().map(|r| r.event.version as i64).collect::<Vec<_>>(),
                    &col(&|r| r.event.event_id.clone()),
                    &col(&|r| r.event.milestone.as_str().to_owned()),
                    &b.iter()
                        .map(|r| r.event.occurred_at.timestamp_millis())
                        .collect::<Vec<_>>(),
                    &b.iter().map(|r| r.event.attempt as i32).collect::<Vec<_>>(),
                    &col(&|r| r.event.detail.clone()),
                ],
            )
            .expect("events");
            tx.execute(
                &parcel,
                &[
                    &pcol(&|r| r.summary.parcel_id.clone()),
                    &pcol(&|r| r.summary.partner.clone()),
                    &pcol(&|r| r.summary.country.code().to_owned()),
                    &pcol(&|r| r.summary.depot.clone()),
                    &pcol(&|r| r.summary.day.to_string()),
                    &pcol(&|r| r.summary.status.as_str().to_owned()),
                    &last
                        .iter()
                        .map(|r| r.summary.attempts as i32)
                        .collect::<Vec<_>>(),
                    &last
                        .iter()
                        .map(|r| r.summary.version as i64)
                        .collect::<Vec<_>>(),
                    &last
                        .iter()
                        .map(|r| r.summary.updated_at.timestamp_millis())
                        .collect::<Vec<_>>(),
                ],
            )
            .expect("parcels");
            tx.commit().expect("commit");
        }
        runs.push(rows as f64 / t.elapsed().as_secs_f64());
    }
    db.batch_execute("ANALYZE").expect("analyze");
    let summary = db
        .prepare(
            "SELECT parcel_id, partner, country, depot, day, status, attempts, version, updated_at
             FROM track_parcels WHERE parcel_id = $1",
        )
        .expect("prepare");
    let steps = db
        .prepare(
            "SELECT version, event_id, milestone, occurred_at, attempt, detail
             FROM track_events WHERE parcel_id = $1 ORDER BY version LIMIT 1000",
        )
        .expect("prepare");
    let page = db
        .prepare(
            "SELECT parcel_id, partner, country, depot, day, status, attempts, version, updated_at
             FROM track_parcels WHERE country = $1 AND depot = $2 AND day = $3 AND parcel_id > $4
             ORDER BY parcel_id LIMIT 100",
        )
        .expect("prepare");
    let mut track = Vec::new();
    for id in &asks.ids {
        let t = Instant::now();
        if db.query_opt(&summary, &[id]).expect("summary").is_some() {
            let _ = db.query(&steps, &[id]).expect("steps");
        }
        track.push(t.elapsed());
    }
    track.sort();
    let mut pages = Vec::new();
    for (c, d, day) in &asks.days {
        let t = Instant::now();
        let rows = db
            .query(&page, &[&c.code(), d, &day.to_string(), &""])
            .expect("page");
        pages.push(t.elapsed());
        assert!(rows.len() <= 100);
    }
    pages.sort();
    Figures {
        rows_per_s: median(runs.clone()),
        runs,
        track: (percentile(&track, 0.5), percentile(&track, 0.99)),
        day: (percentile(&pages, 0.5), percentile(&pages, 0.99)),
    }
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
    // Folded once: both stores take the same rows.
    let (batches, fold) = rt.block_on(async {
        let scratch = SqliteTrackStore::in_memory().expect("store");
        let mut tracker = Tracker::new();
        let t = Instant::now();
        let mut batches = Vec::new();
        for b in events.chunks(512) {
            batches.push(tracker.rows(b, &scratch).await.expect("rows"));
        }
        (batches, events.len() as f64 / t.elapsed().as_secs_f64())
    });
    println!("  folded: {fold:.0} events/s into rows");
    let asks = asks(&events);
    let lite = sqlite(&rt, &batches, &asks);
    let peer = std::env::var("THRESHOLD_BENCH_PG")
        .ok()
        .map(|url| postgres(&url, &batches, &asks));
    let show = |name: &str, f: &Figures| {
        println!(
            "  {name:<10} stored {:>9.0} rows/s (median of 3) | track one parcel p50 {:>4.0} µs p99 {:>5.0} µs | a day's page of 100 p50 {:>4.0} µs p99 {:>5.0} µs",
            f.rows_per_s, f.track.0, f.track.1, f.day.0, f.day.1
        );
    };
    show("SQLite", &lite);
    let mut json = serde_json::json!({
        "benchmark": "track",
        "parcels": parcels,
        "events": events.len(),
        "folded_events_per_s": fold,
        "sqlite": {
            "rows_per_s": lite.rows_per_s, "runs": lite.runs,
            "track_us": { "p50": lite.track.0, "p99": lite.track.1 },
            "day_page_us": { "p50": lite.day.0, "p99": lite.day.1 },
        },
    });
    match &peer {
        Some(pg) => {
            show("PostgreSQL", pg);
            let ratio = |a: f64, b: f64| a / b;
            println!(
                "  SQLite / PostgreSQL: rows/s {:.2}, track p50 {:.2} (lower is faster), day page p50 {:.2}",
                ratio(lite.rows_per_s, pg.rows_per_s),
                ratio(lite.track.0, pg.track.0),
                ratio(lite.day.0, pg.day.0),
            );
            json["postgres"] = serde_json::json!({
                "rows_per_s": pg.rows_per_s, "runs": pg.runs,
                "track_us": { "p50": pg.track.0, "p99": pg.track.1 },
                "day_page_us": { "p50": pg.day.0, "p99": pg.day.1 },
            });
            json["ratio_sqlite_to_postgres"] = serde_json::json!({
                "rows_per_s": ratio(lite.rows_per_s, pg.rows_per_s),
                "track_p50": ratio(lite.track.0, pg.track.0),
                "day_page_p50": ratio(lite.day.0, pg.day.0),
            });
        }
        None => println!(
            "  no PostgreSQL peer: THRESHOLD_BENCH_PG is not set (make bench-track sets it)"
        ),
    }
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
}
