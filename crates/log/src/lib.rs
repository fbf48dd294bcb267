//! The event log: the only way anything in Threshold is written.
//!
//! # Layout
//!
//! - [`EventLog`]: the one trait. Append (idempotent by `event_id`, with an
//!   optional expected stream version), read a stream, read everything after
//!   a position, subscribe (catch-up, then live).
//! - [`event`]: what goes in ([`NewEvent`]) and what comes out
//!   ([`RecordedEvent`]), with the envelope conversion.
//! - [`embedded`]: the default backend, SQLite in WAL mode under `--data DIR`
//!   with one writer thread and group commit.
//! - [`subscription`]: the [`Subscription`] every backend hands out.
//! - [`audit`]: the hash chain of a home's events; [`decide`](mod@decide):
//!   a command decided on a stream's history and appended with its expected
//!   version, the one way every service writes an aggregate's stream (with
//!   a cache hook for a caller that keeps states between decisions).
//! - `kafka` (cargo feature `kafka`, which links librdkafka): the backend
//!   for a carrier that outgrows one machine: the log in Kafka topics, read
//!   through a local replica in each process; `kafka::record` is the record
//!   layout (topic, key, partition, the `LogAppend` value) it writes. A crate
//!   that only reads the log leaves the feature off.
//!
//! Every backend passes the same contract suite (`src/contract.rs`), which
//! spells out guarantees 1–5 of the architecture: nothing acknowledged is
//! lost, an `event_id` is stored once, streams read back in order with
//! gap-free versions, a stale expected version writes nothing, and
//! subscriptions neither skip nor repeat.

pub mod audit;
pub mod decide;
pub mod embedded;
pub mod error;
pub mod event;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metered;
pub mod subscription;

#[cfg(test)]
mod contract;

use async_trait::async_trait;
use threshold_domain::StreamId;

pub use decide::{
    Cache, DecideError, Decided, Decision, Known, decide, decide_chained, load, recorded,
};
pub use embedded::{EmbeddedLog, EmbeddedOptions};
pub use error::{Error, Result};
pub use event::{Ack, AppendOutcome, ExpectedVersion, NewEvent, Position, RecordedEvent};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaLog, KafkaOptions};
pub use metered::Metered;
pub use subscription::Subscription;

/// The event log. Cheap to share (`Arc<dyn EventLog>`); every method may be
/// called from many tasks at once.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends `events` to `stream`, in order, and returns once they are
    /// durable.
    ///
    /// An event whose `event_id` is already stored (in this stream) is not
    /// stored again: its [`Ack`] says `Duplicate` and carries the original
    /// position. If every event of the call is a duplicate, `expected` is not
    /// checked, so a resend after a lost acknowledgement succeeds. Otherwise a
    /// stream at another version than `expected` fails the call with
    /// [`Error::Conflict`] and nothing of it is written.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome>;

    /// Up to `max` events of `stream` with a version greater than
    /// `after_version`, in version order.
    async fn read_stream(
        &self,
        stream: &StreamId,
        after_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// [`EventLog::read_stream`] for a caller that decides on what it reads
    /// and appends with the expected version: it may lack the events other
    /// processes appended in the last moments, never one this process had
    /// acknowledged. On Kafka it reads the process's replica without first
    /// asking the broker where the partition ends (a round trip); a log of
    /// one process gives what `read_stream` gives.
    ///
    /// What it lacks makes the caller's append conflict, and the caller
    /// decides again on `read_stream`; a caller about to refuse on it reads
    /// again with `read_stream` first ([`Decision::recent`]).
    async fn read_stream_recent(
        &self,
        stream: &StreamId,
        after_version: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.read_stream(stream, after_version, max).await
    }

    /// Up to `max` events of the whole log with a position greater than
    /// `after`, in position order.
    async fn read_all(&self, after: Position, max: usize) -> Result<Vec<RecordedEvent>>;

    /// The position of the last durable event (`Position::ORIGIN` when empty).
    async fn head(&self) -> Result<Position>;

    /// [`EventLog::head`] for a caller that only measures with it, such as a
    /// read model's lag: the head of what this process holds now. On Kafka
    /// it is the replica's, without asking the broker where every partition
    /// ends and waiting for the replica to get there (a round trip and up
    /// to a fetch's wait); a log of one process gives what `head` gives.
    async fn head_recent(&self) -> Result<Position> {
        self.head().await
    }

    /// Every event after `after`: first those already stored, then each new
    /// one as it becomes durable; in position order, none skipped, none twice.
    /// Resume by subscribing again after the last position seen.
    fn subscribe(&self, after: Position) -> Subscription;
}
