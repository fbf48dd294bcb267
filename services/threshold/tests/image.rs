//! The OCI image (`scripts/image.sh`, `make image`), built from the binary
//! under test and started with podman: it serves as a non-root user, its
//! health check (`threshold health` inside) turns healthy, and a manifest
//! loaded from this machine's CLI through its published gRPC port, with a
//! planner credential the operator made beforehand, is taken. SIGTERM stops
//! it cleanly.
//!
//! Skipped, with the reason printed, where podman and buildah are not
//! installed or cannot run a container (they need root here: the test
//! hands the data volume to the image's user, uid 10001). `make test`
//! installs them from Debian's packages where it can
//! (`scripts/container-tools.sh`).

mod common;

use common::*;

const UID: u32 = 10001;

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What podman needs besides the image and command on this machine: runc
/// where installed (crun refuses hosts with cgroup v1 controllers mounted,
/// as on some VMs), and resource limits within the host's hard limits
/// (podman's defaults exceed them on hosts with low ones).
fn podman_run_args() -> Vec<String> {
    let mut args = Vec::new();
    if run("sh", &["-c", "command -v runc"]).status.success() {
        args.extend(["--runtime".to_owned(), "runc".to_owned()]);
    }
    let hard = ok("sh", &["-c", "ulimit -Hn"]);
    let nofile = hard.parse::<u64>().map_or(65536, |n| n.min(65536));
    args.extend([
        "--ulimit".to_owned(),
        format!("nofile={nofile}:{nofile}"),
        "--ulimit".to_owned(),
        "nproc=4096:4096".to_owned(),
    ]);
    args
}

/// Why this machine cannot run the test, if it cannot.
fn unable() -> Option<String> {
    for tool in ["podman", "buildah"] {
        if !run("sh", &["-c", &format!("command -v {tool}")])
            .status
            .success()
        {
            return Some(format!(
                "{tool} is not installed (Debian: apt-get install podman buildah runc)"
            ));
        }
    }
    if ok("id", &["-u"]) != "0" {
        return Some("podman here needs root (the data volume is handed to uid 10001)".into());
    }
    None
}

/// Removes the container and the image, however the test ends.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = run("podman", &["rm", "-f", "-t", "0", &self.container]);
        let _ = run("podman", &["rmi", "-f", &self.image]);
    }
}

#[test]
fn the_image_serves_as_a_non_root_user_turns_healthy_and_takes_a_manifest() {
    if let Some(why) = unable() {
        eprintln!("SKIPPED: the image test cannot run here: {why}");
        return;
    }
    let pid = std::process::id();
    let image = format!("localhost/threshold:test-{pid}");
    let container = format!("threshold-image-test-{pid}");
    let _cleanup = Cleanup {
        container: container.clone(),
        image: image.clone(),
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/image.sh");
    let built = ok(
        script.to_str().expect("path"),
        &["--binary", BIN, "--tag", &image],
    );
    assert!(built.contains(&image), "{built}");

    // The operator's first planner credential, made before the server runs,
    // in the directory that becomes the image's /data.
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let token = ok(
        BIN,
        &[
            "credentials",
            "add",
            "--role",
            "planner",
            "--tenant",
            "*",
            "--data",
            data.to_str().expect("path"),
        ],
    );
    assert_eq!(token.len(), 64, "{token}");
    ok(
        "chown",
        &["-R", &format!("{UID}:{UID}"), data.to_str().expect("path")],
    );

    // Probe: can this machine run a container at all?
    let mut probe = vec!["run".to_owned(), "--rm".to_owned()];
    probe.extend(podman_run_args());
    probe.extend([image.clone(), "--version".to_owned()]);
    let out = Command::new("podman")
        .args(&probe)
        .output()
        .expect("podman");
    if !out.status.success() {
        eprintln!(
            "SKIPPED: podman cannot run a container here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("threshold "));

    // The image's own command: serve on 0.0.0.0:50051 with /data.
    let mut start = vec![
        "run".to_owned(),
        "-d".to_owned(),
        "--name".to_owned(),
        container.clone(),
        "-p".to_owned(),
        "127.0.0.1::50051".to_owned(),
        "-v".to_owned(),
        format!("{}:/data", data.display()),
    ];
    start.extend(podman_run_args());
    start.push(image.clone());
    let out = Command::new("podman")
        .args(&start)
        .output()
        .expect("podman");
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Its health check, as the image defines it, turns healthy.
    let mut healthy = false;
    for _ in 0..60 {
        if run("podman", &["healthcheck", "run", &container])
            .status
            .success()
        {
            healthy = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let logs = || {
        let out = run("podman", &["logs", &container]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(healthy, "never healthy; its log:\n{}", logs());

    // It runs as the image's user, not root.
    let host_pid = ok(
        "podman",
        &["inspect", "--format", "{{.State.Pid}}", &container],
    );
    let status =
        std::fs::read_to_string(format!("/proc/{host_pid}/status")).expect("process status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().next())
        .expect("Uid line");
    assert_eq!(uid, UID.to_string(), "{status}");

    // A manifest, from this machine's CLI through the published port.
    let port = ok("podman", &["port", &container, "50051"]);
    let server = format!(
        "http://{}",
        port.lines().next().expect("a published address")
    );
    let out = threshold(&[
        "manifest",
        "load",
        samples().join("2026-11-23-se.csv").to_str().expect("path"),
        "--server",
        &server,
        "--token",
        &token,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}\nits log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs()
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["accepted"], 60, "{json}");

    // SIGTERM (podman stop, as Kubernetes stops a pod): a clean exit.
    ok("podman", &["stop", "-t", "20", &container]);
    let code = ok(
        "podman",
        &["inspect", "--format", "{{.State.ExitCode}}", &container],
    );
    assert_eq!(code, "0", "its log:\n{}", logs());
    assert!(logs().contains("shutting down"), "{}", logs());
    assert!(data.join("events.db").exists());
}
