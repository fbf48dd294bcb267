//! `threshold export`: the fact tables read back by an independent engine
//! (DuckDB's Python package, installed by `scripts/python-env.sh`) give the
//! attempts per parcel `threshold report attempts` gives, and hold nothing
//! personal.

mod common;

use common::*;

fn python() -> String {
    python_with("duckdb")
}

/// Runs a DuckDB query and returns its rows as JSON arrays.
fn duckdb(python: &str, sql: &str) -> Vec<serde_json::Value> {
    let out = Command::new(python)
        .args([
            "-c",
            "import duckdb, json, sys\n\
             for row in duckdb.sql(sys.argv[1]).fetchall():\n    \
                 print(json.dumps([str(v) if not isinstance(v, (int, float)) and v is not None else v for v in row]))",
            sql,
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "DuckDB: {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

fn threshold(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().expect("threshold");
    assert!(
        out.status.success(),
        "threshold {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn exported_attempts_read_by_duckdb_give_the_reports_attempts_per_parcel() {
    let python = python();
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args(["run", "--days", "1", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn run");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let url = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).expect("line") > 0,
            "run ended before serving"
        );
        if let Some(rest) = line.strip_prefix("serving on ") {
            break rest.split_whitespace().next().expect("url").to_owned();
        }
    };
    let data_s = data.to_str().expect("utf-8 path");
    let report: serde_json::Value = serde_json::from_str(&threshold(&[
        "report", "attempts", "--by", "country", "--json", "--server", &url, "--data", data_s,
    ]))
    .expect("report JSON");

    // Exported while the server still serves over the same log.
    let out_dir = dir.path().join("facts");
    let out_s = out_dir.to_str().expect("utf-8 path");
    for table in ["attempts", "parcels", "grants"] {
        for format in ["parquet", "csv"] {
            let said = threshold(&[
                "export", table, "--data", data_s, "--format", format, "--out", out_s,
            ]);
            assert!(said.contains(&format!("{table}.{format}")), "{said}");
        }
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();

    let attempts = out_dir.join("attempts.parquet");
    let attempts = attempts.to_str().expect("utf-8");
    let by_country = duckdb(
        &python,
        &format!(
            "SELECT country, count(*) / count(DISTINCT parcel_id) FROM '{attempts}' \
             GROUP BY country ORDER BY country"
        ),
    );
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(by_country.len(), rows.len(), "{by_country:?} vs {rows:?}");
    for (duck, row) in by_country.iter().zip(rows) {
        assert_eq!(duck[0], row["country"]);
        let (ours, theirs) = (
            duck[1].as_f64().expect("a ratio"),
            row["attempts_per_parcel"].as_f64().expect("a ratio"),
        );
        assert!(
            (ours - theirs).abs() < 1e-12,
            "{}: DuckDB {ours}, report {theirs}",
            row["country"]
        );
    }
    let total = &duckdb(
        &python,
        &format!(
            "SELECT count(*), count(*) / count(DISTINCT parcel_id), \
                    count(*) FILTER (outcome = 'failed' AND reason IS NULL), \
                    count(*) FILTER (outcome = 'delivered' AND method IS NULL) \
             FROM '{attempts}'"
        ),
    )[0];
    assert_eq!(total[0], report["total"]["attempts"]);
    assert!(
        (total[1].as_f64().expect("ratio")
            - report["total"]["attempts_per_parcel"]
                .as_f64()
                .expect("ratio"))
        .abs()
            < 1e-12
    );
    assert_eq!(
        (total[2].as_u64(), total[3].as_u64()),
        (Some(0), Some(0)),
        "every failure has its reason, every delivery its method"
    );

    // The other tables agree with it, and the CSVs hold the same rows.
    let dir_s = out_s;
    let check = &duckdb(
        &python,
        &format!(
            "SELECT (SELECT sum(attempts) FROM '{dir_s}/parcels.parquet'), \
                    (SELECT count(*) FROM '{dir_s}/parcels.parquet'), \
                    (SELECT count(*) FROM read_csv('{dir_s}/attempts.csv')), \
                    (SELECT count(*) FROM read_csv('{dir_s}/parcels.csv')), \
                    (SELECT count(*) FROM '{dir_s}/grants.parquet'), \
                    (SELECT count(*) FROM read_csv('{dir_s}/grants.csv')), \
                    (SELECT count(*) FROM '{dir_s}/grants.parquet' WHERE status = 'used')"
        ),
    )[0];
    assert_eq!(check[0], report["total"]["attempts"]);
    assert_eq!(check[1], report["total"]["parcels"]);
    assert_eq!(check[2], report["total"]["attempts"]);
    assert_eq!(check[3], report["total"]["parcels"]);
    assert!(check[4].as_u64().expect("grants") > 0, "{check:?}");
    assert_eq!(check[4], check[5]);
    assert!(
        check[6].as_u64().expect("used") > 0,
        "some grants were used"
    );

    // Nothing personal: no street address or coordinates of the manifests,
    // in any file. (Postal codes alone are four or five digits, found in any
    // timestamp.)
    let mut personal = Vec::new();
    for sample in std::fs::read_dir(samples()).expect("samples") {
        let text = std::fs::read_to_string(sample.expect("entry").path()).expect("sample");
        for line in text.lines().skip(1).take(40) {
            let f: Vec<&str> = line.split(',').collect();
            // address, latitude, longitude
            personal.extend([5, 8, 9].iter().map(|&i| f[i].to_owned()));
        }
    }
    for entry in std::fs::read_dir(&out_dir).expect("out") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        for p in &personal {
            assert!(
                !bytes.windows(p.len()).any(|w| w == p.as_bytes()),
                "{} holds {p:?}",
                path.display()
            );
        }
    }
}

#[test]
fn export_filters_by_the_days_reports_filter_by_and_names_bad_input() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args([
            "run",
            "--demo",
            "--days",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&data)
        .output()
        .expect("run --demo");
    assert!(out.status.success());
    let data_s = data.to_str().expect("utf-8 path");
    let out_dir = dir.path().join("facts");
    let out_s = out_dir.to_str().expect("utf-8 path");
    let rows = |from: &str, to: &str| -> usize {
        let said = threshold(&[
            "export", "parcels", "--data", data_s, "--format", "csv", "--from", from, "--to", to,
            "--out", out_s,
        ]);
        said.split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no row count in {said:?}"))
    };
    let day = rows("2026-11-23", "2026-11-23");
    assert!(day > 0);
    assert_eq!(rows("2026-11-01", "2026-11-30"), day);
    assert_eq!(rows("2026-11-24", "2026-11-30"), 0);
    let csv = std::fs::read_to_string(out_dir.join("parcels.csv")).expect("csv");
    assert_eq!(
        csv.lines().next(),
        Some(
            "parcel_id,partner,country,depot,day,service,attempts,method,delivered_on_attempt,returned"
        )
    );

    let refused = Command::new(BIN)
        .args([
            "export",
            "parcels",
            "--data",
            data_s,
            "--from",
            "2026-11-24",
            "--to",
            "2026-11-23",
            "--out",
            out_s,
        ])
        .output()
        .expect("export");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--from 2026-11-24 is after --to 2026-11-23"),
        "{err}"
    );
    let missing = Command::new(BIN)
        .args(["export", "parcels", "--data"])
        .arg(dir.path().join("nothing"))
        .args(["--out", out_s])
        .output()
        .expect("export");
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("no event log here"), "{err}");
}
