//! The day on Kafka with every process on a host of its own: each in a
//! network namespace of its own, reaching the broker over a veth pair on a
//! private test subnet (10.203.N.0/30; the broker on 10.203.0.1), with its
//! own data directory and nothing shared on disk. The report equals the
//! embedded day's, a credential revoked once is refused by every process,
//! and a household forgotten once is unreadable in the planning process. The test makes the namespaces, links and address, and removes
//! them however it ends.
//!
//! Skipped, with the reason printed, where network namespaces cannot be
//! made (not root, no `ip`). Needs the test broker's binary
//! (`THRESHOLD_TANSU`, set by `make test`); it starts a broker of its own on
//! the test subnet.

mod common;

use std::time::{Duration, Instant};

use common::*;

const SERVICES: [&str; 6] = [
    "manifest",
    "planning",
    "attempts",
    "access",
    "analytics",
    "outcomes",
];
const BROKER_IP: &str = "10.203.0.1";

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("ip")
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces, links and address this test made; removed on drop.
struct Hosts {
    names: Vec<String>,
    children: Vec<Child>,
}

impl Hosts {
    /// The namespace of process `n` (1-based) is `NAME`, its address
    /// 10.203.n.2, the root side of its link 10.203.n.1.
    fn make(tag: &str, count: usize) -> Result<Self, String> {
        let mut hosts = Self {
            names: Vec::new(),
            children: Vec::new(),
        };
        let out = ip(&["addr", "add", &format!("{BROKER_IP}/32"), "dev", "lo"]);
        if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("File exists") {
            return Err(format!(
                "cannot add {BROKER_IP} to lo: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        for n in 1..=count {
            let ns = format!("{tag}{n}");
            let _ = ip(&["netns", "del", &ns]);
            let _ = ip(&["link", "del", &format!("{ns}h")]);
            let out = ip(&["netns", "add", &ns]);
            if !out.status.success() {
                return Err(format!(
                    "cannot make a network namespace: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            hosts.names.push(ns.clone());
            let (host, guest) = (format!("{ns}h"), format!("{ns}g"));
            ip_ok(&["link", "add", &host, "type", "veth", "peer", "name", &guest]);
            ip_ok(&["link", "set", &guest, "netns", &ns]);
            ip_ok(&["addr", "add", &format!("10.203.{n}.1/30"), "dev", &host]);
            ip_ok(&["link", "set", &host, "up"]);
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                ip_ok(&all);
            };
            inside(&["addr", "add", &format!("10.203.{n}.2/30"), "dev", &guest]);
            inside(&["link", "set", &guest, "up"]);
            inside(&["link", "set", "lo", "up"]);
            inside(&["route", "add", "default", "via", &format!("10.203.{n}.1")]);
        }
        Ok(hosts)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.names {
            let _ = ip(&["link", "del", &format!("{ns}h")]);
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["addr", "del", &format!("{BROKER_IP}/32"), "dev", "lo"]);
    }
}

/// Waits for `addr` to accept connections (from this, the root, namespace).
fn wait_for(addr: &str, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_day_with_each_process_on_a_host_of_its_own_reports_as_the_embedded_day() {
    let root_user = Command::new("id").arg("-u").output().expect("id");
    if String::from_utf8_lossy(&root_user.stdout).trim() != "0" {
        eprintln!("SKIPPED: network namespaces need root here");
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIPPED: no `ip` (Debian: apt-get install iproute2)");
        return;
    }
    let tag = format!("th{}n", std::process::id() % 10_000);
    let mut hosts = match Hosts::make(&tag, SERVICES.len()) {
        Ok(h) => h,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("dir");

    // The broker, on the test subnet's address.
    let tansu = std::env::var("THRESHOLD_TANSU").unwrap_or_else(|_| {
        panic!("THRESHOLD_TANSU is not set: `make test` sets it to the test broker's binary")
    });
    let port = free_port();
    let broker = format!("{BROKER_IP}:{port}");
    let url = format!("tcp://{broker}");
    hosts.children.push(
        Command::new(tansu)
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu"),
    );
    wait_for(&broker, "the broker");

    let log = format!("kafka://{broker}");
    let prefix = "apart";
    let kek = threshold_privacy::Kek::generate_hex();
    let tokens = dir.path().join("tokens");
    let store = ["--log", log.as_str(), "--topic-prefix", prefix];
    let mut local = vec![
        "credentials",
        "local-tokens",
        "--data",
        tokens.to_str().expect("path"),
    ];
    local.extend_from_slice(&store);
    let out = threshold(&local);
    assert!(out.status.success(), "{out:?}");

    // A process per service, each in its namespace, on its own data.
    let mut urls = Vec::new();
    for (i, service) in SERVICES.iter().enumerate() {
        let (ns, addr) = (&hosts.names[i], format!("10.203.{}.2:50051", i + 1));
        let data = dir.path().join(service);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                BIN,
                "serve",
                "--simulation",
                "--insecure",
            ])
            .args(["--listen", &addr, "--services", service, "--name", service])
            .args(store)
            .arg("--data")
            .arg(&data)
            .env("THRESHOLD_VAULT_KEK", &kek)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve in a namespace");
        hosts.children.push(child);
        urls.push((*service, format!("http://{addr}")));
    }
    for (service, url) in &urls {
        wait_for(url.trim_start_matches("http://"), service);
    }
    // Each process reaches the broker only over its own link: its
    // namespace has no other way out.
    let out = Command::new("ip")
        .args(["netns", "exec", &hosts.names[0], "ip", "route"])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(routes.contains("default via 10.203.1.1"), "{routes}");

    let url = |name: &str| {
        urls.iter()
            .find(|(s, _)| *s == name)
            .map(|(_, u)| u.clone())
            .expect("a process")
    };
    let mut simulate = Command::new(BIN);
    simulate
        .args(["simulate", "--date", "2026-11-23", "--seed", "12"])
        .args(["--server", &url("attempts")])
        .arg("--data")
        .arg(&tokens);
    for country in ["dk", "fi", "no", "se"] {
        simulate
            .arg("--manifest")
            .arg(samples().join(format!("2026-11-23-{country}.csv")));
    }
    for service in ["manifest", "planning", "access", "analytics"] {
        simulate.args(["--service-url", &format!("{service}={}", url(service))]);
    }
    let day = Day::new(
        simulate
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("simulate"),
    );
    assert_eq!(
        day_report(&day.finish()),
        demo_report(12),
        "six processes on six hosts report the day as one embedded process"
    );

    // A credential revoked once is refused by every process.
    let out = add_analyst("ops", &store);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut revoke = vec!["credentials", "revoke", "ops"];
    revoke.extend_from_slice(&store);
    assert!(threshold(&revoke).status.success());
    for (service, url) in &urls {
        let start = Instant::now();
        loop {
            let out = threshold(&["report", "attempts", "--server", url, "--token", &token]);
            if String::from_utf8_lossy(&out.stderr).contains("unknown token") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{service} still takes a revoked token: {out:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // A household forgotten once, from this host, is unreadable in the
    // planning process on its own: planning the day again, it no longer
    // knows where the parcel was.
    let mut forget = vec!["privacy", "forget"];
    forget.extend_from_slice(&SVEAVAGEN_25);
    forget.extend_from_slice(&store);
    let out = Command::new(BIN)
        .args(&forget)
        .env("THRESHOLD_VAULT_KEK", &kek)
        .output()
        .expect("privacy forget");
    assert!(out.status.success(), "{out:?}");
    let plan = threshold(&[
        "routing",
        "plan",
        "--date",
        "2026-11-23",
        "--depot",
        "STO-1",
        "--seconds",
        "0.3",
        "--json",
        "--server",
        &url("planning"),
        "--data",
        tokens.to_str().expect("path"),
    ]);
    assert!(plan.status.success(), "{plan:?}");
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("json");
    let unassigned = v["depots"][0]["unassigned"].as_array().expect("unassigned");
    assert!(
        unassigned.iter().any(|u| u["parcel_id"] == "SE-STO-1-00001"
            && u["reason"].as_str().unwrap_or_default().contains("erased")),
        "{v}"
    );

    // Nothing shared on disk: no process keeps credentials or a vault.
    for service in SERVICES {
        for file in [
            threshold_privacy::VAULT_FILE,
            threshold_auth::CREDENTIALS_FILE,
        ] {
            assert!(
                !dir.path().join(service).join(file).exists(),
                "{service}: {file}"
            );
        }
    }
}
