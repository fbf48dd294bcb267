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
    let made = add_analyst("ops", &["--data", server.data()]);
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
    let report = |token: &str| report_attempts(&server.url, token, &elsewhere);
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
        listed.contains(
            r#"{"expired":false,"expires_at":null,"name":"ops","role":"analyst","tenant":"*"}"#
        ),
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

#[test]
fn a_credential_made_to_expire_works_until_then_and_is_refused_after_saying_so() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let server = Served::start(&data);
    let add = |name: &str, expiry: &[&str]| {
        let mut rest = vec!["--data", server.data()];
        rest.extend_from_slice(expiry);
        add_analyst(name, &rest)
    };
    // Bad lifetimes and instants are named, and nothing is stored.
    for (expiry, says) in [
        (&["--expires-in", "5y"][..], "\"5y\" is not a lifetime"),
        (&["--expires-in", "0s"], "a lifetime is from 1s"),
        (&["--expires-at", "next friday"], "not an RFC 3339 instant"),
        (&["--expires-at", "2020-01-01T00:00:00Z"], "that is past"),
        (
            &["--expires-in", "1h", "--expires-at", "2099-01-01T00:00:00Z"],
            "cannot be used with",
        ),
    ] {
        let out = add("bad", expiry);
        assert!(!out.status.success(), "{expiry:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{expiry:?}: {err}");
    }
    let listed = |json: bool| {
        let mut args = vec!["credentials", "list", "--data", server.data()];
        if json {
            args.push("--json");
        }
        String::from_utf8_lossy(&threshold(&args).stdout).into_owned()
    };
    assert!(!listed(false).contains("bad\t"));

    let made = add("contractor", &["--expires-in", "3s"]);
    assert!(made.status.success(), "{made:?}");
    assert!(String::from_utf8_lossy(&made.stderr).contains(", until 20"));
    let token = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    let lasting = add("ops", &[]);
    let lasting = String::from_utf8_lossy(&lasting.stdout).trim().to_owned();
    let elsewhere = dir.path().join("elsewhere");
    let report = |token: &str| report_attempts(&server.url, token, &elsewhere);
    let out = report(&token);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = listed(false);
    let row = line
        .lines()
        .find(|l| l.starts_with("contractor\t"))
        .expect("listed");
    assert!(row.starts_with("contractor\tanalyst\t*\t20"), "{row}");
    assert!(line.contains("ops\tanalyst\t*\t-"), "{line}");

    std::thread::sleep(std::time::Duration::from_secs(4));
    let out = report(&token);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("credential \"contractor\" expired at 20"),
        "{err}"
    );
    assert!(report(&lasting).status.success(), "another goes on");
    // Listed as expired until revoked.
    let json = listed(true);
    assert!(
        json.contains(r#""expired":true"#) && json.contains(r#""name":"contractor""#),
        "{json}"
    );
    assert!(listed(false).contains("contractor\tanalyst\t*\texpired 20"));
}
