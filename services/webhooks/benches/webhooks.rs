//! Webhook delivery: a day's outcomes to 50 loopback endpoints, one per
//! partner, 5 of them failing half the time (500).
//!
//! `make bench-webhooks` (or `cargo bench -p threshold-webhook-service
//! --bench webhooks`). Two scenarios, the same day in each: every
//! endpoint healthy, then 5 failing. In each, the day's first part is
//! appended before delivery starts (catch-up: deliveries/s), the rest
//! paced at `BENCH_RATE` events/s while delivering (live: the delay from
//! append to a healthy endpoint's acceptance, p50/p99). The retry
//! schedule runs 1000 times faster than the standard one, so a failing
//! endpoint's retries happen within the run. Settings by environment:
//! `BENCH_EVENTS` (catch-up, default 20,000), `BENCH_LIVE` (10,000),
//! `BENCH_RATE` (1,000/s). Writes `target/bench/webhooks.json`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt as _, Full};
use threshold_domain::{Country, DomainEvent, EventId, ParcelId, StreamId, pb};
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, ExpectedVersion, NewEvent};
use threshold_webhook_service::{Options, Policy, Schedule, Start, Webhooks};

const ENDPOINTS: usize = 50;
const FAILING: usize = 5;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// What a receiver saw: first acceptance time per id, requests.
#[derive(Default)]
struct Seen {
    accepted: HashMap<String, Instant>,
    requests: usize,
}

async fn receiver(failing: bool) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&s2);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let id = req
                                .headers()
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let _ = req.into_body().collect().await;
                            let ok = !failing || rand::random::<bool>();
                            let mut s = seen.lock().expect("seen");
                            s.requests += 1;
                            if ok {
                                s.accepted.entry(id).or_insert_with(Instant::now);
                            }
                            let status = if ok { 200 } else { 500 };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"ok")))
                                    .expect("response"),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn outcome(i: usize) -> DomainEvent {
    DomainEvent::Parcel(match i % 3 {
        0 => pb::parcel_event::Event::AttemptFailed(pb::AttemptFailed {
            attempt: 1,
            reason: pb::FailureReason::NotHome as i32,
            ..Default::default()
        }),
        1 => pb::parcel_event::Event::Delivered(pb::ParcelDelivered {
            attempt: 1,
            method: pb::DeliveryMethod::Doorstep as i32,
            ..Default::default()
        }),
        _ => pb::parcel_event::Event::OutForDelivery(pb::ParcelOutForDelivery::default()),
    })
}

/// Appends event `i` for partner `i % ENDPOINTS`; its id and when.
async fn append(log: &dyn EventLog, i: usize) -> (String, usize, Instant) {
    let partner = i % ENDPOINTS;
    let id = EventId::new();
    let e = NewEvent::new(id, &outcome(i), Utc::now())
        .country(Country::Se)
        .tenant(format!("partner-{partner:02}"));
    let parcel = format!("SE-{partner:02}-{:06}", i / 3);
    let stream = StreamId::parcel(&ParcelId::new(&parcel).expect("parcel"));
    log.append(&stream, ExpectedVersion::Any, vec![e])
        .await
        .expect("append");
    (id.to_string(), partner, Instant::now())
}

struct Figures {
    catch_up_deliveries_per_s: f64,
    catch_up_seconds: f64,
    live_p50_ms: f64,
    live_p99_ms: f64,
    healthy_delivered: usize,
    failing_delivered: usize,
    failing_requests: usize,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn scenario(failing: usize, events: usize, live: usize, rate: usize) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let log: Arc<dyn EventLog> = Arc::new(
        EmbeddedLog::open(dir.path().join("log"), EmbeddedOptions::default()).expect("log"),
    );
    let options = Options {
        policy: Policy {
            allow_private: true,
        },
        timeout: Duration::from_secs(2),
        schedule: Schedule::accelerated(1000),
    };
    let hooks = Webhooks::open(
        Arc::clone(&log),
        dir.path().join("webhooks.sqlite"),
        options,
    )
    .expect("open");
    let mut seen = Vec::new();
    for p in 0..ENDPOINTS {
        let (addr, s) = receiver(p < failing).await;
        hooks
            .add(
                &format!("partner-{p:02}"),
                &format!("http://{addr}/hooks"),
                &[],
                Start::After(0),
            )
            .await
            .expect("add");
        seen.push(s);
    }
    hooks.stop().await;
    // Catch-up: the day so far, then delivery starts.
    let mut healthy_want = 0;
    for i in 0..events {
        let (_, partner, _) = append(log.as_ref(), i).await;
        if partner >= failing {
            healthy_want += 1;
        }
    }
    let started = Instant::now();
    hooks.start().await.expect("start");
    let healthy_count = |seen: &[Arc<Mutex<Seen>>]| -> usize {
        seen.iter()
            .enumerate()
            .filter(|(p, _)| *p >= failing)
            .map(|(_, s)| s.lock().expect("seen").accepted.len())
            .sum()
    };
    while healthy_count(&seen) < healthy_want {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let catch_up = started.elapsed().as_secs_f64();
    let all_delivered: usize = seen
        .iter()
        .map(|s| s.lock().expect("seen").accepted.len())
        .sum();
    // Live: paced appends while delivering.
    let mut sent: Vec<(String, usize, Instant)> = Vec::with_capacity(live);
    let tick = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let live_start = Instant::now();
    for j in 0..live {
        let due = live_start + tick * u32::try_from(j).expect("j");
        tokio::time::sleep_until(due.into()).await;
        sent.push(append(log.as_ref(), events + j).await);
    }
    let want_live = sent.iter().filter(|(_, p, _)| *p >= failing).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while healthy_count(&seen) < healthy_want + want_live && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut delays: Vec<f64> = sent
        .iter()
        .filter(|(_, p, _)| *p >= failing)
        .filter_map(|(id, p, at)| {
            seen[*p]
                .lock()
                .expect("seen")
                .accepted
                .get(id)
                .map(|t| t.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    assert_eq!(
        delays.len(),
        want_live,
        "every live event reached its healthy endpoint"
    );
    hooks.stop().await;
    let failing_delivered = seen[..failing]
        .iter()
        .map(|s| s.lock().expect("seen").accepted.len())
        .sum();
    let failing_requests = seen[..failing]
        .iter()
        .map(|s| s.lock().expect("seen").requests)
        .sum();
    Figures {
        catch_up_deliveries_per_s: all_delivered as f64 / catch_up,
        catch_up_seconds: catch_up,
        live_p50_ms: pct(&delays, 0.50),
        live_p99_ms: pct(&delays, 0.99),
        healthy_delivered: healthy_count(&seen),
        failing_delivered,
        failing_requests,
    }
}

fn main() {
    let events = env("BENCH_EVENTS", 20_000);
    let live = env("BENCH_LIVE", 10_000);
    let rate = env("BENCH_RATE", 1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "webhooks: {ENDPOINTS} loopback endpoints, {events} events caught up, {live} live at {rate}/s"
    );
    let mut json = Vec::new();
    let mut p99 = Vec::new();
    for failing in [0, FAILING] {
        let f = rt.block_on(scenario(failing, events, live, rate));
        println!(
            "  {failing} failing half the time: catch-up {:.0} deliveries/s ({:.1} s); live healthy delay p50 {:.1} ms, p99 {:.1} ms; healthy delivered {}, failing endpoints delivered {} in {} requests",
            f.catch_up_deliveries_per_s,
            f.catch_up_seconds,
            f.live_p50_ms,
            f.live_p99_ms,
            f.healthy_delivered,
            f.failing_delivered,
            f.failing_requests
        );
        p99.push(f.live_p99_ms);
        json.push(serde_json::json!({
            "failing_endpoints": failing,
            "catch_up_deliveries_per_s": f.catch_up_deliveries_per_s,
            "catch_up_seconds": f.catch_up_seconds,
            "live_healthy_delay_p50_ms": f.live_p50_ms,
            "live_healthy_delay_p99_ms": f.live_p99_ms,
            "healthy_delivered": f.healthy_delivered,
            "failing_delivered": f.failing_delivered,
            "failing_requests": f.failing_requests,
        }));
    }
    println!(
        "  healthy endpoints' p99 delay with failing ones beside them: {:.2}x the all-healthy run",
        p99[1] / p99[0]
    );
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let path = out.join("webhooks.json");
    let doc = serde_json::json!({
        "endpoints": ENDPOINTS, "events": events, "live": live, "rate": rate,
        "scenarios": json, "p99_ratio_failing_vs_healthy": p99[1] / p99[0],
    });
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
    println!("written to {}", path.display());
}
