//! `threshold privacy forget`: a forgotten household is unreadable, while
//! the log, its statistics and audit chains stay whole.

mod common;

use common::*;

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
            "--days",
            "1",
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
        let mut args = vec!["privacy", "forget", "--data", data_str];
        args.extend_from_slice(&SVEAVAGEN_25);
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
