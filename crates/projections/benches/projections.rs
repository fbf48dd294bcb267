//! Projection figures: full rebuild speed (events/s folded into the attempts
//! model) and report latency at scale, from events built in memory.
//!
//! `cargo bench -p threshold-projections --bench projections`; `BENCH_EVENTS`
//! (default 10,000,000). Prints the figures and writes
//! `target/bench/projections.json`.

use std::time::Instant;

use chrono::{TimeZone, Utc};
use threshold_domain::Country;
use threshold_log::RecordedEvent;
use threshold_projections::{Attempts, Dimension, Filter};

#[path = "common/journeys.rs"]
mod journeys;

fn main() {
    let total: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(10_000_000);
    let at = Utc
        .with_ymd_and_hms(2026, 11, 23, 9, 0, 0)
        .single()
        .expect("instant");
    let depots: Vec<(Country, String)> = (0..journeys::DEPOTS).map(journeys::depot).collect();

    // A realistic stream: each parcel manifested, then 1-3 attempts, each a
    // started and an outcome event, over 30 days.
    let build = Instant::now();
    let mut events: Vec<RecordedEvent> = Vec::with_capacity(total as usize + 8);
    let mut parcels = journeys::Journeys::new(1, at);
    while parcels.events() < total {
        parcels.parcel(|e| events.push(e));
    }
    let n = parcels.parcels();
    println!(
        "projections: {} events ({n} parcels over 40 depots and 30 days) built in {:.1} s",
        events.len(),
        build.elapsed().as_secs_f64()
    );

    // Full rebuild: fold every event (decoding each payload) into the model.
    let mut rebuilds = Vec::new();
    let mut model = Attempts::default();
    for _ in 0..3 {
        model = Attempts::default();
        let t = Instant::now();
        for e in &events {
            model.apply(e);
        }
        rebuilds.push(events.len() as f64 / t.elapsed().as_secs_f64());
    }
    rebuilds.sort_by(f64::total_cmp);
    let rebuild = rebuilds[1];
    println!("  full rebuild: {rebuild:.0} events/s (median of 3; target >= 1,000,000)");

    // Reports: every dimension, with and without filters, many times.
    let filters = [
        Filter::default(),
        Filter {
            country: Some(Country::Se),
            ..Filter::default()
        },
        Filter {
            depot: Some(depots[5].1.clone()),
            from: chrono::NaiveDate::from_ymd_opt(2026, 11, 10),
            to: chrono::NaiveDate::from_ymd_opt(2026, 11, 20),
            ..Filter::default()
        },
    ];
    let mut latencies = Vec::new();
    for _ in 0..50 {
        for by in [
            Dimension::Country,
            Dimension::Depot,
            Dimension::Day,
            Dimension::Service,
            Dimension::Method,
            Dimension::Reason,
        ] {
            for f in &filters {
                let t = Instant::now();
                let report = model.report(by, f);
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                assert!(report.total.parcels > 0 || f.depot.is_some());
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "  reports: p50 {p50:.3} ms, p99 {p99:.3} ms over {} queries (target <= 5 ms)",
        latencies.len()
    );
    let totals = model.report(Dimension::Service, &Filter::default());
    for r in &totals.rows {
        println!(
            "    {:<10} {:>9} parcels, {:.2} attempts per parcel",
            r.group, r.parcels, r.attempts_per_parcel
        );
    }

    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned());
    let dir = std::path::Path::new(&target).join("bench");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let json = serde_json::json!({
        "benchmark": "projections",
        "events": events.len(),
        "parcels": n,
        "rebuild_events_per_s": rebuild,
        "report_ms": { "p50": p50, "p99": p99 },
        "targets": { "rebuild_events_per_s": 1_000_000, "report_ms": 5 },
    });
    std::fs::write(
        dir.join("projections.json"),
        serde_json::to_string_pretty(&json).expect("json"),
    )
    .expect("write");
    println!("wrote {}", dir.join("projections.json").display());
}
