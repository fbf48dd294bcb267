//! Credentials on Kafka: in the deployment's credentials topic, not in any
//! process's data directory. A token made by the CLI works in every
//! process; revoked, it is refused by every process within seconds (the
//! figure is printed), and a process started afterwards never takes it.

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
        deployment.serve("manifest,analytics", "b", "127.0.0.1:0"),
    ];
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

    let out = cli(&[
        "credentials",
        "add",
        "--role",
        "analyst",
        "--tenant",
        "*",
        "--name",
        "ops",
    ]);
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
