//! `threshold routing solve`: the planner on a benchmark instance, so it can
//! be measured against the literature.

use std::path::PathBuf;
use std::time::Instant;

use threshold_routing::{Engine, Objective, Options, check, solomon, solve};

/// Options of `threshold routing solve`.
#[derive(clap::Args)]
pub(crate) struct SolveArgs {
    /// The instance file.
    file: PathBuf,
    /// Its format (only `solomon`: Solomon and Gehring & Homberger VRPTW).
    #[arg(long, default_value = "solomon")]
    format: String,
    /// Seconds of search.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Search this many generations instead, seeded with --seed: the same
    /// instance, seed and count give the same routes on every run (0: --seconds).
    #[arg(long, default_value_t = 0)]
    generations: usize,
    /// Seed of a repeatable search (with --generations).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The engine: `hgs` (the default), `vrp-core` (time-bounded only) or `insertion`.
    #[arg(long)]
    engine: Option<Engine>,
    /// `distance` (total distance, as best-known solutions are) or
    /// `business` (fewest vans, then driving time, then distance).
    #[arg(long, default_value = "distance")]
    objective: Objective,
    /// Print JSON: {"instance", "vehicles", "distance", "seconds", "routes": [[customer, ...], ...]}.
    #[arg(long)]
    json: bool,
}

pub(crate) fn solve_file(args: SolveArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if args.format != "solomon" {
        return Err(format!("--format {}: only solomon is supported", args.format).into());
    }
    if !(args.seconds.is_finite() && args.seconds >= 0.0) {
        return Err(format!("--seconds {}: not a number of seconds", args.seconds).into());
    }
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let problem = solomon::parse(&args.file.display().to_string(), &text)?;
    let started = Instant::now();
    let mut options = if args.generations > 0 {
        Options::repeatable(args.objective, args.generations, args.seed)
    } else {
        Options::seconds(args.objective, args.seconds)
    };
    if let Some(engine) = args.engine {
        options.engine = engine;
    }
    let plan = solve(&problem, options)?;
    let seconds = started.elapsed().as_secs_f64();
    let violations = check(&problem, &plan);
    if let Some(v) = violations.first() {
        return Err(format!(
            "the plan breaks its problem ({} violations), first: {v}",
            violations.len()
        )
        .into());
    }
    let routes: Vec<Vec<u64>> = plan
        .routes
        .iter()
        .map(|r| {
            r.visits
                .iter()
                .map(|v| problem.stops[v.stop].id.parse().unwrap_or(0))
                .collect()
        })
        .collect();
    let distance = plan.distance(&problem);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "instance": problem.name,
                "vehicles": routes.len(),
                "distance": distance,
                "seconds": seconds,
                "routes": routes,
                "unassigned": plan.unassigned.iter().map(|u| serde_json::json!({
                    "customer": problem.stops[u.stop].id, "reason": u.reason,
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "{}: {} vehicles, distance {distance:.2}, {seconds:.1} s, {} unassigned",
            problem.name,
            routes.len(),
            plan.unassigned.len()
        );
        for (i, r) in routes.iter().enumerate() {
            let list: Vec<String> = r.iter().map(u64::to_string).collect();
            println!("route {}: {}", i + 1, list.join(" "));
        }
        for u in &plan.unassigned {
            println!("unassigned {}: {}", problem.stops[u.stop].id, u.reason);
        }
    }
    Ok(())
}

/// Options of `threshold routing plan`.
#[derive(clap::Args)]
pub(crate) struct PlanArgs {
    /// The local day to plan.
    #[arg(long)]
    date: chrono::NaiveDate,
    /// Depots to plan (repeatable); default every depot with parcels that day.
    #[arg(long = "depot")]
    depots: Vec<String>,
    /// Search seconds per depot (0: the server's default).
    #[arg(long, default_value_t = 0.0)]
    seconds: f64,
    /// `business` (fewest vans, then driving time, then distance) or `distance`.
    #[arg(long, default_value = "business")]
    objective: Objective,
    /// Plan repeatably: this many search generations per depot, seeded
    /// with --seed; the same day gives the same plan (0: time-bounded).
    #[arg(long, default_value_t = 0)]
    generations: u32,
    /// Seed of a repeatable plan.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON: {"depots": [{"depot_id", "date", "parcels", "vans_used", ...}]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: crate::ServerArgs,
}

/// Plans a day through PlanningService and prints what was planned.
pub(crate) async fn plan(args: PlanArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use threshold_api::v1::PlanDayRequest;
    use threshold_api::v1::planning_service_client::PlanningServiceClient;
    let channel = args.server.connect(threshold_auth::Role::Planner).await?;
    let progress = crate::progress::Progress::waiting(
        "routing plan",
        &format!("planning {} on the server", args.date),
    );
    let reply = PlanningServiceClient::new(channel)
        .plan_day(PlanDayRequest {
            date: Some(threshold_domain::country::date_to_proto(args.date)),
            depot_ids: args.depots,
            seconds_per_depot: args.seconds,
            objective: match args.objective {
                Objective::Business => "business",
                Objective::Distance => "distance",
            }
            .into(),
            generations: args.generations,
            seed: args.seed,
            carry_over_from: None,
        })
        .await
        .map_err(|s| format!("planning {}: {}", args.date, s.message()))?
        .into_inner();
    progress.finish(&format!("{} depot(s) planned", reply.depots.len()));
    if args.json {
        let depots: Vec<serde_json::Value> = reply
            .depots
            .iter()
            .map(|d| {
                serde_json::json!({
                    "depot_id": d.depot_id,
                    "date": args.date.to_string(),
                    "parcels": d.parcels,
                    "vans_used": d.vans_used,
                    "vans_available": d.vans_available,
                    "distance_km": d.distance_m / 1000.0,
                    "driving_hours": d.driving_s / 3600.0,
                    "routes_changed": d.routes_changed,
                    "stops_kept_on_van": d.stops_kept_on_van,
                    "stops_moved": d.stops_moved,
                    "seconds": d.seconds,
                    "unassigned": d.unassigned.iter().map(|u| serde_json::json!({
                        "parcel_id": u.parcel_id, "reason": u.reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "depots": depots }));
        return Ok(());
    }
    println!(
        "{:<8} {:>7} {:>9} {:>9} {:>10} {:>10} {:>13}",
        "depot", "parcels", "vans", "km", "driving h", "unassigned", "kept / moved"
    );
    for d in &reply.depots {
        println!(
            "{:<8} {:>7} {:>4} / {:<3} {:>9.1} {:>10.1} {:>10} {:>6} / {:<5}",
            d.depot_id,
            d.parcels,
            d.vans_used,
            d.vans_available,
            d.distance_m / 1000.0,
            d.driving_s / 3600.0,
            d.unassigned.len(),
            d.stops_kept_on_van,
            d.stops_moved
        );
    }
    for d in &reply.depots {
        for u in &d.unassigned {
            println!("{}: {} not planned: {}", d.depot_id, u.parcel_id, u.reason);
        }
    }
    Ok(())
}
