//! `threshold simulate`: a delivery day across the four countries, driven
//! through the real APIs of a running server.
//!
//! Manifests are loaded through ManifestService (generated for the day
//! unless `--manifest` files are given); each depot's drivers are concurrent
//! HandheldService streams; some handhelds drop offline mid-round and resend
//! what they have, duplicates included. In-home parcels get a grant from
//! their resident through AccessService, and each home a signed smart lock
//! and camera. At the door the driver scans the parcel, asks the server to
//! authorize the unlock from where the handheld is, and the lock redeems the
//! nonce before it opens; a refusal turns into the grant's fallback. Some
//! days go wrong on purpose: residents revoke, cameras are offline, a
//! driver asks from down the street, an alarm is left armed, a captured
//! unlock is replayed, a door is left open or a camera drops while it is,
//! and the report shows each refusal by reason and each alert by kind. The
//! server must run as a simulation (`serve --simulation`, as `threshold run`
//! does): the simulated day's clock decides the windows.
//!
//! Each parcel's fate is drawn from a generator seeded by the day's seed and
//! the parcel's id, so the same seed gives the same day — same parcels,
//! same outcomes, same report — whatever the timing and concurrency.
//!
//! # Layout
//!
//! - this module: the command's options and the day, start to end;
//! - `conn`: where the services are and the connections to them;
//! - `parcels`: the day's manifest, generated or read, and its parcels;
//! - `fates`: what the day holds for each parcel, from the seed alone;
//! - `residents`: in-home grants, issued (and revoked) before the driver comes;
//! - `routes`: the day's routes, planned by the server;
//! - `drivers`: each route driven by a handheld, and a driver's tally;
//! - `in_home`: one in-home stop, from the scan to the receipt;
//! - `devices`: the home's lock, camera and alarm, signing their events;
//! - `report`: what the day printed at its end.

mod conn;
mod devices;
mod drivers;
mod fates;
mod in_home;
mod parcels;
mod report;
mod residents;
mod routes;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDate;
use threshold_api::v1::ClockRequest;
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_auth::LocalTokens;

use crate::progress::{Progress, Unit};
use conn::Conn;
pub(crate) use conn::service_urls;
use drivers::{DriverDay, drive};
use parcels::{generate, load};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Search generations per depot for a simulated day's plan.
pub(crate) const PLAN_GENERATIONS: u32 = 400;

/// Options of `threshold simulate`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The local delivery date.
    #[arg(long, default_value = "2026-11-23")]
    date: NaiveDate,
    /// Parcels in a generated day (ignored with --manifest).
    #[arg(long, default_value_t = 4000)]
    parcels: u32,
    /// Seed of the day.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Search generations per depot when planning the day's routes: the
    /// plan is repeatable, seeded with --seed, so the same seed gives the
    /// same routes and the same report on every run.
    #[arg(long, default_value_t = PLAN_GENERATIONS)]
    plan_generations: u32,
    /// Manifest files to load and drive instead of a generated day (repeatable).
    #[arg(long)]
    manifest: Vec<PathBuf>,
    /// The server.
    #[arg(
        long,
        env = "THRESHOLD_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// The server's data directory: the simulator plays every role with the
    /// local credentials its first start made there.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// A service in another process than --server: `NAME=URL`, NAME one of
    /// manifest, planning, attempts, access, analytics (repeatable).
    #[arg(long)]
    service_url: Vec<String>,
    /// For `https://` servers: a CA certificate (PEM) to trust besides the
    /// system's, e.g. a server's self-signed certificate.
    #[arg(long, env = "THRESHOLD_CA")]
    ca: Option<PathBuf>,
}

/// `threshold simulate`: the day of `args`, against its server.
pub(crate) async fn run(args: Args) -> Result<(), BoxError> {
    let mut manifests = Vec::new();
    if args.manifest.is_empty() {
        let name = format!("simulated-{}-seed{}.csv", args.date, args.seed);
        manifests.push((
            name,
            generate(args.date, args.parcels, args.seed).into_bytes(),
        ));
    } else {
        for file in &args.manifest {
            let csv = tokio::fs::read(file)
                .await
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let name = file
                .file_name()
                .map_or_else(|| "manifest".into(), |n| n.to_string_lossy().into_owned());
            manifests.push((name, csv));
        }
    }
    let tokens = LocalTokens::load(&args.data)?;
    let ca = crate::read_ca(args.ca.as_deref())?;
    day(
        &service_urls(&args.server, &args.service_url)?,
        ca.as_deref(),
        &tokens,
        args.date,
        args.seed,
        args.plan_generations,
        manifests,
    )
    .await
}

/// Loads `manifests` and drives their parcels for `date` against `server`,
/// then prints the report by service and by country.
pub(crate) async fn day(
    urls: &BTreeMap<&'static str, String>,
    ca: Option<&[u8]>,
    tokens: &LocalTokens,
    date: NaiveDate,
    seed: u64,
    plan_generations: u32,
    manifests: Vec<(String, Vec<u8>)>,
) -> Result<(), BoxError> {
    let conn = Conn::new(urls, ca, tokens).await?;
    // In-home grants follow the simulated day's clock: only a server running
    // a simulation takes it. Asked before anything is loaded.
    let clock = AccessServiceClient::new(conn.unlock.clone())
        .clock(ClockRequest {})
        .await
        .map_err(|s| format!("asking the server's clock: {}", s.message()))?
        .into_inner();
    if !clock.simulated {
        return Err(format!(
            "{} runs on its own clock; simulate a day against a server started \
             with `threshold serve --simulation` (or use `threshold run`)",
            urls["access"]
        )
        .into());
    }
    let mut parcels = Vec::new();
    let mut new = 0;
    for (name, csv) in manifests {
        let (loaded, accepted) = load(&conn, &name, csv).await?;
        parcels.extend(loaded);
        new += accepted;
    }
    if new == 0 && !parcels.is_empty() {
        // Every parcel was in the log already: this day has been driven.
        println!("this day is already in the log; reporting it");
        parcels.clear();
    }

    // The day's routes, planned by the server from what was loaded.
    let mut drives = Vec::new();
    if !parcels.is_empty() {
        let planning = Progress::waiting("simulate", &format!("planning {date}'s routes"));
        drives = routes::plan(&conn, date, seed, plan_generations, parcels).await?;
        planning.finish(&format!("{} routes planned", drives.len()));
    }
    let driven = Arc::new(Progress::new(
        "simulate",
        Unit::Items("routes driven"),
        drives.len() as u64,
    ));
    let mut tasks = Vec::new();
    for route in drives {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        route.driver.hash(&mut h);
        let driver_seed = seed.rotate_left(8) ^ h.finish();
        let driven = Arc::clone(&driven);
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let day = drive(conn, route, seed, driver_seed).await;
            driven.add(1);
            day
        }));
    }
    let drivers = tasks.len();
    let mut total = DriverDay::default();
    for t in tasks {
        total.add(t.await??);
    }
    if drivers > 0 {
        driven.finish(&format!("{drivers} routes driven"));
    }
    report::print(&conn, drivers, &total).await
}
