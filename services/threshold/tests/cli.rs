//! The `threshold` command end to end: `serve` on 127.0.0.1:0, the CLI
//! loading manifests against it, a graceful stop, and the log read back.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_threshold");

fn samples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/manifest/samples")
}

/// A `threshold serve` child, stopped with SIGINT when dropped.
struct Served {
    child: Child,
    url: String,
    data: std::path::PathBuf,
}

impl Served {
    fn start(data: &Path) -> Self {
        let mut serve = Command::new(BIN);
        serve
            .args(["serve", "--simulation", "--listen", "127.0.0.1:0", "--data"])
            .arg(data);
        Self::spawn(serve, data)
    }

    /// Spawns `serve` (a `threshold serve` command) and waits for its address.
    fn spawn(mut serve: Command, data: &Path) -> Self {
        let mut child = serve.stdout(Stdio::piped()).spawn().expect("spawn serve");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        let addr = line
            .split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self {
            child,
            url: format!("http://{addr}"),
            data: data.to_path_buf(),
        }
    }

    /// Its data directory, as the CLI's --data.
    fn data(&self) -> &str {
        self.data.to_str().expect("path")
    }

    /// A gRPC connection to it.
    async fn plain(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.url.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// A gRPC connection to it as the local credential of `role`.
    async fn channel(&self, role: threshold_auth::Role) -> threshold_auth::Authed {
        threshold_auth::LocalTokens::load(&self.data)
            .expect("local tokens")
            .channel(self.plain().await, role)
            .expect("token")
    }

    /// Ctrl-C, then wait: the server closes the log cleanly.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn threshold(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run threshold")
}

/// `threshold manifest load FILE --server URL --data DIR [extra...]`.
fn load_manifest(file: &Path, server: &str, data: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "manifest",
        "load",
        file.to_str().expect("path"),
        "--server",
        server,
        "--data",
        data.to_str().expect("path"),
    ];
    args.extend_from_slice(extra);
    threshold(&args)
}

#[test]
fn manifests_load_through_the_cli_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let server = Served::start(&data);

    let mut loaded = 0;
    for cc in ["dk", "fi", "no", "se"] {
        let file = samples().join(format!("2026-11-23-{cc}.csv"));
        let out = load_manifest(&file, &server.url, &server.data, &["--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(json["rows"], 60);
        assert_eq!(json["accepted"], 60);
        assert_eq!(json["rejected"], 0);
        assert!(json["rejects_file"].is_null());
        loaded += 60;
    }

    // A file with a bad row: exit status 2, the row in a rejects file.
    let bad = dir.path().join("bad.csv");
    let sample = std::fs::read_to_string(samples().join("2026-11-23-se.csv")).expect("sample");
    let header = sample.lines().next().expect("header");
    std::fs::write(
        &bad,
        format!("{header}\nSE-BAD-1,nordshop,SE,STO-1,2026-11-23,Street 1,111 51,Stockholm,59.3,18.0,parcel_drone,1,,\n"),
    )
    .expect("write");
    let out = load_manifest(&bad, &server.url, &server.data, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2, field service"), "{stderr}");
    let rejects =
        std::fs::read_to_string(dir.path().join("bad.rejects.csv")).expect("rejects file");
    assert!(rejects.contains("SE-BAD-1"), "{rejects}");
    assert!(rejects.lines().next().expect("header").ends_with(",error"));

    // The analysts' report counts the parcels by country (the projection
    // follows the log asynchronously; give it a moment).
    let mut report = serde_json::Value::Null;
    for _ in 0..100 {
        let out = threshold(&[
            "report",
            "attempts",
            "--by",
            "country",
            "--json",
            "--server",
            &server.url,
            "--data",
            server.data(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        report = serde_json::from_slice(&out.stdout).expect("json");
        if report["total"]["parcels"] == loaded {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(report["total"]["parcels"], loaded, "{report}");
    let rows = report["rows"].as_array().expect("rows");
    let countries: Vec<&str> = rows
        .iter()
        .map(|r| r["country"].as_str().expect("country"))
        .collect();
    assert_eq!(countries, vec!["DK", "FI", "NO", "SE"]);
    assert!(
        rows.iter()
            .all(|r| r["parcels"] == 60 && r["attempts"] == 0)
    );
    let out = threshold(&[
        "report",
        "attempts",
        "--by",
        "colour",
        "--server",
        &server.url,
        "--data",
        server.data(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not one of country"));

    // Stop; the stopped server's log holds every accepted parcel.
    assert!(server.stop().success());
    let out = threshold(&["log", "stats", "--data", data.to_str().expect("path")]);
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(stats.contains(&format!("{loaded} events")), "{stats}");
    assert!(stats.contains("parcel.manifested"), "{stats}");

    // Restarted, the same manifests are recognised: nothing new.
    let server = Served::start(&data);
    let out = load_manifest(
        &samples().join("2026-11-23-fi.csv"),
        &server.url,
        &server.data,
        &["--json"],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (json["accepted"].as_u64(), json["unchanged"].as_u64()),
        (Some(0), Some(60))
    );
    assert!(server.stop().success());
}

#[test]
fn errors_go_to_stderr_with_a_non_zero_exit() {
    let out = threshold(&[
        "manifest",
        "load",
        "/nonexistent/day.csv",
        "--server",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent/day.csv"));
    assert!(out.stdout.is_empty());
}

/// The report part of `threshold run --demo`'s output (what follows the
/// first blank line), for one seed on a fresh store.
/// The in-home lines and the report tables of a simulated day's output.
fn day_report(text: &str) -> String {
    let grants = text
        .lines()
        .filter(|l| l.starts_with("in-home") || l.starts_with("alerts raised"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!grants.is_empty(), "no in-home lines in {text}");
    let report = text
        .split_once("\n\n")
        .map(|(_, r)| r.to_owned())
        .unwrap_or_else(|| panic!("no report in {text}"));
    format!("{grants}\n{report}")
        .lines()
        .filter(|l| !l.starts_with("threshold stopped"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn demo_report(seed: u64) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(BIN)
        .args([
            "run",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            &seed.to_string(),
            "--data",
        ])
        .arg(dir.path().join("data"))
        .output()
        .expect("run --demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    day_report(&String::from_utf8_lossy(&out.stdout))
}

/// The number before `what` in `line`, e.g. 3 in "(3 revoked, ...)".
fn count(line: &str, what: &str) -> u64 {
    line.split([',', '(', ')', ';', ':'])
        .map(str::trim)
        .find_map(|part| {
            let (n, rest) = part.split_once(' ')?;
            (rest == what).then(|| n.parse().ok()).flatten()
        })
        .unwrap_or(0)
}

#[test]
fn the_main_job_gives_the_same_day_for_the_same_seed() {
    let first = demo_report(12);
    assert!(first.contains("in_home"), "{first}");
    let line = |prefix: &str| {
        first
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in {first}"))
            .to_owned()
    };
    // "in-home: G grants issued, R revoked by their resident; A unlocks
    // authorized, D refused (n reason, ...)".
    let asked = line("in-home:");
    let numbers: Vec<u64> = asked
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [grants, revoked, authorized, refused, ..] = numbers[..] else {
        panic!("unexpected in-home line in {first}");
    };
    assert!(revoked > 0 && grants > 20, "{first}");
    assert_eq!(
        authorized + refused,
        grants,
        "every grant asked once: {first}"
    );
    // Every revoked grant refused its unlock, before any other reason.
    assert_eq!(count(&asked, "revoked"), revoked, "{first}");
    // The day's trouble shows as refusals by reason...
    for reason in ["camera_offline", "outside_geofence", "household_condition"] {
        assert!(count(&asked, reason) > 0, "no {reason} in {first}");
    }
    // ...every refusal became the grant's fallback...
    let fallbacks = line("in-home refusals");
    let fell_back: u64 = ["doorstep", "locker", "neighbour", "return"]
        .iter()
        .map(|f| count(&fallbacks, f))
        .sum();
    assert_eq!(fell_back, refused, "{first}");
    // ...every authorized entry was redeemed, relocked and receipted...
    let entries = line("in-home entries");
    assert_eq!(
        count(&entries, "redeemed by the lock"),
        authorized,
        "{first}"
    );
    assert_eq!(count(&entries, "receipts"), authorized, "{first}");
    assert!(
        count(&entries, "replayed unlock requests refused") > 0,
        "{first}"
    );
    // ...and each door left open was refused its closing and alerted.
    let closings = count(&entries, "closings refused until the relock");
    let alerts = line("alerts raised");
    assert!(closings > 0, "{first}");
    assert_eq!(count(&alerts, "door_left_open"), closings, "{first}");
    assert!(count(&alerts, "camera_offline_while_open") > 0, "{first}");
    assert!(first.contains("total"), "{first}");
    assert_eq!(
        demo_report(12),
        first,
        "same seed, same report, whatever the timing"
    );
    assert_ne!(demo_report(11), first, "another seed, another day");
}

#[tokio::test]
async fn a_running_server_describes_itself_by_reflection() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().expect("dir");
    let server = Served::start(&dir.path().join("data"));
    // Reflection, like health checks, needs no credentials.
    let channel = server.plain().await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.message().await.expect("reply").expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "threshold.v1.ManifestService",
        "threshold.v1.HandheldService",
        "threshold.v1.AnalyticsService",
        "threshold.v1.OutcomeService",
        "threshold.v1.AccessService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_day_loses_nothing_it_acknowledged() {
    use threshold_api::v1::handheld_event::Report;
    use threshold_api::v1::handheld_service_client::HandheldServiceClient;
    use threshold_api::v1::{AttemptFailedReport, HandheldEvent, attempt_ack};

    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let server = Served::start(&data);
    let sample = samples().join("2026-11-23-no.csv");
    let out = load_manifest(&sample, &server.url, &server.data, &[]);
    assert!(out.status.success());
    let parcels: Vec<String> = std::fs::read_to_string(&sample)
        .expect("sample")
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().expect("id").to_owned())
        .collect();
    // A long day of failed attempts: every event is valid, none closes a parcel.
    let events: Vec<HandheldEvent> = (0..2000)
        .map(|i| HandheldEvent {
            event_id: threshold_domain::EventId::new().to_string(),
            device_id: "hh-1".into(),
            sequence: i + 1,
            parcel_id: parcels[i as usize % parcels.len()].clone(),
            driver_id: "drv-1".into(),
            route_id: String::new(),
            occurred_at: Some(threshold_domain::country::timestamp(chrono::Utc::now())),
            report: Some(Report::Failed(AttemptFailedReport {
                reason: threshold_domain::pb::FailureReason::NotHome as i32,
                note: String::new(),
            })),
        })
        .collect();

    // Stream them; SIGKILL the server part-way, with events still in flight.
    let channel = server.channel(threshold_auth::Role::Handheld).await;
    let mut acks = HandheldServiceClient::new(channel)
        .stream_attempts(tokio_stream::iter(events.clone()))
        .await
        .expect("stream")
        .into_inner();
    let mut acked = std::collections::HashMap::new();
    let mut server = Some(server);
    while let Ok(Some(a)) = acks.message().await {
        assert_eq!(a.result, attempt_ack::Result::Stored as i32, "{}", a.error);
        acked.insert(a.event_id.clone(), a.position);
        if acked.len() == 200
            && let Some(mut s) = server.take()
        {
            s.child.kill().expect("SIGKILL");
        }
    }
    assert!(
        acked.len() >= 200 && acked.len() < events.len(),
        "killed mid-stream: {}",
        acked.len()
    );

    // Back up on the same data: the handheld resends everything it has.
    let server = Served::start(&data);
    let channel = server.channel(threshold_auth::Role::Handheld).await;
    let mut acks = HandheldServiceClient::new(channel)
        .stream_attempts(tokio_stream::iter(events.clone()))
        .await
        .expect("stream")
        .into_inner();
    let mut second = Vec::new();
    while let Some(a) = acks.message().await.expect("ack") {
        second.push(a);
    }
    assert_eq!(second.len(), events.len());
    for a in &second {
        if let Some(position) = acked.get(&a.event_id) {
            assert_eq!(
                a.result,
                attempt_ack::Result::Duplicate as i32,
                "acknowledged before the kill, so stored"
            );
            assert_eq!(a.position, *position, "where it was acknowledged");
        } else {
            assert_ne!(
                a.result,
                attempt_ack::Result::Rejected as i32,
                "{}",
                a.error
            );
        }
    }
    assert!(server.stop().success());
    // Manifested parcels, plus a started and a failed event per handheld event, each once.
    let out = threshold(&["log", "stats", "--data", data.to_str().expect("path")]);
    let stats = String::from_utf8_lossy(&out.stdout);
    assert!(
        stats.contains(&format!("{} events", 60 + 2 * events.len())),
        "{stats}"
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

#[test]
fn a_server_logs_json_lines_and_serves_prometheus_metrics_on_its_admin_port() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut admin = String::new();
    let mut grpc = String::new();
    while admin.is_empty() || grpc.is_empty() {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).expect("line") > 0,
            "serve ended early"
        );
        if let Some(a) = line.strip_prefix("metrics on http://") {
            admin = a.trim().trim_end_matches("/metrics").to_owned();
        }
        if line.starts_with("threshold serving on ") {
            grpc = line.split_whitespace().nth(3).expect("address").to_owned();
        }
    }
    assert!(!admin.is_empty() && !grpc.is_empty());
    // The log: JSON lines on stderr.
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("log line");
    let log: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(log["fields"]["message"], "serving", "{line}");
    assert_eq!(log["level"], "INFO");

    // Load a manifest; the metrics count its events.
    let file = samples().join("2026-11-23-dk.csv");
    let loaded = load_manifest(
        &file,
        &format!("http://{grpc}"),
        &dir.path().join("data"),
        &[],
    );
    assert!(loaded.status.success());
    let mut body = String::new();
    let mut conn = std::net::TcpStream::connect(&admin).expect("admin port");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    conn.read_to_string(&mut body).expect("response");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains("threshold_events_appended_total{category=\"parcel\",country=\"DK\"} 60"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE threshold_log_append_duration histogram"),
        "{body}"
    );
    // The RPC itself, per OpenTelemetry's conventions.
    let rpc = body
        .lines()
        .find(|l| l.starts_with("rpc_server_duration_count{") && l.contains("LoadManifest"))
        .unwrap_or_else(|| panic!("no rpc.server.duration for LoadManifest in {body}"));
    assert!(
        rpc.contains("rpc_service=\"threshold.v1.ManifestService\"")
            && rpc.contains("rpc_system=\"grpc\"")
            && rpc.contains("rpc_grpc_status_code=\"0\""),
        "{rpc}"
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(child.wait().expect("wait").success());
}

/// 64 handheld streams on one connection each send an event every
/// millisecond, far more than a (debug) server stores: the server must slow
/// them down with flow control, never drop the connection. (Each paced event
/// is its own small DATA frame; h2 closes a connection that buffers more
/// small frames than its windows' budget allows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_connection_is_slowed_down_not_dropped() {
    use threshold_api::v1::handheld_event::Report;
    use threshold_api::v1::handheld_service_client::HandheldServiceClient;
    use threshold_api::v1::manifest_service_client::ManifestServiceClient;
    use threshold_api::v1::{AttemptFailedReport, HandheldEvent, attempt_ack};

    const STREAMS: usize = 64;
    const FLOOD: std::time::Duration = std::time::Duration::from_millis(2500);
    let dir = tempfile::tempdir().expect("dir");
    let server = Served::start(&dir.path().join("data"));
    // One connection, as the planner and as the handhelds.
    let plain = server.plain().await;
    let tokens = threshold_auth::LocalTokens::load(&server.data).expect("tokens");
    let planner = tokens
        .channel(plain.clone(), threshold_auth::Role::Planner)
        .expect("token");
    let channel = tokens
        .channel(plain, threshold_auth::Role::Handheld)
        .expect("token");
    let mut csv = String::from(
        "parcel_id,partner_id,country,depot_id,delivery_date,address,postal_code,city,latitude,longitude,service,weight_kg,window_start,window_end\n",
    );
    for p in 0..STREAMS {
        csv.push_str(&format!(
            "SE-FLOOD-{p},nordshop,SE,STO-1,2026-11-23,Gatan {p},111 51,Stockholm,59.33,18.06,doorstep,1,,\n"
        ));
    }
    threshold_manifest_service::client::load(
        &mut ManifestServiceClient::new(planner),
        "flood.csv",
        std::io::Cursor::new(csv.into_bytes()),
        |r| panic!("unexpected rejection {r:?}"),
    )
    .await
    .expect("load");

    let until = tokio::time::Instant::now() + FLOOD;
    let mut tasks = Vec::new();
    for s in 0..STREAMS {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let sender = tokio::spawn(async move {
                let mut sequence = 0;
                while tokio::time::Instant::now() < until {
                    sequence += 1;
                    let event = HandheldEvent {
                        event_id: threshold_domain::EventId::new().to_string(),
                        device_id: format!("hh-flood-{s}"),
                        sequence,
                        parcel_id: format!("SE-FLOOD-{s}"),
                        driver_id: "drv-flood".into(),
                        route_id: String::new(),
                        occurred_at: Some(threshold_domain::country::timestamp(chrono::Utc::now())),
                        report: Some(Report::Failed(AttemptFailedReport {
                            reason: threshold_domain::pb::FailureReason::NotHome as i32,
                            note: String::new(),
                        })),
                    };
                    if tx.send(event).is_err() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                sequence
            });
            let mut acks = HandheldServiceClient::new(channel)
                .stream_attempts(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
                .await?
                .into_inner();
            let mut stored = 0u64;
            // Acknowledgements while the flood lasts, and a little after.
            let stop = until + std::time::Duration::from_millis(300);
            while let Ok(next) = tokio::time::timeout_at(stop, acks.message()).await {
                match next? {
                    Some(a) => {
                        assert_eq!(a.result, attempt_ack::Result::Stored as i32, "{}", a.error);
                        stored += 1;
                    }
                    None => break,
                }
            }
            let sent = sender.await.expect("sender");
            Ok::<(u64, u64), tonic::Status>((sent, stored))
        }));
    }
    let (mut sent, mut stored) = (0, 0);
    for t in tasks {
        let (s, a) = t
            .await
            .expect("task")
            .expect("the stream survives the flood");
        sent += s;
        stored += a;
    }
    // The flood was real: far more offered than stored in the time.
    assert!(
        stored > 0 && sent > 2 * stored,
        "sent {sent}, stored {stored}"
    );
}

#[tokio::test]
async fn audit_verify_recomputes_a_homes_chain_from_the_store() {
    use threshold_access_service::device::{Signed, key_from_seed, public_key};
    use threshold_api::v1::access_service_client::AccessServiceClient;
    use threshold_api::v1::{DeviceEventRequest, HomeEvent, home_event};
    use threshold_domain::pb;

    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let server = Served::start(&data);
    let mut access =
        AccessServiceClient::new(server.channel(threshold_auth::Role::LockVendor).await);
    let facts = [
        home_event::Event::LockRegistered(pb::LockRegistered {
            home_id: "home-7".into(),
            lock_id: "lock-7".into(),
            vendor: "acme-locks".into(),
            public_key: public_key(&key_from_seed([7; 32])),
            country: pb::Country::No as i32,
        }),
        home_event::Event::CameraOnline(pb::CameraOnline {
            camera_id: "cam-7".into(),
            recording: true,
        }),
        home_event::Event::CameraOffline(pb::CameraOffline {
            camera_id: "cam-7".into(),
            ..Default::default()
        }),
    ];
    for fact in facts {
        let mut event = DeviceEventRequest {
            event_id: threshold_domain::EventId::new().to_string(),
            home_id: "home-7".into(),
            occurred_at: Some(threshold_domain::country::timestamp(chrono::Utc::now())),
            event: Some(HomeEvent {
                event: Some(fact),
                prev_hash: Vec::new(),
            }),
            signature: Vec::new(),
        };
        event.sign(&key_from_seed([7; 32]));
        access.record_device_event(event).await.expect("recorded");
    }
    // A graceful stop waits for open connections: close ours, and keep this
    // runtime free to do it while the server stops.
    drop(access);
    let stopped = tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop");
    assert!(stopped.success());

    let data = data.to_str().expect("path");
    let out = threshold(&["audit", "verify", "--home", "home-7", "--data", data]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 events, chain intact, head "), "{text}");
    let head = text.trim().rsplit(' ').next().expect("head");
    assert_eq!(head.len(), 64, "{text}");
    // A resident's receipt holding that head checks out; a made-up one does not.
    let receipt = format!("{head}@3");
    let ok = threshold(&[
        "audit", "verify", "--home", "home-7", "--data", data, "--head", &receipt,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("holds"));
    let forged = format!("{}@3", "0".repeat(64));
    let bad = threshold(&[
        "audit", "verify", "--home", "home-7", "--data", data, "--head", &forged,
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("the receipt does not hold"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let none = threshold(&["audit", "verify", "--home", "home-8", "--data", data]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no events of home home-8"));
}

#[test]
fn credentials_made_on_the_cli_work_at_once_and_a_wrong_one_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let server = Served::start(&data);
    let made = threshold(&[
        "credentials",
        "add",
        "--role",
        "analyst",
        "--tenant",
        "*",
        "--name",
        "ops",
        "--data",
        server.data(),
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    assert_eq!(token.len(), 64);
    let stored = std::fs::read_to_string(data.join("credentials.json")).expect("file");
    assert!(!stored.contains(&token), "only its hash is stored");
    // The running server takes it; no local tokens needed.
    let elsewhere = dir.path().join("elsewhere");
    let report = |token: &str| {
        threshold(&[
            "report",
            "attempts",
            "--server",
            &server.url,
            "--token",
            token,
            "--data",
            elsewhere.to_str().expect("path"),
        ])
    };
    let out = report(&token);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = report("0000");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown token"));
    // Neither a token nor local ones: said before any call.
    let out = threshold(&[
        "report",
        "attempts",
        "--server",
        &server.url,
        "--data",
        elsewhere.to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no credentials"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The attempts tables of a `run --demo` output, without its in-home lines.
fn report_tables(text: &str) -> String {
    text.split_once("\n\n")
        .map(|(_, r)| r.to_owned())
        .unwrap_or_else(|| panic!("no report in {text}"))
        .lines()
        .filter(|l| !l.starts_with("threshold stopped"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_forgotten_household_is_unreadable_while_the_log_statistics_and_audit_chains_stay_whole() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let data_str = data.to_str().expect("path");
    let demo = || {
        let out = threshold(&[
            "run",
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "12",
            "--data",
            data_str,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = demo();
    // No address is in the log in the clear.
    let log_bytes = |name: &str| std::fs::read(data.join(name)).unwrap_or_default();
    for file in ["events.db", "events.db-wal"] {
        let bytes = log_bytes(file);
        assert!(
            !bytes.windows(b"Sveav".len()).any(|w| w == b"Sveav"),
            "a street name is in {file}"
        );
    }
    let verify_home =
        |home: &str| threshold(&["audit", "verify", "--home", home, "--data", data_str]);
    // An in-home parcel's home from the demo, to check its chain after.
    let home = std::fs::read_to_string(samples().join("2026-11-23-se.csv"))
        .expect("sample")
        .lines()
        .find(|l| l.contains(",in_home,"))
        .and_then(|l| l.split(',').next())
        .map(|p| format!("h-{p}"))
        .expect("an in-home parcel");
    let chain = verify_home(&home);
    assert!(
        chain.status.success(),
        "{}",
        String::from_utf8_lossy(&chain.stderr)
    );

    // The resident of Sveavägen 25 asks to be forgotten.
    let forget = |extra: &[&str]| {
        let mut args = vec![
            "privacy",
            "forget",
            "--street",
            "Sveavägen 25",
            "--postal-code",
            "165 71",
            "--city",
            "Stockholm",
            "--country",
            "SE",
            "--data",
            data_str,
        ];
        args.extend_from_slice(extra);
        threshold(&args)
    };
    let out = forget(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("key(s) destroyed"));
    // Gone: the address no longer even leads to a household.
    let again = forget(&[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("no household"));

    // And the resident of an in-home parcel: their home's position in the
    // grant is sealed under their own key.
    let resident = home.replacen("h-", "resident-", 1);
    let out = threshold(&[
        "privacy",
        "forget",
        "--resident",
        &resident,
        "--data",
        data_str,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("key(s) destroyed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The log, the statistics and the audit chains are as they were.
    let after = demo();
    assert!(after.contains("already in the log"), "{after}");
    assert_eq!(report_tables(&after), report_tables(&before));
    let chain_after = verify_home(&home);
    assert!(chain_after.status.success());
    assert_eq!(chain_after.stdout, chain.stdout, "the same head");

    // Planning the day again, the planner no longer knows where it was.
    let server = Served::start(&data);
    let out = threshold(&[
        "routing",
        "plan",
        "--date",
        "2026-11-23",
        "--depot",
        "STO-1",
        "--seconds",
        "0.3",
        "--json",
        "--server",
        &server.url,
        "--data",
        data_str,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let unassigned = v["depots"][0]["unassigned"].as_array().expect("unassigned");
    assert_eq!(unassigned.len(), 1, "{v}");
    assert_eq!(unassigned[0]["parcel_id"], "SE-STO-1-00001");
    assert!(
        unassigned[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("erased"),
        "{v}"
    );
}

/// Processes of one deployment on Kafka, on this machine.
struct Deployment {
    /// Every process's data directory is in it.
    root: tempfile::TempDir,
    /// Credentials and the vault, shared by every process.
    shared: std::path::PathBuf,
    broker: String,
    prefix: String,
}

impl Deployment {
    /// A deployment on `broker` with topics named `prefix.…`, with one set
    /// of credentials and one vault, as a carrier would provision them;
    /// each process has its own data directory.
    fn new(broker: &str, prefix: &str) -> Self {
        let root = tempfile::tempdir().expect("dir");
        let shared = root.path().join("shared");
        threshold_auth::LocalTokens::ensure(&shared).expect("credentials");
        Self {
            root,
            shared,
            broker: broker.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    /// `threshold serve --services SERVICES --name NAME` on Kafka, with its
    /// own data directory (the same for the same name).
    fn serve(&self, services: &str, name: &str, listen: &str) -> Served {
        let data = self.root.path().join(name);
        std::fs::create_dir_all(&data).expect("data dir");
        for file in [
            threshold_auth::CREDENTIALS_FILE,
            threshold_auth::LOCAL_TOKENS_FILE,
        ] {
            std::fs::copy(self.shared.join(file), data.join(file)).expect("copy credentials");
        }
        let mut serve = Command::new(BIN);
        serve
            .args(["serve", "--simulation", "--listen", listen])
            .args(["--log", &format!("kafka://{}", self.broker)])
            .args(["--services", services, "--name", name])
            .args(["--topic-prefix", &self.prefix])
            .arg("--vault")
            .arg(&self.shared)
            .arg("--data")
            .arg(&data);
        Served::spawn(serve, &data)
    }

    /// `threshold simulate` of the sample day, seed 12, with `--server`
    /// and `--service-url`s as given, its stdout piped.
    fn simulate(&self, server: &str, service_urls: &[(&str, &str)]) -> Child {
        let mut simulate = Command::new(BIN);
        simulate
            .args(["simulate", "--date", "2026-11-23", "--seed", "12"])
            .args(["--plan-seconds", "1", "--server", server])
            .arg("--data")
            .arg(&self.shared);
        for country in ["dk", "fi", "no", "se"] {
            simulate
                .arg("--manifest")
                .arg(samples().join(format!("2026-11-23-{country}.csv")));
        }
        for (service, url) in service_urls {
            simulate.args(["--service-url", &format!("{service}={url}")]);
        }
        simulate
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("simulate")
    }
}

/// Reads `child`'s stdout on a thread: each line to `lines` as it comes.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line starting with `prefix`; returns every line up to it.
fn until_line(lines: &std::sync::mpsc::Receiver<String>, prefix: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("no line starting {prefix:?} after {seen:?}"));
        let done = line.starts_with(prefix);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

/// The test broker's address (`make test` starts one on loopback).
fn test_broker() -> String {
    std::env::var("THRESHOLD_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "THRESHOLD_TEST_KAFKA is not set: this test needs a Kafka broker; \
             `make test` starts one on loopback"
        )
    })
}

#[test]
fn the_day_on_kafka_with_a_process_per_service_reports_as_the_embedded_day() {
    let deployment = Deployment::new(&test_broker(), &format!("e2e{}", std::process::id()));
    let start = |services: &str| deployment.serve(services, services, "127.0.0.1:0");
    let processes: Vec<(&str, Served)> = [
        "manifest",
        "planning",
        "attempts",
        "access",
        "analytics",
        "outcomes",
    ]
    .into_iter()
    .map(|s| (s, start(s)))
    .collect();
    let url = |name: &str| {
        processes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.url.clone())
            .expect("process")
    };
    let others: Vec<(&str, String)> = ["manifest", "planning", "access", "analytics"]
        .into_iter()
        .map(|s| (s, url(s)))
        .collect();
    let others: Vec<(&str, &str)> = others.iter().map(|(s, u)| (*s, u.as_str())).collect();
    let out = deployment
        .simulate(&url("attempts"), &others)
        .wait_with_output()
        .expect("simulate");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let on_kafka = day_report(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        on_kafka,
        demo_report(12),
        "six processes on Kafka report the day as one process on the embedded log"
    );
    for (name, p) in processes {
        assert!(p.stop().success(), "{name} stopped cleanly");
    }
}

/// A free port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A broker child, killed when dropped.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tansu broker of its own on `port`, keeping its topics in `dir`
/// (sqlite storage), so it can be restarted with everything it held.
fn own_broker(dir: &Path, port: u16) -> Broker {
    let tansu = std::env::var("THRESHOLD_TANSU").unwrap_or_else(|_| {
        panic!("THRESHOLD_TANSU is not set: `make test` sets it to the test broker's binary")
    });
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .expect("broker log");
    let child = Command::new(tansu)
        .current_dir(dir)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start tansu");
    let broker = Broker(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return broker;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("tansu did not listen on {port}");
}

/// The totals line of a report's first table: (attempts, delivered).
fn totals(report: &str) -> (u64, u64) {
    let line = report
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("no total in {report}"));
    let n: Vec<&str> = line.split_whitespace().collect();
    (
        n[2].parse().expect("attempts"),
        n[5].parse().expect("delivered"),
    )
}

#[test]
fn a_broker_restarted_mid_day_loses_no_acknowledged_event() {
    let port = free_port();
    let deployment = Deployment::new(&format!("127.0.0.1:{port}"), "threshold");
    let broker_dir = deployment.root.path().join("broker");
    std::fs::create_dir_all(&broker_dir).expect("dir");
    let broker = own_broker(&broker_dir, port);
    let server = deployment.serve("all", "all", "127.0.0.1:0");
    let mut day = deployment.simulate(&server.url, &[]);
    let lines = lines_of(&mut day);
    // Routes are planned and the drivers are out: the broker goes down
    // without warning and comes back a second later with what it stored.
    let mut seen = until_line(&lines, "planned ");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(broker); // SIGKILL
    std::thread::sleep(std::time::Duration::from_secs(1));
    let broker = own_broker(&broker_dir, port);
    seen.extend(lines.iter());
    let status = day.wait().expect("simulate");
    let text = seen.join("\n");
    assert!(
        status.success(),
        "the day survives the restart: {text}\n{}",
        std::fs::read_to_string(broker_dir.join("tansu.log")).unwrap_or_default()
    );
    assert_eq!(
        day_report(&text),
        demo_report(12),
        "every acknowledged event is counted, once"
    );
    // A process starting now, with an empty replica, reads the whole day
    // back from the restarted broker.
    let fresh = deployment.serve("analytics", "late-reader", "127.0.0.1:0");
    let report = threshold(&[
        "report",
        "attempts",
        "--json",
        "--server",
        &fresh.url,
        "--data",
        fresh.data(),
    ]);
    assert!(report.status.success(), "{report:?}");
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).expect("JSON");
    let total = |field: &str| json["total"][field].as_u64().expect("a count");
    assert_eq!(
        (total("attempts"), total("delivered")),
        totals(&day_report(&text)),
        "{json}"
    );
    assert!(server.stop().success());
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_killed_or_stopped_mid_day_leave_nothing_missed_or_counted_twice() {
    let broker = test_broker();
    let prefix = format!("kill{}", std::process::id());
    let deployment = Deployment::new(&broker, &prefix);
    let core = deployment.serve("manifest,planning,attempts,access", "core", "127.0.0.1:0");
    let analytics_at = format!("127.0.0.1:{}", free_port());
    let analytics = deployment.serve("analytics", "analytics", &analytics_at);
    // Two publishers of partners' outcomes: one consumer group.
    let first = deployment.serve("outcomes", "outcomes-1", "127.0.0.1:0");
    let second = deployment.serve("outcomes", "outcomes-2", "127.0.0.1:0");
    let mut day = deployment.simulate(
        &core.url,
        &[("analytics", &format!("http://{analytics_at}"))],
    );
    let lines = lines_of(&mut day);
    let mut seen = until_line(&lines, "planned ");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The analytics process dies (SIGKILL: no last commit) and is started
    // again on its replica. A publisher stops (SIGINT: it leaves its group,
    // which gives its partitions to the other). A SIGKILLed publisher's
    // partitions move only when the broker notices the missed heartbeats,
    // which the test broker (tansu 0.6) does not do.
    drop(analytics);
    let analytics = deployment.serve("analytics", "analytics", &analytics_at);
    assert!(first.stop().success());
    seen.extend(lines.iter());
    let status = day.wait().expect("simulate");
    let text = seen.join("\n");
    assert!(status.success(), "{text}");
    // The analytics read model, rebuilt by the restarted process from its
    // replica and Kafka, reports the day as one embedded process does.
    let report = day_report(&text);
    assert_eq!(report, demo_report(12));

    // The outcome topic, as a partner's plain Kafka client reads it: once
    // the group has moved the stopped member's partitions, it holds them all.
    let (attempts, delivered) = totals(&report);
    let mut reads = 0;
    let (published, distinct) = loop {
        reads += 1;
        let published = threshold_log::kafka::read_published(
            &broker,
            &format!("{prefix}.partner{reads}"),
            &format!("{prefix}.outcome"),
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("read the outcome topic");
        let mut distinct = std::collections::HashMap::new();
        for (id, value) in &published {
            let outcome = <threshold_api::v1::ParcelOutcome as prost::Message>::decode(&value[..])
                .expect("a ParcelOutcome");
            assert!(outcome.driver_id.is_empty() && outcome.grant_id.is_empty());
            distinct.insert(id.clone(), outcome);
        }
        eprintln!(
            "read {reads}: {} records, {} distinct",
            published.len(),
            distinct.len()
        );
        if distinct.len() as u64 >= attempts || reads == 12 {
            break (published, distinct);
        }
    };
    use threshold_api::v1::parcel_outcome::Kind;
    let kinds = |k: Kind| distinct.values().filter(|o| o.kind() == k).count() as u64;
    assert_eq!(
        kinds(Kind::Delivered),
        delivered,
        "every delivery published ({} records, {} distinct)",
        published.len(),
        distinct.len()
    );
    assert_eq!(
        kinds(Kind::Delivered) + kinds(Kind::AttemptFailed),
        attempts,
        "every attempt published once after deduplication on ce_id"
    );
    drop(analytics);
    drop(second);
    drop(core);
}
