//! A Kafka broker restarted mid-day loses no acknowledged event, and the
//! server's appends are acknowledged again within seconds of it listening.
//! Needs the test broker's binary (`THRESHOLD_TANSU`).

mod common;

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

#[test]
fn a_broker_restarted_mid_day_loses_no_acknowledged_event() {
    let port = free_port();
    let deployment = Deployment::new(&format!("127.0.0.1:{port}"), "threshold");
    let broker_dir = deployment.root.path().join("broker");
    std::fs::create_dir_all(&broker_dir).expect("dir");
    let broker = own_broker(&broker_dir, port);
    let server = deployment.serve_with("all", "all", "127.0.0.1:0", &["--admin", "127.0.0.1:0"]);
    let mut day = deployment.simulate(&server.url, &[]);
    // Routes are planned and the drivers are out: the broker goes down
    // without warning and comes back a second later with what it stored.
    day.until_line("planned ");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(broker); // SIGKILL
    std::thread::sleep(std::time::Duration::from_secs(1));
    // While it is down nothing can be acknowledged (an append is answered
    // only once the broker took it and the replica read it back): the
    // server's count of appended events stands still until the broker is
    // back and the day's own appends go through again. Timed by that
    // count, so the probe adds nothing to the day or the broker.
    let before = server.appended();
    let broker = own_broker(&broker_dir, port);
    let listening = std::time::Instant::now();
    let recovered = loop {
        if server.appended() > before {
            break listening.elapsed();
        }
        assert!(
            listening.elapsed() < std::time::Duration::from_secs(120),
            "no append acknowledged in 120 s after the broker came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    println!(
        "appends acknowledged again {:.2} s after the restarted broker listened",
        recovered.as_secs_f64()
    );
    assert!(
        recovered <= std::time::Duration::from_secs(10),
        "appends took {recovered:?} to be acknowledged again after the broker restart"
    );
    // The day survives the restart.
    let text =
        day.finish_or(|| std::fs::read_to_string(broker_dir.join("tansu.log")).unwrap_or_default());
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
        deployment.tokens(),
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
