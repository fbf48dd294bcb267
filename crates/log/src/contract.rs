//! The contract every backend of [`EventLog`] passes, written once.
//!
//! A backend's tests instantiate it with [`contract_suite!`], giving a
//! [`Backend`] that opens a fresh, empty log and can reopen it (a restart).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use threshold_domain::{Country, DomainEvent, EventId, StreamId, pb};

use crate::{Ack, Error, EventLog, ExpectedVersion, NewEvent, Position};

/// How the suite gets logs from a backend.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// A fresh, empty log.
    async fn open(&self) -> Arc<dyn EventLog>;
    /// The same log after a clean restart of the process holding it.
    async fn reopen(&self, log: Arc<dyn EventLog>) -> Arc<dyn EventLog>;
}

/// One `#[tokio::test]` per contract clause, for the backend `$backend`.
macro_rules! contract_suite {
    ($backend:expr) => {
        contract_suite!(@tests $backend;
            appended_events_read_back_in_order_with_their_envelope,
            acknowledged_events_survive_a_restart,
            the_same_event_id_is_stored_once,
            an_event_id_cannot_move_to_another_stream,
            a_stale_expected_version_conflicts_and_writes_nothing,
            concurrent_writers_leave_gap_free_versions,
            only_one_of_racing_creators_wins,
            read_all_pages_through_the_log_in_order,
            a_subscriber_sees_every_event_once_while_writers_run,
            a_subscription_resumes_after_a_restart,
            malformed_appends_are_refused_with_the_field_named,
        );
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = $backend;
                $crate::contract::$name(&backend).await;
            }
        )*
    };
}
pub(crate) use contract_suite;

pub(crate) fn parcel(n: u32) -> StreamId {
    format!("parcel/SE-{n:08}")
        .parse()
        .expect("valid stream id")
}

/// A realistic event of the parcel stream: an attempt that failed.
pub(crate) fn failed_attempt(attempt: u32) -> NewEvent {
    let event = DomainEvent::Parcel(pb::parcel_event::Event::AttemptFailed(pb::AttemptFailed {
        attempt,
        reason: pb::FailureReason::NotHome as i32,
        driver_id: "drv-1".into(),
        device_id: "hh-1".into(),
        note: "no answer at the door".into(),
        sealed_note: None,
    }));
    let at = Utc
        .with_ymd_and_hms(2026, 11, 23, 9, 30, 0)
        .single()
        .expect("valid instant");
    NewEvent::new(EventId::new(), &event, at)
        .country(Country::Se)
        .tenant("acme")
        .caused_by("cmd-1", "corr-1")
        .traced("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
}

pub(crate) async fn appended_events_read_back_in_order_with_their_envelope(b: &dyn Backend) {
    let log = b.open().await;
    let s = parcel(1);
    let sent: Vec<NewEvent> = (1..=3).map(failed_attempt).collect();
    let out = log
        .append(&s, ExpectedVersion::NO_STREAM, sent.clone())
        .await
        .expect("append to a new stream");
    assert_eq!(out.stream_version, 3);
    assert_eq!(out.acks.len(), 3);
    assert!(out.acks.iter().all(|a| !a.is_duplicate()));

    let read = log.read_stream(&s, 0, 100).await.expect("read stream");
    assert_eq!(read.len(), 3);
    for (i, (r, e)) in read.iter().zip(&sent).enumerate() {
        assert_eq!(r.stream, s);
        assert_eq!(r.stream_version, i as u64 + 1);
        assert_eq!(r.position, out.acks[i].position());
        assert_eq!(&r.event, e, "the envelope and payload read back as sent");
        let decoded = r.decode().expect("payload decodes");
        assert!(matches!(
            decoded,
            DomainEvent::Parcel(pb::parcel_event::Event::AttemptFailed(ref f)) if f.attempt == i as u32 + 1
        ));
    }
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));
    let tail = log
        .read_stream(&s, 2, 100)
        .await
        .expect("read from version");
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].stream_version, 3);
    assert_eq!(log.head().await.expect("head"), read[2].position);
    assert!(
        log.read_stream(&parcel(2), 0, 10)
            .await
            .expect("empty")
            .is_empty()
    );
}

pub(crate) async fn acknowledged_events_survive_a_restart(b: &dyn Backend) {
    let log = b.open().await;
    let mut ids = Vec::new();
    for n in 0..50 {
        let e = failed_attempt(1);
        ids.push(e.event_id);
        log.append(&parcel(n % 7), ExpectedVersion::Any, vec![e])
            .await
            .expect("append");
    }
    let log = b.reopen(log).await;
    let all = log
        .read_all(Position::ORIGIN, 1000)
        .await
        .expect("read all");
    let stored: Vec<EventId> = all.iter().map(|r| r.event.event_id).collect();
    assert_eq!(stored, ids, "every acknowledged event, in order, once");
    // Appending continues where it stopped.
    let out = log
        .append(
            &parcel(0),
            ExpectedVersion::Exactly(8),
            vec![failed_attempt(2)],
        )
        .await
        .expect("append after restart");
    assert_eq!(out.stream_version, 9);
    assert_eq!(out.acks[0].position(), Position(51));
}

pub(crate) async fn the_same_event_id_is_stored_once(b: &dyn Backend) {
    let log = b.open().await;
    let s = parcel(1);
    let e = failed_attempt(1);
    let first = log
        .append(&s, ExpectedVersion::NO_STREAM, vec![e.clone()])
        .await
        .expect("first append");
    // The resend of a lost acknowledgement: same id, now-stale expectation.
    let again = log
        .append(&s, ExpectedVersion::NO_STREAM, vec![e.clone()])
        .await
        .expect("a resend is answered, not refused");
    assert_eq!(
        again.acks,
        vec![Ack::Duplicate {
            position: first.acks[0].position(),
            version: 1
        }]
    );
    // A batch mixing a stored event, a new one, and the new one twice.
    let fresh = failed_attempt(2);
    let mixed = log
        .append(
            &s,
            ExpectedVersion::Exactly(1),
            vec![e.clone(), fresh.clone(), fresh.clone()],
        )
        .await
        .expect("mixed batch");
    assert!(mixed.acks[0].is_duplicate());
    assert!(matches!(mixed.acks[1], Ack::Appended { version: 2, .. }));
    assert_eq!(
        mixed.acks[2],
        Ack::Duplicate {
            position: mixed.acks[1].position(),
            version: 2
        }
    );
    let read = log.read_stream(&s, 0, 10).await.expect("read");
    assert_eq!(read.len(), 2, "two distinct ids, two events");
    let all = log.read_all(Position::ORIGIN, 10).await.expect("read all");
    assert_eq!(all.len(), 2);
}

pub(crate) async fn an_event_id_cannot_move_to_another_stream(b: &dyn Backend) {
    let log = b.open().await;
    let e = failed_attempt(1);
    log.append(&parcel(1), ExpectedVersion::Any, vec![e.clone()])
        .await
        .expect("append");
    let err = log
        .append(&parcel(2), ExpectedVersion::Any, vec![failed_attempt(1), e])
        .await
        .expect_err("the id belongs to parcel 1");
    assert!(matches!(err, Error::EventIdReused { .. }), "{err}");
    assert!(err.to_string().contains("parcel/SE-00000001"), "{err}");
    assert!(
        log.read_stream(&parcel(2), 0, 10)
            .await
            .expect("read")
            .is_empty()
    );
}

pub(crate) async fn a_stale_expected_version_conflicts_and_writes_nothing(b: &dyn Backend) {
    let log = b.open().await;
    let s = parcel(1);
    log.append(
        &s,
        ExpectedVersion::NO_STREAM,
        vec![failed_attempt(1), failed_attempt(2)],
    )
    .await
    .expect("create");
    let head = log.head().await.expect("head");
    let err = log
        .append(
            &s,
            ExpectedVersion::Exactly(1),
            vec![failed_attempt(3), failed_attempt(4)],
        )
        .await
        .expect_err("stale");
    match &err {
        Error::Conflict {
            stream,
            expected,
            actual,
        } => {
            assert_eq!(stream, &s);
            assert_eq!((*expected, *actual), (1, 2));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(
        err.to_string(),
        "conflict on parcel/SE-00000001: expected version 1, the stream is at 2; nothing was written"
    );
    let err = log
        .append(&s, ExpectedVersion::NO_STREAM, vec![failed_attempt(3)])
        .await
        .expect_err("the stream exists");
    assert!(matches!(err, Error::Conflict { actual: 2, .. }));
    assert_eq!(log.read_stream(&s, 0, 10).await.expect("read").len(), 2);
    assert_eq!(log.head().await.expect("head"), head, "nothing written");
    log.append(&s, ExpectedVersion::Exactly(2), vec![failed_attempt(3)])
        .await
        .expect("the right version succeeds");
}

pub(crate) async fn concurrent_writers_leave_gap_free_versions(b: &dyn Backend) {
    let log = b.open().await;
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            for i in 0..150u32 {
                let batch = (0..(1 + (i + w) % 3)).map(|_| failed_attempt(1)).collect();
                log.append(&parcel((i * 7 + w) % 5), ExpectedVersion::Any, batch)
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let all = log
        .read_all(Position::ORIGIN, 100_000)
        .await
        .expect("read all");
    let expected_total: u32 = (0..8u32)
        .flat_map(|w| (0..150u32).map(move |i| 1 + (i + w) % 3))
        .sum();
    assert_eq!(all.len(), expected_total as usize);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.position, Position(i as u64 + 1), "positions are gap-free");
    }
    let mut per_stream: HashMap<StreamId, Vec<u64>> = HashMap::new();
    for r in &all {
        per_stream
            .entry(r.stream.clone())
            .or_default()
            .push(r.stream_version);
    }
    for (s, versions) in per_stream {
        let want: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, want, "{s} versions in position order");
        let read: Vec<u64> = log
            .read_stream(&s, 0, 100_000)
            .await
            .expect("read stream")
            .iter()
            .map(|r| r.stream_version)
            .collect();
        assert_eq!(read, want);
    }
}

pub(crate) async fn only_one_of_racing_creators_wins(b: &dyn Backend) {
    let log = b.open().await;
    let s = parcel(42);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let log = Arc::clone(&log);
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            log.append(&s, ExpectedVersion::NO_STREAM, vec![failed_attempt(1)])
                .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => won += 1,
            Err(Error::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(log.read_stream(&s, 0, 100).await.expect("read").len(), 1);
}

pub(crate) async fn read_all_pages_through_the_log_in_order(b: &dyn Backend) {
    let log = b.open().await;
    for n in 0..25 {
        log.append(
            &parcel(n),
            ExpectedVersion::Any,
            vec![failed_attempt(1), failed_attempt(2)],
        )
        .await
        .expect("append");
    }
    let mut after = Position::ORIGIN;
    let mut seen = Vec::new();
    loop {
        let page = log.read_all(after, 7).await.expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = page.last().expect("non-empty").position;
        seen.extend(page.into_iter().map(|r| r.position.0));
    }
    assert_eq!(seen, (1..=50).collect::<Vec<u64>>());
}

pub(crate) async fn a_subscriber_sees_every_event_once_while_writers_run(b: &dyn Backend) {
    let log = b.open().await;
    for n in 0..300 {
        log.append(
            &parcel(n % 11),
            ExpectedVersion::Any,
            vec![failed_attempt(1)],
        )
        .await
        .expect("append");
    }
    let mut sub = log.subscribe(Position::ORIGIN);
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let log = Arc::clone(&log);
        writers.push(tokio::spawn(async move {
            for i in 0..250u32 {
                log.append(
                    &parcel(w * 1000 + i % 13),
                    ExpectedVersion::Any,
                    vec![failed_attempt(1)],
                )
                .await
                .expect("append");
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    let total = 300 + 4 * 250;
    let mut positions = Vec::with_capacity(total);
    let mut ids = HashSet::new();
    while positions.len() < total {
        let next = tokio::time::timeout(std::time::Duration::from_secs(30), sub.next())
            .await
            .expect("the subscriber keeps up")
            .expect("subscription open")
            .expect("event");
        assert!(
            ids.insert(next.event.event_id),
            "seen twice: {}",
            next.event.event_id
        );
        positions.push(next.position.0);
    }
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(positions, (1..=total as u64).collect::<Vec<_>>());
    // Nothing more arrives than was written.
    let extra = tokio::time::timeout(std::time::Duration::from_millis(200), sub.next()).await;
    assert!(extra.is_err(), "no event beyond the {total} written");
}

pub(crate) async fn a_subscription_resumes_after_a_restart(b: &dyn Backend) {
    let log = b.open().await;
    for n in 0..120 {
        log.append(
            &parcel(n % 9),
            ExpectedVersion::Any,
            vec![failed_attempt(1)],
        )
        .await
        .expect("append");
    }
    let mut sub = log.subscribe(Position::ORIGIN);
    let mut last = Position::ORIGIN;
    for _ in 0..70 {
        last = sub.next().await.expect("open").expect("event").position;
    }
    drop(sub);
    let log = b.reopen(log).await;
    for n in 0..30 {
        log.append(
            &parcel(n % 9),
            ExpectedVersion::Any,
            vec![failed_attempt(2)],
        )
        .await
        .expect("append");
    }
    let mut sub = log.subscribe(last);
    let mut resumed = Vec::new();
    while resumed.len() < 80 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
            .await
            .expect("resumed subscription delivers")
            .expect("open")
            .expect("event");
        resumed.push(e.position.0);
    }
    assert_eq!(resumed, (71..=150).collect::<Vec<_>>());
}

pub(crate) async fn malformed_appends_are_refused_with_the_field_named(b: &dyn Backend) {
    let log = b.open().await;
    let err = log
        .append(&parcel(1), ExpectedVersion::Any, vec![])
        .await
        .expect_err("empty");
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "events",
                ..
            }
        ),
        "{err}"
    );
    let wrong: StreamId = "grant/g-1".parse().expect("stream");
    let err = log
        .append(&wrong, ExpectedVersion::Any, vec![failed_attempt(1)])
        .await
        .expect_err("a parcel event in a grant stream");
    assert_eq!(
        err.to_string(),
        "invalid event_type: parcel.attempt_failed does not belong in grant/g-1"
    );
    assert_eq!(log.head().await.expect("head"), Position::ORIGIN);
}
