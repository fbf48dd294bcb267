//! Webhooks on Kafka: the one process running `webhooks` delivers a
//! partner's outcomes of a simulated day that another process took from
//! the handhelds, each once, verified and in order per parcel, across a
//! kill and restart of the webhooks process; a registry without the
//! replica its positions count on is refused at start. The day needs the
//! test broker (`THRESHOLD_TEST_KAFKA`).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, Position};

/// How many requests the receiver has got.
fn count(got: &Got) -> usize {
    got.lock().expect("got").len()
}

/// Waits up to `within` for the receiver to have got at least `n` requests.
fn wait_for(got: &Got, n: usize, within: Duration) -> usize {
    let until = Instant::now() + within;
    while count(got) < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    count(got)
}

/// `partner`'s outcome events in the replica at `dir`, as webhooks carry
/// them: (webhook id, parcel id), in the replica's order.
fn outcomes_in(rt: &tokio::runtime::Runtime, dir: &Path, partner: &str) -> Vec<(String, String)> {
    rt.block_on(async {
        let log = EmbeddedLog::open(dir, EmbeddedOptions::default()).expect("open the replica");
        let mut at = Position::ORIGIN;
        let mut found = Vec::new();
        loop {
            let batch = log.read_all(at, 1000).await.expect("read the replica");
            let Some(last) = batch.last() else { break };
            at = last.position;
            for event in &batch {
                if let Some(w) = threshold_webhook_service::payload::webhook_event(event)
                    && w.tenant == partner
                {
                    found.push((w.id, w.parcel_id));
                }
            }
        }
        log.close().await.expect("close the replica");
        found
    })
}

#[test]
fn the_webhooks_process_on_kafka_delivers_each_outcome_once_in_order_across_a_restart() {
    let broker = test_broker();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (addr, got) = receiver(&rt);
    let prefix = format!("hooks{}", std::process::id());
    let deployment = Deployment::new(&broker, &prefix);
    // The partner's token, in the deployment's credentials topic.
    let mut add = vec![
        "credentials",
        "add",
        "--role",
        "partner",
        "--tenant",
        "nordshop",
    ];
    let store = deployment.store_args();
    add.extend(store.iter().map(String::as_str));
    let out = threshold(&add);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    // The handhelds' events reach one process; the webhooks run in another,
    // on a fixed address so that partners find it again after its restart.
    let core = deployment.serve(
        "manifest,planning,attempts,access,analytics,outcomes",
        "core",
        "127.0.0.1:0",
    );
    let hooks_at = format!("127.0.0.1:{}", free_port());
    let serve_hooks = || {
        deployment.serve_with(
            "webhooks",
            "hooks",
            &hooks_at,
            &["--webhooks-allow-private"],
        )
    };
    let hooks = serve_hooks();
    let added = threshold(&[
        "partner",
        "webhook",
        "add",
        "--url",
        &format!("http://{addr}/hooks"),
        "--token",
        &token,
        "--server",
        &hooks.url,
    ]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let ep: serde_json::Value = serde_json::from_slice(&added.stdout).expect("json");
    let secret = ep["secret"].as_str().expect("secret").to_owned();
    let verifier = standardwebhooks::Webhook::new(&secret).expect("secret");

    // The day runs against the core process. Once deliveries flow, the
    // webhooks process is killed (SIGKILL: no clean stop) and started
    // again on its data directory.
    let day = deployment.simulate(&core.url, &[]);
    let before = wait_for(&got, 5, Duration::from_secs(300));
    assert!(before >= 5, "deliveries began: {before}");
    drop(hooks);
    let killed_at = count(&got);
    let hooks = serve_hooks();
    day.finish();

    // What the partner should get: its outcome events as the core's
    // replica holds them (positions differ per replica; ids and each
    // parcel's order do not).
    assert!(core.stop().success());
    let expected = outcomes_in(
        &rt,
        &deployment.root.path().join("core/replica"),
        "nordshop",
    );
    assert!(
        expected.len() > 10,
        "the day has nordshop outcomes: {}",
        expected.len()
    );
    let wanted: HashSet<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
    let distinct = |got: &Got| {
        got.lock()
            .expect("got")
            .iter()
            .map(|(h, _)| h["webhook-id"].to_str().expect("id").to_owned())
            .collect::<HashSet<_>>()
            .len()
    };
    let until = Instant::now() + Duration::from_secs(120);
    while distinct(&got) < wanted.len() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(250));
    }

    // A clean stop and start: nothing more is sent.
    assert!(hooks.stop().success());
    let settled = count(&got);
    let hooks = serve_hooks();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count(&got),
        settled,
        "a restart on the saved positions sends nothing again"
    );
    drop(hooks);

    let got = got.lock().expect("got").clone();
    let mut first_seen: Vec<String> = Vec::new();
    let mut times: HashMap<String, usize> = HashMap::new();
    for (headers, body) in &got {
        verifier
            .verify(body, headers)
            .expect("a Standard Webhooks signature");
        let id = headers["webhook-id"].to_str().expect("id").to_owned();
        let n = times.entry(id.clone()).or_default();
        *n += 1;
        if *n == 1 {
            first_seen.push(id);
        }
    }
    eprintln!(
        "{} outcomes expected; {killed_at} requests got before the kill, {} in all, {} distinct",
        wanted.len(),
        got.len(),
        first_seen.len()
    );
    let received: HashSet<&str> = first_seen.iter().map(String::as_str).collect();
    let missing: Vec<&&str> = wanted.difference(&received).collect();
    let unexpected: Vec<&&str> = received.difference(&wanted).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "every outcome of the partner's, and nothing else: {} missing {missing:?}, \
         {} unexpected {unexpected:?} (of {})",
        missing.len(),
        unexpected.len(),
        wanted.len()
    );
    // Only the request in flight at the kill may come again, under the
    // same webhook-id, which the receiver deduplicates.
    let again: Vec<(&String, &usize)> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        got.len() - first_seen.len() <= 1 && again.iter().all(|(_, n)| **n == 2),
        "redelivered beyond the one in flight at the kill ({killed_at} got then): {again:?}"
    );
    // In order per parcel, as the parcel's stream has them.
    let parcel_of: HashMap<&str, &str> = expected
        .iter()
        .map(|(id, parcel)| (id.as_str(), parcel.as_str()))
        .collect();
    let by_parcel = |ids: &mut dyn Iterator<Item = &str>| {
        let mut m: HashMap<&str, Vec<String>> = HashMap::new();
        for id in ids {
            m.entry(parcel_of[id]).or_default().push(id.to_owned());
        }
        m
    };
    assert_eq!(
        by_parcel(&mut first_seen.iter().map(String::as_str)),
        by_parcel(&mut expected.iter().map(|(id, _)| id.as_str())),
        "each parcel's outcomes in its stream's order"
    );
}

#[test]
fn a_webhook_registry_without_its_replica_is_refused_on_kafka() {
    // Refused before any broker is reached: no broker needed.
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("hooks");
    std::fs::create_dir_all(&data).expect("data dir");
    // A registry kept beside an embedded log (or a replica since removed).
    std::fs::write(data.join("webhooks.sqlite"), b"").expect("registry");
    let out = threshold(&[
        "serve",
        "--log",
        "kafka://127.0.0.1:9",
        "--services",
        "webhooks",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().expect("path"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("webhooks.sqlite") && stderr.contains("replica"),
        "{stderr}"
    );
    assert!(!data.join("replica").exists(), "nothing was opened");
}
