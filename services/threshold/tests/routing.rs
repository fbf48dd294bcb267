//! The route planner from the CLI: a benchmark instance solved, and a
//! loaded day planned on a server.

mod common;

use common::*;

/// `--generations` with `--seed`: the same routes on every run; the
/// engine that cannot repeat is refused for it.
#[test]
fn routing_solve_with_a_seed_and_generations_repeats() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/routing/tests/data/R101.txt"
    );
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["routing", "solve", file, "--generations", "150", "--json"])
            .args(extra)
            .output()
            .expect("routing solve");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        (
            v["routes"].clone(),
            v["distance"].as_f64().expect("distance"),
        )
    };
    let first = run(&["--seed", "5"]);
    assert_eq!(run(&["--seed", "5"]), first);
    assert_eq!(run(&["--seed", "5"]), first);
    assert_ne!(run(&["--seed", "6"]).0, first.0, "the seed is used");
    let refused = Command::new(BIN)
        .args([
            "routing",
            "solve",
            file,
            "--generations",
            "10",
            "--engine",
            "vrp-core",
        ])
        .output()
        .expect("routing solve");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot repeat"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn routing_solve_prints_a_plan_of_a_solomon_instance_as_json() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/routing/tests/data/C101.txt"
    );
    let out = Command::new(BIN)
        .args([
            "routing",
            "solve",
            "--format",
            "solomon",
            file,
            "--seconds",
            "1",
            "--json",
        ])
        .output()
        .expect("routing solve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["instance"], "C101");
    let routes = v["routes"].as_array().expect("routes");
    assert_eq!(v["vehicles"].as_u64(), Some(routes.len() as u64));
    let mut customers: Vec<u64> = routes
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("route")
                .iter()
                .map(|c| c.as_u64().expect("number"))
        })
        .collect();
    customers.sort_unstable();
    assert_eq!(
        customers,
        (1..=100).collect::<Vec<u64>>(),
        "every customer once"
    );
    let distance = v["distance"].as_f64().expect("distance");
    assert!((828.9..900.0).contains(&distance), "{distance}");

    let bad = Command::new(BIN)
        .args(["routing", "solve", "--format", "tsplib", file])
        .output()
        .expect("routing solve");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("only solomon"));
}

#[test]
fn a_planner_plans_a_loaded_day_from_the_cli() {
    let dir = tempfile::tempdir().expect("dir");
    let server = Served::start(&dir.path().join("data"));
    let file = samples().join("2026-11-23-se.csv");
    let out = load_manifest(&file, &server.url, &server.data, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "routing",
            "plan",
            "--date",
            "2026-11-23",
            "--seconds",
            "0.3",
            "--server",
            &server.url,
            "--data",
            server.data(),
        ];
        args.extend_from_slice(extra);
        threshold(&args)
    };
    let out = plan(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let depots = v["depots"].as_array().expect("depots");
    // The Swedish sample: Stockholm and Göteborg, 30 parcels each, all planned
    // with the bundled fleet configuration.
    let names: Vec<&str> = depots
        .iter()
        .filter_map(|d| d["depot_id"].as_str())
        .collect();
    assert_eq!(names, ["GOT-1", "STO-1"]);
    for d in depots {
        assert_eq!(d["parcels"], 30);
        assert!(d["vans_used"].as_u64().expect("vans") >= 1);
        assert_eq!(d["unassigned"].as_array().map(Vec::len), Some(0), "{d}");
    }
    // Again: a second version; the text form names every depot.
    let out = plan(&["--depot", "STO-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("STO-1") && !text.contains("GOT-1"), "{text}");
    let out = plan(&["--depot", "KIR-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KIR-1"));
}
