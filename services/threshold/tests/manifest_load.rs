//! Manifests loaded through the CLI against `threshold serve`, the
//! analysts' report of them, a graceful stop, the log read back and a
//! restart that recognises them.

mod common;

use common::*;

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
        // Off a terminal, progress is plain lines on stderr, up to the end.
        let progress = String::from_utf8_lossy(&out.stderr);
        let size = std::fs::metadata(&file).expect("size").len();
        assert!(
            progress.lines().any(|l| l.starts_with("manifest load: ")
                && l.contains(&format!(" of {:.1} KiB (100%)", size as f64 / 1024.0))),
            "{progress}"
        );
        assert!(
            progress.contains("manifest load: 60 rows read"),
            "{progress}"
        );
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
