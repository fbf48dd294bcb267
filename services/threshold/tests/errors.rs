//! A failing command says why on stderr and exits non-zero.

mod common;

use common::*;

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

/// An operator's `--kafka-records` (or `THRESHOLD_KAFKA_RECORDS`) that is
/// not a layout is refused before anything starts, with the two it takes.
#[test]
fn an_unknown_record_layout_is_refused_naming_the_layouts() {
    let data = tempfile::tempdir().expect("dir");
    let data = data.path().to_str().expect("UTF-8 path");
    let out = threshold(&[
        "serve",
        "--data",
        data,
        "--log",
        "kafka://127.0.0.1:1",
        "--kafka-records",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--kafka-records"), "{stderr}");
    assert!(
        ["append", "logrecord", "cloudevents"]
            .iter()
            .all(|name| stderr.contains(name)),
        "{stderr}"
    );
    let out = Command::new(BIN)
        .args(["serve", "--data", data, "--log", "kafka://127.0.0.1:1"])
        .env("THRESHOLD_KAFKA_RECORDS", "CloudEvents ")
        .output()
        .expect("run threshold");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--kafka-records"), "{stderr}");
}

/// A `--kafka-fetch-wait` (or `THRESHOLD_KAFKA_FETCH_WAIT`) no client could
/// use is refused before anything starts, with the range it takes.
#[test]
fn a_fetch_wait_out_of_range_is_refused_naming_the_range() {
    let data = tempfile::tempdir().expect("dir");
    let data = data.path().to_str().expect("UTF-8 path");
    let serve = ["serve", "--data", data, "--log", "kafka://127.0.0.1:1"];
    for bad in ["0", "10001", "half a second"] {
        let out = threshold(&[&serve[..], &["--kafka-fetch-wait", bad]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--kafka-fetch-wait"), "{bad}: {stderr}");
        assert!(stderr.contains(bad), "{bad}: {stderr}");
    }
    let out = threshold(&[&serve[..], &["--kafka-fetch-wait", "0"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1..=10000"), "{stderr}");
    let out = Command::new(BIN)
        .args(serve)
        .env("THRESHOLD_KAFKA_FETCH_WAIT", "60000")
        .output()
        .expect("run threshold");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--kafka-fetch-wait"), "{stderr}");
}
