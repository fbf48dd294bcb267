//! The solver on the literature's VRPTW instances: Solomon (100 clients)
//! and optionally Gehring & Homberger, distance objective, each solution
//! checked in double precision by a checker of its own here, gaps to the
//! best-known distance printed and written to
//! `target/bench/solver_<sets>.json`.
//!
//! Settings (environment): `VRPTW_DIR` (default `../shared/data/vrptw` from
//! the workspace), `SECONDS` (5, per Solomon instance), `SEED` (1),
//! `ITERATIONS` (an iteration budget instead of time), `ONLY` (comma list of
//! instance names), `CLASS` (comma list of name prefixes, e.g. `R1,RC2`),
//! `HOMBERGER` (comma list of `size:count:seconds`, e.g. `200:6:10`; count
//! instances taken per class in turn, instance 1 first), `SOLOMON` (`0` to
//! skip Solomon), `PEER` (comma list of JSON files mapping instance name to
//! a peer solver's distance, as `benches/pyvrp_peer.py` writes: adds the
//! gap to that distance).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use threshold_solver::{Client, Params, Problem, VehicleType, solve};

/// Which rows a summary line covers.
type Pick = Box<dyn Fn(&serde_json::Value) -> bool>;

/// Matrix units per instance unit.
const SCALE: f64 = 10_000.0;

struct Instance {
    name: String,
    points: Vec<(f64, f64)>,
    demand: Vec<i64>,
    ready: Vec<f64>,
    due: Vec<f64>,
    service: Vec<f64>,
    vehicles: usize,
    capacity: i64,
}

fn read(path: &Path) -> Instance {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let name = lines.next().expect("name line").to_owned();
    let numeric: Vec<Vec<f64>> = lines
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|l| {
            l.split_whitespace()
                .map(|x| {
                    x.parse()
                        .unwrap_or_else(|_| panic!("{}: {l}", path.display()))
                })
                .collect()
        })
        .collect();
    let fleet = &numeric[0];
    let nodes = &numeric[1..];
    Instance {
        name,
        points: nodes.iter().map(|v| (v[1], v[2])).collect(),
        demand: nodes.iter().map(|v| v[3] as i64).collect(),
        ready: nodes.iter().map(|v| v[4]).collect(),
        due: nodes.iter().map(|v| v[5]).collect(),
        service: nodes.iter().map(|v| v[6]).collect(),
        vehicles: fleet[0] as usize,
        capacity: fleet[1] as i64,
    }
}

fn euclid(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// Distances rounded, durations rounded up: a plan on time here is on time
/// in exact arithmetic.
fn problem(i: &Instance) -> Problem {
    let l = i.points.len();
    let mut distance = Vec::with_capacity(l * l);
    let mut duration = Vec::with_capacity(l * l);
    for a in 0..l {
        for b in 0..l {
            let d = euclid(i.points[a], i.points[b]) * SCALE;
            distance.push(d.round() as i64);
            duration.push((d - 1e-6).ceil().max(0.0) as i64);
        }
    }
    let s = |x: f64| (x * SCALE).round() as i64;
    Problem {
        locations: l,
        distance,
        duration,
        dimensions: 1,
        clients: (1..l)
            .map(|c| Client {
                location: c,
                demand: vec![i.demand[c]],
                window: (s(i.ready[c]), s(i.due[c])),
                service: s(i.service[c]),
                skills: 0,
            })
            .collect(),
        vehicle_types: vec![VehicleType {
            count: i.vehicles,
            capacity: vec![i.capacity],
            start: 0,
            end: 0,
            shift: (s(i.ready[0]), s(i.due[0])),
            skills: 0,
            fixed_cost: 0,
        }],
    }
}

/// Distance in double precision, or what is violated.
fn check(i: &Instance, routes: &[Vec<usize>]) -> Result<f64, String> {
    let mut seen = vec![false; i.points.len()];
    let mut total = 0.0;
    if routes.len() > i.vehicles {
        return Err(format!(
            "{} routes for {} vehicles",
            routes.len(),
            i.vehicles
        ));
    }
    for r in routes {
        let (mut at, mut time, mut load) = (0usize, i.ready[0], 0);
        for c in r.iter().map(|c| c + 1).chain([0]) {
            let d = euclid(i.points[at], i.points[c]);
            total += d;
            time = (time + d).max(i.ready[c]);
            if time > i.due[c] + 1e-9 {
                return Err(format!("node {c} reached at {time}, due {}", i.due[c]));
            }
            if c != 0 {
                if seen[c] {
                    return Err(format!("node {c} twice"));
                }
                seen[c] = true;
                load += i.demand[c];
                time += i.service[c];
            }
            at = c;
        }
        if load > i.capacity {
            return Err(format!("load {load} over {}", i.capacity));
        }
    }
    if let Some(c) = (1..seen.len()).find(|&c| !seen[c]) {
        return Err(format!("node {c} not served"));
    }
    Ok(total)
}

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var("VRPTW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join("../shared/data/vrptw"));
    let bks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("BKS.json")).expect("BKS.json"))
            .expect("BKS.json");
    let env = |k: &str| std::env::var(k).ok();
    let seconds: f64 = env("SECONDS").and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let seed: u64 = env("SEED").and_then(|s| s.parse().ok()).unwrap_or(1);
    let iterations: Option<u64> = env("ITERATIONS").and_then(|s| s.parse().ok());
    let list = |k: &str| -> Vec<String> {
        env(k)
            .map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_lowercase())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (only, class) = (list("ONLY"), list("CLASS"));
    let mut peer = std::collections::HashMap::<String, f64>::new();
    for f in env("PEER")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{f}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{f}: {e}"));
        for (k, d) in v.as_object().into_iter().flatten() {
            if let Some(d) = d.as_f64() {
                peer.insert(k.to_lowercase(), d);
            }
        }
    }
    let txt = |d: PathBuf| -> Vec<PathBuf> {
        let mut f: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        f.sort();
        f
    };
    let mut runs: Vec<(String, PathBuf, f64)> = Vec::new();
    if env("SOLOMON").as_deref() != Some("0") {
        for f in txt(dir.join("solomon")) {
            runs.push(("solomon".into(), f, seconds));
        }
    }
    for part in env("HOMBERGER")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let v: Vec<&str> = part.split(':').collect();
        let (size, count, secs) = (
            v[0],
            v[1].parse::<usize>().expect("count"),
            v[2].parse::<f64>().expect("seconds"),
        );
        let files = txt(dir.join(format!("homberger_{size}")));
        let mut picked = Vec::new();
        'outer: for n in 1..=10 {
            for c in ["c1", "r1", "rc1", "c2", "r2", "rc2"] {
                if picked.len() >= count {
                    break 'outer;
                }
                let want = format!("{c}_{}_{n}.txt", &size[..1]);
                if let Some(f) = files.iter().find(|f| {
                    f.file_name()
                        .is_some_and(|x| x.to_string_lossy().to_lowercase() == want)
                }) {
                    picked.push(f.clone());
                }
            }
        }
        for f in picked {
            runs.push((format!("homberger_{size}"), f, secs));
        }
    }
    let stem = |f: &Path| {
        f.file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_lowercase()
    };
    runs.retain(|(_, f, _)| {
        (only.is_empty() || only.contains(&stem(f)))
            && (class.is_empty()
                || class.iter().any(|c| {
                    let s = stem(f);
                    s.starts_with(c.as_str())
                        && s[c.len()..].starts_with(|ch: char| ch.is_ascii_digit() || ch == '_')
                }))
    });
    println!(
        "{:<12} {:>6} {:>8} {:>5} {:>11} {:>11} {:>7} {:>11} {:>7}",
        "instance", "secs", "iters", "veh", "distance", "best", "gap %", "peer", "vs peer"
    );
    let mut rows = Vec::new();
    for (set, file, secs) in &runs {
        let inst = read(file);
        let find = |key: String| {
            bks.as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)))
                .map(|(_, v)| v["best_known_cost"].as_f64().expect("cost"))
        };
        let best = find(format!("{}_distance", inst.name))
            .or_else(|| find(inst.name.clone()))
            .unwrap_or_else(|| panic!("no best known for {}", inst.name));
        let params = Params {
            seed,
            time_limit: if iterations.is_some() {
                None
            } else {
                Some(Duration::from_secs_f64(*secs))
            },
            iterations,
            ..Params::default()
        };
        let started = Instant::now();
        let sol = solve(&problem(&inst), &params).expect("solve");
        let took = started.elapsed().as_secs_f64();
        if !sol.unassigned.is_empty() {
            eprintln!("{}: unassigned {:?}", inst.name, sol.unassigned);
        }
        let routes: Vec<Vec<usize>> = sol.routes.iter().map(|r| r.clients.clone()).collect();
        let (distance, feasible) = match check(&inst, &routes) {
            Ok(d) => (d, true),
            Err(e) => {
                eprintln!("{}: infeasible: {e}", inst.name);
                (f64::NAN, false)
            }
        };
        let gap = 100.0 * (distance - best) / best;
        let peer_distance = peer.get(&inst.name.to_lowercase()).copied();
        let peer_gap = peer_distance.map(|p| 100.0 * (distance - p) / p);
        println!(
            "{:<12} {:>6.1} {:>8} {:>5} {:>11.2} {:>11.2} {:>7.2} {:>11} {:>7}",
            inst.name,
            took,
            sol.iterations,
            routes.len(),
            distance,
            best,
            gap,
            peer_distance.map_or("-".into(), |p| format!("{p:.2}")),
            peer_gap.map_or("-".into(), |g| format!("{g:.2}"))
        );
        rows.push(serde_json::json!({
            "instance": inst.name, "set": set, "seconds": took, "iterations": sol.iterations,
            "vehicles": routes.len(), "distance": distance, "best_distance": best,
            "gap_percent": gap, "feasible": feasible,
            "peer_distance": peer_distance, "peer_gap_percent": peer_gap,
        }));
    }
    println!();
    let mut summary = serde_json::Map::new();
    let groups: Vec<(String, Pick)> = {
        let mut g: Vec<(String, Pick)> = Vec::new();
        for set in [
            "solomon",
            "homberger_200",
            "homberger_400",
            "homberger_1000",
        ] {
            g.push((
                set.into(),
                Box::new(move |r: &serde_json::Value| r["set"] == set),
            ));
        }
        for c in ["C1", "C2", "R1", "R2", "RC1", "RC2"] {
            g.push((
                format!("solomon {c}"),
                Box::new(move |r: &serde_json::Value| {
                    let n = r["instance"].as_str().unwrap_or("");
                    r["set"] == "solomon"
                        && n.starts_with(c)
                        && n[c.len()..].starts_with(|ch: char| ch.is_ascii_digit())
                }),
            ));
        }
        g
    };
    for (name, pick) in groups {
        let of: Vec<&serde_json::Value> = rows.iter().filter(|r| pick(r)).collect();
        if of.is_empty() {
            continue;
        }
        let gaps: Vec<f64> = of
            .iter()
            .map(|r| r["gap_percent"].as_f64().unwrap_or(f64::NAN))
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let infeasible = of.iter().filter(|r| r["feasible"] != true).count();
        let peer_gaps: Vec<f64> = of
            .iter()
            .filter_map(|r| r["peer_gap_percent"].as_f64())
            .collect();
        let peer_mean =
            (!peer_gaps.is_empty()).then(|| peer_gaps.iter().sum::<f64>() / peer_gaps.len() as f64);
        println!(
            "{name:<16} {:>3} instances: mean gap {mean:.2}%, {infeasible} infeasible{}",
            of.len(),
            peer_mean.map_or(String::new(), |m| format!(
                ", mean gap to peer {m:.2}% over {}",
                peer_gaps.len()
            ))
        );
        summary.insert(
            name,
            serde_json::json!({"instances": of.len(), "mean_gap_percent": mean,
                "infeasible": infeasible, "mean_gap_to_peer_percent": peer_mean}),
        );
    }
    let out = workspace.join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let sets: Vec<String> = summary
        .keys()
        .filter(|k| !k.contains(' '))
        .cloned()
        .collect();
    let path = out.join(format!("solver_{}.json", sets.join("_")));
    let json = serde_json::json!({"seconds": seconds, "seed": seed, "iterations": iterations, "summary": summary, "instances": rows});
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write");
    println!("written to {}", path.display());
}
