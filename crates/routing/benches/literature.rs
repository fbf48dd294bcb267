//! The planner against the literature and against the best open solvers:
//! on every Solomon instance and every Gehring & Homberger instance of the
//! chosen sizes, Threshold, VROOM and PyVRP each get the same wall-clock
//! time on one thread; every solution (the peers' too) is checked by the
//! independent checker and its distance measured here, in double precision.
//! Printed per instance with the best-known distance and the gaps, then the
//! means per set and the ratios Threshold/PyVRP and Threshold/VROOM; written
//! to `target/bench/routing_peers_<sets>_<engine>.json`.
//!
//! The peers run from a Python environment that `scripts/routing-peers.sh`
//! creates under `.tools/venv` (`pip install pyvrp pyvroom`), through
//! `scripts/routing_peer.py`.
//!
//! Settings (environment):
//! - `VRPTW_DIR`: the instances (default `../shared/data/vrptw` from the workspace);
//! - `SOLOMON_SECONDS`: per Solomon instance (5);
//! - `HOMBERGER_SECONDS`: a comma list of limits per Homberger instance (`10,30`);
//! - `HOMBERGER_SIZES`: a comma list of sizes (`200,400`);
//! - `SETS`: `solomon`, `homberger` or both (default both);
//! - `CLASSES`: a comma list of classes to keep (`c1,r2,rc1`…; default all);
//! - `ONLY`: a comma list of instance names to keep;
//! - `PEERS`: `pyvrp,vroom` (default), a subset, or `none`;
//! - `ENGINE`: Threshold's engine (`hgs`; or `vrp-core`, `insertion`);
//! - `CONCURRENT`: `1` runs Threshold and PyVRP at the same time (two
//!   single-threaded processes on two cores), then VROOM alone; `0` (default)
//!   runs all three one after another.
//!
//! Homberger instances have only the hierarchical best known (fewest
//! vehicles, then distance) in BKS.json; their gap is to that distance.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use threshold_routing::{Budget, Engine, Objective, Options, Plan, Problem, check, solomon, solve};

/// One solver's result on one instance.
#[derive(Clone, serde::Serialize)]
struct Result {
    seconds: f64,
    vehicles: usize,
    distance: f64,
    gap_percent: f64,
    feasible: bool,
    error: Option<String>,
}

struct Row {
    instance: String,
    set: String,
    class: String,
    limit: f64,
    best: f64,
    best_vehicles: u64,
    results: Vec<(String, Result)>,
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn txt_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files
}

/// The class of an instance: `C1` of C101, `c1` of c1_2_1.
fn class_of(stem: &str) -> String {
    let s = stem.to_lowercase();
    if let Some((c, _)) = s.split_once('_') {
        return c.into();
    }
    let letters: String = s.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let digit = s[letters.len()..].chars().next().unwrap_or('1');
    format!("{letters}{digit}")
}

fn grade(problem: &Problem, plan: &Plan, seconds: f64, best: f64) -> Result {
    let violations = check(problem, plan);
    let feasible = violations.is_empty() && plan.unassigned.is_empty();
    let distance = plan.distance(problem);
    Result {
        seconds,
        vehicles: plan.routes.len(),
        distance,
        gap_percent: 100.0 * (distance - best) / best,
        feasible,
        error: (!feasible).then(|| {
            format!(
                "{} violations (first: {:?}), {} left out",
                violations.len(),
                violations.first().map(ToString::to_string),
                plan.unassigned.len()
            )
        }),
    }
}

fn failed(error: String) -> Result {
    Result {
        seconds: 0.0,
        vehicles: 0,
        distance: f64::NAN,
        gap_percent: f64::NAN,
        feasible: false,
        error: Some(error),
    }
}

/// Starts a peer on `file`; its answer is read by [`peer_result`].
fn start_peer(
    python: &Path,
    script: &Path,
    peer: &str,
    file: &Path,
    limit: f64,
) -> std::io::Result<std::process::Child> {
    Command::new(python)
        .arg(script)
        .arg(peer)
        .arg(file)
        .arg(limit.to_string())
        // One thread for the numeric libraries too.
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

fn peer_result(
    child: std::io::Result<std::process::Child>,
    problem: &Problem,
    peer: &str,
    best: f64,
) -> Result {
    let out = match child.and_then(|c| c.wait_with_output()) {
        Ok(out) => out,
        Err(e) => return failed(format!("{peer}: {e}")),
    };
    if !out.status.success() {
        return failed(format!(
            "{peer}: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        ));
    }
    let answer: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => return failed(format!("{peer}: unreadable answer: {e}")),
    };
    let seconds = answer["seconds"].as_f64().unwrap_or(f64::NAN);
    // Customer numbers (PyVRP: client indices from 0) to stop indices.
    let offset = usize::from(peer == "pyvrp");
    let by_number: std::collections::HashMap<&str, usize> = problem
        .stops
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut orders = Vec::new();
    for (van, route) in answer["routes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let stops: Vec<usize> = route
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.as_u64())
            .filter_map(|c| {
                by_number
                    .get((c as usize + offset).to_string().as_str())
                    .copied()
            })
            .collect();
        orders.push((van, stops));
    }
    let plan = Plan::from_orders(problem, &orders, peer);
    grade(problem, &plan, seconds, best)
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
    let number = |name: &str, default: f64| -> f64 {
        std::env::var(name)
            .ok()
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| panic!("{name}={s}: not a number"))
            })
            .unwrap_or(default)
    };
    let solomon_seconds = number("SOLOMON_SECONDS", 5.0);
    let homberger_seconds: Vec<f64> = env_list("HOMBERGER_SECONDS", "10,30")
        .iter()
        .map(|s| s.parse().expect("HOMBERGER_SECONDS"))
        .collect();
    let sizes = env_list("HOMBERGER_SIZES", "200,400");
    let sets = env_list("SETS", "solomon,homberger");
    let classes = env_list("CLASSES", "");
    let only = env_list("ONLY", "");
    let peers: Vec<String> = env_list("PEERS", "pyvrp,vroom")
        .into_iter()
        .filter(|p| p != "none")
        .collect();
    let engine: Engine = std::env::var("ENGINE")
        .unwrap_or_else(|_| "hgs".into())
        .parse()
        .expect("ENGINE");
    let concurrent = std::env::var("CONCURRENT").is_ok_and(|v| v == "1");

    let mut runs: Vec<(String, PathBuf, f64)> = Vec::new();
    if sets.iter().any(|s| s == "solomon") {
        for f in txt_files(&dir.join("solomon")) {
            runs.push(("solomon".into(), f, solomon_seconds));
        }
    }
    if sets.iter().any(|s| s == "homberger") {
        for size in &sizes {
            let files = txt_files(&dir.join(format!("homberger_{size}")));
            for &limit in &homberger_seconds {
                for f in &files {
                    runs.push((format!("homberger_{size}"), f.clone(), limit));
                }
            }
        }
    }
    runs.retain(|(_, f, _)| {
        let stem = f
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_lowercase();
        (classes.is_empty() || classes.contains(&class_of(&stem)))
            && (only.is_empty() || only.contains(&stem))
    });

    let python = if peers.is_empty() {
        PathBuf::new()
    } else {
        let out = Command::new(workspace.join("scripts/routing-peers.sh"))
            .arg("python")
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/routing-peers.sh");
        assert!(out.status.success(), "installing the peers failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    };
    let script = workspace.join("scripts/routing_peer.py");

    println!(
        "{} runs; Threshold ({engine}), {} on one thread each{}",
        runs.len(),
        if peers.is_empty() {
            "no peers".to_string()
        } else {
            peers.join(", ")
        },
        if concurrent {
            "; Threshold and PyVRP side by side"
        } else {
            ", one after another"
        }
    );
    let mut names = vec!["threshold".to_string()];
    names.extend(peers.iter().cloned());
    print!("{:<14} {:>5} {:>10}", "instance", "limit", "best");
    for n in &names {
        print!(" {:>10} {:>7}", n, "gap %");
    }
    println!();

    let mut rows = Vec::new();
    for (set, file, limit) in runs {
        let text = std::fs::read_to_string(&file).expect("read");
        let problem = solomon::parse(&file.display().to_string(), &text).expect("parse");
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

        let side = (concurrent && peers.iter().any(|p| p == "pyvrp"))
            .then(|| start_peer(&python, &script, "pyvrp", &file, limit));
        let started = Instant::now();
        let ours = match solve(
            &problem,
            Options {
                objective: Objective::Distance,
                budget: Budget::Seconds(limit),
                threads: 1,
                engine,
            },
        ) {
            Ok(plan) => grade(&problem, &plan, started.elapsed().as_secs_f64(), best),
            Err(e) => failed(e.to_string()),
        };
        let mut results = vec![("threshold".to_string(), ours)];
        let mut side = side;
        for peer in &peers {
            let child = match (peer.as_str(), side.take()) {
                ("pyvrp", Some(child)) => child,
                (_, s) => {
                    side = s;
                    start_peer(&python, &script, peer, &file, limit)
                }
            };
            results.push((peer.clone(), peer_result(child, &problem, peer, best)));
        }
        let stem = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        print!("{:<14} {:>5.0} {:>10.2}", problem.name, limit, best);
        for (name, r) in &results {
            let mark = if r.feasible { ' ' } else { '!' };
            print!(" {:>10.2}{mark}{:>7.2}", r.distance, r.gap_percent);
            if let Some(e) = &r.error {
                eprintln!("{}: {name}: {e}", problem.name);
            }
        }
        println!();
        rows.push(Row {
            instance: problem.name.clone(),
            class: class_of(&stem),
            set,
            limit,
            best,
            best_vehicles,
            results,
        });
    }

    // Per set and limit: mean gaps, and the mean ratio of distances over
    // the instances both solved feasibly.
    let mut summary = Vec::new();
    let mut groups: Vec<(String, f64)> = rows.iter().map(|r| (r.set.clone(), r.limit)).collect();
    groups.dedup();
    groups.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    groups.dedup();
    println!();
    for (set, limit) in groups {
        let of: Vec<&Row> = rows
            .iter()
            .filter(|r| r.set == set && r.limit == limit)
            .collect();
        let mut line = format!("{set} at {limit} s, {} instances:", of.len());
        let mut solvers = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            let ok: Vec<&Result> = of
                .iter()
                .map(|r| &r.results[i].1)
                .filter(|r| r.feasible)
                .collect();
            let mean = ok.iter().map(|r| r.gap_percent).sum::<f64>() / ok.len().max(1) as f64;
            line += &format!(
                " {name} mean gap {mean:.2}% ({} infeasible);",
                of.len() - ok.len()
            );
            solvers.insert(
                name.clone(),
                serde_json::json!({
                    "mean_gap_percent": mean,
                    "feasible": ok.len(),
                    "infeasible": of.len() - ok.len(),
                    "mean_vehicles": ok.iter().map(|r| r.vehicles as f64).sum::<f64>() / ok.len().max(1) as f64,
                }),
            );
        }
        let mut ratios = serde_json::Map::new();
        for (i, name) in names.iter().enumerate().skip(1) {
            let pairs: Vec<f64> = of
                .iter()
                .filter(|r| r.results[0].1.feasible && r.results[i].1.feasible)
                .map(|r| r.results[0].1.distance / r.results[i].1.distance)
                .collect();
            let mean = pairs.iter().sum::<f64>() / pairs.len().max(1) as f64;
            line += &format!(
                " threshold/{name} {mean:.4} over {} instances;",
                pairs.len()
            );
            ratios.insert(
                format!("threshold_over_{name}"),
                serde_json::json!({"mean_ratio": mean, "instances": pairs.len()}),
            );
        }
        println!("{line}");
        summary.push(serde_json::json!({
            "set": set, "seconds": limit, "instances": of.len(),
            "solvers": solvers, "ratios": ratios,
        }));
    }
    let json = serde_json::json!({
        "objective": "distance",
        "engine": engine,
        "threads_per_solver": 1,
        "concurrent": concurrent,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "summary": summary,
        "instances": rows.iter().map(|r| serde_json::json!({
            "instance": r.instance, "set": r.set, "class": r.class,
            "seconds": r.limit, "best_distance": r.best, "best_vehicles": r.best_vehicles,
            "results": r.results.iter().map(|(n, x)| (n.clone(), serde_json::to_value(x).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
    });
    let out = workspace.join("target/bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let mut tag: Vec<String> = rows.iter().map(|r| r.set.clone()).collect();
    tag.dedup();
    tag.sort();
    tag.dedup();
    let path = out.join(format!("routing_peers_{}_{engine}.json", tag.join("_")));
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write");
    println!("written to {}", path.display());
}
