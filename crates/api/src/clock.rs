//! Whose clock a request is on: the server's, or a simulation's carried by
//! each request in [`SIMULATED_TIME_HEADER`](crate::SIMULATED_TIME_HEADER).
//!
//! A server on its own clock refuses a request bringing its own time,
//! wherever the time is read: a client never moves a real server's clock.

use chrono::{DateTime, Utc};
use tonic::{Request, Status};

use crate::SIMULATED_TIME_HEADER;

/// Whose clock decides windows and stamps what a request writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// The server's own: the only choice for real deliveries.
    #[default]
    System,
    /// The simulator's, carried by each request in
    /// [`SIMULATED_TIME_HEADER`](crate::SIMULATED_TIME_HEADER).
    Simulated,
}

impl Clock {
    /// Now, for a request whose time decides something (a grant's window):
    /// the server's time, or the simulation's, which a request to a
    /// simulation must carry.
    pub fn now<T>(self, request: &Request<T>) -> Result<DateTime<Utc>, Status> {
        Ok(self.required(request)?.unwrap_or_else(Utc::now))
    }

    /// The simulation's time `request` was sent at, which a request to a
    /// simulation must carry; `None` on the server's own clock, which the
    /// caller reads when it needs it (a long stream, event by event).
    pub fn required<T>(self, request: &Request<T>) -> Result<Option<DateTime<Utc>>, Status> {
        match (self, self.carried(request)?) {
            (Clock::Simulated, None) => Err(Status::failed_precondition(format!(
                "this server runs a simulation; requests must carry {SIMULATED_TIME_HEADER}"
            ))),
            (_, t) => Ok(t),
        }
    }

    /// The time to stamp what `request` writes with, where the time decides
    /// nothing (a manifest's rows, a plan): a simulation's when the request
    /// carries one, else `None`, the server's clock, read by the caller (a
    /// planner loading a file by hand into a simulation). A server on its
    /// own clock still refuses a request bringing its own time.
    pub fn stamp<T>(self, request: &Request<T>) -> Result<Option<DateTime<Utc>>, Status> {
        self.carried(request)
    }

    /// The time `request` carries, if any; refused outright on the
    /// server's own clock.
    fn carried<T>(self, request: &Request<T>) -> Result<Option<DateTime<Utc>>, Status> {
        let Some(v) = request.metadata().get(SIMULATED_TIME_HEADER) else {
            return Ok(None);
        };
        if self == Clock::System {
            return Err(Status::failed_precondition(format!(
                "{SIMULATED_TIME_HEADER} is refused: this server runs on its own clock, \
                 not a simulation's"
            )));
        }
        v.to_str()
            .ok()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| Some(t.with_timezone(&Utc)))
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{SIMULATED_TIME_HEADER}: {v:?} is not an RFC 3339 time"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn request(header: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = header {
            r.metadata_mut()
                .insert(SIMULATED_TIME_HEADER, h.parse().expect("ascii"));
        }
        r
    }

    const AT: &str = "2026-11-23T06:30:00+01:00";

    #[test]
    fn each_rule_takes_refuses_or_leaves_the_time_to_the_server() {
        let at = DateTime::parse_from_rfc3339(AT).expect("time").to_utc();
        let (none, some, bad) = (request(None), request(Some(AT)), request(Some("noon")));
        assert_eq!(Clock::System.required(&none).expect("own clock"), None);
        assert_eq!(Clock::System.stamp(&none).expect("own clock"), None);
        assert_eq!(Clock::Simulated.stamp(&none).expect("by hand"), None);
        assert_eq!(Clock::Simulated.required(&some).expect("carried"), Some(at));
        assert_eq!(Clock::Simulated.stamp(&some).expect("carried"), Some(at));
        assert_eq!(Clock::Simulated.now(&some).expect("carried"), at);
        let code = |r: Result<Option<DateTime<Utc>>, Status>| r.expect_err("refused").code();
        assert_eq!(
            code(Clock::System.required(&some)),
            Code::FailedPrecondition
        );
        assert_eq!(code(Clock::System.stamp(&some)), Code::FailedPrecondition);
        assert_eq!(
            code(Clock::Simulated.required(&none)),
            Code::FailedPrecondition
        );
        // A real server refuses any time a client brings, well formed or not.
        assert_eq!(code(Clock::System.stamp(&bad)), Code::FailedPrecondition);
        let e = Clock::Simulated.stamp(&bad).expect_err("not a time");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("\"noon\""), "{}", e.message());
    }
}
