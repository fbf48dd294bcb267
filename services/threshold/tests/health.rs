//! `threshold health`, the check a container or a probe runs: exit status
//! 0 only while the server (or the service asked about) is serving, and a
//! reason on stderr otherwise.

mod common;

use common::*;

fn health(args: &[&str]) -> std::process::Output {
    let mut all = vec!["health"];
    all.extend_from_slice(args);
    threshold(&all)
}

#[test]
fn health_is_zero_only_while_the_server_or_the_service_asked_about_serves() {
    let dir = tempfile::tempdir().expect("dir");
    let mut serve = Command::new(BIN);
    serve
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--services",
            "manifest,planning",
            "--data",
        ])
        .arg(dir.path().join("data"));
    let server = Served::spawn(serve, &dir.path().join("data"));

    let out = health(&["--server", &server.url]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{}: serving", server.url)
    );

    let out = health(&[
        "--server",
        &server.url,
        "--service",
        "threshold.v1.ManifestService",
    ]);
    assert!(out.status.success(), "{out:?}");

    // A service this process does not run is not reported healthy.
    let out = health(&[
        "--server",
        &server.url,
        "--service",
        "threshold.v1.AccessService",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "threshold.v1.AccessService at {}: not served by this process",
            server.url
        )),
        "{stderr}"
    );

    // Stopped: nothing answers, and the check says where it looked.
    let url = server.url.clone();
    assert!(server.stop().success());
    let out = health(&["--server", &url, "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot reach {url}")), "{stderr}");
}

#[test]
fn health_refuses_a_timeout_that_is_not_a_number_of_seconds() {
    for bad in ["0", "-1", "soon", "NaN"] {
        let out = health(&[&format!("--timeout={bad}")]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a number of seconds"),
            "{bad}: {out:?}"
        );
    }
}
