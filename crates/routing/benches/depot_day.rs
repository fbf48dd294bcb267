//! A whole four-country day: 20,000 parcels over 40 depots (ten per
//! country, at real city coordinates), a fifth of them in-home with a
//! three-hour window, planned in parallel one depot per core with the
//! business objective. Every plan is checked by the independent checker.
//! Prints the wall time and per-depot figures; writes
//! `target/bench/routing_depot_day.json`.
//!
//! Settings (environment): `DAY_PARCELS` (20000), `DAY_DEPOTS` (40),
//! `DEPOT_SECONDS` (search time per depot, 5).

use std::path::Path;
use std::time::Instant;

use chrono::{NaiveDate, NaiveTime};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_domain::Country;
use threshold_routing::depot::{DepotDay, Fleet, Parcel, local_instant};
use threshold_routing::matrix::{GreatCircle, Point};
use threshold_routing::{Objective, Options, check, in_parallel, solve};

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

    println!(
        "{} parcels over {} depots, {seconds} s per depot, {} cores",
        parcels,
        days.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let started = Instant::now();
    let results = in_parallel(&days, |(day, fleet)| {
        let t = Instant::now();
        let planned = day
            .problem(fleet, &GreatCircle::default())
            .expect("problem");
        let plan = solve(
            &planned.problem,
            Options::seconds(Objective::Business, seconds),
        )
        .expect("solve");
        let violations = check(&planned.problem, &plan);
        (
            day.depot_id.clone(),
            day.parcels.len(),
            plan.routes.len(),
            plan.unassigned.len(),
            plan.distance(&planned.problem),
            plan.driving(&planned.problem),
            violations.len(),
            t.elapsed().as_secs_f64(),
        )
    });
    let wall = started.elapsed().as_secs_f64();

    println!(
        "{:<8} {:>7} {:>5} {:>10} {:>9} {:>11} {:>9}",
        "depot", "parcels", "vans", "unassigned", "km", "driving h", "seconds"
    );
    for (depot, n, vans, unassigned, distance, driving, violations, s) in &results {
        println!(
            "{depot:<8} {n:>7} {vans:>5} {unassigned:>10} {:>9.0} {:>11.1} {s:>9.1}{}",
            distance / 1000.0,
            driving / 3600.0,
            if *violations > 0 { "  INFEASIBLE" } else { "" }
        );
    }
    let vans: usize = results.iter().map(|r| r.2).sum();
    let unassigned: usize = results.iter().map(|r| r.3).sum();
    let infeasible = results.iter().filter(|r| r.6 > 0).count();
    let km: f64 = results.iter().map(|r| r.4).sum::<f64>() / 1000.0;
    println!(
        "\nplanned {} parcels over {} depots in {wall:.1} s wall: {vans} vans, {km:.0} km, {unassigned} unassigned, {infeasible} infeasible plans",
        parcels,
        days.len()
    );
    let json = serde_json::json!({
        "parcels": parcels,
        "depots": days.len(),
        "seconds_per_depot": seconds,
        "wall_seconds": wall,
        "vans": vans,
        "km": km,
        "unassigned": unassigned,
        "infeasible_plans": infeasible,
        "by_depot": results.iter().map(|r| serde_json::json!({
            "depot": r.0, "parcels": r.1, "vans": r.2, "unassigned": r.3,
            "km": r.4 / 1000.0, "driving_hours": r.5 / 3600.0, "seconds": r.7,
        })).collect::<Vec<_>>(),
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let path = out.join("routing_depot_day.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write");
    println!("written to {}", path.display());
}
