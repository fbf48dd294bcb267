//! `threshold serve` on a data directory whose vault was moved away, while
//! its log holds sealed addresses: it says why on stderr and exits
//! non-zero; with the vault back it serves. A vault kept wrapped under a
//! key-encryption key opens only with it, and the key can be rotated.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// `threshold serve` over `data`, run until it exits (at most a minute:
/// a server that starts is killed and fails the test).
fn serve_until_exit(data: &Path) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env_remove("THRESHOLD_VAULT_KEK")
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

/// `threshold serve --simulation` over `data` with the key-encryption key
/// `kek` (THRESHOLD_VAULT_KEK).
fn serve_with_kek(data: &Path, kek: &str) -> Served {
    let mut serve = Command::new(BIN);
    serve
        .args(["serve", "--simulation", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("THRESHOLD_VAULT_KEK", kek);
    Served::spawn(serve, data)
}

/// `threshold privacy ARGS --data DATA`, its output.
fn privacy(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("privacy")
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("THRESHOLD_VAULT_KEK")
        .output()
        .expect("run threshold privacy")
}

#[test]
fn serve_wraps_the_vault_under_its_key_encryption_key_and_refuses_to_start_without_it() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir");
    let (old, new) = (
        threshold_privacy::Kek::generate_hex(),
        threshold_privacy::Kek::generate_hex(),
    );
    let old_id = threshold_privacy::Kek::from_hex(&old, "old")
        .expect("a key")
        .id_hex();
    let (old_file, new_file) = (keys.join("old.kek"), keys.join("new.kek"));
    std::fs::write(&old_file, &old).expect("write");
    std::fs::write(&new_file, &new).expect("write");
    let (old_file, new_file) = (
        old_file.to_str().expect("path"),
        new_file.to_str().expect("path"),
    );

    let server = serve_with_kek(&data, &old);
    let out = load_manifest(
        &samples().join("2026-11-23-se.csv"),
        &server.url,
        &server.data,
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.stop().success());

    // Without its key the vault opens nowhere, and says which key it needs.
    let out = serve_until_exit(&data);
    assert!(!out.status.success(), "{}", text(&out));
    let forget = [&["forget"][..], &SVEAVAGEN_25[..]].concat();
    let refused = privacy(&data, &forget);
    assert!(!refused.status.success(), "{}", text(&refused));
    for out in [&out, &refused] {
        let said = text(out);
        for what in [old_id.as_str(), "THRESHOLD_VAULT_KEK", "vault.db"] {
            assert!(said.contains(what), "{what:?}: {said}");
        }
        assert!(!said.contains(&old), "the key itself is never printed");
    }

    // A data directory with no vault is refused, not given a new one.
    let elsewhere = dir.path().join("elsewhere");
    for args in [&forget[..], &["rewrap", "--vault-kek-file", new_file][..]] {
        let out = privacy(&elsewhere, args);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("no vault here"), "{}", text(&out));
        assert!(!elsewhere.join(threshold_privacy::VAULT_FILE).exists());
    }

    // Rotation: the new key, the old one still accepted, every value
    // rewrapped; then the new key alone serves.
    let out = privacy(
        &data,
        &[
            "rewrap",
            "--vault-kek-file",
            new_file,
            "--vault-kek-previous-file",
            old_file,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let rewrapped: usize = text(&out)
        .split_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("a count: {}", text(&out)));
    assert!(
        rewrapped > 1,
        "the secret and the households' keys: {}",
        text(&out)
    );
    let server = serve_with_kek(&data, &new);
    let out = load_manifest(
        &samples().join("2026-11-23-se.csv"),
        &server.url,
        &server.data,
        &["--json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"accepted\":0"), "{}", text(&out));
    assert!(server.stop().success());

    // The old key alone no longer opens it; the new one forgets.
    let out = privacy(
        &data,
        &[&forget[..], &["--vault-kek-file", old_file]].concat(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not given"), "{}", text(&out));
    let out = privacy(
        &data,
        &[&forget[..], &["--vault-kek-file", new_file]].concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("1 key(s) destroyed"), "{}", text(&out));
}
