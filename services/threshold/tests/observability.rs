//! `threshold serve`'s JSON log lines on stderr and Prometheus metrics on
//! its admin port.

mod common;

use common::*;

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
    // Made-up paths, sent by someone without a token: counted, under one
    // label, never as series of their own.
    let made_up = [
        "/threshold.v1.ManifestService/NoSuchMethod",
        "/made.up.Service/Anything",
    ];
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut client = tonic::client::Grpc::new(channel);
        for path in made_up {
            client.ready().await.expect("ready");
            let refused = client
                .unary(
                    tonic::Request::new(()),
                    tonic::codegen::http::uri::PathAndQuery::from_static(path),
                    tonic_prost::ProstCodec::<(), ()>::default(),
                )
                .await
                .expect_err("a made-up path is refused");
            assert_ne!(refused.code(), tonic::Code::Ok, "{path}");
        }
    });
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
    for path in made_up {
        let method = path.rsplit('/').next().expect("method");
        assert!(
            !body.contains(method),
            "{path} made a series of its own: {body}"
        );
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("rpc_server_duration_count{")
                && l.contains("rpc_method=\"unknown\"")),
        "no series for unknown paths in {body}"
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(child.wait().expect("wait").success());
}
