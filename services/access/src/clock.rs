//! Whose clock decides windows and expiry: the server's, or a simulation's
//! carried by each request in [`threshold_api::SIMULATED_TIME_HEADER`].
//!
//! It must never let a client bring its own time to a server on the real
//! clock: such a server refuses the header outright.

use chrono::{DateTime, Utc};
use threshold_status::field;
use tonic::{Request, Status};

/// Whose clock decides windows and expiry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// The server's own: the only choice for real deliveries.
    #[default]
    System,
    /// The simulator's, carried by each request in
    /// [`threshold_api::SIMULATED_TIME_HEADER`].
    Simulated,
}

impl Clock {
    /// Now, for `request`: the server's time, or the simulated one.
    pub(crate) fn now<T>(self, request: &Request<T>) -> Result<DateTime<Utc>, Status> {
        let header = request.metadata().get(threshold_api::SIMULATED_TIME_HEADER);
        match (self, header) {
            (Clock::System, None) => Ok(Utc::now()),
            (Clock::System, Some(_)) => Err(Status::failed_precondition(format!(
                "{} is refused: this server runs on its own clock, not a simulation's",
                threshold_api::SIMULATED_TIME_HEADER
            ))),
            (Clock::Simulated, None) => Err(Status::failed_precondition(format!(
                "this server runs a simulation; requests must carry {}",
                threshold_api::SIMULATED_TIME_HEADER
            ))),
            (Clock::Simulated, Some(v)) => v
                .to_str()
                .ok()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| {
                    field(
                        threshold_api::SIMULATED_TIME_HEADER,
                        format!("{v:?} is not an RFC 3339 time"),
                    )
                }),
        }
    }
}
