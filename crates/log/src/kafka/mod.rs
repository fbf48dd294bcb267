//! The Kafka backend: the log kept in Kafka, read through a local replica.
//!
//! # How it works
//!
//! - **Kafka holds the log.** One topic per category
//!   (`threshold.parcel`, …; the layout is [`record`]), the
//!   stream id as key, an append's events as one record, one protobuf
//!   value (`threshold.v1.LogAppend`). The producer is
//!   idempotent with `acks=all`; an append answers only after Kafka
//!   acknowledged every record of it.
//! - **Each process keeps a replica.** A consumer reads every partition of
//!   the category topics into an [`EmbeddedLog`] under the process's data
//!   directory, and commits its offsets (in the group
//!   `<prefix>.replica.<name>`) only once what it read is durable there. An
//!   event already in the replica (same `event_id`) is not stored twice, so
//!   a record Kafka delivers again changes nothing. Reads, subscriptions and
//!   the head are the replica's.
//! - **Reads are up to date.** `read_stream` first waits for the replica to
//!   hold what Kafka held in the stream's partition when called, and `head`
//!   the same for every partition, so a read sees every append acknowledged
//!   before it, in any process. `read_all` and `subscribe` follow the
//!   replica as it goes, and so does `read_stream_recent`, a decision's
//!   first read: it holds every append this process acknowledged, may lack
//!   other processes' latest (milliseconds on Kafka; on the test broker,
//!   which answers a fetch only when its wait is over, up to 100 ms), and
//!   costs no round trip to the
//!   broker; what it lacks makes the decision's append conflict
//!   ([`crate::Decision::recent`]).
//! - **Positions are the process's own.** The replica numbers events in the
//!   order it stored them; two processes may number the same events
//!   differently. Stream versions and event ids are the same everywhere:
//!   they travel in the record (`stream_version`, `event_id`).
//! - **A record is a conditional append.** Each of its events carries its
//!   stream version and the id of the event it follows (`after_id`): the
//!   first the stream's head when decided, each next the one before it.
//!   Every replica takes a partition's records in Kafka's order, their
//!   events in order, by one rule: an event goes in when it is the
//!   stream's next version and follows the stream's last event; otherwise
//!   another writer's record came first, and it is left out, and so are
//!   the record's events after it. Kafka's order of the partition is the only arbiter, so every
//!   process's replica holds the same events at the same versions.
//! - **An append is answered once the replica took it.** Under a turn of its
//!   stream (streams share turns by hash), the replica says what the append would do
//!   ([`EmbeddedLog::plan`]: stream version, last event, ids stored
//!   already), with this process's appends still on their way back counted
//!   as the stream's head, and the new events are sent, so records leave in
//!   the order decided and appends pipeline. Once Kafka acknowledged them
//!   (the turn is not held meanwhile), the append waits for the replica to
//!   take them and answers by what it told of them
//!   ([`EmbeddedLog::replicate`], a batch at a time): stored (the caller then reads
//!   its own write), or a [`Error::Conflict`] when another process's record
//!   came first. The replica takes them at once from the acknowledgement
//!   when every offset before them in the partition is in it or is another
//!   of this process's acknowledged records (nothing unknown lies between),
//!   and otherwise once its consumer read them back; by the same rule in
//!   the same order of offsets either way. Two processes deciding on one grant at once therefore
//!   never both succeed; an append without an expected version tries again.
//!
//! # What Kafka does not give
//!
//! No Kafka transactions are used. An append is one record: a replica
//! takes its events (bar those it holds already, a resend's) or, where
//! another writer's record came first, none of them. An append whose events
//! weigh more than [`APPEND_RECORD_BYTES`](record::APPEND_RECORD_BYTES) is
//! several records and is not atomic: a producer failure part-way can leave
//! a prefix of them in Kafka, and another writer's record can come between
//! them. The caller then gets an error that says so (not a conflict, which
//! means nothing was written), and a resend with the same event ids and no
//! expected version stores the rest (the prefix is recognised by id), after
//! the other writer's events. A record that lost its race stays in the
//! topic: a reader of the topics applies the rule above, or reads a
//! replica.
//!
//! # Layout
//!
//! Each part has one reason to change:
//!
//! - `options`: [`KafkaOptions`] and [`brokers_from_url`]; plain values.
//! - `admin`: creating the topics and counting their partitions.
//! - `log`: [`KafkaLog`] itself: what a process holds, opening, and the
//!   [`EventLog`] it is.
//! - `append`: how an append is decided, sent and answered.
//! - `replica`: the consumer that keeps the local replica, and the waits
//!   for it to hold what Kafka held.
//! - `publish`: derived records (partners' outcomes) published from a
//!   consumer group, and [`read_published`] as a partner reads them.
//! - `stages`: where appends' and reads' time goes, per stage.
//! - `table`: [`KafkaTable`], a compacted topic held whole in memory, for
//!   small state every process shares (credentials).
//! - [`record`]: the record layout (topic, key, partition, the
//!   `LogAppend` value; partners' outcomes in CloudEvents).
//!
//! This module only names its parts; it holds no logic of its own.
//!
//! [`EmbeddedLog`]: crate::EmbeddedLog
//! [`EmbeddedLog::plan`]: crate::EmbeddedLog::plan
//! [`EmbeddedLog::replicate`]: crate::EmbeddedLog::replicate
//! [`Error::Conflict`]: crate::Error::Conflict
//! [`EventLog`]: crate::EventLog

mod admin;
mod append;
mod fetches;
mod log;
mod options;
mod publish;
pub mod record;
mod replica;
mod stages;
mod table;
#[cfg(test)]
mod tests;

pub use log::KafkaLog;
pub use options::{
    FETCH_WAIT_RANGE_MS, KafkaOptions, LINGER_MS, REPLICA_FETCH_WAIT_MS, brokers_from_url,
};
pub use publish::{Derived, Published, read_published};
pub use record::Layout;
pub use stages::{Stage, StageTiming};
pub use table::{FETCH_WAIT_MS, KafkaTable, Stored, TableState};
