//! Deciding a command on a stream's history, and appending what it decides
//! with the expected version: the one way an aggregate's stream is written.
//!
//! A concurrent writer makes the append conflict; the command is then decided
//! again on the new history, up to a bound. So a stream has one order of
//! events however many writers race on it.

use chrono::{DateTime, Utc};
use threshold_domain::{Aggregate, DomainError, DomainEvent, EventId, StreamId};

use crate::{Error, EventLog, ExpectedVersion, NewEvent, audit};

/// Decisions retried when another writer changed the stream in between.
pub const CONFLICT_RETRIES: usize = 8;

/// What a decision recorded.
#[derive(Debug, Clone)]
pub struct Decided<E> {
    /// The events recorded; none when the command was already in effect.
    pub events: Vec<E>,
    /// The stream's version after them.
    pub version: u64,
    /// Their positions in the log.
    pub positions: Vec<u64>,
}

/// Why nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The aggregate refused the command.
    #[error(transparent)]
    Refused(#[from] DomainError),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] Error),
    /// Other writers kept changing the stream.
    #[error("{0} kept changing; try again")]
    Contended(StreamId),
}

/// Decides `command` on the aggregate's history in `stream` and appends the
/// result with the expected version. `unwrap` picks the aggregate's events
/// out of the stream, `wrap` makes a new one a [`DomainEvent`], and `stamp`
/// gives it its id and time.
pub async fn decide<A, W>(
    log: &dyn EventLog,
    stream: &StreamId,
    command: &A::Command,
    unwrap: impl Fn(DomainEvent) -> Option<A::Event>,
    wrap: W,
    stamp: impl Fn(&A::Event) -> (EventId, DateTime<Utc>),
) -> Result<Decided<A::Event>, DecideError>
where
    A: Aggregate,
    A::Event: Clone,
    W: Fn(A::Event) -> DomainEvent,
{
    decide_sealed::<A, W>(log, stream, command, unwrap, wrap, stamp, false).await
}

/// [`decide`] for a home stream: each new event also commits to the hash of
/// the one before it, read in the same history the decision was made on
/// ([`crate::audit`]), so the chain holds whoever writes concurrently.
pub async fn decide_chained<A, W>(
    log: &dyn EventLog,
    stream: &StreamId,
    command: &A::Command,
    unwrap: impl Fn(DomainEvent) -> Option<A::Event>,
    wrap: W,
    stamp: impl Fn(&A::Event) -> (EventId, DateTime<Utc>),
) -> Result<Decided<A::Event>, DecideError>
where
    A: Aggregate,
    A::Event: Clone,
    W: Fn(A::Event) -> DomainEvent,
{
    decide_sealed::<A, W>(log, stream, command, unwrap, wrap, stamp, true).await
}

async fn decide_sealed<A, W>(
    log: &dyn EventLog,
    stream: &StreamId,
    command: &A::Command,
    unwrap: impl Fn(DomainEvent) -> Option<A::Event>,
    wrap: W,
    stamp: impl Fn(&A::Event) -> (EventId, DateTime<Utc>),
    chained: bool,
) -> Result<Decided<A::Event>, DecideError>
where
    A: Aggregate,
    A::Event: Clone,
    W: Fn(A::Event) -> DomainEvent,
{
    for _ in 0..CONFLICT_RETRIES {
        let history = log.read_stream(stream, 0, usize::MAX).await?;
        let mut state = A::default();
        for r in &history {
            if let Some(e) = unwrap(r.decode()?) {
                state.evolve_recorded(&e, r.event.occurred_at);
            }
        }
        let version = history.last().map_or(0, |r| r.stream_version);
        let events = state.decide(command)?;
        if events.is_empty() {
            return Ok(Decided {
                events,
                version,
                positions: Vec::new(),
            });
        }
        let mut new: Vec<NewEvent> = events
            .iter()
            .map(|e| {
                let (id, at) = stamp(e);
                NewEvent::new(id, &wrap(e.clone()), at)
            })
            .collect();
        if chained {
            let mut prev = history.last().map_or(audit::GENESIS, audit::hash_of);
            for n in &mut new {
                audit::seal(n, prev)?;
                prev = audit::hash_of_new(n);
            }
        }
        match log
            .append(stream, ExpectedVersion::Exactly(version), new)
            .await
        {
            Ok(out) => {
                return Ok(Decided {
                    events,
                    version: out.stream_version,
                    positions: out.acks.iter().map(|a| a.position().0).collect(),
                });
            }
            Err(Error::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(DecideError::Contended(stream.clone()))
}
