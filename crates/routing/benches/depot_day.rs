//! A whole four-country day: 20,000 parcels over 40 depots (ten per
//! country, at real city coordinates), a fifth of them in-home with a
//! three-hour window, planned in parallel one depot per core with the
//! business objective. Every plan is checked by the independent checker.
//! Each engine plans the same day in the same run, one after another, so
//! today's planner and the one it replaced are compared on the same machine
//! at the same moment. Prints per depot and per engine the vans, stops left
//! out, distance and time, then each engine's wall time and totals and the
//! first engine's ratios to the others; writes
//! `target/bench/routing_depot_day.json`.
//!
//! Settings (environment): `DAY_PARCELS` (20000), `DAY_DEPOTS` (40),
//! `DEPOT_SECONDS` (search time per depot, 5), `ENGINES` (a comma list,
//! first compared to the rest: `hgs,vrp-core`).

use std::path::Path;
use std::time::Instant;

use chrono::{NaiveDate, NaiveTime};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_domain::Country;
use threshold_routing::depot::{DepotDay, Fleet, Parcel, local_instant};
use threshold_routing::matrix::{GreatCircle, Point};
use threshold_routing::{Engine, Objective, Options, check, in_parallel, solve};

/// Ten cities per country.
const CITIES: [(Country, &[(f64, f64)]); 4] = [
    (
        Country::Dk,
        &[
            (55.676, 12.568),
            (56.162, 10.203),
            (55.403, 10.402),
            (57.048, 9.919),
            (55.476, 8.459),
            (55.491, 9.472),
            (55.709, 9.536),
            (56.460, 10.036),
            (55.861, 9.850),
            (56.137, 8.967),
        ],
    ),
    (
        Country::Fi,
        &[
            (60.169, 24.938),
            (61.498, 23.761),
            (60.452, 22.267),
            (65.012, 25.465),
            (62.242, 25.747),
            (60.983, 25.656),
            (62.892, 27.678),
            (61.058, 28.188),
            (61.486, 21.797),
            (63.096, 21.616),
        ],
    ),
    (
        Country::No,
        &[
            (59.913, 10.752),
            (60.391, 5.322),
            (63.430, 10.395),
            (58.969, 5.733),
            (58.146, 7.996),
            (59.747, 10.204),
            (59.267, 10.407),
            (69.649, 18.956),
            (59.439, 10.659),
            (59.213, 9.609),
        ],
    ),
    (
        Country::Se,
        &[
            (59.329, 18.068),
            (57.708, 11.974),
            (55.605, 13.003),
            (59.858, 17.639),
            (58.411, 15.621),
            (59.611, 16.545),
            (59.274, 15.207),
            (57.782, 14.162),
            (56.046, 12.694),
            (63.826, 20.263),
        ],
    ),
];

fn main() {
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let parcels = env("DAY_PARCELS", 20_000.0) as usize;
    let depots = (env("DAY_DEPOTS", 40.0) as usize).clamp(1, 40);
    let seconds = env("DEPOT_SECONDS", 5.0);
    let date = NaiveDate::from_ymd_opt(2026, 11, 23).expect("date");
    let mut rng = SmallRng::seed_from_u64(7);

    let fleet = Fleet {
        vans: 40,
        in_home_cleared: 20,
        ..Fleet::default()
    };
    let mut days = Vec::new();
    for d in 0..depots {
        let (country, cities) = CITIES[d % 4];
        let (lat, lon) = cities[d / 4 % cities.len()];
        let n = parcels / depots + usize::from(d < parcels % depots);
        let parcels = (0..n)
            .map(|i| {
                let in_home = rng.random_bool(0.2).then(|| {
                    let h = rng.random_range(9..15);
                    (
                        local_instant(
                            country,
                            date,
                            NaiveTime::from_hms_opt(h, 0, 0).unwrap_or_default(),
                        ),
                        local_instant(
                            country,
                            date,
                            NaiveTime::from_hms_opt(h + 3, 0, 0).unwrap_or_default(),
                        ),
                    )
                });
                Parcel {
                    parcel_id: format!("{}-{d:02}-{i:05}", country.code()),
                    // Within about 10 km of the depot.
                    position: Point {
                        latitude: lat + rng.random_range(-0.09..0.09),
                        longitude: lon + rng.random_range(-0.16..0.16),
                    },
                    weight_g: rng.random_range(200..15_000),
                    volume_cm3: None,
                    in_home,
                }
            })
            .collect();
        let fleet = Fleet {
            latitude: Some(lat),
            longitude: Some(lon),
            ..fleet.clone()
        };
        days.push((
            DepotDay {
                depot_id: format!("{}-{d:02}", country.code()),
                country,
                date,
                parcels,
            },
            fleet,
        ));
    }

    let engines: Vec<Engine> = std::env::var("ENGINES")
        .unwrap_or_else(|_| "hgs,vrp-core".into())
        .split(',')
        .map(|e| {
            e.trim()
                .parse()
                .unwrap_or_else(|err| panic!("ENGINES: {err}"))
        })
        .collect();
    println!(
        "{} parcels over {} depots, {seconds} s per depot, {} cores; engines {}, one after another",
        parcels,
        days.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        engines
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let runs: Vec<Run> = engines
        .iter()
        .map(|&engine| plan_day(&days, engine, seconds))
        .collect();

    print!("{:<8} {:>7}", "depot", "parcels");
    for run in &runs {
        print!(
            " | {:>8} {:>5} {:>5} {:>7} {:>6}",
            run.engine, "vans", "left", "km", "s"
        );
    }
    println!();
    for (d, (day, _)) in days.iter().enumerate() {
        print!("{:<8} {:>7}", day.depot_id, day.parcels.len());
        for run in &runs {
            let r = &run.depots[d];
            print!(
                " | {:>8} {:>5} {:>5} {:>7.0} {:>6.1}",
                if r.violations > 0 { "INFEAS." } else { "" },
                r.vans,
                r.unassigned,
                r.distance / 1000.0,
                r.seconds
            );
        }
        println!();
    }
    println!();
    for run in &runs {
        println!(
            "{:<9} planned {parcels} parcels over {} depots in {:.1} s wall: {} vans, {:.0} km, {:.0} driving hours, {} unassigned, {} infeasible plans",
            run.engine.to_string(),
            days.len(),
            run.wall,
            run.vans(),
            run.km(),
            run.driving_hours(),
            run.unassigned(),
            run.infeasible(),
        );
    }
    if let [first, rest @ ..] = runs.as_slice() {
        for other in rest {
            println!(
                "{}/{}: wall {:.3}, vans {:.3}, km {:.3}, driving hours {:.3}",
                first.engine,
                other.engine,
                first.wall / other.wall,
                first.vans() as f64 / other.vans() as f64,
                first.km() / other.km(),
                first.driving_hours() / other.driving_hours(),
            );
        }
    }
    let json = serde_json::json!({
        "parcels": parcels,
        "depots": days.len(),
        "seconds_per_depot": seconds,
        "engines": runs.iter().map(|run| serde_json::json!({
            "engine": run.engine.to_string(),
            "wall_seconds": run.wall,
            "vans": run.vans(),
            "km": run.km(),
            "driving_hours": run.driving_hours(),
            "unassigned": run.unassigned(),
            "infeasible_plans": run.infeasible(),
            "by_depot": days.iter().zip(&run.depots).map(|((day, _), r)| serde_json::json!({
                "depot": day.depot_id, "parcels": day.parcels.len(), "vans": r.vans,
                "unassigned": r.unassigned, "km": r.distance / 1000.0,
                "driving_hours": r.driving / 3600.0, "seconds": r.seconds,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let path = out.join("routing_depot_day.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write");
    println!("written to {}", path.display());
}

/// One depot's plan by one engine.
struct Depot {
    vans: usize,
    unassigned: usize,
    distance: f64,
    driving: f64,
    violations: usize,
    seconds: f64,
}

/// The whole day planned by one engine.
struct Run {
    engine: Engine,
    wall: f64,
    depots: Vec<Depot>,
}

impl Run {
    fn vans(&self) -> usize {
        self.depots.iter().map(|d| d.vans).sum()
    }
    fn unassigned(&self) -> usize {
        self.depots.iter().map(|d| d.unassigned).sum()
    }
    fn infeasible(&self) -> usize {
        self.depots.iter().filter(|d| d.violations > 0).count()
    }
    fn km(&self) -> f64 {
        self.depots.iter().map(|d| d.distance).sum::<f64>() / 1000.0
    }
    fn driving_hours(&self) -> f64 {
        self.depots.iter().map(|d| d.driving).sum::<f64>() / 3600.0
    }
}

/// Plans every depot with `engine`, one depot per core, and checks each plan.
fn plan_day(days: &[(DepotDay, Fleet)], engine: Engine, seconds: f64) -> Run {
    let started = Instant::now();
    let depots = in_parallel(days, |(day, fleet)| {
        let t = Instant::now();
        let planned = day
            .problem(fleet, &GreatCircle::default())
            .expect("problem");
        let plan = solve(
            &planned.problem,
            Options {
                engine,
                ..Options::seconds(Objective::Business, seconds)
            },
        )
        .expect("solve");
        Depot {
            vans: plan.routes.len(),
            unassigned: plan.unassigned.len(),
            distance: plan.distance(&planned.problem),
            driving: plan.driving(&planned.problem),
            violations: check(&planned.problem, &plan).len(),
            seconds: t.elapsed().as_secs_f64(),
        }
    });
    Run {
        engine,
        wall: started.elapsed().as_secs_f64(),
        depots,
    }
}
