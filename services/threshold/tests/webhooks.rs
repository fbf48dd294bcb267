//! Webhooks through the command: `threshold run --webhook` delivers
//! partner nordshop's simulated day to a receiver on 127.0.0.1 that
//! verifies every request with the `standardwebhooks` crate, and
//! `threshold partner webhook ...` manages endpoints on `threshold serve`,
//! each partner only its own.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::*;

#[test]
fn run_delivers_a_partners_simulated_day_signed_to_its_webhook() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (addr, got) = receiver(&rt);
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(BIN)
        .args([
            "run",
            "--demo",
            "--days",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--webhooks-allow-private",
            "--webhook",
        ])
        .arg(format!("http://{addr}/hooks"))
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .expect("run --demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = stdout
        .lines()
        .find(|l| l.starts_with("webhook:"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("whsec_")))
        .map(|s| s.trim_end_matches(')').to_owned())
        .unwrap_or_else(|| panic!("no webhook line in {stdout}"));
    let verifier = standardwebhooks::Webhook::new(&secret).expect("secret");
    let got = got.lock().expect("got").clone();
    assert!(
        got.len() > 10,
        "the day's outcomes reached the receiver: {}",
        got.len()
    );
    let mut ids = HashSet::new();
    let mut proven = 0;
    // parcel → when it went out, when it was handed over.
    let (mut out, mut handed_over) = (BTreeMap::new(), BTreeMap::new());
    for (headers, body) in &got {
        verifier
            .verify(body, headers)
            .expect("a Standard Webhooks signature");
        let v: serde_json::Value = serde_json::from_slice(body).expect("json");
        let text = v.to_string();
        assert!(
            !text.contains("drv-") && !text.contains("grant"),
            "redacted: {text}"
        );
        assert!(
            v["data"]["status"].is_string() && v["data"]["bizStep"].is_string(),
            "{text}"
        );
        ids.insert(headers["webhook-id"].to_str().expect("id").to_owned());
        let parcel = v["data"]["parcel_id"].as_str().expect("parcel").to_owned();
        let at = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().expect("timestamp"))
            .expect("an RFC 3339 timestamp");
        match v["type"].as_str() {
            Some("parcel.out_for_delivery") => {
                out.insert(parcel, at);
            }
            Some("parcel.delivered") => {
                handed_over.insert(parcel, at);
            }
            _ => {}
        }
        // The simulated in-home entries end with a relock and a receipt:
        // each such delivery carries the receipt's chain head.
        if v["data"]["status"] == "delivered_in_home" {
            let head = v["data"]["proof_of_delivery"]["receipt_chain_head"]
                .as_str()
                .unwrap_or_else(|| panic!("no chain head: {text}"));
            assert!(
                head.len() == 64 && head.bytes().all(|b| b.is_ascii_hexdigit()),
                "{text}"
            );
            proven += 1;
        }
    }
    assert!(proven > 0, "the day has in-home deliveries with proof");
    // Each parcel handed over was scanned into its van first, and the
    // partner was told it was out for delivery.
    assert!(!handed_over.is_empty());
    for (parcel, delivered) in &handed_over {
        let went_out = out
            .get(parcel)
            .unwrap_or_else(|| panic!("{parcel} delivered, never out for delivery"));
        assert!(
            went_out < delivered,
            "{parcel}: out {went_out}, delivered {delivered}"
        );
    }
    assert_eq!(
        ids.len(),
        got.len(),
        "each outcome once on a healthy endpoint"
    );
}

#[test]
fn the_cli_manages_a_partners_endpoints_and_no_other_partners() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let mut serve = Command::new(BIN);
    serve
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--webhooks-allow-private",
            "--data",
        ])
        .arg(&data);
    let served = Served::spawn(serve, &data);
    let token = |tenant: &str| {
        let out = threshold(&[
            "credentials",
            "add",
            "--role",
            "partner",
            "--tenant",
            tenant,
            "--data",
            served.data(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let (mine, theirs) = (token("nordshop"), token("fjallbutik"));
    let hook = |token: &str, args: &[&str]| {
        let mut all = vec!["partner", "webhook"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--token", token, "--server", &served.url]);
        threshold(&all)
    };
    let added = hook(
        &mine,
        &[
            "add",
            "--url",
            "https://shop.example/hooks",
            "--kinds",
            "parcel.delivered,parcel.returned",
        ],
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let ep: serde_json::Value = serde_json::from_slice(&added.stdout).expect("json");
    let id = ep["id"].as_str().expect("id").to_owned();
    assert!(ep["secret"].as_str().expect("secret").starts_with("whsec_"));
    assert_eq!(
        ep["kinds"],
        serde_json::json!(["parcel.delivered", "parcel.returned"])
    );
    let listed = hook(&mine, &["list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&id));
    for args in [
        vec!["pause", "--id", &id],
        vec!["resume", "--id", &id],
        vec!["rotate", "--id", &id, "--overlap-hours", "2"],
        vec!["replay", "--id", &id, "--after-cursor", "0"],
        vec!["replay", "--id", &id, "--since", "2026-11-23T00:00:00Z"],
        vec!["attempts", "--id", &id],
    ] {
        let out = hook(&mine, &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Another partner, with the same id: not found, and told so.
        let out = hook(&theirs, &args);
        assert!(!out.status.success(), "{args:?} by another partner");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not found"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        String::from_utf8_lossy(&hook(&theirs, &["list"]).stdout)
            .trim()
            .is_empty()
    );
    let bad = hook(&mine, &["add", "--url", "http://shop.example/hooks"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("https"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!hook(&theirs, &["delete", "--id", &id]).status.success());
    assert!(hook(&mine, &["delete", "--id", &id]).status.success());
    assert!(
        String::from_utf8_lossy(&hook(&mine, &["list"]).stdout)
            .trim()
            .is_empty()
    );
    served.stop();
}

#[test]
fn an_endpoint_answering_gone_is_disabled_and_its_alert_listed_by_its_partner_and_the_carrier() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (addr, got) = receiver_answering(&rt, 410);
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
            "--webhooks-allow-private",
            "--webhook",
        ])
        .arg(format!("http://{addr}/hooks"))
        .arg("--data")
        .arg(&data)
        .output()
        .expect("run --demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        got.lock().expect("got").len(),
        1,
        "410 disables the endpoint at its first answer"
    );

    // The alert outlives the run: the server on the same data lists it.
    let mut serve = Command::new(BIN);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data);
    let served = Served::spawn(serve, &data);
    let token = |tenant: &str| {
        let out = threshold(&[
            "credentials",
            "add",
            "--role",
            "partner",
            "--tenant",
            tenant,
            "--data",
            served.data(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let alerts = |args: &[&str]| {
        let mut all = vec!["partner", "webhook", "alerts"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &served.url, "--data", served.data()]);
        let out = threshold(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
            .collect::<Vec<_>>()
    };
    let (nordshop, fjallbutik) = (token("nordshop"), token("fjallbutik"));
    let mine = alerts(&["--token", &nordshop]);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["partner"], "nordshop");
    assert!(
        mine[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("410") && m.contains(&addr.to_string())),
        "{mine:?}"
    );
    let seq = mine[0]["seq"].as_u64().expect("seq").to_string();
    assert!(alerts(&["--token", &nordshop, "--after", &seq]).is_empty());
    // The carrier, with the local analyst token: every partner's, or one's.
    assert_eq!(alerts(&["--every-partner"]), mine);
    assert_eq!(alerts(&["--partner", "nordshop"]), mine);
    // Another partner: none of its own, and not nordshop's.
    assert!(alerts(&["--token", &fjallbutik]).is_empty());
    let out = threshold(&[
        "partner",
        "webhook",
        "alerts",
        "--partner",
        "nordshop",
        "--token",
        &fjallbutik,
        "--server",
        &served.url,
    ]);
    assert!(!out.status.success(), "another partner's alerts");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not \"nordshop\"'s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    served.stop();
}
