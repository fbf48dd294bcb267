//! The sample day on Kafka with a process per service, each on its own data
//! directory with nothing shared on disk (credentials and the vault are the
//! deployment's topics), each writing log records in one of the three
//! layouts, reports as on the embedded log. Needs the test
//! broker (`THRESHOLD_TEST_KAFKA`).

mod common;

use common::*;

#[test]
fn the_day_on_kafka_with_a_process_per_service_reports_as_the_embedded_day() {
    let deployment = Deployment::new(&test_broker(), &format!("e2e{}", std::process::id()));
    // Two processes write a record per append (`LogAppend`), two a
    // `LogRecord` per event and two the CloudEvents layout (the first steps
    // of upgrades from builds before): each reads what the others write.
    let start = |services: &str| {
        let layout = match services {
            "attempts" | "planning" => "append",
            "manifest" | "analytics" => "logrecord",
            _ => "cloudevents",
        };
        deployment.serve_with(
            services,
            services,
            "127.0.0.1:0",
            &["--kafka-records", layout],
        )
    };
    let processes: Vec<(&str, Served)> = [
        "manifest",
        "planning",
        "attempts",
        "access",
        "analytics",
        "outcomes",
    ]
    .into_iter()
    .map(|s| (s, start(s)))
    .collect();
    let url = |name: &str| {
        processes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.url.clone())
            .expect("process")
    };
    let others: Vec<(&str, String)> = ["manifest", "planning", "access", "analytics"]
        .into_iter()
        .map(|s| (s, url(s)))
        .collect();
    let others: Vec<(&str, &str)> = others.iter().map(|(s, u)| (*s, u.as_str())).collect();
    let text = deployment.simulate(&url("attempts"), &others).finish();
    let on_kafka = day_report(&text);
    assert_eq!(
        on_kafka,
        demo_report(12),
        "six processes on Kafka report the day as one process on the embedded log"
    );
    for (name, p) in processes {
        let data = p.data.clone();
        assert!(p.stop().success(), "{name} stopped cleanly");
        // Nothing shared on disk: each process kept only its replica (the
        // vault and the credentials are the deployment's topics).
        for file in [
            threshold_privacy::VAULT_FILE,
            threshold_auth::CREDENTIALS_FILE,
            threshold_auth::LOCAL_TOKENS_FILE,
        ] {
            assert!(!data.join(file).exists(), "{name}: {file}");
        }
    }
    assert!(
        !deployment
            .shared
            .join(threshold_privacy::VAULT_FILE)
            .exists()
    );
}
