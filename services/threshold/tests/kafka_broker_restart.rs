//! A Kafka broker restarted mid-day loses no acknowledged event, and
//! appends are acknowledged again within 10 s of its restart (the figure is
//! printed). Needs the test broker's binary (`THRESHOLD_TANSU`).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use common::*;

/// A broker child, killed when dropped.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tansu broker of its own on `port`, keeping its topics in `dir`
/// (sqlite storage), so it can be restarted with everything it held.
fn own_broker(dir: &Path, port: u16) -> Broker {
    let tansu = std::env::var("THRESHOLD_TANSU").unwrap_or_else(|_| {
        panic!("THRESHOLD_TANSU is not set: `make test` sets it to the test broker's binary")
    });
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .expect("broker log");
    let child = Command::new(tansu)
        .current_dir(dir)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start tansu");
    let broker = Broker(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return broker;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("tansu did not listen on {port}");
}

/// Loads a one-parcel manifest after another into a server until stopped;
/// when each load was acknowledged.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Instant>>,
}

impl Probe {
    fn start(server: &Served, dir: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, data, dir) = (
            server.url.clone(),
            PathBuf::from(server.data()),
            dir.to_owned(),
        );
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stopping.load(Ordering::Relaxed) {
                n += 1;
                let file = dir.join("probe.csv");
                std::fs::write(
                    &file,
                    format!(
                        "parcel_id,partner_id,country,depot_id,delivery_date,address,postal_code,city,latitude,longitude,service,weight_kg,window_start,window_end\n\
                         SE-STO-1-9{n:04},hemmabutiken,SE,STO-1,2026-11-23,Sveavägen 25,165 71,Stockholm,59.34403,18.03572,locker,0.7,,\n"
                    ),
                )
                .expect("probe manifest");
                let out = load_manifest(&file, &url, &data, &["--json"]);
                let accepted = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .ok()
                    .and_then(|j| j["accepted"].as_u64());
                if out.status.success() && accepted == Some(1) {
                    acked.push(Instant::now());
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            acked
        });
        Self { stop, thread }
    }

    fn stop(self) -> Vec<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("probe")
    }
}

#[test]
fn a_broker_restarted_mid_day_loses_no_acknowledged_event() {
    let port = free_port();
    let deployment = Deployment::new(&format!("127.0.0.1:{port}"), "threshold");
    let broker_dir = deployment.root.path().join("broker");
    std::fs::create_dir_all(&broker_dir).expect("dir");
    let broker = own_broker(&broker_dir, port);
    let server = deployment.serve("all", "all", "127.0.0.1:0");
    // A second process, on topics of its own on the same broker, appends
    // all along (a one-parcel manifest at a time), so the time from the
    // broker's restart to the first append acknowledged after it is seen.
    let probing = Deployment::new(&format!("127.0.0.1:{port}"), "probe");
    let prober = probing.serve("manifest", "prober", "127.0.0.1:0");
    let probe = Probe::start(&prober, probing.root.path());
    let mut day = deployment.simulate(&server.url, &[]);
    let lines = lines_of(&mut day);
    // Routes are planned and the drivers are out: the broker goes down
    // without warning and comes back a second later with what it stored.
    let mut seen = until_line(&lines, "planned ");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(broker); // SIGKILL
    std::thread::sleep(std::time::Duration::from_secs(1));
    let broker = own_broker(&broker_dir, port);
    let restarted = Instant::now();
    seen.extend(lines.iter());
    let status = day.wait().expect("simulate");
    let acked = probe.stop();
    let recovery = acked
        .iter()
        .find(|at| **at > restarted)
        .map(|at| at.duration_since(restarted));
    eprintln!(
        "broker restart: appends acknowledged again {} after the broker listened \
         ({} probe appends acknowledged in all)",
        recovery.map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
        acked.len()
    );
    let recovery = recovery.expect("an append is acknowledged after the restart");
    assert!(
        recovery <= std::time::Duration::from_secs(10),
        "appends were acknowledged again only {recovery:?} after the restart"
    );
    drop(prober);
    let text = seen.join("\n");
    assert!(
        status.success(),
        "the day survives the restart: {text}\n{}",
        std::fs::read_to_string(broker_dir.join("tansu.log")).unwrap_or_default()
    );
    assert_eq!(
        day_report(&text),
        demo_report(12),
        "every acknowledged event is counted, once"
    );
    // A process starting now, with an empty replica, reads the whole day
    // back from the restarted broker.
    let fresh = deployment.serve("analytics", "late-reader", "127.0.0.1:0");
    let report = threshold(&[
        "report",
        "attempts",
        "--json",
        "--server",
        &fresh.url,
        "--data",
        fresh.data(),
    ]);
    assert!(report.status.success(), "{report:?}");
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).expect("JSON");
    let total = |field: &str| json["total"][field].as_u64().expect("a count");
    assert_eq!(
        (total("attempts"), total("delivered")),
        totals(&day_report(&text)),
        "{json}"
    );
    assert!(server.stop().success());
    drop(broker);
}
