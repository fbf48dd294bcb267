//! `threshold-load`: many drivers' handhelds against a running server.
//!
//! Loads a manifest of parcels for the run, each stream's slice under a
//! depot of its own, and plans the day of those depots through
//! PlanningService (a handheld is only heard on parcels of its driver's
//! route), reading back each parcel's driver through GetRoute. None of that
//! setup is timed. Then it opens `--streams` handheld streams. Each stream
//! reports failed attempts on its own slice of parcels, each as the driver
//! of the parcel's route (a failure leaves the parcel open, so the load can
//! go on as long as asked). With `--rate` the streams send on a fixed schedule (open loop)
//! and latency is measured from when each event was due, so a server that
//! falls behind cannot hide it; without it, each stream keeps `--window`
//! events in flight and the figure is the sustained maximum.
//!
//! Prints events/s and acknowledgement latency percentiles, and writes them
//! as JSON (`--out`, default `target/bench/load.json`).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::planning_service_client::PlanningServiceClient;
use threshold_api::v1::{
    AttemptFailedReport, GetRouteRequest, HandheldEvent, PlanDayRequest, attempt_ack,
};
use threshold_auth::{Authed, LocalTokens, Role};
use threshold_domain::country::{date_to_proto, timestamp};
use threshold_domain::{EventId, pb};
use threshold_manifest_service::client;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Load against a running `threshold serve`.
#[derive(Parser)]
#[command(name = "threshold-load")]
struct Args {
    /// The server.
    #[arg(
        long,
        env = "THRESHOLD_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// The server's data directory, where its first start left local
    /// credentials: the generator loads as the planner and streams as the
    /// handhelds.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Handheld streams (drivers) at once.
    #[arg(long, default_value_t = 256)]
    streams: usize,
    /// Parcels in the run's manifest, shared out among the streams.
    #[arg(long, default_value_t = 20_000)]
    parcels: usize,
    /// How long to send, after a warm-up of one second.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Events per second over all streams; 0 sends as fast as acknowledged.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Events in flight per stream when `--rate` is 0.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/load.json")]
    out: PathBuf,
    /// Route search time per depot when planning the run's parcels before
    /// the timed phase (one depot per stream, planned in parallel).
    #[arg(long, default_value_t = 0.05)]
    plan_seconds: f64,
}

/// The day the run's parcels are due on and planned for.
fn day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("a valid date")
}

/// The depot of stream `s` in run `run`: each stream's parcels are planned
/// on routes of their own, so a stream's drivers are not another's.
fn depot(run: &str, s: usize) -> String {
    format!("LT-{run}-{s:03}")
}

#[derive(Default)]
struct Tally {
    acked: u64,
    rejected: u64,
    /// Streams that ended in a transport or status error.
    broken: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

/// Loads the run's manifest: `parcels` parcels, parcel `n` at the depot
/// `depot_of(n)`.
async fn manifest(
    channel: &Authed,
    run: &str,
    parcels: usize,
    depot_of: impl Fn(usize) -> String,
) -> Result<Vec<String>, BoxError> {
    let mut csv = String::from(
        "parcel_id,partner_id,country,depot_id,delivery_date,address,postal_code,city,latitude,longitude,service,weight_kg,window_start,window_end\n",
    );
    let mut ids = Vec::with_capacity(parcels);
    for n in 0..parcels {
        let id = format!("LT-{run}-{n:07}");
        csv.push_str(&format!(
            "{id},loadtest,SE,{},2026-11-23,Gatan {n},111 51,Stockholm,59.33,18.06,doorstep,1,,\n",
            depot_of(n)
        ));
        ids.push(id);
    }
    let summary = client::load(
        &mut ManifestServiceClient::new(channel.clone()),
        &format!("load-{run}.csv"),
        std::io::Cursor::new(csv.into_bytes()),
        |r| {
            eprintln!(
                "manifest: line {}, field {}: {}",
                r.line, r.field, r.message
            )
        },
    )
    .await
    .map_err(|s| format!("loading the manifest: {}", s.message()))?;
    if summary.accepted as usize != parcels {
        return Err(format!(
            "only {} of {parcels} parcels were accepted",
            summary.accepted
        )
        .into());
    }
    Ok(ids)
}

/// Plans `depots` for the day through PlanningService as `planner`, and
/// reads each driver's route back through GetRoute as `handheld`: every
/// planned parcel with its driver.
async fn plan(
    planner: Authed,
    handheld: Authed,
    depots: Vec<String>,
    seconds: f64,
) -> Result<HashMap<String, String>, BoxError> {
    let reply = PlanningServiceClient::new(planner)
        .plan_day(PlanDayRequest {
            date: Some(date_to_proto(day())),
            depot_ids: depots,
            seconds_per_depot: seconds,
            objective: String::new(),
            ..Default::default()
        })
        .await
        .map_err(|s| format!("planning the run's depots: {}", s.message()))?
        .into_inner();
    let mut handheld = HandheldServiceClient::new(handheld);
    let mut drivers = HashMap::new();
    for d in &reply.depots {
        if let Some(u) = d.unassigned.first() {
            eprintln!(
                "{}: {} parcels not planned, e.g. {}: {}",
                d.depot_id,
                d.unassigned.len(),
                u.parcel_id,
                u.reason
            );
        }
        let planned = (d.parcels as usize).saturating_sub(d.unassigned.len());
        let mut found = 0;
        // The vans used come first; stop asking once every parcel is found.
        for van in 0..d.vans_available as usize {
            if found >= planned {
                break;
            }
            let driver = format!("{}-drv-{van:02}", d.depot_id);
            let routes = handheld
                .get_route(GetRouteRequest {
                    driver_id: driver.clone(),
                    date: Some(date_to_proto(day())),
                })
                .await
                .map_err(|s| format!("the route of {driver}: {}", s.message()))?
                .into_inner()
                .routes;
            for p in routes
                .into_iter()
                .flat_map(|r| r.stops)
                .flat_map(|s| s.parcel_ids)
            {
                found += 1;
                drivers.insert(p, driver.clone());
            }
        }
    }
    Ok(drivers)
}

/// When and how fast one handheld sends.
#[derive(Clone, Copy)]
struct Schedule {
    /// Events per second on this stream; 0 keeps `window` in flight.
    rate: f64,
    window: usize,
    start: Instant,
    /// Latencies count from here (after the warm-up)...
    measure_from: Instant,
    /// ...to here, when sending stops.
    until: Instant,
}

/// One handheld: sends failed attempts round its parcels until the end of
/// its schedule.
async fn handheld(
    channel: Authed,
    stream: usize,
    parcels: Vec<(String, String)>,
    schedule: Schedule,
    tally: Arc<Mutex<Tally>>,
) -> Result<(), BoxError> {
    let Schedule {
        rate,
        window,
        start,
        measure_from,
        until,
    } = schedule;
    let (tx, rx) = mpsc::channel::<HandheldEvent>(window.max(64));
    let mut acks = HandheldServiceClient::new(channel)
        .stream_attempts(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Acks come back in order: each pairs with the oldest instant sent.
    let due: Arc<std::sync::Mutex<VecDeque<Instant>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(window.max(1)));
    let sender_due = Arc::clone(&due);
    let sender_permits = Arc::clone(&permits);
    let sender = tokio::spawn(async move {
        let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
        // Spread the streams' schedules over one interval.
        let mut next =
            start + interval.map_or(Duration::ZERO, |i| i.mul_f64((stream % 97) as f64 / 97.0));
        let mut seq = 0u64;
        while Instant::now() < until {
            let at = match interval {
                Some(i) => {
                    tokio::time::sleep_until(next).await;
                    let at = next;
                    next += i;
                    at
                }
                None => {
                    let Ok(p) = sender_permits.acquire().await else {
                        break;
                    };
                    p.forget();
                    Instant::now()
                }
            };
            seq += 1;
            let (parcel, driver) = &parcels[seq as usize % parcels.len()];
            let event = HandheldEvent {
                event_id: EventId::new().to_string(),
                device_id: format!("lt-hh-{stream}"),
                sequence: seq,
                parcel_id: parcel.clone(),
                driver_id: driver.clone(),
                route_id: String::new(),
                occurred_at: Some(timestamp(chrono::Utc::now())),
                report: Some(Report::Failed(AttemptFailedReport {
                    reason: pb::FailureReason::NotHome as i32,
                    note: String::new(),
                })),
            };
            if let Ok(mut d) = sender_due.lock() {
                d.push_back(at);
            }
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    let mut local = Tally::default();
    loop {
        let ack = match acks.message().await {
            Ok(Some(ack)) => ack,
            Ok(None) => break,
            Err(status) => {
                local.broken += 1;
                local.first_error = Some(format!("stream {stream}: {status}"));
                break;
            }
        };
        let sent = due.lock().ok().and_then(|mut d| d.pop_front());
        permits.add_permits(1);
        let now = Instant::now();
        if let Some(sent) = sent
            && sent >= measure_from
            && now <= until
        {
            local.latencies_us.push(
                now.duration_since(sent)
                    .as_micros()
                    .min(u128::from(u32::MAX)) as u32,
            );
            match attempt_ack::Result::try_from(ack.result) {
                Ok(attempt_ack::Result::Stored | attempt_ack::Result::Duplicate) => {
                    local.acked += 1
                }
                _ => {
                    local.rejected += 1;
                    eprintln!("rejected: {}", ack.error);
                }
            }
        }
        if now > until && sender.is_finished() && due.lock().map(|d| d.is_empty()).unwrap_or(true) {
            break;
        }
    }
    sender.abort();
    let mut t = tally.lock().await;
    t.acked += local.acked;
    t.rejected += local.rejected;
    t.broken += local.broken;
    if t.first_error.is_none() {
        t.first_error = local.first_error;
    }
    t.latencies_us.extend(local.latencies_us);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let channel = Channel::from_shared(args.server.clone())?
        .connect()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.server))?;
    let tokens = LocalTokens::load(&args.data)?;
    let run = format!("{:x}", chrono::Utc::now().timestamp_millis());
    let streams = args.streams.max(1);
    let total = args.parcels.max(streams);
    let per_stream = total / streams;
    let planner = tokens.channel(channel.clone(), Role::Planner)?;
    let parcels = manifest(&planner, &run, total, |n| {
        depot(&run, (n / per_stream).min(streams - 1))
    })
    .await?;
    // Set up before the clock starts: handhelds are heard only on parcels
    // of their driver's route.
    let planning = std::time::Instant::now();
    let drivers = plan(
        planner,
        tokens.channel(channel.clone(), Role::Handheld)?,
        (0..streams).map(|s| depot(&run, s)).collect(),
        args.plan_seconds,
    )
    .await?;
    eprintln!(
        "planned {} of {} parcels on {} routes in {:.1} s (not timed)",
        drivers.len(),
        parcels.len(),
        drivers
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        planning.elapsed().as_secs_f64()
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(1);
    let until = measure_from + Duration::from_secs(args.seconds);
    let stream_rate = if args.rate > 0 {
        args.rate as f64 / args.streams as f64
    } else {
        0.0
    };
    let mut tasks = Vec::new();
    let mut connection = channel.clone();
    for s in 0..args.streams {
        // 32 handhelds per HTTP/2 connection: well inside a server's limit
        // of concurrent streams per connection.
        if s % 32 == 0 && s > 0 {
            connection = Channel::from_shared(args.server.clone())?.connect().await?;
        }
        let channel = tokens.channel(connection.clone(), Role::Handheld)?;
        let mine: Vec<(String, String)> = parcels[s * per_stream..(s + 1) * per_stream]
            .iter()
            .filter_map(|p| drivers.get(p).map(|d| (p.clone(), d.clone())))
            .collect();
        if mine.is_empty() {
            return Err(format!(
                "no parcel of stream {s} was planned; try a longer --plan-seconds"
            )
            .into());
        }
        let schedule = Schedule {
            rate: stream_rate,
            window: args.window,
            start,
            measure_from,
            until,
        };
        tasks.push(tokio::spawn(handheld(
            channel,
            s,
            mine,
            schedule,
            Arc::clone(&tally),
        )));
    }
    for t in tasks {
        t.await??;
    }
    let mut t = tally.lock().await;
    t.latencies_us.sort_unstable();
    let pct = |p: f64| {
        if t.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((t.latencies_us.len() as f64 * p) as usize).min(t.latencies_us.len() - 1);
        f64::from(t.latencies_us[i]) / 1000.0
    };
    let eps = t.acked as f64 / args.seconds as f64;
    let (p50, p99, p999) = (pct(0.5), pct(0.99), pct(0.999));
    println!(
        "{} streams, {} for {} s: {eps:.0} events/s acknowledged, ack latency p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms ({} rejected, {} streams broken)",
        args.streams,
        if args.rate > 0 {
            format!("open loop at {}/s", args.rate)
        } else {
            format!("window {}", args.window)
        },
        args.seconds,
        t.rejected,
        t.broken
    );
    if let Some(e) = &t.first_error {
        eprintln!("first stream error: {e}");
    }
    let json = serde_json::json!({
        "benchmark": "handheld_ingest",
        "streams": args.streams,
        "rate": args.rate,
        "window": args.window,
        "seconds": args.seconds,
        "events_acknowledged": t.acked,
        "events_rejected": t.rejected,
        "streams_broken": t.broken,
        "events_per_s": eps,
        "ack_latency_ms": { "p50": p50, "p99": p99, "p999": p999 },
    });
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
