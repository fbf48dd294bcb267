//! Consumers on Kafka killed or stopped mid-day leave nothing missed or
//! counted twice. Needs the test broker (`THRESHOLD_TEST_KAFKA`).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_killed_or_stopped_mid_day_leave_nothing_missed_or_counted_twice() {
    let broker = test_broker();
    let prefix = format!("kill{}", std::process::id());
    let deployment = Deployment::new(&broker, &prefix);
    let core = deployment.serve("manifest,planning,attempts,access", "core", "127.0.0.1:0");
    let analytics_at = format!("127.0.0.1:{}", free_port());
    let analytics = deployment.serve("analytics", "analytics", &analytics_at);
    // Two publishers of partners' outcomes: one consumer group.
    let first = deployment.serve("outcomes", "outcomes-1", "127.0.0.1:0");
    let second = deployment.serve("outcomes", "outcomes-2", "127.0.0.1:0");
    let mut day = deployment.simulate(
        &core.url,
        &[("analytics", &format!("http://{analytics_at}"))],
    );
    day.until_line("planned ");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The analytics process dies (SIGKILL: no last commit) and is started
    // again on its replica. A publisher stops (SIGINT: it leaves its group,
    // which gives its partitions to the other). A SIGKILLed publisher's
    // partitions move only when the broker notices the missed heartbeats,
    // which the test broker (tansu 0.6) does not do.
    drop(analytics);
    let analytics = deployment.serve("analytics", "analytics", &analytics_at);
    assert!(first.stop().success());
    let text = day.finish();
    // The analytics read model, rebuilt by the restarted process from its
    // replica and Kafka, reports the day as one embedded process does.
    let report = day_report(&text);
    assert_eq!(report, demo_report(12));

    // The partners' outcome topics, each as its partner's plain Kafka
    // client reads it: once the group has moved the stopped member's
    // partitions, they hold them all, each partner's in its own topic.
    let (attempts, delivered) = totals(&report);
    let mut reads = 0;
    let (published, distinct) = loop {
        reads += 1;
        let published = threshold_log::kafka::read_published(
            &broker,
            &format!("{prefix}.carrier{reads}"),
            &format!("^{prefix}\\.outcome\\..*"),
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("read the outcome topics");
        let mut distinct = std::collections::HashMap::new();
        for record in &published {
            let outcome =
                <threshold_api::v1::ParcelOutcome as prost::Message>::decode(&record.value[..])
                    .expect("a ParcelOutcome");
            assert!(outcome.driver_id.is_empty() && outcome.grant_id.is_empty());
            let partner = record.headers.get("ce_tenant").expect("a partner");
            assert_eq!(
                record.topic,
                format!("{prefix}.outcome.{partner}"),
                "{record:?}"
            );
            assert!(
                !record.headers.contains_key("ce_correlationid")
                    && !record.headers.contains_key("ce_causationid"),
                "no handheld's ids: {record:?}"
            );
            distinct.insert(record.id().to_owned(), outcome);
        }
        let partners: std::collections::BTreeSet<_> =
            published.iter().map(|r| r.topic.as_str()).collect();
        assert!(partners.len() >= 2 || published.is_empty(), "{partners:?}");
        eprintln!(
            "read {reads}: {} records, {} distinct",
            published.len(),
            distinct.len()
        );
        if distinct.len() as u64 >= attempts || reads == 12 {
            break (published, distinct);
        }
    };
    use threshold_api::v1::parcel_outcome::Kind;
    let kinds = |k: Kind| distinct.values().filter(|o| o.kind() == k).count() as u64;
    assert_eq!(
        kinds(Kind::Delivered),
        delivered,
        "every delivery published ({} records, {} distinct)",
        published.len(),
        distinct.len()
    );
    assert_eq!(
        kinds(Kind::Delivered) + kinds(Kind::AttemptFailed),
        attempts,
        "every attempt published once after deduplication on ce_id"
    );
    drop(analytics);
    drop(second);
    drop(core);
}
