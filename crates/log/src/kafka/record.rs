//! How an event becomes a Kafka record, and back: the record layout the
//! Kafka backend writes and any partner's Kafka client can read.
//!
//! - **Topic**: one per category, `threshold.<category>` (`threshold.parcel`,
//!   `threshold.route`, `threshold.grant`, `threshold.home`), and
//!   `threshold.outcome` for partners.
//! - **Key**: the stream id (`parcel/SE-1`), so one stream's events stay in
//!   one partition, in order. The partition is Kafka's default for a keyed
//!   record (murmur2 of the key, [`partition`]), so every client — Java,
//!   librdkafka with the `murmur2_random` partitioner, this one — agrees.
//! - **Value**: the protobuf payload, unchanged.
//! - **Headers**: CloudEvents 1.0 in binary content mode (the Kafka protocol
//!   binding): `ce_specversion`, `ce_id`, `ce_source`, `ce_type`, `ce_time`,
//!   `ce_subject`, `content-type`; the envelope as CloudEvents extensions
//!   (`ce_streamversion`, `ce_schemaversion`, `ce_country`, `ce_tenant`,
//!   `ce_causationid`, `ce_correlationid`), `ce_afterid`: the id of the
//!   stream's event this one follows, which makes a record a conditional
//!   append (see [`crate::kafka`]); and W3C `traceparent` / `tracestate`,
//!   as tracing instrumentations of Kafka clients expect them.
//!
//! Only the mapping lives here: it never talks to a broker nor uses the
//! Kafka client, so the layout is testable (and readable) without one.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use threshold_domain::{Category, Country, EventId, StreamId};

use crate::{Error, NewEvent};

/// The CloudEvents version written.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of every record's value.
pub const CONTENT_TYPE: &str = "application/protobuf";
/// What `ce_type` starts with: `threshold.v1.parcel.delivered`.
pub const TYPE_PREFIX: &str = "threshold.v1.";

/// The topic of a category.
pub fn topic(category: Category) -> String {
    format!("threshold.{}", category.as_str())
}

/// The topic partners read their outcomes from.
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

/// An event as a record carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The stream (`ce_subject`).
    pub stream: StreamId,
    /// Its version there (`ce_streamversion`).
    pub version: u64,
    /// The id of the stream's event at `version - 1` when it was written
    /// (`ce_afterid`); `None` for the first.
    pub after: Option<EventId>,
    /// The event.
    pub event: NewEvent,
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

/// The event type (`ce_type` without [`TYPE_PREFIX`]) of a record as a
/// consumer took it; `None` where the header is missing or malformed
/// (decoding the record then says what is wrong).
pub(super) fn event_type_of(m: &impl rdkafka::Message) -> Option<&str> {
    std::str::from_utf8(header(m, "ce_type")?)
        .ok()?
        .strip_prefix(TYPE_PREFIX)
}

/// The event id (`ce_id`) of a record as a consumer took it; `None` where
/// the header is missing or malformed.
pub(super) fn event_id_of(m: &impl rdkafka::Message) -> Option<EventId> {
    std::str::from_utf8(header(m, "ce_id")?).ok()?.parse().ok()
}

/// An event read back from a record as a consumer took it.
pub(super) fn from_message(m: &impl rdkafka::Message) -> Result<Record, Error> {
    use rdkafka::message::Headers;
    let headers: Vec<(&str, &[u8])> = m
        .headers()
        .map(|h| {
            h.iter()
                .filter_map(|h| h.value.map(|v| (h.key, v)))
                .collect()
        })
        .unwrap_or_default();
    from_record(
        headers,
        Bytes::copy_from_slice(m.payload().unwrap_or_default()),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::failed_attempt;

    /// What a consumer passes a record over on (its `ce_id` and `ce_type`)
    /// is what decoding it gives, also when a header repeats.
    #[test]
    fn the_headers_a_consumer_looks_at_read_as_the_record_decodes() {
        use rdkafka::Timestamp;
        use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
        let event = failed_attempt(1);
        let stream = crate::contract::parcel(1);
        let message = |extra: &[(&str, Option<&[u8]>)]| {
            let mut headers = OwnedHeaders::new();
            for (key, value) in headers_of(&stream, &event) {
                headers = headers.insert(Header {
                    key,
                    value: Some(&value),
                });
            }
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
        let decoded = from_message(&plain).expect("decodes");
        assert_eq!(event_id_of(&plain), Some(decoded.event.event_id));
        assert_eq!(
            event_type_of(&plain),
            Some(decoded.event.event_type.as_str())
        );
        // A repeated header without a value is not the one read.
        let repeated = message(&[("ce_type", None), ("ce_id", None)]);
        let decoded = from_message(&repeated).expect("decodes");
        assert_eq!(event_id_of(&repeated), Some(decoded.event.event_id));
        assert_eq!(
            event_type_of(&repeated),
            Some(decoded.event.event_type.as_str())
        );
        // A later one with a value is.
        let other_id = failed_attempt(2).event_id;
        let other = other_id.to_string();
        let later = message(&[("ce_id", Some(other.as_bytes()))]);
        assert_eq!(
            event_id_of(&later),
            Some(from_message(&later).expect("decodes").event.event_id)
        );
        assert_eq!(event_id_of(&later), Some(other_id));
        let malformed = message(&[("ce_type", Some(b"x"))]);
        assert_eq!(event_type_of(&malformed), None, "x lacks the type prefix");
        assert!(from_message(&malformed).is_err());
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
}
