//! The planner against the literature: Solomon and Gehring & Homberger
//! instances with the distance objective, each solution checked by the
//! independent checker, gaps to the best-known distance printed and written
//! to `target/bench/routing_literature.json`.
//!
//! Settings (environment): `VRPTW_DIR` (default `../shared/data/vrptw` from
//! the workspace), `SOLOMON_SECONDS` (5), `HOMBERGER` (a comma list of
//! `size:count:seconds`, default `200:3:30,400:3:45,1000:3:60`),
//! `SOLOMON_ONLY` (skip Homberger), `HOMBERGER_ONLY` (skip Solomon), `ONLY`
//! (a comma list of instance names). Homberger instances have only the
//! hierarchical best known (fewest vehicles, then distance) in BKS.json; their
//! gap is to that distance.

use std::path::{Path, PathBuf};
use std::time::Instant;

use threshold_routing::{Objective, Options, check, solomon, solve};

struct Row {
    instance: String,
    class: String,
    seconds: f64,
    vehicles: usize,
    distance: f64,
    best: f64,
    best_vehicles: u64,
    gap: f64,
    feasible: bool,
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var("VRPTW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join("../shared/data/vrptw"));
    let bks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("BKS.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join("BKS.json").display())),
    )
    .expect("BKS.json");
    let solomon_seconds: f64 = std::env::var("SOLOMON_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let mut runs: Vec<(String, PathBuf, f64)> = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("solomon"))
        .expect("solomon dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    if std::env::var_os("HOMBERGER_ONLY").is_none() {
        for f in files {
            runs.push(("solomon".into(), f, solomon_seconds));
        }
    }
    let only: Vec<String> = std::env::var("ONLY")
        .map(|s| s.split(',').map(|n| n.trim().to_lowercase()).collect())
        .unwrap_or_default();
    if std::env::var_os("SOLOMON_ONLY").is_none() {
        let spec =
            std::env::var("HOMBERGER").unwrap_or_else(|_| "200:3:30,400:3:45,1000:3:60".into());
        for part in spec.split(',').filter(|s| !s.is_empty()) {
            let v: Vec<&str> = part.split(':').collect();
            let (size, count, seconds) = (
                v[0],
                v[1].parse::<usize>().expect("count"),
                v[2].parse::<f64>().expect("seconds"),
            );
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(format!("homberger_{size}")))
                .expect("homberger dir")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "txt"))
                .collect();
            files.sort();
            // One per class (c1, c2, r1, r2, rc1, rc2) in turn, instance 1 first.
            let mut picked: Vec<PathBuf> = Vec::new();
            for class in ["c1_", "r1_", "rc1_", "c2_", "r2_", "rc2_"] {
                if let Some(f) = files.iter().find(|f| {
                    let n = f
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_lowercase();
                    n.starts_with(class) && n.ends_with("_1.txt")
                }) {
                    picked.push(f.clone());
                }
            }
            picked.truncate(count);
            for f in picked {
                runs.push((format!("homberger_{size}"), f, seconds));
            }
        }
    }

    if !only.is_empty() {
        runs.retain(|(_, f, _)| {
            let stem = f
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_lowercase();
            only.contains(&stem)
        });
    }
    println!(
        "{:<14} {:>7} {:>9} {:>11} {:>11} {:>7} {:>8}",
        "instance", "seconds", "vehicles", "distance", "best", "gap %", "feasible"
    );
    let mut rows = Vec::new();
    for (class, file, seconds) in runs {
        let text = std::fs::read_to_string(&file).expect("read");
        let problem = solomon::parse(&file.display().to_string(), &text).expect("parse");
        // The best distance whatever the vehicle count (`NAME_distance`);
        // where only the hierarchical best is known (Homberger), that one.
        let find = |key: String| {
            bks.as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)))
                .map(|(_, v)| v)
        };
        let entry = find(format!("{}_distance", problem.name))
            .or_else(|| find(problem.name.clone()))
            .unwrap_or_else(|| panic!("no best-known solution for {}", problem.name));
        let best = entry["best_known_cost"].as_f64().expect("cost");
        let best_vehicles = entry["solved_with_vehicles"].as_u64().unwrap_or(0);
        let started = Instant::now();
        let plan = solve(
            &problem,
            Options {
                objective: Objective::Distance,
                seconds,
                repeatable: false,
            },
        )
        .expect("solve");
        let took = started.elapsed().as_secs_f64();
        let violations = check(&problem, &plan);
        let feasible = violations.is_empty() && plan.unassigned.is_empty();
        if !feasible {
            eprintln!(
                "{}: {} violations, {} unassigned: {:?}",
                problem.name,
                violations.len(),
                plan.unassigned.len(),
                violations.first()
            );
        }
        let distance = plan.distance(&problem);
        let row = Row {
            instance: problem.name.clone(),
            class,
            seconds: took,
            vehicles: plan.routes.len(),
            distance,
            best,
            best_vehicles,
            gap: 100.0 * (distance - best) / best,
            feasible,
        };
        println!(
            "{:<14} {:>7.1} {:>4} ({:>2}) {:>11.2} {:>11.2} {:>7.2} {:>8}",
            row.instance,
            row.seconds,
            row.vehicles,
            row.best_vehicles,
            row.distance,
            row.best,
            row.gap,
            row.feasible
        );
        rows.push(row);
    }

    let mut summary = serde_json::Map::new();
    println!();
    for class in [
        "solomon",
        "homberger_200",
        "homberger_400",
        "homberger_1000",
    ] {
        let of: Vec<&Row> = rows.iter().filter(|r| r.class == class).collect();
        if of.is_empty() {
            continue;
        }
        let mean = of.iter().map(|r| r.gap).sum::<f64>() / of.len() as f64;
        let mut gaps: Vec<f64> = of.iter().map(|r| r.gap).collect();
        gaps.sort_by(f64::total_cmp);
        let median = gaps[gaps.len() / 2];
        let infeasible = of.iter().filter(|r| !r.feasible).count();
        let extra_vehicles: i64 = of
            .iter()
            .map(|r| r.vehicles as i64 - r.best_vehicles as i64)
            .sum();
        println!(
            "{class:<15} {} instances: mean gap {mean:.2}%, median {median:.2}%, worst {:.2}%, {infeasible} infeasible, {extra_vehicles:+} vehicles against the best known",
            of.len(),
            gaps[gaps.len() - 1]
        );
        summary.insert(
            class.into(),
            serde_json::json!({
                "instances": of.len(),
                "mean_gap_percent": mean,
                "median_gap_percent": median,
                "worst_gap_percent": gaps[gaps.len() - 1],
                "infeasible": infeasible,
                "vehicles_over_best": extra_vehicles,
            }),
        );
    }
    let json = serde_json::json!({
        "objective": "distance",
        "summary": summary,
        "instances": rows.iter().map(|r| serde_json::json!({
            "instance": r.instance, "class": r.class, "seconds": r.seconds,
            "vehicles": r.vehicles, "best_vehicles": r.best_vehicles,
            "distance": r.distance, "best_distance": r.best, "gap_percent": r.gap,
            "feasible": r.feasible,
        })).collect::<Vec<_>>(),
    });
    let out = workspace.join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let sets: Vec<&str> = summary.keys().map(String::as_str).collect();
    let path = out.join(format!("routing_literature_{}.json", sets.join("_")));
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write");
    println!("written to {}", path.display());
}
