//! The one error type of the domain: a command that the rules refuse, or an
//! input that does not have the right shape.

/// A refused command or malformed input, saying what and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// A field of an input is missing or malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, e.g. `parcel_id` or `window.end`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The command needs an aggregate that has not been created.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The aggregate exists already with different content.
    #[error("{0} already exists with different content")]
    AlreadyExists(String),
    /// The command does not apply in the aggregate's current state.
    #[error("{subject}: cannot {action} when {state}")]
    InvalidState {
        /// The aggregate, e.g. `parcel/SE-1`.
        subject: String,
        /// What was asked, e.g. `start an attempt`.
        action: &'static str,
        /// The state it is in, e.g. `delivered`.
        state: String,
    },
    /// The caller may not do this to what it names: a resident granting
    /// entry to a home that is not theirs, or for a parcel of another
    /// household; a claim with a code that does not match. `field` names
    /// the request's field; `reason` names nothing of another party's.
    #[error("{field}: {reason}")]
    Forbidden {
        /// The request's field, e.g. `home_id` or `parcel_ids[1]`.
        field: String,
        /// Why, in words the caller may be told.
        reason: String,
    },
    /// A stored payload could not be decoded.
    #[error("cannot decode {event_type} (schema v{schema_version}): {reason}")]
    Decode {
        /// The stored event type.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
        /// Why decoding failed.
        reason: String,
    },
}

/// `Result` with [`DomainError`] as the default error.
pub type Result<T, E = DomainError> = std::result::Result<T, E>;

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
    DomainError::Invalid {
        field,
        reason: reason.into(),
    }
}

pub(crate) fn forbidden(field: impl Into<String>, reason: impl Into<String>) -> DomainError {
    DomainError::Forbidden {
        field: field.into(),
        reason: reason.into(),
    }
}
