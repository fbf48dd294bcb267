//! The Grafana dashboard in `deploy/grafana/` charts what a server really
//! serves: every metric one of its queries names is on the admin port after
//! a simulated day (or, for counters only a refusal brings, declared by the
//! code), and the dashboard is well formed for Grafana to import.

mod common;

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};

use common::*;

fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/threshold.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every metric name the dashboard's queries use.
fn metric_names(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if token.starts_with("threshold_") || token.starts_with("rpc_server_") {
                    names.insert(token.to_owned());
                }
            }
        }
    }
    names
}

/// The instrument a Prometheus name comes from, as the code declares it:
/// `threshold_access_refused_total` → `"threshold.access.refused"`.
fn instrument(metric: &str) -> String {
    let base = ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| metric.strip_suffix(s))
        .unwrap_or(metric);
    format!("\"{}\"", base.replace('_', "."))
}

fn sources_declare(needle: &str) -> bool {
    fn walk(dir: &Path, needle: &str) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path, needle)
            } else {
                path.extension().is_some_and(|x| x == "rs")
                    && std::fs::read_to_string(&path).is_ok_and(|s| s.contains(needle))
            }
        })
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    ["crates", "services"]
        .iter()
        .any(|d| walk(&root.join(d), needle))
}

#[test]
fn the_dashboard_is_well_formed_for_grafana() {
    let d = dashboard();
    assert_eq!(d["uid"], "threshold-overview");
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().expect("x"), g["w"].as_u64().expect("w"));
        assert!(
            x + w <= 24,
            "panel {} overflows the 24-column grid",
            p["title"]
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "panel {} says what it shows",
            p["title"]
        );
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {} uses the dashboard's data source variable",
            p["title"]
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has a query", p["title"]);
        let refs: BTreeSet<_> = targets.iter().map(|t| t["refId"].to_string()).collect();
        assert_eq!(
            refs.len(),
            targets.len(),
            "refIds in {} are unique",
            p["title"]
        );
    }
    let vars: Vec<_> = d["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    assert_eq!(vars, ["datasource", "job"]);
}

#[test]
fn every_metric_the_dashboard_charts_is_served_after_a_simulated_day() {
    let names = metric_names(&dashboard());
    assert!(names.len() >= 10, "{names:?}");

    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--days",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn run");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut admin, mut follow) = (String::new(), None::<Vec<String>>);
    while admin.is_empty() || follow.is_none() {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).expect("line") > 0,
            "run ended before serving"
        );
        if let Some(a) = line.strip_prefix("metrics on http://") {
            admin = a.trim().trim_end_matches("/metrics").to_owned();
        }
        // The partner's command `run` suggests: follow it, so the
        // subscription gauges have a subscriber to count.
        if let Some(cmd) = line.trim().strip_prefix("threshold outcomes follow ") {
            let cmd = cmd.split('#').next().expect("command");
            follow = Some(
                ["outcomes", "follow"]
                    .into_iter()
                    .map(str::to_owned)
                    .chain(cmd.split_whitespace().map(str::to_owned))
                    .collect(),
            );
        }
    }
    let mut partner = Command::new(BIN)
        .args(follow.expect("follow"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn follow");
    // Its first outcome line means the subscription is open.
    let mut first = String::new();
    BufReader::new(partner.stdout.as_mut().expect("stdout"))
        .read_line(&mut first)
        .expect("an outcome");
    assert!(!first.is_empty(), "the partner saw no outcome");

    let mut body = String::new();
    let mut conn = std::net::TcpStream::connect(&admin).expect("admin port");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    conn.read_to_string(&mut body).expect("response");
    let _ = partner.kill();
    let _ = partner.wait();
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");

    let served: BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    // Counted only when it happens: the simulated day's residents and
    // drivers keep to what is theirs, its handhelds' resends are answered
    // before they reach the log, and it disables no webhook endpoint. Or
    // served only on Kafka.
    let on_refusal = [
        "threshold_access_refused_total",
        "threshold_handheld_refused_total",
        "threshold_events_duplicates_total",
        "threshold_webhook_alerts_total",
        // Served by a process on Kafka only; the simulated day runs on
        // the embedded log.
        "threshold_log_replica_lag",
        "threshold_kafka_fetch_requests_total",
    ];
    for name in &names {
        if on_refusal.contains(&name.as_str()) {
            let declared = instrument(name);
            assert!(
                sources_declare(&declared),
                "the dashboard charts {name}, but no instrument {declared} is declared"
            );
        } else {
            assert!(
                served.contains(name.as_str()),
                "the dashboard charts {name}, which the server does not serve: {served:?}"
            );
        }
    }
}
