//! The topics: creating those missing when a process opens the log, and
//! reading how many partitions each has.
//!
//! Topic administration only: nothing here produces or consumes a record,
//! and an existing topic is never changed (it keeps its own partitions).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;

use super::KafkaOptions;
use super::log::kafka;
use crate::Result;

/// How long a metadata or watermark request may take.
pub(super) const BROKER_TIMEOUT: Duration = Duration::from_secs(15);

/// Creates those of `topics` that do not exist yet, with the options'
/// partitions and replication factor.
pub(super) async fn create_topics(options: &KafkaOptions, topics: &[String]) -> Result<()> {
    create_topics_of(options, topics, options.partitions).await
}

/// Of `topics`, those the cluster does not have, as `client`'s metadata
/// says.
pub(super) async fn missing_topics<C: rdkafka::ClientContext + 'static>(
    client: &rdkafka::producer::FutureProducer<C>,
    topics: &[String],
) -> Result<Vec<String>> {
    let client = client.clone();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut missing = Vec::new();
        for topic in topics {
            let metadata = rdkafka::producer::Producer::client(&client)
                .fetch_metadata(Some(&topic), BROKER_TIMEOUT)
                .map_err(|e| kafka("reading topic metadata", e))?;
            let there = metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
            if !there {
                missing.push(topic);
            }
        }
        Ok(missing)
    })
    .await
    .map_err(|e| kafka("reading topic metadata", e))?
}

/// [`create_topics`], each of `partitions` partitions.
pub(super) async fn create_topics_of(
    options: &KafkaOptions,
    topics: &[String],
    partitions: i32,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .set("client.id", &options.name)
        .create()
        .map_err(|e| kafka("creating the admin client", e))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(options.replication)))
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().request_timeout(Some(BROKER_TIMEOUT)),
        )
        .await
        .map_err(|e| kafka("creating topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(kafka("creating topics", format!("{topic}: {code}")));
            }
        }
    }
    Ok(())
}

/// Partitions of each topic, waiting for topics just created to appear.
pub(super) fn partition_counts<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topics: &[String],
) -> Result<Vec<i32>> {
    let deadline = std::time::Instant::now() + BROKER_TIMEOUT;
    topics
        .iter()
        .map(|topic| {
            loop {
                let metadata = consumer
                    .fetch_metadata(Some(topic), BROKER_TIMEOUT)
                    .map_err(|e| kafka("reading topic metadata", e))?;
                let n = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map_or(0, |t| t.partitions().len() as i32);
                if n > 0 {
                    return Ok(n);
                }
                if std::time::Instant::now() > deadline {
                    return Err(kafka(
                        "reading topic metadata",
                        format!("topic {topic} has no partitions"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .collect()
}
