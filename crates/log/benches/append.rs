//! Embedded log throughput: many concurrent writers appending ~200-byte
//! events to many streams, each append acknowledged only once durable.
//!
//! `make bench` (or `cargo bench -p threshold-log --bench append`). Settings
//! by environment: `BENCH_EVENTS` per run (default 1,000,000), `BENCH_WRITERS`
//! (1024), `BENCH_STREAMS` (10,000), `BENCH_RUNS` (5), `BENCH_BATCH` events
//! per append (1), `BENCH_INDEX_GENERATION`, `BENCH_PAGE_SIZE`, `BENCH_V4=1`
//! (random UUID v4 ids instead of v7). Prints each run and the median, and writes
//! `target/bench/log_append.json`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_domain::{Country, DomainEvent, EventId, StreamId, pb};
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, ExpectedVersion, NewEvent};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

struct Run {
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    seconds: f64,
}

fn event(rng: &mut SmallRng) -> NewEvent {
    let note: String = (0..120)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    let e = DomainEvent::Parcel(pb::parcel_event::Event::AttemptFailed(pb::AttemptFailed {
        attempt: rng.random_range(1..4),
        reason: pb::FailureReason::NotHome as i32,
        driver_id: format!("drv-{:04}", rng.random_range(0..2000)),
        device_id: format!("hh-{:05}", rng.random_range(0..20000)),
        note,
        sealed_note: None,
    }));
    let id = if std::env::var("BENCH_V4").is_ok() {
        EventId::new()
    } else {
        EventId::from_uuid(uuid::Uuid::now_v7())
    };
    NewEvent::new(id, &e, Utc::now())
        .country(Country::Se)
        .tenant("acme")
}

async fn run_once(
    dir: &std::path::Path,
    events: usize,
    writers: usize,
    streams: usize,
    batch: usize,
) -> Run {
    let log = Arc::new(
        EmbeddedLog::open(
            dir,
            EmbeddedOptions {
                page_size: env("BENCH_PAGE_SIZE", 4096) as u32,
                index_generation: env(
                    "BENCH_INDEX_GENERATION",
                    EmbeddedOptions::default().index_generation,
                ),
                ..EmbeddedOptions::default()
            },
        )
        .expect("open log"),
    );
    let ids: Arc<Vec<StreamId>> = Arc::new(
        (0..streams)
            .map(|i| format!("parcel/SE-{i:08}").parse().expect("stream id"))
            .collect(),
    );
    let appends_per_writer = events / writers / batch;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let log = Arc::clone(&log);
        let ids = Arc::clone(&ids);
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(w as u64);
            let mut latencies = Vec::with_capacity(appends_per_writer);
            for _ in 0..appends_per_writer {
                let stream = &ids[rng.random_range(0..ids.len())];
                let evs = (0..batch).map(|_| event(&mut rng)).collect();
                let t = Instant::now();
                log.append(stream, ExpectedVersion::Any, evs)
                    .await
                    .expect("append");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(events);
    for t in tasks {
        latencies.extend(t.await.expect("writer"));
    }
    let seconds = start.elapsed().as_secs_f64();
    log.close().await.expect("close");
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    let stored = appends_per_writer * writers * batch;
    Run {
        events_per_s: stored as f64 / seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        seconds,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let events = env("BENCH_EVENTS", 1_000_000);
    let writers = env("BENCH_WRITERS", 1024);
    let streams = env("BENCH_STREAMS", 10_000);
    let runs = env("BENCH_RUNS", 5).max(1);
    let batch = env("BENCH_BATCH", 1).max(1);
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned());
    let out_dir = std::path::Path::new(&target).join("bench");
    std::fs::create_dir_all(&out_dir).expect("bench dir");

    println!(
        "log append: {events} events/run, {writers} writers, {streams} streams, {batch} event(s)/append, ~200-byte payloads, fsync'd group commit"
    );
    let mut results = Vec::new();
    for r in 1..=runs {
        // On the real disk next to the build, not a RAM-backed /tmp.
        let dir = tempfile::tempdir_in(&out_dir).expect("temp dir");
        let run = run_once(dir.path(), events, writers, streams, batch).await;
        println!(
            "  run {r}: {:>9.0} events/s  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  ({:.2} s)",
            run.events_per_s, run.p50_ms, run.p99_ms, run.p999_ms, run.seconds
        );
        results.push(run);
    }
    let eps = median(results.iter().map(|r| r.events_per_s).collect());
    let p50 = median(results.iter().map(|r| r.p50_ms).collect());
    let p99 = median(results.iter().map(|r| r.p99_ms).collect());
    println!(
        "median: {eps:.0} events/s, p50 {p50:.2} ms, p99 {p99:.2} ms (target >= 200000 events/s)"
    );

    let json = serde_json::json!({
        "benchmark": "log_append",
        "backend": "embedded",
        "events_per_run": events,
        "writers": writers,
        "streams": streams,
        "events_per_append": batch,
        "runs": results.iter().map(|r| serde_json::json!({
            "events_per_s": r.events_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "p999_ms": r.p999_ms, "seconds": r.seconds,
        })).collect::<Vec<_>>(),
        "median": { "events_per_s": eps, "p50_ms": p50, "p99_ms": p99 },
        "target_events_per_s": 200_000,
    });
    let path = out_dir.join("log_append.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write json");
    println!("wrote {}", path.display());
}
