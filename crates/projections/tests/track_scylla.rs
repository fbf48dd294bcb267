//! The track store's contract on a ScyllaDB (or Cassandra) cluster.
//!
//! Runs where `THRESHOLD_TEST_SCYLLA` names one (`HOST:PORT[,HOST:PORT…]`):
//! it makes a keyspace of its own (replication factor 1), applies
//! `deploy/scylla/schema.cql` to it, runs the suite the SQLite store runs,
//! and drops the keyspace. Elsewhere it says it did not run and passes: no
//! ScyllaDB or Cassandra server can be installed on the machines this
//! project's CI runs on.
#![cfg(feature = "scylla")]

use threshold_projections::track::{
    ScyllaTarget, ScyllaTrackStore, TrackStore as _, contract, schema_statements,
};

#[test]
fn a_target_names_hosts_and_a_keyspace() {
    let t: ScyllaTarget = "scylla://10.0.0.1:9042,10.0.0.2:9042/threshold"
        .parse()
        .unwrap();
    assert_eq!(t.nodes, vec!["10.0.0.1:9042", "10.0.0.2:9042"]);
    assert_eq!(t.keyspace, "threshold");
    for (bad, says) in [
        ("cassandra://h:9042/ks", "scylla://"),
        ("scylla://h:9042", "no keyspace"),
        ("scylla:///ks", "no host"),
        ("scylla://h:9042/ks;DROP", "keyspace"),
        ("scylla://h:9042/", "keyspace"),
        ("scylla://h:9042/_ks", "keyspace"),
    ] {
        let err = bad.parse::<ScyllaTarget>().unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
        assert!(
            err.contains(bad),
            "{bad}: the error does not name it: {err}"
        );
    }
}

#[test]
fn the_schema_is_every_table_in_the_keyspace_asked_for() {
    let statements = schema_statements(
        "t_1",
        "{'class': 'SimpleStrategy', 'replication_factor': 1}",
    );
    assert_eq!(statements.len(), 5, "{statements:#?}");
    assert_eq!(
        statements[0],
        "CREATE KEYSPACE IF NOT EXISTS t_1 WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    );
    for (s, table) in statements[1..].iter().zip([
        "track_events",
        "track_parcels",
        "track_days",
        "track_checkpoints",
    ]) {
        assert!(
            s.starts_with(&format!("CREATE TABLE IF NOT EXISTS t_1.{table} (")),
            "{s}"
        );
        assert!(!s.contains("threshold."), "{s}");
        assert!(!s.contains("--"), "a comment is left in {s}");
    }
    // No counters, and the day table is bucketed.
    assert!(statements.iter().all(|s| !s.contains("counter")));
    assert!(statements[3].contains("PRIMARY KEY ((country, depot, day, bucket), parcel_id)"));
}

#[tokio::test]
async fn a_cluster_keeps_the_contract() {
    let Ok(nodes) = std::env::var("THRESHOLD_TEST_SCYLLA") else {
        eprintln!(
            "a_cluster_keeps_the_contract did not run: THRESHOLD_TEST_SCYLLA names no cluster \
             (HOST:PORT[,HOST:PORT…])"
        );
        return;
    };
    let keyspace = format!("threshold_test_{}", std::process::id());
    let target: ScyllaTarget = format!("scylla://{nodes}/{keyspace}")
        .parse()
        .expect("THRESHOLD_TEST_SCYLLA is HOST:PORT[,HOST:PORT…]");
    let store = ScyllaTrackStore::create_schema(
        &target,
        "{'class': 'SimpleStrategy', 'replication_factor': 1}",
    )
    .await
    .expect("the cluster takes the schema");
    contract::run(&store, "scylla").await;
    // A second connection sees what the first wrote.
    let again = ScyllaTrackStore::connect(&target).await.expect("connect");
    assert!(
        again
            .summary("scylla-SE-1")
            .await
            .expect("summary")
            .is_some()
    );
    store
        .drop_keyspace(&keyspace)
        .await
        .expect("drop the test keyspace");
}
