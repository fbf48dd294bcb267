//! Console page latency at scale: every page answered over real HTTP on
//! 127.0.0.1 by the console's router, over read models that have folded
//! `BENCH_EVENTS` events (default 10,000,000), as `threshold serve` holds
//! them after reading a log of that size.
//!
//! `cargo bench -p threshold-console --bench pages`. Prints p50 and p99 per
//! page and writes `target/bench/console.json`; the target is p99 <= 200 ms.

use std::io::{Read, Write};
use std::time::Instant;

use chrono::{TimeZone, Utc};
use threshold_auth::Role;
use threshold_console::{Console, Models};
use threshold_domain::pb;
use threshold_projections::{Attempts, DepotDays, Projection, Routes};
use threshold_routing::depot::Fleets;

#[path = "../../../crates/projections/benches/common/journeys.rs"]
mod journeys;
use journeys::Journeys;

/// Folds a stream like the projections benchmark's into the models: each
/// parcel manifested, then 1-3 attempts over 30 days and 40 depots, a
/// failure for any of four reasons.
fn fold(total: u64, models: &Models) -> (u64, u64) {
    let mut attempts = Attempts::default();
    let mut depot_days = DepotDays::default();
    let mut routes = Routes::default();
    let at = Utc
        .with_ymd_and_hms(2026, 11, 23, 9, 0, 0)
        .single()
        .expect("instant");
    let mut journeys = Journeys::new(1, at);
    journeys.reasons = &[
        pb::FailureReason::NotHome,
        pb::FailureReason::AccessDenied,
        pb::FailureReason::AddressNotFound,
        pb::FailureReason::Refused,
    ];
    while journeys.events() < total {
        journeys.parcel(|e| {
            Projection::apply(&mut attempts, &e);
            Projection::apply(&mut depot_days, &e);
            Projection::apply(&mut routes, &e);
        });
    }
    *models.attempts.write().expect("lock") = attempts;
    *models.depot_days.write().expect("lock") = depot_days;
    *models.routes.write().expect("lock") = routes;
    (journeys.events(), journeys.parcels())
}

/// `GET path` with `cookie`: status, head and body.
fn get(addr: std::net::SocketAddr, path: &str, cookie: &str) -> (u16, String, usize) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nSec-Fetch-Site: none\r\nCookie: {cookie}\r\n\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.len())
}

fn main() {
    let total: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(10_000_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let models = Models::default();
    let t = Instant::now();
    let (events, parcels) = fold(total, &models);
    println!(
        "console: {events} events ({parcels} parcels, 40 depots, 30 days) folded in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let fleets = Fleets::from_json("depots.json", include_str!("../../../config/depots.json"))
        .expect("fleets");
    let dir = tempfile::tempdir().expect("dir");
    let console = Console::new(
        models,
        fleets,
        threshold_auth::Authenticator::new(dir.path()),
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let (addr, _task) = {
        let _guard = runtime.enter();
        console
            .clone()
            .spawn(listener, std::future::pending())
            .expect("serve")
    };
    let cookie_of = |role: Role, tenant: &str| {
        let token =
            threshold_auth::Credentials::add(dir.path(), &format!("bench-{role}"), role, tenant)
                .expect("a credential");
        let path = console
            .sign_in_path_for_token(&token)
            .expect("a known token");
        let (status, head, _) = get(addr, &path, "");
        assert_eq!(status, 303, "{head}");
        head.lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|c| c.split(';').next())
            .expect("cookie")
            .to_owned()
    };
    let analyst = cookie_of(Role::Analyst, "*");
    let planner = cookie_of(Role::Planner, "SE-04");
    let pages: Vec<(&str, String, &str)> = vec![
        (
            "analytics by country",
            "/analytics?split=country".into(),
            &analyst,
        ),
        (
            "analytics by depot",
            "/analytics?split=depot".into(),
            &analyst,
        ),
        (
            "analytics by service, SE",
            "/analytics?split=service&country=SE".into(),
            &analyst,
        ),
        (
            "analytics by method, 10 days",
            "/analytics?split=method&from=2026-11-10&to=2026-11-20".into(),
            &analyst,
        ),
        (
            "daily CSV by depot",
            "/analytics/daily.csv?split=depot".into(),
            &analyst,
        ),
        (
            "report CSV by reason",
            "/report.csv?by=reason".into(),
            &analyst,
        ),
        ("depots index", "/".into(), &planner),
        ("depot-day", "/depot/SE-04?date=2026-11-23".into(), &planner),
        (
            "depot-day stops CSV",
            "/depot/SE-04/stops.csv?date=2026-11-23".into(),
            &planner,
        ),
    ];
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut figures = serde_json::Map::new();
    let mut worst: f64 = 0.0;
    for (name, path, cookie) in &pages {
        let mut ms = Vec::with_capacity(rounds);
        let mut bytes = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            let (status, head, n) = get(addr, path, cookie);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200, "{path}: {head}");
            bytes = n;
        }
        ms.sort_by(f64::total_cmp);
        let (p50, p99) = (
            ms[ms.len() / 2],
            ms[(ms.len() * 99 / 100).min(ms.len() - 1)],
        );
        worst = worst.max(p99);
        println!("  {name:<30} p50 {p50:7.2} ms  p99 {p99:7.2} ms  ({bytes} bytes)");
        figures.insert(
            (*name).to_owned(),
            serde_json::json!({ "path": path, "p50_ms": p50, "p99_ms": p99, "bytes": bytes }),
        );
    }
    println!("  worst p99 {worst:.2} ms over {rounds} requests a page (target <= 200 ms)");

    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned());
    let out = std::path::Path::new(&target).join("bench");
    std::fs::create_dir_all(&out).expect("bench dir");
    let json = serde_json::json!({
        "benchmark": "console",
        "events": events,
        "parcels": parcels,
        "requests_per_page": rounds,
        "pages": figures,
        "worst_p99_ms": worst,
        "target_p99_ms": 200,
    });
    std::fs::write(
        out.join("console.json"),
        serde_json::to_string_pretty(&json).expect("json"),
    )
    .expect("write");
    println!("wrote {}", out.join("console.json").display());
}
