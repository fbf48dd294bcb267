//! `threshold credentials add`, `list` and `revoke` on the embedded log: a
//! token that works at once on a running server and is refused at once
//! once revoked; a wrong or missing one named.

mod common;

use common::*;

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

    // Listed by name, role and tenant; never a token or its hash.
    let list = threshold(&["credentials", "list", "--json", "--data", server.data()]);
    assert!(list.status.success(), "{list:?}");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(r#"{"name":"ops","role":"analyst","tenant":"*"}"#),
        "{listed}"
    );
    assert!(!listed.contains("sha256") && !listed.contains(&token[..16]));

    // Revoked: the running server refuses it from the next call.
    let revoke = |name: &str| threshold(&["credentials", "revoke", name, "--data", server.data()]);
    let out = revoke("ops");
    assert!(out.status.success(), "{out:?}");
    let out = report(&token);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown token"));
    // A name that is not there: exit status 2, said.
    let out = revoke("ops");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credential \"ops\""));
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
