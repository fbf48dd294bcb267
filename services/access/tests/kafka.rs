//! Two access processes on one Kafka log: a grant's revokes, unlocks and
//! redeems, asked of either, keep one order (guarantee 7). Needs the test
//! broker (`make test` starts one and sets `THRESHOLD_TEST_KAFKA`).

mod common;

use chrono::Utc;
use common::*;
use threshold_domain::EventId;
use threshold_testkit::{Sandbox, Service};

/// The server over its own Kafka log (its own replica and producer): a
/// process of its own, sharing the deployment's vault.
async fn process(name: &str, prefix: &str, vault: &std::path::Path) -> Running {
    let brokers = std::env::var("THRESHOLD_TEST_KAFKA").unwrap_or_else(|_| {
        panic!("THRESHOLD_TEST_KAFKA is not set: `make test` starts a broker on loopback")
    });
    serve_with(
        Sandbox::builder()
            .kafka(brokers)
            .name(name)
            .topic_prefix(prefix)
            .partitions(3)
            .vault(vault)
            .services([Service::Access]),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_both_authorize_under_one_grant() {
    let prefix = format!("access{}", EventId::new().uuid().simple());
    let vault_dir = tempfile::tempdir().expect("dir");
    let mut a = process("a", &prefix, vault_dir.path()).await;
    let b = process("b", &prefix, vault_dir.path()).await;
    door(&mut a, Utc::now(), false).await;
    let grants: Vec<String> = (0..6).map(|n| format!("g-{n}")).collect();
    for g in &grants {
        a.resident.issue_grant(grant(g)).await.expect("issue");
    }
    // Every request goes to one process or the other; a nonce authorized by
    // one is redeemed at the other.
    let mut tasks = tokio::task::JoinSet::new();
    for g in &grants {
        for n in 0..16 {
            let (asked, other) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
            tasks.spawn(race_step(
                g.clone(),
                n % 8 == 5,
                asked.resident.clone(),
                asked.handheld.clone(),
                other.vendor.clone(),
            ));
        }
    }
    let (mut revokes_that_changed, mut opened) = (0, 0);
    while let Some(t) = tasks.join_next().await {
        let (r, o) = t.expect("task");
        revokes_that_changed += r;
        opened += o;
    }
    assert!(opened <= 6, "at most one entry per grant: {opened}");
    let mut revoked = 0;
    for g in &grants {
        let events = grant_history(a.log.as_ref(), g).await;
        // Both processes read the same history.
        assert_eq!(grant_history(b.log.as_ref(), g).await, events, "{g}");
        // Every unlock request was decided and recorded once: 14 of them.
        revoked += u32::from(assert_one_order(g, &events, 14));
    }
    // A grant is revoked once, or not at all when its parcel went in first.
    assert_eq!(
        revokes_that_changed, revoked,
        "each revoked grant revoked once"
    );
    // The race ran both ways: some revoke came before any entry.
    assert!(revoked > 0, "no grant was revoked");
}
