//! How an event becomes a Kafka record, and back: the record layout the
//! Kafka backend writes and any Kafka client can read.
//!
//! - **Topic**: one per category, `threshold.<category>` (`threshold.parcel`,
//!   `threshold.route`, `threshold.grant`, `threshold.home`), and for each
//!   partner a topic of its own, `threshold.outcome.<partner>`.
//! - **Key**: the stream id (`parcel/SE-1`), so one stream's events stay in
//!   one partition, in order. The partition is Kafka's default for a keyed
//!   record (murmur2 of the key, [`partition`]), so every client — Java,
//!   librdkafka with the `murmur2_random` partitioner, this one — agrees.
//! - **Value** of a log record ([`append_of`]): the protobuf message
//!   `threshold.v1.LogAppend` (`proto/threshold/v1/log.proto`), the events
//!   of one append, each a `threshold.v1.LogRecord` ([`value`]): its
//!   envelope and payload in one, with no headers. An event's `after_id`,
//!   the id of the stream's event it follows, makes the record a
//!   conditional append (see [`crate::kafka`]). An append larger than
//!   [`APPEND_RECORD_BYTES`] is several records. Builds before wrote one `LogRecord` per event,
//!   which every reader still takes (a value whose first field is 16 is a
//!   `LogAppend`).
//! - **Outcomes** for partners keep CloudEvents 1.0 in binary content mode
//!   (the Kafka protocol binding, [`headers`]): the payload as the value;
//!   `ce_specversion`, `ce_id`, `ce_source`, `ce_type`, `ce_time`,
//!   `ce_subject`, `content-type` headers; the envelope as CloudEvents
//!   extensions (`ce_streamversion`, `ce_schemaversion`, `ce_country`,
//!   `ce_tenant`, `ce_causationid`, `ce_correlationid`); and W3C
//!   `traceparent` / `tracestate`, as tracing instrumentations of Kafka
//!   clients expect them, so any Kafka client and CloudEvents SDK reads them.
//!
//! Log records were written in that CloudEvents layout too (with a
//! `ce_afterid` extension) until fourteen headers a record turned out to
//! cost the client and the broker more than the rest of the record; a reader
//! still takes records of every layout (`from_message` tells the
//! CloudEvents one by `ce_specversion`), so topics written before read on.
//!
//! Only the mapping lives here: it never talks to a broker nor uses the
//! Kafka client, so the layout is testable (and readable) without one.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use prost::Message as _;
use threshold_domain::country::{instant, timestamp};
use threshold_domain::{Category, Country, EventId, StreamId, pb};

use crate::{Error, NewEvent};

/// The CloudEvents version written.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of a CloudEvents record's value.
pub const CONTENT_TYPE: &str = "application/protobuf";
/// What `ce_type` starts with: `threshold.v1.parcel.delivered`.
pub const TYPE_PREFIX: &str = "threshold.v1.";

/// The topic of a category.
pub fn topic(category: Category) -> String {
    format!("threshold.{}", category.as_str())
}

/// What the names of partners' outcome topics start with: a partner's
/// own is `threshold.outcome.<partner>` ([`super::KafkaOptions::outcome_topic_of`]).
pub const OUTCOME_TOPIC: &str = "threshold.outcome";

/// Kafka's murmur2 (the Java client's `Utils.murmur2`), which its default
/// partitioner uses for keyed records.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a stream among `partitions`, as Kafka's default
/// partitioner places its key.
pub fn partition(stream: &StreamId, partitions: u32) -> u32 {
    let key = stream.to_string();
    ((murmur2(key.as_bytes()) & 0x7fff_ffff) as u32) % partitions.max(1)
}

/// How a process writes log records; every process reads all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// One record per append: a `threshold.v1.LogAppend` of its events
    /// ([`append_of`]), no headers.
    #[default]
    Append,
    /// One `threshold.v1.LogRecord` per event ([`value`]), no headers, as
    /// builds before [`Layout::Append`] wrote: for the first step of an
    /// upgrade, while a process of such a build still reads the topics (it
    /// cannot read a `LogAppend`).
    LogRecord,
    /// One record per event, the payload as the value and the envelope as
    /// CloudEvents headers ([`headers`]), as builds before
    /// [`Layout::LogRecord`] wrote: for the first step of an upgrade from
    /// such a build (it reads neither of the others).
    CloudEvents,
}

impl Layout {
    /// The names the command line takes.
    pub const NAMES: [&str; 3] = ["append", "logrecord", "cloudevents"];
}

impl std::str::FromStr for Layout {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "append" => Ok(Layout::Append),
            "logrecord" => Ok(Layout::LogRecord),
            "cloudevents" => Ok(Layout::CloudEvents),
            other => Err(Error::Invalid {
                field: "record layout",
                reason: format!("{other:?} is not one of {}", Layout::NAMES.join(", ")),
            }),
        }
    }
}

/// An event as a record carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The stream (the record's key; `ce_subject`).
    pub stream: StreamId,
    /// Its version there (`stream_version`; `ce_streamversion`).
    pub version: u64,
    /// The id of the stream's event at `version - 1` when it was written
    /// (`after_id`; `ce_afterid`); `None` for the first.
    pub after: Option<EventId>,
    /// The event.
    pub event: NewEvent,
}

impl Record {
    /// Its stream, and the event as a replica takes it there: only as the
    /// version its writer numbered, following the event its writer saw
    /// last.
    pub(super) fn into_conditional(self) -> (StreamId, crate::embedded::Conditional) {
        let conditional = crate::embedded::Conditional {
            event: self.event,
            version: self.version,
            after: self.after,
        };
        (self.stream, conditional)
    }
}

/// The headers of `event`, version `version` of `stream`, following the
/// event `after` (the stream's event at `version - 1`), produced by
/// `source` (a URI reference naming the producer, e.g.
/// `/threshold/handheld`).
pub fn headers(
    stream: &StreamId,
    version: u64,
    after: Option<EventId>,
    event: &NewEvent,
    source: &str,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut h: Vec<(&'static str, Vec<u8>)> = vec![
        ("ce_specversion", SPEC_VERSION.into()),
        ("ce_id", event.event_id.to_string().into_bytes()),
        ("ce_source", source.as_bytes().to_vec()),
        (
            "ce_type",
            format!("{TYPE_PREFIX}{}", event.event_type).into_bytes(),
        ),
        (
            "ce_time",
            event
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true)
                .into_bytes(),
        ),
        ("ce_subject", stream.to_string().into_bytes()),
        ("content-type", CONTENT_TYPE.into()),
        ("ce_streamversion", version.to_string().into_bytes()),
        (
            "ce_schemaversion",
            event.schema_version.to_string().into_bytes(),
        ),
    ];
    let mut optional = |name: &'static str, value: &Option<String>| {
        if let Some(v) = value {
            h.push((name, v.as_bytes().to_vec()));
        }
    };
    optional("ce_afterid", &after.map(|a| a.to_string()));
    optional("ce_country", &event.country.map(|c| c.code().to_owned()));
    optional("ce_tenant", &event.tenant);
    optional("ce_causationid", &event.causation_id);
    optional("ce_correlationid", &event.correlation_id);
    optional("traceparent", &event.traceparent);
    optional("tracestate", &event.tracestate);
    h
}

/// `headers` (as [`headers`] gives them) as the Kafka client sends them.
pub(super) fn kafka_headers(headers: &[(&str, Vec<u8>)]) -> rdkafka::message::OwnedHeaders {
    headers.iter().fold(
        rdkafka::message::OwnedHeaders::new_with_capacity(headers.len()),
        |h, (key, value)| {
            h.insert(rdkafka::message::Header {
                key,
                value: Some(value),
            })
        },
    )
}

/// The value of header `name` of a record as a consumer took it, the last
/// with a value if it occurs more than once (as [`from_message`] reads it),
/// without decoding the rest: what a consumer looks at to pass over a
/// record.
pub(super) fn header<'a>(m: &'a impl rdkafka::Message, name: &str) -> Option<&'a [u8]> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    (0..headers.count())
        .rev()
        .map(|i| headers.get(i))
        .find(|h| h.key == name && h.value.is_some())
        .and_then(|h| h.value)
}

/// Whether a record as a consumer took it is in the CloudEvents layout
/// (outcomes, and log records written before [`value`]'s layout).
fn is_cloudevent(m: &impl rdkafka::Message) -> bool {
    header(m, "ce_specversion").is_some()
}

/// What a consumer looks at to pass over a log record: the `event_id`,
/// `stream_version` and `event_type` of a `LogRecord`, or of each event of
/// a `LogAppend`, decoded without the rest (prost skips the other fields,
/// the payloads included, without copying them).
#[derive(Clone, PartialEq, prost::Message)]
struct Peek {
    #[prost(string, tag = "1")]
    event_id: String,
    #[prost(uint64, tag = "2")]
    stream_version: u64,
    #[prost(string, tag = "4")]
    event_type: String,
    #[prost(message, repeated, tag = "16")]
    events: Vec<Peek>,
}

impl Peek {
    /// Whether the fields looked at are there.
    fn whole(&self) -> bool {
        !self.event_id.is_empty() && !self.event_type.is_empty()
    }
}

/// The events of a record's value, peeked at ([`Peek`]); `None` where the
/// value does not decode, or an event lacks either field (an empty value
/// decodes to nothing but defaults).
fn peek(m: &impl rdkafka::Message) -> Option<Vec<Peek>> {
    let value = m.payload()?;
    let mut p = Peek::decode(value).ok()?;
    let events = if is_append(value) {
        std::mem::take(&mut p.events)
    } else {
        vec![p]
    };
    (!events.is_empty() && events.iter().all(Peek::whole)).then_some(events)
}

/// Whether a log record's value is a `LogAppend`: its first field is 16,
/// which a `LogRecord` does not have.
fn is_append(value: &[u8]) -> bool {
    let mut buf = value;
    prost::encoding::decode_key(&mut buf).is_ok_and(|(tag, _)| tag == APPEND_EVENTS_TAG)
}

/// `LogAppend.events`.
const APPEND_EVENTS_TAG: u32 = 16;

/// The event types (`parcel.attempt_failed`) of a record's events as a
/// consumer took it, without decoding the rest; `None` where one is missing
/// or malformed (decoding the record then says what is wrong).
pub(super) fn event_types_of(m: &impl rdkafka::Message) -> Option<Vec<std::borrow::Cow<'_, str>>> {
    if is_cloudevent(m) {
        return std::str::from_utf8(header(m, "ce_type")?)
            .ok()?
            .strip_prefix(TYPE_PREFIX)
            .map(|t| vec![std::borrow::Cow::Borrowed(t)]);
    }
    Some(
        peek(m)?
            .into_iter()
            .map(|p| std::borrow::Cow::Owned(p.event_type))
            .collect(),
    )
}

/// The id of a record's first event as a consumer took it, without decoding
/// the rest; `None` where it is missing or malformed.
pub(super) fn event_id_of(m: &impl rdkafka::Message) -> Option<EventId> {
    if is_cloudevent(m) {
        return std::str::from_utf8(header(m, "ce_id")?).ok()?.parse().ok();
    }
    peek(m)?.first()?.event_id.parse().ok()
}

/// Where each event of a record as a consumer took it says it goes: its
/// stream, version, id and type, without decoding the rest (the CloudEvents
/// layout is decoded whole). `None` where the key or a field looked at does
/// not read; the rest of the record is not checked, so a publisher takes
/// each event itself from the replica, which took only records that read
/// whole.
pub(super) fn places_of(m: &impl rdkafka::Message) -> Option<Vec<Place>> {
    if is_cloudevent(m) {
        return Some(from_message(m).ok()?.into_iter().map(Place::from).collect());
    }
    let stream: StreamId = std::str::from_utf8(m.key()?).ok()?.parse().ok()?;
    peek(m)?
        .into_iter()
        .map(|p| {
            Some(Place {
                stream: stream.clone(),
                version: (p.stream_version > 0).then_some(p.stream_version)?,
                event_id: p.event_id.parse().ok()?,
                event_type: p.event_type,
            })
        })
        .collect()
}

/// An event's place, as [`places_of`] reads it from a record.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Place {
    pub(super) stream: StreamId,
    pub(super) version: u64,
    pub(super) event_id: EventId,
    pub(super) event_type: String,
}

impl From<Record> for Place {
    fn from(r: Record) -> Self {
        Self {
            stream: r.stream,
            version: r.version,
            event_id: r.event.event_id,
            event_type: r.event.event_type,
        }
    }
}

/// The events read back from a record as a consumer took it, in any
/// layout, in stream order.
pub(super) fn from_message(m: &impl rdkafka::Message) -> Result<Vec<Record>, Error> {
    use rdkafka::message::Headers;
    if !is_cloudevent(m) {
        return from_value(m.key().unwrap_or_default(), m.payload().unwrap_or_default());
    }
    let headers: Vec<(&str, &[u8])> = m
        .headers()
        .map(|h| {
            h.iter()
                .filter_map(|h| h.value.map(|v| (h.key, v)))
                .collect()
        })
        .unwrap_or_default();
    Ok(vec![from_record(
        headers,
        Bytes::copy_from_slice(m.payload().unwrap_or_default()),
    )?])
}

/// An event read back from a record's headers and value. A header missing
/// or malformed is named.
pub fn from_record<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    value: Bytes,
) -> Result<Record, Error> {
    let headers: Vec<(&str, &[u8])> = headers.into_iter().collect();
    let get = |name: &'static str| -> Result<Option<&str>, Error> {
        headers
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| {
                std::str::from_utf8(v).map_err(|_| Error::Invalid {
                    field: name,
                    reason: "is not UTF-8".into(),
                })
            })
            .transpose()
    };
    let required = |name: &'static str| -> Result<&str, Error> {
        get(name)?.ok_or_else(|| Error::Invalid {
            field: name,
            reason: "is missing".into(),
        })
    };
    let bad = |field: &'static str, reason: String| Error::Invalid { field, reason };
    let spec = required("ce_specversion")?;
    if spec != SPEC_VERSION {
        return Err(bad(
            "ce_specversion",
            format!("{spec:?} is not {SPEC_VERSION}"),
        ));
    }
    let event_id: EventId = required("ce_id")?
        .parse()
        .map_err(|e| bad("ce_id", format!("{e}")))?;
    let event_type = required("ce_type")?
        .strip_prefix(TYPE_PREFIX)
        .ok_or_else(|| bad("ce_type", format!("does not start with {TYPE_PREFIX}")))?
        .to_owned();
    let occurred_at = DateTime::parse_from_rfc3339(required("ce_time")?)
        .map_err(|e| bad("ce_time", e.to_string()))?
        .with_timezone(&Utc);
    let stream: StreamId = required("ce_subject")?
        .parse()
        .map_err(|e| bad("ce_subject", format!("{e}")))?;
    let version: u64 = required("ce_streamversion")?
        .parse()
        .map_err(|e| bad("ce_streamversion", format!("{e}")))?;
    let schema_version: u32 = required("ce_schemaversion")?
        .parse()
        .map_err(|e| bad("ce_schemaversion", format!("{e}")))?;
    let country = get("ce_country")?
        .map(|c| c.parse::<Country>())
        .transpose()
        .map_err(|e| bad("ce_country", format!("{e}")))?;
    let after = get("ce_afterid")?
        .map(|a| a.parse::<EventId>())
        .transpose()
        .map_err(|e| bad("ce_afterid", format!("{e}")))?;
    let owned = |name| -> Result<Option<String>, Error> { Ok(get(name)?.map(str::to_owned)) };
    Ok(Record {
        stream,
        version,
        after,
        event: NewEvent {
            event_id,
            event_type,
            schema_version,
            occurred_at,
            country,
            tenant: owned("ce_tenant")?,
            causation_id: owned("ce_causationid")?,
            correlation_id: owned("ce_correlationid")?,
            traceparent: owned("traceparent")?,
            tracestate: owned("tracestate")?,
            payload: value,
        },
    })
}

/// The value of the log record of `event`, version `version` of its
/// stream (the record's key), following the event `after` (the stream's
/// event at `version - 1`), written by `source` (a URI reference naming the
/// producer, e.g. `/threshold/handheld`): a `threshold.v1.LogRecord`.
pub fn value(version: u64, after: Option<EventId>, event: &NewEvent, source: &str) -> Vec<u8> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let envelope = pb::LogRecord {
        event_id: event.event_id.to_string(),
        stream_version: version,
        after_id: after.map(|a| a.to_string()).unwrap_or_default(),
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        occurred_at: Some(timestamp(event.occurred_at)),
        country: event
            .country
            .map_or(pb::Country::Unspecified, Country::to_proto) as i32,
        tenant: text(&event.tenant),
        causation_id: text(&event.causation_id),
        correlation_id: text(&event.correlation_id),
        traceparent: text(&event.traceparent),
        tracestate: text(&event.tracestate),
        source: source.to_owned(),
        // Appended below, from the event's own bytes.
        payload: Vec::new(),
    };
    let mut buf = Vec::with_capacity(envelope.encoded_len() + event.payload.len() + 4);
    envelope
        .encode(&mut buf)
        .expect("a Vec grows to any length");
    // Field 15 last: a protobuf message's fields may come in any order.
    if !event.payload.is_empty() {
        prost::encoding::bytes::encode(15, &event.payload, &mut buf);
    }
    buf
}

/// The most bytes one record of an append carries, its events'
/// `LogRecord`s together: a larger append is sent as several records, each
/// a conditional append of its own, a quarter of Kafka's default limit of a
/// record batch (`max.message.bytes`, 1 MiB). An event larger than this
/// goes alone.
pub const APPEND_RECORD_BYTES: usize = 256 * 1024;

/// The value of a record of an append's events, in stream order: a
/// `threshold.v1.LogAppend` of `values`, each the event's `LogRecord`
/// ([`value`]).
pub fn append_of(values: &[Vec<u8>]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(values.iter().map(|v| v.len() + 4).sum());
    for one in values {
        prost::encoding::bytes::encode(APPEND_EVENTS_TAG, one, &mut buf);
    }
    buf
}

/// The events read back from a log record's key (the stream) and value (a
/// `threshold.v1.LogRecord`, or a `threshold.v1.LogAppend` of several), in
/// stream order. A field missing or malformed is named, with the event's
/// place in an append.
pub fn from_value(key: &[u8], value: &[u8]) -> Result<Vec<Record>, Error> {
    let stream: StreamId = std::str::from_utf8(key)
        .map_err(|_| Error::Invalid {
            field: "key",
            reason: "is not UTF-8".into(),
        })?
        .parse()
        .map_err(|e| Error::Invalid {
            field: "key",
            reason: format!("{e}"),
        })?;
    if !is_append(value) {
        let r = pb::LogRecord::decode(value).map_err(|e| Error::Invalid {
            field: "value",
            reason: format!("{e}"),
        })?;
        return Ok(vec![from_log_record(stream, r)?]);
    }
    let append = pb::LogAppend::decode(value).map_err(|e| Error::Invalid {
        field: "value",
        reason: format!("as a LogAppend: {e}"),
    })?;
    let n = append.events.len();
    append
        .events
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            from_log_record(stream.clone(), r).map_err(|e| match e {
                Error::Invalid { field, reason } => Error::Invalid {
                    field,
                    reason: format!("{reason} (event {} of {n} in the append)", i + 1),
                },
                other => other,
            })
        })
        .collect()
}

/// An event of `stream` from its `LogRecord`. A field missing or malformed
/// is named.
fn from_log_record(stream: StreamId, r: pb::LogRecord) -> Result<Record, Error> {
    let bad = |field: &'static str, reason: String| Error::Invalid { field, reason };
    let event_id: EventId = r
        .event_id
        .parse()
        .map_err(|e| bad("event_id", format!("{e}")))?;
    required_fields(r.stream_version, &r.event_type, r.schema_version)?;
    let after = (!r.after_id.is_empty())
        .then(|| r.after_id.parse::<EventId>())
        .transpose()
        .map_err(|e| bad("after_id", format!("{e}")))?;
    let occurred_at = instant(
        r.occurred_at
            .as_ref()
            .ok_or_else(|| bad("occurred_at", "is missing".into()))?,
    )
    .map_err(|e| bad("occurred_at", e.to_string()))?;
    let country = (r.country != pb::Country::Unspecified as i32)
        .then(|| Country::from_proto(r.country))
        .transpose()
        .map_err(|e| bad("country", e.to_string()))?;
    let text = |v: String| (!v.is_empty()).then_some(v);
    Ok(Record {
        stream,
        version: r.stream_version,
        after,
        event: NewEvent {
            event_id,
            event_type: r.event_type,
            schema_version: r.schema_version,
            occurred_at,
            country,
            tenant: text(r.tenant),
            causation_id: text(r.causation_id),
            correlation_id: text(r.correlation_id),
            traceparent: text(r.traceparent),
            tracestate: text(r.tracestate),
            payload: Bytes::from(r.payload),
        },
    })
}

/// The fields a `LogRecord` must have beyond its id, or the one missing.
fn required_fields(version: u64, event_type: &str, schema_version: u32) -> Result<(), Error> {
    let missing = |field: &'static str| Error::Invalid {
        field,
        reason: "is missing".into(),
    };
    if version == 0 {
        return Err(missing("stream_version"));
    }
    if event_type.is_empty() {
        return Err(missing("event_type"));
    }
    if schema_version == 0 {
        return Err(missing("schema_version"));
    }
    Ok(())
}

/// `event`, version `version`, as a reader takes it from its record
/// ([`from_value`] of [`value`]) without the record being decoded: an
/// empty text is none, as the record cannot tell them apart, and an event
/// whose record would not read back is refused as a reader refuses it.
pub(super) fn as_read(version: u64, event: &NewEvent) -> Result<NewEvent, Error> {
    required_fields(version, &event.event_type, event.schema_version)?;
    let text = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    Ok(NewEvent {
        event_id: event.event_id,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        occurred_at: event.occurred_at,
        country: event.country,
        tenant: text(&event.tenant),
        causation_id: text(&event.causation_id),
        correlation_id: text(&event.correlation_id),
        traceparent: text(&event.traceparent),
        tracestate: text(&event.tracestate),
        payload: event.payload.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::failed_attempt;

    /// The value of a record of `events` (each with its version and the event
    /// it follows, in stream order), written by `source`: a
    /// `threshold.v1.LogAppend` of their [`value`]s.
    fn append_value(events: &[(u64, Option<EventId>, &NewEvent)], source: &str) -> Vec<u8> {
        let values: Vec<Vec<u8>> = events
            .iter()
            .map(|(version, after, event)| value(*version, *after, event, source))
            .collect();
        append_of(&values)
    }

    /// What a consumer passes a record over on (its `ce_id` and `ce_type`)
    /// is what decoding it gives, also when a header repeats.
    #[test]
    fn the_headers_a_consumer_looks_at_read_as_the_record_decodes() {
        use rdkafka::Timestamp;
        use rdkafka::message::{Header, OwnedMessage};
        let event = failed_attempt(1);
        let stream = crate::contract::parcel(1);
        let message = |extra: &[(&str, Option<&[u8]>)]| {
            let mut headers = kafka_headers(&headers_of(&stream, &event));
            for (key, value) in extra {
                headers = headers.insert(Header { key, value: *value });
            }
            OwnedMessage::new(
                Some(event.payload.to_vec()),
                None,
                "t".to_owned(),
                Timestamp::NotAvailable,
                0,
                0,
                Some(headers),
            )
        };
        let plain = message(&[]);
        let decoded = only(&plain);
        assert_eq!(event_id_of(&plain), Some(decoded.event.event_id));
        assert_eq!(types(&plain), Some(vec![decoded.event.event_type]));
        // A repeated header without a value is not the one read.
        let repeated = message(&[("ce_type", None), ("ce_id", None)]);
        let decoded = only(&repeated);
        assert_eq!(event_id_of(&repeated), Some(decoded.event.event_id));
        assert_eq!(types(&repeated), Some(vec![decoded.event.event_type]));
        // A later one with a value is.
        let other_id = failed_attempt(2).event_id;
        let other = other_id.to_string();
        let later = message(&[("ce_id", Some(other.as_bytes()))]);
        assert_eq!(event_id_of(&later), Some(only(&later).event.event_id));
        assert_eq!(event_id_of(&later), Some(other_id));
        let malformed = message(&[("ce_type", Some(b"x"))]);
        assert_eq!(types(&malformed), None, "x lacks the type prefix");
        assert!(from_message(&malformed).is_err());
    }

    /// The one event a record holds.
    fn only(m: &impl rdkafka::Message) -> Record {
        let mut read = from_message(m).expect("decodes");
        assert_eq!(read.len(), 1, "{read:?}");
        read.remove(0)
    }

    /// The event types a consumer passes a record over on.
    fn types(m: &impl rdkafka::Message) -> Option<Vec<String>> {
        event_types_of(m).map(|ts| ts.into_iter().map(|t| t.into_owned()).collect())
    }

    fn headers_of(stream: &StreamId, event: &NewEvent) -> Vec<(&'static str, Vec<u8>)> {
        headers(stream, 1, None, event, "/test")
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // The vectors of Kafka's own UtilsTest.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "{}", String::from_utf8_lossy(data));
        }
        let s: StreamId = "parcel/SE-1".parse().unwrap();
        assert!(partition(&s, 12) < 12);
        assert_eq!(partition(&s, 12), partition(&s, 12));
    }

    #[test]
    fn an_event_goes_to_headers_and_comes_back_whole() {
        let stream: StreamId = "parcel/SE-00000001".parse().unwrap();
        let event = failed_attempt(1);
        let after = EventId::new();
        let h = headers(&stream, 3, Some(after), &event, "/threshold/handheld");
        let names: Vec<&str> = h.iter().map(|(n, _)| *n).collect();
        for required in [
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_time",
            "ce_subject",
            "traceparent",
        ] {
            assert!(names.contains(&required), "{required} in {names:?}");
        }
        let text = |name: &str| {
            h.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
                .unwrap()
        };
        assert_eq!(text("ce_type"), "threshold.v1.parcel.attempt_failed");
        assert_eq!(text("ce_subject"), "parcel/SE-00000001");
        assert_eq!(text("ce_time"), "2026-11-23T09:30:00.000000Z");
        let back = from_record(
            h.iter().map(|(n, v)| (*n, v.as_slice())),
            event.payload.clone(),
        )
        .unwrap();
        assert_eq!((back.stream.clone(), back.version), (stream, 3));
        assert_eq!(back.after, Some(after));
        assert_eq!(back.event, event);
        let first = headers(&back.stream, 1, None, &event, "/t");
        assert!(first.iter().all(|(n, _)| *n != "ce_afterid"));
        assert_eq!(topic(Category::Parcel), "threshold.parcel");
    }

    #[test]
    fn a_missing_or_malformed_header_is_named() {
        let stream: StreamId = "parcel/SE-00000001".parse().unwrap();
        let event = failed_attempt(1);
        let h = headers(&stream, 1, None, &event, "/threshold/handheld");
        for (drop, field) in [("ce_id", "ce_id"), ("ce_subject", "ce_subject")] {
            let err = from_record(
                h.iter()
                    .filter(|(n, _)| *n != drop)
                    .map(|(n, v)| (*n, v.as_slice())),
                event.payload.clone(),
            )
            .unwrap_err();
            assert!(
                matches!(&err, Error::Invalid { field: f, .. } if *f == field),
                "{err}"
            );
        }
        let mut bad = h.clone();
        bad.push(("ce_time", b"yesterday".to_vec()));
        let err = from_record(
            bad.iter().map(|(n, v)| (*n, v.as_slice())),
            event.payload.clone(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("ce_time"), "{err}");
    }

    fn log_message(key: &[u8], value: Vec<u8>) -> rdkafka::message::OwnedMessage {
        rdkafka::message::OwnedMessage::new(
            Some(value),
            Some(key.to_vec()),
            "threshold.parcel".to_owned(),
            rdkafka::Timestamp::NotAvailable,
            0,
            0,
            None,
        )
    }

    #[test]
    fn an_event_goes_to_a_log_record_and_comes_back_whole() {
        let stream: StreamId = "parcel/SE-00000001".parse().unwrap();
        let mut event = failed_attempt(1);
        // Exact to the nanosecond: nothing is rounded on the way.
        event.occurred_at += chrono::Duration::nanoseconds(123_456_789);
        event.tracestate = Some("congo=t61rcWkgMzE".into());
        let after = EventId::new();
        let v = value(3, Some(after), &event, "/threshold/handheld");
        let back = from_value(stream.to_string().as_bytes(), &v)
            .unwrap()
            .remove(0);
        assert_eq!((back.stream.clone(), back.version), (stream.clone(), 3));
        assert_eq!(back.after, Some(after));
        assert_eq!(back.event, event);
        // Any protobuf reader of `threshold.v1.LogRecord` reads it.
        let plain = pb::LogRecord::decode(v.as_slice()).unwrap();
        assert_eq!(plain.event_id, event.event_id.to_string());
        assert_eq!(plain.event_type, "parcel.attempt_failed");
        assert_eq!(plain.source, "/threshold/handheld");
        assert_eq!(plain.payload, event.payload.to_vec());
        // The first of a stream follows nothing; an event with no optional
        // parts reads back without them.
        let bare = NewEvent {
            country: None,
            tenant: None,
            causation_id: None,
            correlation_id: None,
            traceparent: None,
            tracestate: None,
            ..failed_attempt(2)
        };
        let back = from_value(b"parcel/SE-00000001", &value(1, None, &bare, "/t"))
            .unwrap()
            .remove(0);
        assert_eq!((back.after, back.event), (None, bare));
        // Under 60% of the same event as CloudEvents headers (their names
        // and values alone) and payload: 280 bytes against 502 for the
        // contract suite's failed attempt with its trace context.
        let cloudevent: usize = headers(&stream, 3, Some(after), &event, "/threshold/handheld")
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
            + event.payload.len();
        assert!(
            v.len() * 10 < cloudevent * 6,
            "{} against {cloudevent}",
            v.len()
        );
    }

    /// What a consumer passes a log record over on (its event id and type)
    /// is what decoding it gives; a record in the CloudEvents layout written
    /// before reads as it did.
    #[test]
    fn a_consumer_reads_log_records_of_every_layout() {
        let stream = crate::contract::parcel(1);
        let event = failed_attempt(1);
        let m = log_message(stream.to_string().as_bytes(), value(1, None, &event, "/t"));
        let decoded = only(&m);
        assert_eq!(decoded.event, event);
        assert_eq!(event_id_of(&m), Some(event.event_id));
        assert_eq!(types(&m), Some(vec!["parcel.attempt_failed".to_owned()]));
        // An append of this one event alone reads the same.
        let appended = log_message(
            stream.to_string().as_bytes(),
            append_value(&[(1, None, &event)], "/t"),
        );
        assert_eq!(only(&appended), decoded);
        assert_eq!(event_id_of(&appended), event_id_of(&m));
        assert_eq!(types(&appended), types(&m));
        let before = rdkafka::message::OwnedMessage::new(
            Some(event.payload.to_vec()),
            Some(stream.to_string().into_bytes()),
            "threshold.parcel".to_owned(),
            rdkafka::Timestamp::NotAvailable,
            0,
            0,
            Some(kafka_headers(&headers_of(&stream, &event))),
        );
        assert_eq!(only(&before).event, decoded.event);
        assert_eq!(event_id_of(&before), Some(event.event_id));
        assert_eq!(types(&before), types(&m));
    }

    #[test]
    fn a_missing_or_malformed_log_record_field_is_named() {
        let event = failed_attempt(1);
        let good = value(1, None, &event, "/t");
        let field = |key: &[u8], v: &[u8]| match from_value(key, v) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(b"", &good), "key");
        assert_eq!(field(b"nothing/1", &good), "key");
        assert_eq!(field(b"parcel/SE-1", b"\xff\xff\xff"), "value");
        let without = |f: fn(&mut pb::LogRecord)| {
            let mut r = pb::LogRecord::decode(good.as_slice()).unwrap();
            f(&mut r);
            r.encode_to_vec()
        };
        let key = b"parcel/SE-1";
        assert_eq!(field(key, &without(|r| r.event_id.clear())), "event_id");
        assert_eq!(
            field(key, &without(|r| r.stream_version = 0)),
            "stream_version"
        );
        assert_eq!(field(key, &without(|r| r.event_type.clear())), "event_type");
        assert_eq!(
            field(key, &without(|r| r.schema_version = 0)),
            "schema_version"
        );
        assert_eq!(
            field(key, &without(|r| r.occurred_at = None)),
            "occurred_at"
        );
        assert_eq!(
            field(key, &without(|r| r.after_id = "x".into())),
            "after_id"
        );
        assert_eq!(field(key, &without(|r| r.country = 99)), "country");
        // A consumer passing records over does not take a malformed one for
        // anything.
        for value in [
            b"\xff\xff\xff".to_vec(),
            Vec::new(),
            without(|r| r.event_type.clear()),
            without(|r| r.event_id.clear()),
        ] {
            let m = log_message(key, value);
            assert_eq!((event_id_of(&m), types(&m)), (None, None));
            assert!(from_message(&m).is_err());
        }
    }

    /// An append's events in one record: each whole, in order, each
    /// following the one before; any protobuf reader of
    /// `threshold.v1.LogAppend` reads them.
    #[test]
    fn an_append_goes_to_one_record_and_comes_back_whole() {
        let stream = crate::contract::parcel(1);
        let head = EventId::new();
        let mut events = [failed_attempt(1), failed_attempt(2), failed_attempt(3)];
        events[1].event_type = "parcel.attempt_started".into();
        events[2].tenant = None;
        let chained: Vec<(u64, Option<EventId>, &NewEvent)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let after = if i == 0 {
                    Some(head)
                } else {
                    Some(events[i - 1].event_id)
                };
                (5 + i as u64, after, e)
            })
            .collect();
        let v = append_value(&chained, "/threshold/handheld");
        let back = from_value(stream.to_string().as_bytes(), &v).unwrap();
        assert_eq!(back.len(), 3);
        for (read, (version, after, event)) in back.iter().zip(&chained) {
            assert_eq!(read.stream, stream);
            assert_eq!((read.version, read.after), (*version, *after));
            assert_eq!(&read.event, *event);
        }
        let plain = pb::LogAppend::decode(v.as_slice()).unwrap();
        let ids: Vec<String> = plain.events.iter().map(|e| e.event_id.clone()).collect();
        let want: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        assert_eq!(ids, want);
        assert_eq!(plain.events[2].payload, events[2].payload.to_vec());
        // A consumer looks at the first event's id and at every type.
        let m = log_message(stream.to_string().as_bytes(), v);
        assert_eq!(event_id_of(&m), Some(events[0].event_id));
        assert_eq!(
            types(&m),
            Some(vec![
                "parcel.attempt_failed".to_owned(),
                "parcel.attempt_started".to_owned(),
                "parcel.attempt_failed".to_owned(),
            ])
        );
    }

    /// What a writer stores of its own record is what a reader decodes of
    /// it, whatever the event holds: empty texts, none, any instant, any
    /// country, an empty payload; and an event a reader would refuse is
    /// refused with the same field.
    #[test]
    fn an_event_as_read_is_what_a_reader_decodes_of_its_record() {
        let key = b"parcel/SE-00000001";
        let full = failed_attempt(1);
        let mut bare = failed_attempt(2);
        (bare.country, bare.tenant, bare.causation_id) = (None, None, None);
        (bare.correlation_id, bare.traceparent, bare.tracestate) = (None, None, None);
        bare.payload = Bytes::new();
        let mut empty = failed_attempt(3);
        empty.tenant = Some(String::new());
        empty.tracestate = Some(String::new());
        empty.occurred_at = DateTime::from_timestamp(-86_400 * 365, 999_999_999).unwrap();
        let mut leap = failed_attempt(4);
        leap.occurred_at = DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap();
        leap.country = Some(Country::Fi);
        let events = [full, bare, empty, leap];
        for (i, event) in events.iter().enumerate() {
            let version = 3 + i as u64;
            let after = (i > 0).then(|| events[i - 1].event_id);
            let read = from_value(key, &value(version, after, event, "/t")).unwrap();
            assert_eq!(read.len(), 1);
            assert_eq!(as_read(version, event).unwrap(), read[0].event, "event {i}");
        }
        assert_eq!(as_read(1, &events[2]).unwrap().tenant, None);
        let mut untyped = failed_attempt(5);
        untyped.event_type.clear();
        let mut unversioned = failed_attempt(6);
        unversioned.schema_version = 0;
        for (version, event, field) in [
            (0, &events[0], "stream_version"),
            (1, &untyped, "event_type"),
            (1, &unversioned, "schema_version"),
        ] {
            let reader = from_value(key, &value(version, None, event, "/t"));
            for refused in [as_read(version, event).map(|_| ()), reader.map(|_| ())] {
                match refused {
                    Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
                    other => panic!("{field}: {other:?}"),
                }
            }
        }
    }

    /// What a publisher reads of a record, in every layout, is where each
    /// event says it goes, as the whole record decodes.
    #[test]
    fn the_places_of_a_record_are_as_it_decodes_in_every_layout() {
        let stream: StreamId = "parcel/SE-00000001".parse().unwrap();
        let place = Place::from;
        let events = [failed_attempt(1), failed_attempt(2)];
        let key = stream.to_string();
        let one = log_message(key.as_bytes(), value(4, None, &events[0], "/t"));
        let two = log_message(
            key.as_bytes(),
            append_value(
                &[
                    (7, None, &events[0]),
                    (8, Some(events[0].event_id), &events[1]),
                ],
                "/t",
            ),
        );
        for m in [&one, &two] {
            let want: Vec<Place> = from_message(m).unwrap().into_iter().map(place).collect();
            assert_eq!(places_of(m), Some(want));
        }
        assert_eq!(
            places_of(&two)
                .unwrap()
                .iter()
                .map(|p| p.version)
                .collect::<Vec<_>>(),
            [7, 8]
        );
        // The CloudEvents layout: from the headers.
        let ce = rdkafka::message::OwnedMessage::new(
            Some(events[1].payload.to_vec()),
            Some(key.as_bytes().to_vec()),
            "threshold.parcel".to_owned(),
            rdkafka::Timestamp::NotAvailable,
            0,
            0,
            Some(kafka_headers(&headers(&stream, 3, None, &events[1], "/t"))),
        );
        let want: Vec<Place> = from_message(&ce).unwrap().into_iter().map(place).collect();
        assert_eq!(places_of(&ce), Some(want));
        assert_eq!(places_of(&ce).unwrap()[0].version, 3);
        // No version, a key that is not a stream, a cut value: no places.
        let mut r = pb::LogRecord::decode(value(4, None, &events[0], "/t").as_slice()).unwrap();
        r.stream_version = 0;
        assert_eq!(
            places_of(&log_message(key.as_bytes(), r.encode_to_vec())),
            None
        );
        let bad_key = log_message(b"not a stream", value(4, None, &events[0], "/t"));
        assert_eq!(places_of(&bad_key), None);
        let v = value(4, None, &events[0], "/t");
        assert_eq!(
            places_of(&log_message(key.as_bytes(), v[..v.len() - 3].to_vec())),
            None
        );
    }

    /// A malformed event of an append is named with its place; a consumer
    /// takes the record for nothing.
    #[test]
    fn a_malformed_event_of_an_append_is_named_with_its_place() {
        let events = [failed_attempt(1), failed_attempt(2)];
        let v = append_value(
            &[
                (1, None, &events[0]),
                (2, Some(events[0].event_id), &events[1]),
            ],
            "/t",
        );
        let mut append = pb::LogAppend::decode(v.as_slice()).unwrap();
        append.events[1].event_type.clear();
        let key = b"parcel/SE-1";
        match from_value(key, &append.encode_to_vec()) {
            Err(Error::Invalid { field, reason }) => {
                assert_eq!(field, "event_type");
                assert!(reason.contains("event 2 of 2"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let m = log_message(key, append.encode_to_vec());
        assert_eq!((event_id_of(&m), types(&m)), (None, None));
        // Cut short: not a LogAppend.
        let cut = &v[..v.len() - 3];
        match from_value(key, cut) {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "value"),
            other => panic!("{other:?}"),
        }
        assert_eq!(event_id_of(&log_message(key, cut.to_vec())), None);
    }
}
