//! Where the Kafka log is and how a process takes part: [`KafkaOptions`]
//! and the `kafka://` address the command line gives.
//!
//! Plain values only: nothing here connects to a broker or touches the
//! replica, so options can be built and checked before anything opens.

use std::path::PathBuf;

use threshold_domain::Category;

use super::record::{Layout, OUTCOME_TOPIC};
use crate::{Error, Result};

/// Where the log is and how this process takes part.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// The replica's directory.
    pub replica: PathBuf,
    /// This process's name: its client id, its replica's consumer group and
    /// the `source` of what it writes (`/threshold/<name>`; an outcome's
    /// `ce_source`).
    pub name: String,
    /// What topic names start with: `threshold` gives `threshold.parcel`.
    pub topic_prefix: String,
    /// Partitions of a topic this process creates (an existing topic keeps
    /// its own).
    pub partitions: i32,
    /// Replication factor of a topic this process creates.
    pub replication: i32,
    /// How this process writes log records (it reads every layout).
    pub layout: Layout,
    /// How long each of this process's followers (the replica, a
    /// publisher, the credentials and vault tables) lets the broker hold a
    /// fetch that finds nothing new, in milliseconds; `None` keeps each
    /// one's own default ([`REPLICA_FETCH_WAIT_MS`], the publisher's and a
    /// table's 100 ms, the vault's 5 ms), tuned for a broker that holds
    /// every fetch for its whole wait (the test broker, tansu 0.6). A Kafka
    /// broker answers a fetch as soon as it has records, so there a longer
    /// wait delays nothing and only spaces an idle follower's requests
    /// (`deploy/README.md`, *Scaling model*). See [`FETCH_WAIT_RANGE_MS`].
    pub fetch_wait_ms: Option<u64>,
}

impl KafkaOptions {
    /// The defaults for a single-broker setup: topics of 12 partitions,
    /// replication factor 1. Production topics are created as
    /// `deploy/README.md` shows, before the services start.
    pub fn new(brokers: impl Into<String>, replica: impl Into<PathBuf>, name: &str) -> Self {
        Self {
            brokers: brokers.into(),
            replica: replica.into(),
            name: name.to_owned(),
            topic_prefix: "threshold".into(),
            partitions: 12,
            replication: 1,
            layout: Layout::default(),
            fetch_wait_ms: None,
        }
    }

    /// The fetch wait of a follower whose own default is `default_ms`, as
    /// librdkafka's `fetch.wait.max.ms` takes it.
    pub fn fetch_wait(&self, default_ms: u64) -> String {
        self.fetch_wait_ms.unwrap_or(default_ms).to_string()
    }

    /// Refuses a setting no client could use, before anything connects.
    pub fn check(&self) -> Result<()> {
        match self.fetch_wait_ms {
            Some(ms) if !FETCH_WAIT_RANGE_MS.contains(&ms) => Err(Error::Invalid {
                field: "fetch wait",
                reason: format!(
                    "{ms} ms is outside {}..={} ms",
                    FETCH_WAIT_RANGE_MS.start(),
                    FETCH_WAIT_RANGE_MS.end()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The topic of a category.
    pub fn topic(&self, category: Category) -> String {
        format!("{}.{}", self.topic_prefix, category.as_str())
    }

    /// What the names of partners' outcome topics start with.
    pub fn outcome_topic(&self) -> String {
        match self.topic_prefix.as_str() {
            "threshold" => OUTCOME_TOPIC.to_owned(),
            prefix => format!("{prefix}.outcome"),
        }
    }

    /// The topic `partner` reads its outcomes from, and no other partner
    /// does: `threshold.outcome.<partner>`. Kafka's permissions are per
    /// topic, so a partner's client may be let read its own topic only.
    /// `_`, `:` and `.` in a partner id are written `_5f`, `_3a` and
    /// `_2e`: `:` is not allowed in a topic name, and Kafka refuses a topic
    /// whose name equals another's once `.` is read as `_`, so no two
    /// partners' topics may differ only there.
    pub fn outcome_topic_of(&self, partner: &str) -> String {
        let mut topic = self.outcome_topic();
        topic.push('.');
        for c in partner.chars() {
            match c {
                '_' => topic.push_str("_5f"),
                ':' => topic.push_str("_3a"),
                '.' => topic.push_str("_2e"),
                c => topic.push(c),
            }
        }
        topic
    }
}

/// The brokers of a `kafka://host:port[,host:port…]` address.
pub fn brokers_from_url(url: &str) -> Result<String> {
    let bad = |reason: String| Error::Invalid {
        field: "--log",
        reason,
    };
    let rest = url
        .strip_prefix("kafka://")
        .ok_or_else(|| bad(format!("{url:?} does not start with kafka://")))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(bad(format!("{url:?} names no broker")));
    }
    for broker in rest.split(',') {
        let (host, port) = broker
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("broker {broker:?} in {url:?} has no :port")))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad(format!(
                "broker {broker:?} in {url:?} is not host:port"
            )));
        }
    }
    Ok(rest.to_owned())
}

/// The longest a client waits before reconnecting to a broker it lost, in
/// milliseconds (librdkafka's default is 10 s): a restarted broker is used
/// again within about a second.
pub(super) const RECONNECT_BACKOFF_MAX_MS: &str = "1000";

/// How long the log's producer gathers records into one request per
/// partition before sending them, in milliseconds. Each append is one
/// record, spread over every partition, so at 1 ms nearly every record went
/// as a batch of its own; every batch costs the broker and both clients.
/// At the maximum on the test broker (64 streams, window 16; `deploy/
/// README.md`), 5 ms with [`REPLICA_FETCH_WAIT_MS`] at 100 took the broker
/// from ~58 to ~33 µs of CPU per event and the rate up by a fifth; the
/// p99 at 2,000 appends/s did not grow.
pub const LINGER_MS: &str = "5";

/// How long the replica's fetch waits at the broker for records, in
/// milliseconds. Kafka answers a fetch as soon as it has records, so this
/// only spaces an idle replica's fetches. A lone writer's records are
/// taken from their acknowledgements and do not wait for it; a record
/// behind another process's, and a read that waits for the replica, wait
/// for the fetch. The test broker (tansu 0.6) waits the whole of it every
/// time, and lists every batch a partition holds on each fetch: there it is
/// how late another process's records reach the replica (up to 100 ms),
/// and fewer fetches cost it less.
pub const REPLICA_FETCH_WAIT_MS: u64 = 100;

/// The fetch waits [`KafkaOptions::fetch_wait_ms`] may set, in
/// milliseconds: at least 1 (librdkafka's floor), at most 10 s, well under
/// its request timeout (`socket.timeout.ms`, 60 s), so that a held fetch is
/// never mistaken for a lost broker.
pub const FETCH_WAIT_RANGE_MS: std::ops::RangeInclusive<u64> = 1..=10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_partner_has_an_outcome_topic_of_its_own_whatever_its_id() {
        let mut options = KafkaOptions::new("b:9092", "r", "n");
        assert_eq!(
            options.outcome_topic_of("nordshop"),
            "threshold.outcome.nordshop"
        );
        // `:` is not allowed in a topic name, and Kafka takes `.` and `_`
        // for one another when it looks for a clash: escaped, no two ids
        // meet, not even so.
        let ids = [
            "a:b", "a_b", "a_3ab", "a_5fb", "a.b", "a-b", "ab", "x:y", "x.3ay", "a.5fb", "a_2eb",
        ];
        let topics: std::collections::BTreeSet<_> = ids
            .iter()
            .map(|id| options.outcome_topic_of(id).replace('.', "_"))
            .collect();
        assert_eq!(topics.len(), ids.len(), "{topics:?}");
        assert_eq!(options.outcome_topic_of("a:b"), "threshold.outcome.a_3ab");
        assert_eq!(
            options.outcome_topic_of("a_3ab"),
            "threshold.outcome.a_5f3ab"
        );
        for t in &topics {
            assert!(
                t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                "{t}"
            );
        }
        assert_eq!(options.outcome_topic_of("a.b"), "threshold.outcome.a_2eb");
        // The longest partner id still makes a topic Kafka takes (249).
        let longest = ":".repeat(threshold_domain::ids::MAX_ID_LEN);
        options.topic_prefix = "a-deployments-own-prefix".into();
        assert!(options.outcome_topic_of(&longest).len() <= 249);
        assert!(
            options
                .outcome_topic_of("nordshop")
                .starts_with("a-deployments-own-prefix.outcome.")
        );
    }
}
