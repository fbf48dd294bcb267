//! `threshold serve` on a data directory whose vault was moved away, while
//! its log holds sealed addresses: it says why on stderr and exits
//! non-zero; with the vault back it serves.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `threshold serve` over `data`, run until it exits (at most a minute:
/// a server that starts is killed and fails the test).
fn serve_until_exit(data: &Path) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "serve started on a moved vault: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Moves the vault's files (the database, any `-wal` and `-shm`).
fn move_vault(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("{}{suffix}", threshold_privacy::VAULT_FILE);
        if from.join(&name).exists() {
            std::fs::rename(from.join(&name), to.join(&name)).expect("move the vault");
        }
    }
}

#[test]
fn serve_refuses_a_moved_vault_over_sealed_data_and_serves_with_it_back() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let server = Served::start(&data);
    let out = load_manifest(
        &samples().join("2026-11-23-no.csv"),
        &server.url,
        &server.data,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.stop().success());

    let aside = dir.path().join("aside");
    std::fs::create_dir(&aside).expect("mkdir");
    let vault = data.join(threshold_privacy::VAULT_FILE);
    move_vault(&data, &aside);

    let out = serve_until_exit(&data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for said in [
        vault.display().to_string().as_str(),
        "sealed under another vault",
        "--vault",
    ] {
        assert!(stderr.contains(said), "{said:?}: {stderr}");
    }
    assert!(!vault.exists(), "the refused start left no empty vault");

    move_vault(&aside, &data);
    let server = Served::start(&data);
    // It serves: the manifest loads again (every row already loaded).
    let out = load_manifest(
        &samples().join("2026-11-23-no.csv"),
        &server.url,
        &server.data,
        &["--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"accepted\":0"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(server.stop().success());
}
