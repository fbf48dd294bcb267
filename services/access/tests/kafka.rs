//! Two access processes on one Kafka log: a grant's revokes, unlocks and
//! redeems, asked of either, keep one order (guarantee 7). Needs the test
//! broker (`make test` starts one and sets `THRESHOLD_TEST_KAFKA`).

mod common;

use std::sync::Arc;

use chrono::Utc;
use common::*;
use threshold_access_service::Clock;
use threshold_access_service::device::Signed;
use threshold_api::v1::{RedeemUnlockRequest, RevokeGrantRequest};
use threshold_domain::EventId;
use threshold_log::{KafkaLog, KafkaOptions};

/// An access server over its own Kafka log (its own replica and producer):
/// a process of its own, sharing the deployment's vault.
async fn process(name: &str, prefix: &str, vault: &Arc<threshold_privacy::Vault>) -> Running {
    let brokers = std::env::var("THRESHOLD_TEST_KAFKA").unwrap_or_else(|_| {
        panic!("THRESHOLD_TEST_KAFKA is not set: `make test` starts a broker on loopback")
    });
    let dir = tempfile::tempdir().expect("dir");
    let mut options = KafkaOptions::new(brokers, dir.path().join("replica"), name);
    options.topic_prefix = prefix.to_owned();
    options.partitions = 3;
    let log = KafkaLog::open(options).await.expect("the Kafka log");
    serve_over(Arc::new(log), Arc::clone(vault), dir, Clock::System).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_never_both_authorize_under_one_grant() {
    let prefix = format!("access{}", EventId::new().uuid().simple());
    let vault_dir = tempfile::tempdir().expect("dir");
    let vault = Arc::new(threshold_privacy::Vault::open(vault_dir.path()).expect("vault"));
    let mut a = process("a", &prefix, &vault).await;
    let b = process("b", &prefix, &vault).await;
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
            let (mut resident, mut handheld, mut vendor) = (
                asked.resident.clone(),
                asked.handheld.clone(),
                other.vendor.clone(),
            );
            let g = g.clone();
            tasks.spawn(async move {
                if n % 8 == 5 {
                    let r = resident
                        .revoke_grant(RevokeGrantRequest {
                            grant_id: g,
                            by: "res-1".into(),
                            reason: "race".into(),
                        })
                        .await
                        .expect("revoke");
                    return (u32::from(!r.into_inner().unchanged), 0);
                }
                let yes = handheld
                    .authorize_unlock(unlock(&g, "drv-1"))
                    .await
                    .expect("decided")
                    .into_inner();
                if yes.authorized {
                    let mut r = RedeemUnlockRequest {
                        home_id: "home-1".into(),
                        lock_id: "lock-1".into(),
                        grant_id: g,
                        nonce: yes.nonce,
                        signature: vec![],
                    };
                    r.sign(&key());
                    let opened = vendor.redeem_unlock(r).await.expect("redeem").into_inner();
                    return (0, u32::from(opened.open));
                }
                (0, 0)
            });
        }
    }
    let (mut revokes_that_changed, mut opened) = (0, 0);
    while let Some(t) = tasks.join_next().await {
        let (r, o) = t.expect("task");
        revokes_that_changed += r;
        opened += o;
    }
    assert_eq!(revokes_that_changed, 6, "each grant revoked exactly once");
    assert!(opened <= 6, "at most one entry per grant: {opened}");
    for g in &grants {
        let events = grant_history(a.log.as_ref(), g).await;
        // Both processes read the same history.
        assert_eq!(grant_history(b.log.as_ref(), g).await, events, "{g}");
        // Every unlock request was decided and recorded once: 14 of them.
        assert_one_order(g, &events, 14);
    }
}
