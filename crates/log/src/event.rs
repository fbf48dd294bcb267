//! What goes into the log and what comes out of it.

use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use threshold_domain::country::timestamp;
use threshold_domain::event::SCHEMA_VERSION;
use threshold_domain::{Country, DomainEvent, EventId, StreamId, pb};

/// A place in the whole log. Positions start at 1; [`Position::ORIGIN`] is
/// "before the first event", so reading or subscribing after it starts at
/// the beginning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64);

impl Position {
    /// Before the first event.
    pub const ORIGIN: Position = Position(0);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the caller believes the stream's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check: facts (handheld events, lock events) are appended whatever
    /// came before.
    Any,
    /// The stream must be at exactly this version; 0 means it must not exist.
    Exactly(u64),
}

impl ExpectedVersion {
    /// The stream must not exist yet.
    pub const NO_STREAM: ExpectedVersion = ExpectedVersion::Exactly(0);
}

/// An event to append. The producer chooses `event_id`; the log assigns
/// stream version, position and `recorded_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Chosen by the producer; a resend carries the same id.
    pub event_id: EventId,
    /// Dotted type, e.g. `parcel.delivered`.
    pub event_type: String,
    /// Schema version of `payload`.
    pub schema_version: u32,
    /// When it happened, by the producer's clock.
    pub occurred_at: DateTime<Utc>,
    /// The country it happened in.
    pub country: Option<Country>,
    /// The partner it belongs to.
    pub tenant: Option<String>,
    /// What caused it.
    pub causation_id: Option<String>,
    /// The interaction it belongs to.
    pub correlation_id: Option<String>,
    /// W3C `traceparent` of the operation that produced it.
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    pub tracestate: Option<String>,
    /// Protobuf bytes of the category message.
    pub payload: Bytes,
}

impl NewEvent {
    /// An event from a domain event, at the current schema version.
    pub fn new(event_id: EventId, event: &DomainEvent, occurred_at: DateTime<Utc>) -> Self {
        Self {
            event_id,
            event_type: event.event_type().to_owned(),
            schema_version: SCHEMA_VERSION,
            occurred_at,
            country: None,
            tenant: None,
            causation_id: None,
            correlation_id: None,
            traceparent: None,
            tracestate: None,
            payload: Bytes::from(event.encode()),
        }
    }

    /// With the country it happened in.
    pub fn country(mut self, country: Country) -> Self {
        self.country = Some(country);
        self
    }

    /// With the partner it belongs to.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// With the partner and country of the parcel it is about, as its
    /// manifest gave them (a parcel not manifested has neither): what a
    /// partner's outcomes and webhooks, and a country's analyst, pass it
    /// on by.
    pub fn of_parcel(self, parcel: &threshold_domain::parcel::Parcel) -> Self {
        let Some(m) = &parcel.manifest else {
            return self;
        };
        let this = self.tenant(m.partner_id.clone());
        match Country::from_proto(m.country) {
            Ok(c) => this.country(c),
            Err(_) => this,
        }
    }

    /// With what caused it and the interaction it belongs to.
    pub fn caused_by(
        mut self,
        causation_id: impl Into<String>,
        correlation_id: impl Into<String>,
    ) -> Self {
        self.causation_id = Some(causation_id.into());
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// With W3C trace context.
    pub fn traced(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }
}

/// Refuses an append with no events, or with an event of another category
/// than `stream`'s: what every backend checks before anything else.
pub(crate) fn check_append(stream: &StreamId, events: &[NewEvent]) -> crate::Result<()> {
    if events.is_empty() {
        return Err(crate::Error::Invalid {
            field: "events",
            reason: format!("an append to {stream} needs at least one event"),
        });
    }
    for e in events {
        let category = e.event_type.split('.').next().unwrap_or_default();
        if category != stream.category().as_str() {
            return Err(crate::Error::Invalid {
                field: "event_type",
                reason: format!("{} does not belong in {stream}", e.event_type),
            });
        }
    }
    Ok(())
}

/// An event as stored: the envelope and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Its place in the whole log.
    pub position: Position,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its version in the stream, from 1, gap-free.
    pub stream_version: u64,
    /// When the log stored it.
    pub recorded_at: DateTime<Utc>,
    /// Everything the producer sent.
    pub event: NewEvent,
}

impl RecordedEvent {
    /// The payload, decoded (and upcast) into a domain event.
    pub fn decode(&self) -> crate::Result<DomainEvent> {
        Ok(DomainEvent::decode(
            &self.event.event_type,
            self.event.schema_version,
            &self.event.payload,
        )?)
    }

    /// The envelope as it travels on the wire.
    pub fn to_envelope(&self) -> pb::Envelope {
        let e = &self.event;
        pb::Envelope {
            event_id: e.event_id.to_string(),
            stream: self.stream.to_string(),
            stream_version: self.stream_version,
            position: self.position.0,
            occurred_at: Some(timestamp(e.occurred_at)),
            recorded_at: Some(timestamp(self.recorded_at)),
            country: e
                .country
                .map_or(pb::Country::Unspecified, Country::to_proto) as i32,
            tenant: e.tenant.clone().unwrap_or_default(),
            causation_id: e.causation_id.clone().unwrap_or_default(),
            correlation_id: e.correlation_id.clone().unwrap_or_default(),
            traceparent: e.traceparent.clone().unwrap_or_default(),
            tracestate: e.tracestate.clone().unwrap_or_default(),
            schema_version: e.schema_version,
            event_type: e.event_type.clone(),
            payload: e.payload.to_vec(),
        }
    }
}

/// The answer for one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Stored now.
    Appended {
        /// Its place in the log.
        position: Position,
        /// Its version in the stream.
        version: u64,
    },
    /// Stored before, under the same `event_id`; not stored again.
    Duplicate {
        /// Where the original is.
        position: Position,
        /// The original's version.
        version: u64,
    },
}

impl Ack {
    /// Where the event is, whether stored now or before.
    pub fn position(&self) -> Position {
        match self {
            Ack::Appended { position, .. } | Ack::Duplicate { position, .. } => *position,
        }
    }

    /// Whether it had been stored before.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Ack::Duplicate { .. })
    }
}

/// The answer to one append: one [`Ack`] per event, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The stream's version after the append.
    pub stream_version: u64,
    /// One per event sent.
    pub acks: Vec<Ack>,
}
