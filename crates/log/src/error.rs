//! The log's one error type. Every variant says what failed and where, so
//! an operator can act on the message alone.

use std::path::PathBuf;

use threshold_domain::{DomainError, EventId, StreamId};

/// What can go wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream is not at the version the caller expected. Nothing was written.
    #[error(
        "conflict on {stream}: expected version {expected}, the stream is at {actual}; nothing was written"
    )]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// What the caller expected.
        expected: u64,
        /// Where the stream is.
        actual: u64,
    },
    /// An `event_id` already stored in another stream was sent for this one.
    #[error(
        "event id {event_id} is already stored in {stored_in}, not in {stream}; nothing was written"
    )]
    EventIdReused {
        /// The id.
        event_id: EventId,
        /// Where it is stored.
        stored_in: String,
        /// Where it was sent.
        stream: StreamId,
    },
    /// The disk is full. Nothing of the failed appends was stored or acknowledged.
    #[error("disk full writing {path}: nothing of this append was stored; free space and retry")]
    DiskFull {
        /// The file that could not grow.
        path: PathBuf,
    },
    /// A data file is damaged. The store refuses to guess.
    #[error("data file {path} is damaged: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The data directory is in use by another process.
    #[error("data directory {path} is in use by another process")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The storage engine failed.
    #[error("storage error on {path}: {source}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file could not be read or written.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The input is malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Kafka refused or could not be reached. Nothing of the failed append
    /// was acknowledged.
    #[error("kafka: {operation} failed: {detail}")]
    Kafka {
        /// What was being done.
        operation: &'static str,
        /// What the client said.
        detail: String,
    },
    /// A stored event could not be decoded.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The log was closed.
    #[error("the event log is closed")]
    Closed,
}

/// `Result` with the log's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
