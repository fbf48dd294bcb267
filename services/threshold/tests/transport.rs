//! `threshold serve` off loopback: refused without TLS unless told
//! `--insecure`; with `--tls-cert` and `--tls-key` it serves TLS, and the
//! CLI's clients reach it at `https://` trusting `--ca`.

mod common;

use common::*;

/// `threshold serve ARGS --data DATA`, run until it exits or says where it
/// serves: its exit status (`None`: serving), stdout's first line, stderr.
fn serve_once(data: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .arg("--data")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("stdout");
    if line.starts_with("threshold serving on ") {
        let _ = child.kill();
        let _ = child.wait();
        return (None, line, String::new());
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        line,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_refuses_a_non_loopback_address_without_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let (code, _, stderr) = serve_once(&data, &["--listen", "0.0.0.0:0"]);
    assert_eq!(code, Some(1), "{stderr}");
    for said in [
        "refusing to listen on 0.0.0.0:0 without TLS",
        "--tls-cert",
        "--tls-key",
        "--insecure",
    ] {
        assert!(stderr.contains(said), "{said:?} not in {stderr}");
    }
    // Refused before anything was made.
    assert!(!data.exists(), "the data directory was made");
}

#[test]
fn serve_refuses_a_non_loopback_admin_port_in_plaintext() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let (code, _, stderr) = serve_once(&data, &["--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to serve metrics on 0.0.0.0:0") && stderr.contains("--insecure"),
        "{stderr}"
    );
}

#[test]
fn serve_listens_off_loopback_in_plaintext_when_told_insecure() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let (code, line, stderr) = serve_once(&data, &["--listen", "0.0.0.0:0", "--insecure"]);
    assert_eq!(code, None, "did not start: {stderr}");
    assert!(
        line.contains("0.0.0.0:") && line.contains("plaintext"),
        "{line}"
    );
}

#[test]
fn serve_speaks_tls_and_the_cli_reaches_it_trusting_its_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a self-signed certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).expect("cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("key");
    let data = dir.path().join("data");
    let mut serve = Command::new(BIN);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--data")
        .arg(&data);
    let server = Served::spawn(serve, &data);
    let https = server.url.replacen("http://", "https://", 1);
    let report = |server: &str, extra: &[&str]| {
        let mut args = vec![
            "report",
            "attempts",
            "--server",
            server,
            "--data",
            server_data(&data),
        ];
        args.extend_from_slice(extra);
        threshold(&args)
    };
    let ca = cert.to_str().expect("path");
    let out = report(&https, &["--ca", ca]);
    assert!(
        out.status.success(),
        "over TLS, trusting the certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without trusting it, or in plaintext, nothing is served.
    let out = report(&https, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = report(&server.url, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a plaintext client was served by a TLS port"
    );
    // --ca is for https only: said, not ignored.
    let out = report(&server.url, &["--ca", ca]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ca is for an https:// server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
}

fn server_data(data: &Path) -> &str {
    data.to_str().expect("path")
}

#[test]
fn run_refuses_a_non_loopback_address_without_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["run", "--demo", "--listen", "0.0.0.0:0", "--data"])
        .arg(&data)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without TLS")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
    assert!(!data.exists(), "the data directory was made");
}
