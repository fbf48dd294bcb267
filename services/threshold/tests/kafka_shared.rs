//! What processes on Kafka share without a shared disk. Credentials: in
//! the deployment's credentials topic; a token made by the CLI works in
//! every process; revoked, it is refused by every process within seconds
//! (the figure is printed; one of the processes holds idle fetches 500 ms,
//! as on a cluster), and a process started afterwards never takes it. The vault: in the deployment's vault topic; `privacy forget` and a
//! key-encryption key rotation (`privacy rewrap`) through the CLI.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Waits up to 10 s for `ok`, and says how long it took.
fn within_10s(what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn a_credential_added_or_revoked_once_counts_in_every_process_within_seconds() {
    let broker = test_broker();
    let prefix = format!("creds{}", std::process::id());
    let deployment = Deployment::new(&broker, &prefix);
    let processes = [
        deployment.serve("analytics", "a", "127.0.0.1:0"),
        // As on a Kafka cluster: idle fetches held half a second.
        deployment.serve_with(
            "manifest,analytics",
            "b",
            "127.0.0.1:0",
            &["--kafka-fetch-wait", "500", "--admin", "127.0.0.1:0"],
        ),
    ];
    // What its followers ask of the broker is on its /metrics, per
    // follower, once librdkafka has counted (every second).
    let fetches = |p: &Served, follower: &str| -> f64 {
        p.metrics()
            .lines()
            .filter(|l| l.starts_with("threshold_kafka_fetch_requests_total{"))
            .filter(|l| l.contains(&format!("follower=\"{follower}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for follower in ["replica", "credentials", "vault"] {
        within_10s(&format!("{follower}'s fetch requests on /metrics"), || {
            fetches(&processes[1], follower) > 0.0
        });
    }
    for p in &processes {
        for file in [
            threshold_auth::CREDENTIALS_FILE,
            threshold_auth::LOCAL_TOKENS_FILE,
        ] {
            assert!(
                !p.data.join(file).exists(),
                "{file} in {}",
                p.data.display()
            );
        }
    }
    let store = deployment.store_args();
    let store: Vec<&str> = store.iter().map(String::as_str).collect();
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&store);
        threshold(&all)
    };

    let out = add_analyst("ops", &store);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("Kafka topic {prefix}.credentials")),
        "{out:?}"
    );
    // A second credential of the same name is refused.
    let again = cli(&[
        "credentials",
        "add",
        "--role",
        "analyst",
        "--tenant",
        "*",
        "--name",
        "ops",
    ]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let report = |p: &Served| {
        threshold(&[
            "report", "attempts", "--json", "--server", &p.url, "--token", &token,
        ])
    };
    let refused = |p: &Served| {
        let out = report(p);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("unknown token")
    };
    for p in &processes {
        within_10s("the new credential taken", || report(p).status.success());
    }
    let listed = cli(&["credentials", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("ops\tanalyst\t*"),
        "{listed:?}"
    );

    let revoked_at = Instant::now();
    let out = cli(&["credentials", "revoke", "ops"]);
    assert!(out.status.success(), "{out:?}");
    let mut slowest = Duration::ZERO;
    for p in &processes {
        within_10s("the revoked credential refused", || refused(p));
        slowest = slowest.max(revoked_at.elapsed());
    }
    println!(
        "revocation: refused by every process {:.2} s after `credentials revoke` started",
        slowest.as_secs_f64()
    );
    // A process started after the revocation reads the topic whole, and
    // never takes the token.
    let late = deployment.serve("analytics", "late", "127.0.0.1:0");
    assert!(refused(&late));
    assert!(!String::from_utf8_lossy(&cli(&["credentials", "list"]).stdout).contains("ops\t"));
    let out = cli(&["credentials", "revoke", "ops"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn the_vault_on_kafka_forgets_a_household_and_rotates_its_key_encryption_key_from_the_cli() {
    let broker = test_broker();
    let prefix = format!("vaultcli{}", std::process::id());
    let deployment = Deployment::new(&broker, &prefix);
    let core = deployment.serve("manifest,planning", "core", "127.0.0.1:0");
    let out = load_manifest(
        &samples().join("2026-11-23-se.csv"),
        &core.url,
        Path::new(deployment.tokens()),
        &["--json"],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(!core.data.join(threshold_privacy::VAULT_FILE).exists());

    let store = deployment.store_args();
    let privacy = |args: &[&str], kek: &str| {
        Command::new(BIN)
            .arg("privacy")
            .args(args)
            .args(&store)
            .env("THRESHOLD_VAULT_KEK", kek)
            .output()
            .expect("threshold privacy")
    };
    let street = [&["forget"][..], &SVEAVAGEN_25].concat();
    let out = privacy(&street, &deployment.kek);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 key(s) destroyed"),
        "{out:?}"
    );
    let out = privacy(&street, &deployment.kek);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no household at Sveavägen 25"));
    // Without its key-encryption key the vault on Kafka is not opened.
    let out = Command::new(BIN)
        .args(["privacy", "forget", "--subject", "hh-x"])
        .args(&store)
        .env_remove("THRESHOLD_VAULT_KEK")
        .output()
        .expect("threshold privacy");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs its key-encryption key"));

    // Rotation: a new key, every live key rewrapped under it, and a process
    // given only the new key opens the vault and serves.
    let new = threshold(&["privacy", "new-kek"]);
    let new = String::from_utf8_lossy(&new.stdout).trim().to_owned();
    assert_eq!(new.len(), 64);
    let dir = tempfile::tempdir().expect("dir");
    let (new_file, old_file) = (dir.path().join("new.kek"), dir.path().join("old.kek"));
    std::fs::write(&new_file, &new).expect("write");
    std::fs::write(&old_file, &deployment.kek).expect("write");
    let out = privacy(
        &[
            "rewrap",
            "--vault-kek-file",
            new_file.to_str().expect("path"),
            "--vault-kek-previous-file",
            old_file.to_str().expect("path"),
        ],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    let n: usize = said
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    // The secret and the 59 households' keys still live.
    assert_eq!(n, 60, "{said}");
    assert!(core.stop().success());
    let mut serve = Command::new(BIN);
    serve
        .args(["serve", "--simulation", "--listen", "127.0.0.1:0"])
        .args(["--services", "manifest", "--name", "rotated"])
        .args(&store)
        .env("THRESHOLD_VAULT_KEK", &new)
        .arg("--data")
        .arg(dir.path().join("rotated"));
    let rotated = Served::spawn(serve, &dir.path().join("rotated"));
    // Loaded again (a copy: the refused row goes to a rejects file beside
    // it), every household's parcel is recognised under the rewrapped keys;
    // the forgotten household's parcel now seals under a new household, so
    // it is refused as changed.
    let copy = dir.path().join("se.csv");
    std::fs::copy(samples().join("2026-11-23-se.csv"), &copy).expect("copy");
    let out = load_manifest(
        &copy,
        &rotated.url,
        Path::new(deployment.tokens()),
        &["--json"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (json["unchanged"].as_u64(), json["rejected"].as_u64()),
        (Some(59), Some(1)),
        "{json}"
    );
    // The old key alone no longer opens it, and the refusal names the key.
    let out = threshold(&[
        "privacy",
        "forget",
        "--subject",
        "hh-x",
        "--log",
        &format!("kafka://{broker}"),
        "--topic-prefix",
        &prefix,
        "--vault-kek-file",
        old_file.to_str().expect("path"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not given"),
        "{out:?}"
    );
}
