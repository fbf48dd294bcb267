//! The tamper-evident audit chain of a home's events.
//!
//! Every event of a home stream carries, in its payload, the hash of the
//! event before it (`HomeEvent.prev_hash`; 32 zero bytes for the first). The
//! hash of an event is SHA-256 over what is stored of it: its event id, type,
//! time and payload (which holds its own `prev_hash`). Changing or removing
//! any stored event breaks the next link, even when whoever did it also
//! recomputed the row's checksum; the last event's hash is the chain's head,
//! which a resident's receipt can hold.

use prost::Message as _;
use sha2::{Digest, Sha256};
use threshold_domain::pb;

use crate::{NewEvent, Position, RecordedEvent};

/// The `prev_hash` of a stream's first event.
pub const GENESIS: [u8; 32] = [0; 32];

fn link(event_id: &[u8; 16], event_type: &str, occurred_at_us: i64, payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(event_id);
    h.update((event_type.len() as u32).to_le_bytes());
    h.update(event_type.as_bytes());
    h.update(occurred_at_us.to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

/// The hash a stored event's successor commits to.
pub fn hash_of(e: &RecordedEvent) -> [u8; 32] {
    hash_of_new(&e.event)
}

/// The hash of an event about to be stored.
pub fn hash_of_new(e: &NewEvent) -> [u8; 32] {
    link(
        e.event_id.as_bytes(),
        &e.event_type,
        e.occurred_at.timestamp_micros(),
        &e.payload,
    )
}

/// Makes a home event commit to `prev` (the hash of the event before it).
pub fn seal(event: &mut NewEvent, prev: [u8; 32]) -> Result<(), crate::Error> {
    let mut home =
        pb::HomeEvent::decode(event.payload.as_ref()).map_err(|e| crate::Error::Invalid {
            field: "payload",
            reason: format!("not a home event: {e}"),
        })?;
    home.prev_hash = prev.to_vec();
    event.payload = home.encode_to_vec().into();
    Ok(())
}

/// Where a home's chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the chain breaks at version {version} (position {position}): {detail}")]
pub struct Broken {
    /// The stream version of the first event whose link does not hold.
    pub version: u64,
    /// Its position in the log.
    pub position: Position,
    /// What does not match.
    pub detail: String,
}

/// Checks a home stream's events, in stream order, link by link; returns
/// the head (the last event's hash), or the first link that does not hold.
pub fn verify(events: &[RecordedEvent]) -> Result<[u8; 32], Broken> {
    let mut prev = GENESIS;
    for (expected_version, e) in (1u64..).zip(events) {
        let broken = |detail: String| Broken {
            version: e.stream_version,
            position: e.position,
            detail,
        };
        if e.stream_version != expected_version {
            return Err(broken(format!(
                "version {expected_version} is missing (found {})",
                e.stream_version
            )));
        }
        let home = pb::HomeEvent::decode(e.event.payload.as_ref())
            .map_err(|err| broken(format!("not a home event: {err}")))?;
        if home.prev_hash != prev {
            return Err(broken(format!(
                "it commits to {} but the event before it hashes to {}",
                hex(&home.prev_hash),
                hex(&prev)
            )));
        }
        prev = hash_of(e);
    }
    Ok(prev)
}

/// Checks a receipt against a home's stored events: the chain is intact and
/// its event at `version` still hashes to `head` (lower-case hex), so nothing
/// the receipt vouched for was changed or dropped since it was made.
pub fn check_receipt(events: &[RecordedEvent], head: &str, version: u64) -> Result<(), String> {
    verify(events).map_err(|b| b.to_string())?;
    let at = version
        .checked_sub(1)
        .and_then(|i| events.get(i as usize))
        .ok_or_else(|| {
            format!(
                "the receipt names version {version}, but the chain holds {} events",
                events.len()
            )
        })?;
    let found = hex(&hash_of(at));
    if found != head.to_ascii_lowercase() {
        return Err(format!(
            "version {version} hashes to {found}, not the receipt's {head}"
        ));
    }
    Ok(())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmbeddedLog, EmbeddedOptions, EventLog, ExpectedVersion};
    use chrono::{TimeZone, Utc};
    use threshold_domain::{DomainEvent, EventId, StreamId};

    fn camera(n: i64) -> DomainEvent {
        DomainEvent::Home(pb::home_event::Event::CameraOnline(pb::CameraOnline {
            camera_id: format!("cam-{n}"),
            ..Default::default()
        }))
    }

    #[tokio::test]
    async fn an_edited_event_breaks_the_chain_even_with_its_checksum_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let stream: StreamId = "home/h-1".parse().unwrap();
        let mut prev = GENESIS;
        for n in 0..4 {
            let at = Utc.timestamp_opt(1_790_000_000 + n, 0).unwrap();
            let mut e = NewEvent::new(EventId::new(), &camera(n), at);
            seal(&mut e, prev).unwrap();
            prev = hash_of_new(&e);
            log.append(&stream, ExpectedVersion::Any, vec![e])
                .await
                .unwrap();
        }
        let events = log.read_stream(&stream, 0, usize::MAX).await.unwrap();
        assert_eq!(
            verify(&events),
            Ok(prev),
            "intact, and the head is the last hash"
        );
        // A resident's receipt from version 2 and one from the head hold.
        check_receipt(&events, &hex(&hash_of(&events[1])), 2).unwrap();
        check_receipt(&events, &hex(&prev), 4).unwrap();
        assert!(check_receipt(&events, &hex(&prev), 5).is_err());
        // The last event has no successor to break; the receipt holding its
        // hash catches an edit to it.
        let mut last = events.clone();
        last[3].event.payload = pb::HomeEvent {
            event: Some(pb::home_event::Event::CameraOffline(
                pb::CameraOffline::default(),
            )),
            prev_hash: pb::HomeEvent::decode(events[3].event.payload.as_ref())
                .unwrap()
                .prev_hash,
        }
        .encode_to_vec()
        .into();
        assert!(verify(&last).is_ok(), "the chain alone cannot see it");
        assert!(check_receipt(&last, &hex(&prev), 4).is_err());
        log.close().await.unwrap();

        // Someone rewrites event 2 in the database and fixes its checksum.
        let db = dir.path().join(crate::embedded::DB_FILE);
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut forged = events[1].clone();
        let mut home = pb::HomeEvent::decode(forged.event.payload.as_ref()).unwrap();
        home.event = Some(pb::home_event::Event::CameraOnline(pb::CameraOnline {
            camera_id: "cam-forged".into(),
            ..Default::default()
        }));
        forged.event.payload = home.encode_to_vec().into();
        let crc = crate::embedded::checksum(&forged);
        conn.execute(
            "UPDATE events SET payload = ?1, crc = ?2 WHERE position = ?3",
            rusqlite::params![
                forged.event.payload.as_ref(),
                i64::from(crc),
                forged.position.0 as i64
            ],
        )
        .unwrap();
        drop(conn);

        let events = crate::embedded::read_only(dir.path(), Position(0), usize::MAX).unwrap();
        assert_eq!(
            events[1].event.payload, forged.event.payload,
            "the row reads clean"
        );
        let broken = verify(&events).unwrap_err();
        assert_eq!(
            broken.version, 3,
            "the first link that fails is the next event's"
        );
        assert!(broken.detail.contains("commits to"), "{broken}");
        // Removing an event is found too.
        let mut gap = events.clone();
        gap.remove(2);
        assert_eq!(verify(&gap).unwrap_err().version, 4);
        // A receipt made before the edit no longer holds.
        assert!(check_receipt(&events, &hex(&prev), 4).is_err());
    }
}
