//! The gRPC error contract: which status code every error of Threshold
//! answers with, decided here and nowhere else. Each error type says its
//! code per variant ([`ServiceError::code`]); a service turns any of them
//! into a [`Status`] with [`IntoStatus::into_status`] and never picks a code
//! for a library's error itself. A service's own error enum implements
//! [`ServiceError`] by delegating to the errors it wraps.
//!
//! This crate holds no I/O and no business rule: it only names codes.
//!
//! # The contract
//!
//! | Code | When | Can a retry help? |
//! |---|---|---|
//! | `INVALID_ARGUMENT` | A request is malformed: a missing or ill-formed field ([`field`]), a domain [`DomainError::Invalid`] or undecodable input, an event id already used in another stream, a manifest whose header cannot be read, a credential that cannot be made. | No: fix the request. |
//! | `NOT_FOUND` | What the request names does not exist ([`DomainError::NotFound`]; a grant, a home's lock, a depot with no parcels). | No, not until it is created. |
//! | `ALREADY_EXISTS` | It exists already with different content ([`DomainError::AlreadyExists`]). | No. |
//! | `FAILED_PRECONDITION` | The command does not apply in the aggregate's current state ([`DomainError::InvalidState`]), a plan breaks its problem, a clock header on the wrong server, new personal data of a subject erased at its request ([`PrivacyError::Forgotten`]). | Not as is: only once the state has changed. |
//! | `ABORTED` | Another writer changed the stream in between: an append's expected version did not hold ([`LogError::Conflict`]), or a decision kept losing the race ([`DecideError::Contended`]). | Yes, at once. |
//! | `RESOURCE_EXHAUSTED` | The disk is full ([`LogError::DiskFull`], an I/O `StorageFull`); a stream sends faster than its limits; a message over the size limit; a manifest load over the limit of loads at once. | Yes, after space is freed or more slowly. |
//! | `UNAVAILABLE` | The log is closed, Kafka cannot be reached ([`LogError::Kafka`]), the data directory is held by another process, a connection broke. | Yes, with backoff. |
//! | `DEADLINE_EXCEEDED` | A projection has not caught up with the log in time ([`behind`]); a manifest stream that sent nothing for its idle timeout. | Yes. |
//! | `CANCELLED` | The client's own stream broke off. | Yes: resend. |
//! | `DATA_LOSS` | Stored data is damaged: a corrupt data file ([`LogError::Corrupt`]), a seal that does not authenticate ([`PrivacyError::Tampered`]), a home's audit chain that does not hold. | No: an operator must look. |
//! | `INTERNAL` | The server failed in a way the caller cannot act on: the storage engine, a file's I/O, a stored event this build cannot decode, the vault's store, a credentials file. | Perhaps; report it. |
//! | `UNAUTHENTICATED` | No or an unknown bearer token (answered by [`threshold_auth::require`] and the auth layer). | No: authenticate. |
//! | `PERMISSION_DENIED` | The caller's role or tenant may not do this ([`threshold_auth::require`], `Principal::check_tenant`), a device report with a bad signature, a binding the domain refuses ([`DomainError::Forbidden`]: a grant for a home or parcel not the resident's, a claim code that does not match). | No. |
//!
//! A malformed request always answers `INVALID_ARGUMENT`, never `INTERNAL`
//! (one that does not even decode too: `threshold_api::codec`).
//!
//! # What a reply says
//!
//! A reply says what failed, never where: no file path, no storage
//! engine's words ([`ServiceError::reply`]). What a reply leaves out goes
//! to the server's log, for the operator.

use std::fmt::Display;

use threshold_domain::DomainError;
use threshold_log::{DecideError, Error as LogError};
use threshold_privacy::Error as PrivacyError;
use tonic::{Code, Status};

/// An error that knows which gRPC status code it answers with.
pub trait ServiceError: std::error::Error {
    /// The code, per variant: the contract's table.
    fn code(&self) -> Code;

    /// What the caller is told: the message, unless it names the server's
    /// files or quotes its storage engine; then what failed, without them.
    /// An error wrapping others delegates to theirs.
    fn reply(&self) -> String {
        self.to_string()
    }
}

/// Turns an error into the [`Status`] the contract gives it: its code and
/// its message.
pub trait IntoStatus {
    /// The status a caller is answered with.
    fn into_status(self) -> Status;
}

impl<E: ServiceError> IntoStatus for E {
    fn into_status(self) -> Status {
        let code = self.code();
        let reply = self.reply();
        let full = self.to_string();
        if reply != full {
            // The detail the caller is not told (a path, SQLite's message).
            tracing::warn!(?code, error = %full, "answered: {reply}");
        }
        Status::new(code, reply)
    }
}

/// [`IntoStatus::into_status`] as a function, for `map_err(status)`.
pub fn status(e: impl ServiceError) -> Status {
    e.into_status()
}

/// The one country an analyst's credential is scoped to: `None` for any
/// other role and for an analyst of every country (`*`);
/// `PERMISSION_DENIED` for an analyst whose tenant is no country. Every
/// service that answers analysts narrows to it.
pub fn analysts_country(
    caller: &threshold_auth::Principal,
) -> Result<Option<threshold_domain::Country>, Status> {
    if caller.role != threshold_auth::Role::Analyst || caller.tenant == threshold_auth::ANY_TENANT {
        return Ok(None);
    }
    caller.tenant.parse().map(Some).map_err(|e| {
        Status::permission_denied(format!(
            "analyst {:?} acts for {:?}, which is not a country: {e}",
            caller.name, caller.tenant
        ))
    })
}

/// A request's field `name` is missing or malformed: `INVALID_ARGUMENT`,
/// the field named first.
pub fn field(name: &str, e: impl Display) -> Status {
    Status::invalid_argument(format!("{name}: {e}"))
}

/// A projection is behind the log: `DEADLINE_EXCEEDED`, retry.
pub fn behind(detail: impl Display) -> Status {
    Status::deadline_exceeded(detail.to_string())
}

/// Stored data this build reads but does not accept (an id that does not
/// parse, say): `INTERNAL`, as the caller can do nothing about it.
pub fn stored(e: impl Display) -> Status {
    Status::internal(e.to_string())
}

/// Whether retrying a call that failed with `code` can help, as the
/// contract's table says.
pub fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Aborted
            | Code::ResourceExhausted
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Internal
    )
}

impl ServiceError for DomainError {
    fn code(&self) -> Code {
        match self {
            DomainError::Invalid { .. } | DomainError::Decode { .. } => Code::InvalidArgument,
            DomainError::NotFound(_) => Code::NotFound,
            DomainError::AlreadyExists(_) => Code::AlreadyExists,
            DomainError::InvalidState { .. } => Code::FailedPrecondition,
            DomainError::Forbidden { .. } => Code::PermissionDenied,
        }
    }
}

impl ServiceError for LogError {
    fn code(&self) -> Code {
        match self {
            LogError::Conflict { .. } => Code::Aborted,
            LogError::EventIdReused { .. } | LogError::Invalid { .. } => Code::InvalidArgument,
            LogError::DiskFull { .. } => Code::ResourceExhausted,
            LogError::Corrupt { .. } => Code::DataLoss,
            LogError::Locked { .. } | LogError::Kafka { .. } | LogError::Closed => {
                Code::Unavailable
            }
            LogError::Io { source, .. } => source.code(),
            // A stored event this build cannot decode: not the caller's doing.
            LogError::Storage { .. } | LogError::Domain(_) => Code::Internal,
        }
    }

    fn reply(&self) -> String {
        match self {
            LogError::DiskFull { .. } => {
                "the log's disk is full: nothing of this append was stored; free space and retry"
                    .into()
            }
            LogError::Corrupt { .. } => {
                "a data file of the log is damaged; the server's log names it".into()
            }
            LogError::Locked { .. } => "the data directory is in use by another process".into(),
            LogError::Storage { .. } => {
                "the log's storage failed; the server's log says why".into()
            }
            LogError::Io { source, .. } => format!("i/o error in the log: {}", source.kind()),
            // Where the id is stored may be another caller's stream: unnamed.
            LogError::EventIdReused {
                event_id, stream, ..
            } => format!(
                "event id {event_id} is already stored for another stream, not {stream}; \
                 nothing was written: send the event under a new id"
            ),
            LogError::Domain(e) => e.reply(),
            _ => self.to_string(),
        }
    }
}

impl ServiceError for DecideError {
    fn code(&self) -> Code {
        match self {
            DecideError::Refused(e) => e.code(),
            DecideError::Log(e) => e.code(),
            DecideError::Contended(_) => Code::Aborted,
        }
    }

    fn reply(&self) -> String {
        match self {
            DecideError::Refused(e) => e.reply(),
            DecideError::Log(e) => e.reply(),
            DecideError::Contended(_) => self.to_string(),
        }
    }
}

impl ServiceError for PrivacyError {
    fn code(&self) -> Code {
        match self {
            PrivacyError::Store { .. } => Code::Internal,
            PrivacyError::Shared { .. } => Code::Unavailable,
            PrivacyError::Forgotten { .. } => Code::FailedPrecondition,
            PrivacyError::Tampered { .. } => Code::DataLoss,
        }
    }

    fn reply(&self) -> String {
        match self {
            PrivacyError::Store { .. } => {
                "the personal-data vault failed; the server's log says why".into()
            }
            PrivacyError::Shared { .. } => {
                "the personal-data vault's store could not be used; the server's log says why"
                    .into()
            }
            _ => self.to_string(),
        }
    }
}

impl ServiceError for threshold_auth::Error {
    fn code(&self) -> Code {
        match self {
            threshold_auth::Error::Io { .. } | threshold_auth::Error::Malformed { .. } => {
                Code::Internal
            }
            threshold_auth::Error::Invalid(_) => Code::InvalidArgument,
            threshold_auth::Error::Store(_) => Code::Unavailable,
        }
    }

    fn reply(&self) -> String {
        match self {
            threshold_auth::Error::Io { source, .. } => {
                format!("the credentials could not be read: {}", source.kind())
            }
            threshold_auth::Error::Malformed { .. } => {
                "the credentials file is not what this build writes; the server's log says why"
                    .into()
            }
            threshold_auth::Error::Invalid(_) => self.to_string(),
            threshold_auth::Error::Store(_) => {
                "the credentials store could not be reached; the server's log says why".into()
            }
        }
    }
}

impl ServiceError for threshold_manifest::Error {
    fn code(&self) -> Code {
        // The file as sent cannot be read: its header, or its bytes.
        Code::InvalidArgument
    }
}

impl ServiceError for std::io::Error {
    fn code(&self) -> Code {
        use std::io::ErrorKind as K;
        match self.kind() {
            K::StorageFull => Code::ResourceExhausted,
            K::TimedOut
            | K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe => Code::Unavailable,
            _ => Code::Internal,
        }
    }
    // `reply` is the message: an OS error's names no path (std adds
    // none), and one made by hand says what its maker chose to say.
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use threshold_domain::{EventId, StreamId};

    use super::*;

    fn stream() -> StreamId {
        "parcel/SE-1".parse().expect("a stream id")
    }

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::new(kind, "test")
    }

    fn log_io(kind: std::io::ErrorKind) -> LogError {
        LogError::Io {
            path: PathBuf::from("log.db"),
            source: io(kind),
        }
    }

    fn domain() -> Vec<(DomainError, Code)> {
        vec![
            (
                DomainError::Invalid {
                    field: "parcel_id",
                    reason: "is empty".into(),
                },
                Code::InvalidArgument,
            ),
            (
                DomainError::Decode {
                    event_type: "parcel.delivered".into(),
                    schema_version: 1,
                    reason: "bad bytes".into(),
                },
                Code::InvalidArgument,
            ),
            (DomainError::NotFound("grant/g-1".into()), Code::NotFound),
            (
                DomainError::AlreadyExists("parcel/SE-1".into()),
                Code::AlreadyExists,
            ),
            (
                DomainError::InvalidState {
                    subject: "parcel/SE-1".into(),
                    action: "start an attempt",
                    state: "delivered".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                DomainError::Forbidden {
                    field: "home_id".into(),
                    reason: "is not a home you claimed".into(),
                },
                Code::PermissionDenied,
            ),
        ]
    }

    fn log() -> Vec<(LogError, Code)> {
        vec![
            (
                LogError::Conflict {
                    stream: stream(),
                    expected: 1,
                    actual: 2,
                },
                Code::Aborted,
            ),
            (
                LogError::EventIdReused {
                    event_id: EventId::new(),
                    stored_in: "parcel/SE-2".into(),
                    stream: stream(),
                },
                Code::InvalidArgument,
            ),
            (
                LogError::DiskFull {
                    path: PathBuf::from("log.db"),
                },
                Code::ResourceExhausted,
            ),
            (
                LogError::Corrupt {
                    path: PathBuf::from("log.db"),
                    detail: "bad page".into(),
                },
                Code::DataLoss,
            ),
            (
                LogError::Locked {
                    path: PathBuf::from("data"),
                },
                Code::Unavailable,
            ),
            (
                LogError::Storage {
                    path: PathBuf::from("log.db"),
                    source: rusqlite::Error::InvalidQuery,
                },
                Code::Internal,
            ),
            (log_io(std::io::ErrorKind::PermissionDenied), Code::Internal),
            (
                log_io(std::io::ErrorKind::StorageFull),
                Code::ResourceExhausted,
            ),
            (
                LogError::Invalid {
                    field: "payload",
                    reason: "too large".into(),
                },
                Code::InvalidArgument,
            ),
            (
                LogError::Kafka {
                    operation: "produce",
                    detail: "broker down".into(),
                },
                Code::Unavailable,
            ),
            (
                LogError::Domain(DomainError::Decode {
                    event_type: "parcel.delivered".into(),
                    schema_version: 9,
                    reason: "unknown schema".into(),
                }),
                Code::Internal,
            ),
            (LogError::Closed, Code::Unavailable),
        ]
    }

    /// Every variant of every error, with the code the contract gives it.
    fn table() -> Vec<(Status, Code)> {
        let mut t: Vec<(Status, Code)> = Vec::new();
        for (e, c) in domain() {
            t.push((e.clone().into_status(), c));
            t.push((DecideError::Refused(e).into_status(), c));
        }
        for (e, c) in log() {
            t.push((e.into_status(), c));
        }
        for (e, c) in log() {
            t.push((DecideError::Log(e).into_status(), c));
        }
        t.push((
            DecideError::Contended(stream()).into_status(),
            Code::Aborted,
        ));
        t.push((
            PrivacyError::Store {
                path: PathBuf::from("vault.db"),
                source: rusqlite::Error::InvalidQuery,
            }
            .into_status(),
            Code::Internal,
        ));
        t.push((
            PrivacyError::Shared {
                store: "Kafka topic threshold.vault".into(),
                reason: "unreachable".into(),
            }
            .into_status(),
            Code::Unavailable,
        ));
        t.push((
            PrivacyError::Forgotten {
                subject: "resident:r-1".into(),
            }
            .into_status(),
            Code::FailedPrecondition,
        ));
        t.push((
            PrivacyError::Tampered {
                subject: "household:1".into(),
            }
            .into_status(),
            Code::DataLoss,
        ));
        t.push((
            threshold_auth::Error::Io {
                path: PathBuf::from("credentials.json"),
                source: io(std::io::ErrorKind::NotFound),
            }
            .into_status(),
            Code::Internal,
        ));
        t.push((
            threshold_auth::Error::Malformed {
                path: PathBuf::from("credentials.json"),
                reason: "not json".into(),
            }
            .into_status(),
            Code::Internal,
        ));
        t.push((
            threshold_auth::Error::Invalid("no such role".into()).into_status(),
            Code::InvalidArgument,
        ));
        t.push((
            threshold_manifest::Error::DuplicateColumn("parcel_id".into()).into_status(),
            Code::InvalidArgument,
        ));
        t.push((
            threshold_manifest::Error::MissingColumns {
                missing: vec!["parcel_id".into()],
            }
            .into_status(),
            Code::InvalidArgument,
        ));
        for (kind, code) in [
            (std::io::ErrorKind::StorageFull, Code::ResourceExhausted),
            (std::io::ErrorKind::TimedOut, Code::Unavailable),
            (std::io::ErrorKind::ConnectionRefused, Code::Unavailable),
            (std::io::ErrorKind::ConnectionReset, Code::Unavailable),
            (std::io::ErrorKind::BrokenPipe, Code::Unavailable),
            (std::io::ErrorKind::PermissionDenied, Code::Internal),
            (std::io::ErrorKind::Other, Code::Internal),
        ] {
            t.push((io(kind).into_status(), code));
        }
        t.push((field("parcel_id", "is empty"), Code::InvalidArgument));
        t.push((behind("at 3, the log at 5"), Code::DeadlineExceeded));
        t.push((stored("home id"), Code::Internal));
        t
    }

    #[test]
    fn every_error_answers_the_code_the_contract_gives_it() {
        for (status, code) in table() {
            assert_eq!(status.code(), code, "{}", status.message());
        }
    }

    /// Every error that holds a server path, holding a recognisable one.
    fn with_paths() -> Vec<Status> {
        let path = || PathBuf::from(SECRET);
        let engine = || {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(14),
                Some(format!("unable to open database file: {SECRET}")),
            )
        };
        let log = || {
            vec![
                LogError::DiskFull { path: path() },
                LogError::Corrupt {
                    path: path(),
                    detail: format!("page 3 of {SECRET}"),
                },
                LogError::Locked { path: path() },
                LogError::Storage {
                    path: path(),
                    source: engine(),
                },
                LogError::Io {
                    path: path(),
                    source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, SECRET),
                },
            ]
        };
        let mut t: Vec<Status> = log().into_iter().map(IntoStatus::into_status).collect();
        t.extend(log().into_iter().map(|e| DecideError::Log(e).into_status()));
        t.push(
            PrivacyError::Store {
                path: path(),
                source: engine(),
            }
            .into_status(),
        );
        t.push(
            threshold_auth::Error::Io {
                path: path(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, SECRET),
            }
            .into_status(),
        );
        t.push(
            threshold_auth::Error::Malformed {
                path: path(),
                reason: format!("{SECRET} is not json"),
            }
            .into_status(),
        );
        // An OS error, as std makes it: no path in it to begin with.
        let os = std::fs::File::open(SECRET).expect_err("no such file");
        t.push(os.into_status());
        t
    }

    /// A path no reply may contain.
    const SECRET: &str = "/var/lib/threshold-secret/data/log.db";

    #[test]
    fn no_reply_names_a_server_path() {
        for status in with_paths() {
            assert!(
                !status.message().contains("threshold-secret"),
                "{:?} tells the caller a path: {}",
                status.code(),
                status.message()
            );
            assert!(!status.message().is_empty(), "{status:?} says nothing");
        }
    }

    #[test]
    fn a_status_carries_the_error_message() {
        let s = LogError::Closed.into_status();
        assert_eq!(s.message(), "the event log is closed");
        assert_eq!(field("date", "is missing").message(), "date: is missing");
    }

    #[test]
    fn malformed_input_is_never_internal() {
        let malformed = [
            DomainError::Invalid {
                field: "grant_id",
                reason: "is empty".into(),
            }
            .into_status(),
            LogError::Invalid {
                field: "payload",
                reason: "too large".into(),
            }
            .into_status(),
            field("occurred_at", "is missing"),
        ];
        for s in malformed {
            assert_eq!(s.code(), Code::InvalidArgument);
        }
    }

    #[test]
    fn retries_help_with_contention_and_outages_not_with_bad_requests() {
        for (code, helps) in [
            (Code::InvalidArgument, false),
            (Code::NotFound, false),
            (Code::AlreadyExists, false),
            (Code::FailedPrecondition, false),
            (Code::Aborted, true),
            (Code::ResourceExhausted, true),
            (Code::Unavailable, true),
            (Code::DeadlineExceeded, true),
            (Code::Cancelled, true),
            (Code::DataLoss, false),
            (Code::Internal, true),
            (Code::Unauthenticated, false),
            (Code::PermissionDenied, false),
        ] {
            assert_eq!(retryable(code), helps, "{code:?}");
        }
    }

    #[test]
    fn a_reused_event_id_is_refused_without_naming_the_stream_that_holds_it() {
        let err = LogError::EventIdReused {
            event_id: EventId::new(),
            stored_in: "parcel/NO-OTHER-TENANT".into(),
            stream: stream(),
        };
        let reply = err.reply();
        assert!(!reply.contains("NO-OTHER-TENANT"), "{reply}");
        assert!(reply.contains("parcel/SE-1"), "{reply}");
        assert_eq!(status(err).code(), Code::InvalidArgument);
    }
}
