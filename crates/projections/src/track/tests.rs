use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;

use threshold_domain::Country;
use threshold_domain::parcel::Command;
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog};

use super::*;
use crate::attempts::tests::{day, deliver, drive, fail, manifest};

#[tokio::test]
async fn the_sqlite_store_keeps_the_contract() {
    let store = SqliteTrackStore::in_memory().unwrap();
    contract::run(&store, "mem").await;
}

#[test]
fn a_batch_writes_each_parcel_s_latest_summary_once() {
    let (a, b) = (
        contract::journey("SE-1", "STO"),
        contract::journey("FI-2", "HEL"),
    );
    // Two parcels' rows interleaved, one of them out of order.
    let rows = vec![
        a[0].clone(),
        b[2].clone(),
        a[3].clone(),
        b[0].clone(),
        a[1].clone(),
        b[5].clone(),
        b[4].clone(),
    ];
    let latest: Vec<_> = latest_per_parcel(&rows).into_iter().cloned().collect();
    assert_eq!(latest, vec![a[3].clone(), b[5].clone()]);
    assert!(latest_per_parcel(&[]).is_empty());
}

/// A batch's rows and its reader's checkpoint commit together: when the
/// checkpoint cannot be written, the rows are not stored either, and the
/// reader is where it was, so the batch is folded again from there.
#[tokio::test]
async fn a_batch_and_its_checkpoint_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("track.sqlite");
    let store = SqliteTrackStore::open(&path).unwrap();
    let rows = contract::journey("NO-4", "OSL");
    let at = |p: u64| Checkpoint {
        position: Position(p),
        event_id: format!("e{p}"),
    };
    store.feed(&rows[..2], "p1", &at(2)).await.unwrap();
    // Another connection makes every checkpoint write fail from now on.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse_insert BEFORE INSERT ON track_checkpoints
                BEGIN SELECT RAISE(ABORT, 'refused'); END;
             CREATE TRIGGER refuse_update BEFORE UPDATE ON track_checkpoints
                BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let refused = store.feed(&rows[2..], "p1", &at(8)).await;
    assert!(
        refused.is_err(),
        "a checkpoint the store refused was taken: {refused:?}"
    );
    assert_eq!(store.checkpoint("p1").await.unwrap(), Some(at(2)));
    assert_eq!(
        store.steps("NO-4").await.unwrap(),
        rows[..2]
            .iter()
            .map(|r| r.event.clone())
            .collect::<Vec<_>>(),
        "the rows of a batch whose checkpoint failed were stored"
    );
    assert_eq!(
        store.summary("NO-4").await.unwrap(),
        Some(rows[1].summary.clone())
    );
}

#[tokio::test]
async fn the_sqlite_store_keeps_what_it_took_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("track.sqlite");
    let rows = contract::journey("SE-9", "STO");
    {
        let store = SqliteTrackStore::open(&path).unwrap();
        contract::run(&store, "file").await;
        store.put(&rows).await.unwrap();
        store
            .set_checkpoint(
                "p1",
                &Checkpoint {
                    position: Position(8),
                    event_id: "e".into(),
                },
            )
            .await
            .unwrap();
    }
    let store = SqliteTrackStore::open(&path).unwrap();
    let track = store.track("SE-9").await.unwrap().unwrap();
    assert_eq!(track.events.len(), 8);
    assert_eq!(track.summary, rows[7].summary);
    assert_eq!(
        store.checkpoint("p1").await.unwrap().unwrap().position,
        Position(8)
    );
}

/// A store whose steps were kept by (parcel, version), as stores were
/// before steps were kept in the order they came, opens with every step
/// it held, in the current layout, and takes the same rows again as
/// nothing new.
#[tokio::test]
async fn a_store_of_the_earlier_layout_keeps_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("track.sqlite");
    let (a, b) = (
        contract::journey("SE-5", "STO"),
        contract::journey("DK-6", "CPH"),
    );
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE track_events (
                parcel_id   TEXT NOT NULL,
                version     INTEGER NOT NULL,
                event_id    TEXT NOT NULL,
                milestone   TEXT NOT NULL,
                occurred_at INTEGER NOT NULL,
                attempt     INTEGER NOT NULL,
                detail      TEXT NOT NULL,
                PRIMARY KEY (parcel_id, version)
            ) WITHOUT ROWID;",
        )
        .unwrap();
        for r in a.iter().chain(&b[..3]) {
            let e = &r.event;
            db.execute(
                "INSERT INTO track_events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![
                    r.summary.parcel_id,
                    e.version as i64,
                    e.event_id,
                    e.milestone.as_str(),
                    e.occurred_at.timestamp_millis(),
                    e.attempt,
                    e.detail,
                ],
            )
            .unwrap();
        }
    }
    let steps = |rows: &[TrackRow]| rows.iter().map(|r| r.event.clone()).collect::<Vec<_>>();
    let store = SqliteTrackStore::open(&path).unwrap();
    assert_eq!(store.steps("SE-5").await.unwrap(), steps(&a));
    assert_eq!(store.steps("DK-6").await.unwrap(), steps(&b[..3]));
    let layout: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'track_events'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!layout.contains("WITHOUT ROWID"), "{layout}");
    store.put(&a).await.unwrap();
    store.put(&b).await.unwrap();
    assert_eq!(store.steps("SE-5").await.unwrap(), steps(&a));
    assert_eq!(store.steps("DK-6").await.unwrap(), steps(&b));
    drop(store);
    let store = SqliteTrackStore::open(&path).unwrap();
    assert_eq!(store.steps("DK-6").await.unwrap(), steps(&b));
}

/// A store of the earlier layout whose steps cannot be moved (here, a
/// column missing) is refused on open, saying which file and why, and is
/// left as it was: nothing it held is lost.
#[tokio::test]
async fn an_earlier_store_that_cannot_be_moved_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("track.sqlite");
    let old = "CREATE TABLE track_events (
            parcel_id TEXT NOT NULL,
            version   INTEGER NOT NULL,
            event_id  TEXT NOT NULL,
            PRIMARY KEY (parcel_id, version)
        ) WITHOUT ROWID;
        INSERT INTO track_events VALUES ('SE-5', 1, 'e1');";
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(old)
        .unwrap();
    let err = SqliteTrackStore::open(&path).err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("track.sqlite"), "{text}");
    assert!(text.contains("earlier layout"), "{text}");
    let db = rusqlite::Connection::open(&path).unwrap();
    let kept: (String, i64, String) = db
        .query_row("SELECT * FROM track_events", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(kept, ("SE-5".into(), 1, "e1".into()));
    let tables: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name LIKE 'track_events%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "only the earlier table, as it was");
}

#[tokio::test]
async fn a_store_that_cannot_open_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("track.sqlite");
    let err = SqliteTrackStore::open(&path).err().expect("no store");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

fn reschedule(to: NaiveDate) -> Command {
    Command::Reschedule {
        date: to,
        reason: "carried over".into(),
    }
}

fn start() -> Command {
    Command::StartAttempt {
        route_id: None,
        planned_route: None,
        driver_id: threshold_domain::DriverId::new("d").unwrap(),
        device_id: threshold_domain::DeviceId::new("h").unwrap(),
    }
}

/// Waits until `reader` has fed `store` up to `log`'s head.
async fn fed(log: &dyn EventLog, store: &dyn TrackStore, reader: &str) {
    let head = log.head().await.unwrap();
    for _ in 0..500 {
        if store
            .checkpoint(reader)
            .await
            .unwrap()
            .is_some_and(|c| c.position >= head)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{reader} did not feed the store up to {head:?}");
}

async fn day_ids(store: &dyn TrackStore, depot: &str, d: NaiveDate) -> Vec<String> {
    store
        .day(Country::Se, depot, d, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.parcel_id)
        .collect()
}

#[tokio::test]
async fn a_followed_log_gives_each_parcel_its_track_and_a_restart_or_a_second_reader_changes_nothing()
 {
    use threshold_domain::pb::{DeliveryMethod as M, FailureReason as F, Service as S};
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let next = day().succ_opt().unwrap();
    drive(
        log.as_ref(),
        "SE-1",
        vec![
            manifest("SE-1", Country::Se, "STO-1", S::Doorstep),
            start(),
            fail(F::NotHome),
            reschedule(next),
            start(),
            deliver(M::Doorstep),
        ],
    )
    .await;
    drive(
        log.as_ref(),
        "SE-2",
        vec![manifest("SE-2", Country::Se, "STO-1", S::Doorstep)],
    )
    .await;
    let store: Arc<dyn TrackStore> = Arc::new(SqliteTrackStore::in_memory().unwrap());
    let feeder = tokio::spawn(follow(Arc::clone(&log), Arc::clone(&store), "p1".into()));
    fed(log.as_ref(), store.as_ref(), "p1").await;

    let track = store.track("SE-1").await.unwrap().unwrap();
    let steps: Vec<(Milestone, u32, String)> = track
        .events
        .iter()
        .map(|e| (e.milestone, e.attempt, e.detail.clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (Milestone::Manifested, 0, "2026-11-23".into()),
            (Milestone::AttemptStarted, 1, String::new()),
            (Milestone::AttemptFailed, 1, "not_home".into()),
            (Milestone::Rescheduled, 0, "2026-11-24".into()),
            (Milestone::AttemptStarted, 2, String::new()),
            (Milestone::Delivered, 2, "doorstep".into()),
        ]
    );
    let versions: Vec<u64> = track.events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=6).collect::<Vec<_>>());
    let s = &track.summary;
    assert_eq!(
        (
            s.partner.as_str(),
            s.depot.as_str(),
            s.day,
            s.status,
            s.attempts
        ),
        ("nordshop", "STO-1", next, Milestone::Delivered, 2)
    );
    assert_eq!(
        day_ids(store.as_ref(), "STO-1", day()).await,
        vec!["SE-2".to_string()]
    );
    assert_eq!(
        day_ids(store.as_ref(), "STO-1", next).await,
        vec!["SE-1".to_string()]
    );

    // Events while it runs reach the store too.
    drive(
        log.as_ref(),
        "SE-3",
        vec![manifest("SE-3", Country::Se, "STO-1", S::Doorstep), start()],
    )
    .await;
    fed(log.as_ref(), store.as_ref(), "p1").await;
    let s3 = store.summary("SE-3").await.unwrap().unwrap();
    assert_eq!((s3.status, s3.attempts), (Milestone::AttemptStarted, 1));
    feeder.abort();

    // A restart goes on from its checkpoint: SE-3's next event needs the
    // summary the store holds, which the new tracker asks for.
    drive(log.as_ref(), "SE-3", vec![fail(F::Refused)]).await;
    let before = store.checkpoint("p1").await.unwrap().unwrap();
    let feeder = tokio::spawn(follow(Arc::clone(&log), Arc::clone(&store), "p1".into()));
    fed(log.as_ref(), store.as_ref(), "p1").await;
    feeder.abort();
    let after = store.checkpoint("p1").await.unwrap().unwrap();
    assert!(after.position > before.position);
    let t3 = store.track("SE-3").await.unwrap().unwrap();
    assert_eq!(t3.events.len(), 3);
    assert_eq!(t3.summary.status, Milestone::AttemptFailed);
    assert_eq!(t3.events[2].detail, "refused");

    // A second reader feeding the same store from the start, and a fresh
    // store fed once, hold the same.
    let snapshot = |store: Arc<dyn TrackStore>| async move {
        let mut all = Vec::new();
        for id in ["SE-1", "SE-2", "SE-3"] {
            all.push(store.track(id).await.unwrap());
        }
        all.push(Some(ParcelTrack {
            summary: store.summary("SE-1").await.unwrap().unwrap(),
            events: Vec::new(),
        }));
        (all, day_ids(store.as_ref(), "STO-1", day()).await)
    };
    let one = snapshot(Arc::clone(&store)).await;
    let feeder = tokio::spawn(follow(Arc::clone(&log), Arc::clone(&store), "p2".into()));
    fed(log.as_ref(), store.as_ref(), "p2").await;
    feeder.abort();
    assert_eq!(snapshot(Arc::clone(&store)).await, one);
    let fresh: Arc<dyn TrackStore> = Arc::new(SqliteTrackStore::in_memory().unwrap());
    let feeder = tokio::spawn(follow(Arc::clone(&log), Arc::clone(&fresh), "p1".into()));
    fed(log.as_ref(), fresh.as_ref(), "p1").await;
    feeder.abort();
    assert_eq!(snapshot(fresh).await, one);
}

/// A store whose reader `p1` has `checkpoint` from another log, fed from
/// a log holding `parcels` (manifested at Oslo): once its reader has
/// caught up, or has given up waiting.
async fn fed_despite(checkpoint: Checkpoint, parcels: &[&str]) -> Arc<dyn TrackStore> {
    use threshold_domain::pb::Service as S;
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap());
    for p in parcels {
        drive(
            log.as_ref(),
            p,
            vec![manifest(p, Country::No, "OSL", S::Doorstep)],
        )
        .await;
    }
    let store: Arc<dyn TrackStore> = Arc::new(SqliteTrackStore::in_memory().unwrap());
    store.set_checkpoint("p1", &checkpoint).await.unwrap();
    let feeder = tokio::spawn(follow(Arc::clone(&log), Arc::clone(&store), "p1".into()));
    // The checkpoint may be at or past the head already: wait for the
    // parcels, not for the checkpoint.
    for _ in 0..500 {
        if store.summary(parcels[0]).await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    feeder.abort();
    store
}

#[tokio::test]
async fn a_checkpoint_the_log_no_longer_has_feeds_again_from_the_start() {
    // A checkpoint from another log: the position exists, its event is
    // another one.
    let elsewhere = Checkpoint {
        position: Position(2),
        event_id: "elsewhere".into(),
    };
    let store = fed_despite(elsewhere, &["NO-1", "NO-2"]).await;
    assert!(
        store.summary("NO-1").await.unwrap().is_some(),
        "the first parcel was skipped"
    );
    assert!(store.summary("NO-2").await.unwrap().is_some());
    let c = store.checkpoint("p1").await.unwrap().unwrap();
    assert_ne!(c.event_id, "elsewhere");
}

#[tokio::test]
async fn a_checkpoint_past_the_log_s_end_feeds_again_from_the_start_at_once() {
    // Kept on a longer log (a replica since rebuilt): nothing comes at
    // that position for a long time.
    let gone = Checkpoint {
        position: Position(999),
        event_id: "gone".into(),
    };
    let store = fed_despite(gone, &["NO-9"]).await;
    assert!(
        store.summary("NO-9").await.unwrap().is_some(),
        "the log was not fed again"
    );
    assert_eq!(
        store.checkpoint("p1").await.unwrap().unwrap().position,
        Position(1)
    );
}

#[tokio::test]
async fn other_streams_and_parcels_nobody_manifested_give_no_rows() {
    use threshold_domain::pb::Service as S;
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    drive(
        &log,
        "DK-1",
        vec![manifest("DK-1", Country::Dk, "CPH", S::Doorstep), start()],
    )
    .await;
    let events = log.read_all(Position(0), 100).await.unwrap();
    let store = SqliteTrackStore::in_memory().unwrap();
    let mut tracker = Tracker::new();
    let rows = tracker.rows(&events, &store).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(tracker.open_parcels(), 1);
    // The parcel's later event, to a tracker that never saw it manifested,
    // on a store that does not know it: nothing.
    let mut blank = Tracker::new();
    assert!(blank.rows(&events[1..], &store).await.unwrap().is_empty());
    // Once the store knows the parcel, the tracker asks it.
    store.put(&rows[..1]).await.unwrap();
    let again = blank.rows(&events[1..], &store).await.unwrap();
    assert_eq!(again, rows[1..].to_vec());
}

/// A store that counts its writes, over the SQLite store.
struct Counted {
    inner: SqliteTrackStore,
    puts: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl TrackStore for Counted {
    async fn put(&self, rows: &[TrackRow]) -> Result<(), StoreError> {
        self.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.put(rows).await
    }
    async fn summary(&self, parcel_id: &str) -> Result<Option<ParcelSummary>, StoreError> {
        self.inner.summary(parcel_id).await
    }
    async fn steps(&self, parcel_id: &str) -> Result<Vec<TrackEvent>, StoreError> {
        self.inner.steps(parcel_id).await
    }
    async fn day(
        &self,
        country: Country,
        depot: &str,
        day: NaiveDate,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ParcelSummary>, StoreError> {
        self.inner.day(country, depot, day, after, limit).await
    }
    async fn checkpoint(&self, reader: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.checkpoint(reader).await
    }
    async fn set_checkpoint(&self, reader: &str, at: &Checkpoint) -> Result<(), StoreError> {
        self.inner.set_checkpoint(reader, at).await
    }
    async fn feed(
        &self,
        rows: &[TrackRow],
        reader: &str,
        at: &Checkpoint,
    ) -> Result<(), StoreError> {
        self.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.feed(rows, reader, at).await
    }
}

#[tokio::test]
async fn events_that_come_one_at_a_time_go_into_the_store_a_few_writes_at_a_time() {
    use threshold_domain::pb::Service as S;
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let store = Arc::new(Counted {
        inner: SqliteTrackStore::in_memory().unwrap(),
        puts: Default::default(),
    });
    // A wait far longer than the thirty events take to come, however slow
    // the disk: they go in the write of the first, or of the second.
    let gather = Duration::from_secs(2);
    let feeder = tokio::spawn(follow_gathering(
        Arc::clone(&log),
        Arc::clone(&store) as Arc<dyn TrackStore>,
        "p1".into(),
        gather,
    ));
    // Thirty parcels manifested one by one, a few milliseconds apart, as
    // a live log's events come.
    let parcels: Vec<String> = (0..30).map(|i| format!("SE-{i}")).collect();
    for id in &parcels {
        drive(
            log.as_ref(),
            id,
            vec![manifest(id, Country::Se, "STO-1", S::Doorstep)],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    fed(log.as_ref(), store.as_ref(), "p1").await;
    assert_eq!(day_ids(store.as_ref(), "STO-1", day()).await.len(), 30);
    let puts = store.puts.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=2).contains(&puts),
        "30 events that came within {gather:?} of each other took {puts} writes"
    );
    feeder.abort();
}

/// The follower takes new events from the log's memory of them only while
/// it stays within it: a gather's worth of events (a batch at most, more
/// arriving while it is written) must fit, or at the maximum it falls off
/// and reads the database for good (README, "The event log", guarantee 5).
#[test]
fn the_embedded_log_remembers_more_events_than_a_batch_and_what_comes_while_it_is_written() {
    let kept = EmbeddedOptions::default().recent_events;
    assert!(
        kept >= 4 * BATCH,
        "the log keeps {kept} recent events, against batches of {BATCH}"
    );
}

/// Folding a batch is work on the async runtime; a large one lets the
/// runtime's other tasks (the handhelds' acknowledgements) run in between,
/// instead of holding a worker for the whole batch.
#[tokio::test]
async fn folding_a_large_batch_lets_other_tasks_run_in_between() {
    use std::future::Future;
    use threshold_domain::pb::Service as S;
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    for i in 0..300 {
        let id = format!("DK-{i}");
        drive(
            &log,
            &id,
            vec![manifest(&id, Country::Dk, "CPH", S::Doorstep)],
        )
        .await;
    }
    let events = log.read_all(Position(0), 1_000).await.unwrap();
    assert_eq!(events.len(), 300);
    let store = SqliteTrackStore::in_memory().unwrap();
    let mut tracker = Tracker::new();
    let mut rows = std::pin::pin!(tracker.rows(&events, &store));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // Manifested parcels need no store lookup: only a yield stops it.
    assert!(
        rows.as_mut().poll(&mut cx).is_pending(),
        "300 events were folded without once letting another task run"
    );
    assert_eq!(rows.await.unwrap().len(), 300);
}
