//! What every [`TrackStore`] must do, as one suite any store runs:
//! the SQLite store in this crate's tests, a ScyllaDB cluster in
//! `tests/track_scylla.rs` when `THRESHOLD_TEST_SCYLLA` names one.
//!
//! Each check panics with what differed. Parcel ids carry `prefix`, so
//! runs on one store do not see each other's parcels.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use threshold_domain::Country;
use threshold_log::Position;

use super::{Checkpoint, Milestone, ParcelSummary, TrackEvent, TrackRow, TrackStore};

fn day1() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).expect("a date")
}

fn day2() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 24).expect("a date")
}

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_420_800, 0).expect("an instant") + Duration::minutes(minutes)
}

/// A parcel's rows as a tracker writes them: manifested for day 1, on a
/// route, out, a failed attempt, rescheduled to day 2, then delivered on
/// the second attempt.
pub fn journey(parcel_id: &str, depot: &str) -> Vec<TrackRow> {
    let steps: [(Milestone, u32, &str); 8] = [
        (Milestone::Manifested, 0, "2026-11-23"),
        (Milestone::OnRoute, 0, ""),
        (Milestone::OutForDelivery, 0, ""),
        (Milestone::AttemptStarted, 1, ""),
        (Milestone::AttemptFailed, 1, "not_home"),
        (Milestone::Rescheduled, 0, "2026-11-24"),
        (Milestone::AttemptStarted, 2, ""),
        (Milestone::Delivered, 2, "in_home"),
    ];
    let mut attempts = 0;
    let mut day = day1();
    steps
        .iter()
        .enumerate()
        .map(|(i, &(milestone, attempt, detail))| {
            let version = i as u64 + 1;
            attempts = attempts.max(attempt);
            let mut moved_from = None;
            if milestone == Milestone::Rescheduled {
                moved_from = Some(day);
                day = day2();
            }
            TrackRow {
                summary: ParcelSummary {
                    parcel_id: parcel_id.to_owned(),
                    partner: "nordshop".into(),
                    country: Country::Se,
                    depot: depot.to_owned(),
                    day,
                    status: milestone,
                    attempts,
                    version,
                    updated_at: at(version as i64),
                },
                event: TrackEvent {
                    version,
                    event_id: format!("{parcel_id}-event-{version}"),
                    milestone,
                    occurred_at: at(version as i64),
                    attempt,
                    detail: detail.to_owned(),
                },
                moved_from,
            }
        })
        .collect()
}

/// A parcel only manifested, due on `day` at `depot`.
pub fn manifested(parcel_id: &str, country: Country, depot: &str, day: NaiveDate) -> TrackRow {
    TrackRow {
        summary: ParcelSummary {
            parcel_id: parcel_id.to_owned(),
            partner: "nordshop".into(),
            country,
            depot: depot.to_owned(),
            day,
            status: Milestone::Manifested,
            attempts: 0,
            version: 1,
            updated_at: at(0),
        },
        event: TrackEvent {
            version: 1,
            event_id: format!("{parcel_id}-event-1"),
            milestone: Milestone::Manifested,
            occurred_at: at(0),
            attempt: 0,
            detail: day.to_string(),
        },
        moved_from: None,
    }
}

async fn ids_on(
    store: &dyn TrackStore,
    country: Country,
    depot: &str,
    day: NaiveDate,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .day(country, depot, day, after.as_deref(), 7)
            .await
            .expect("a day's page");
        assert!(page.len() <= 7, "a page of 7 held {}", page.len());
        let Some(last) = page.last() else { break };
        after = Some(last.parcel_id.clone());
        ids.extend(page.into_iter().map(|s| s.parcel_id));
    }
    ids
}

/// Runs every check on `store`.
pub async fn run(store: &dyn TrackStore, prefix: &str) {
    unknown_parcels_and_readers_are_none(store, prefix).await;
    a_journey_reads_back_in_order(store, prefix).await;
    rows_again_in_any_order_change_nothing(store, prefix).await;
    a_day_pages_through_its_depot_s_parcels_only(store, prefix).await;
    checkpoints_are_per_reader_and_the_latest_wins(store, prefix).await;
    a_feed_stores_its_rows_and_moves_its_reader(store, prefix).await;
    ids_are_data_not_syntax(store, prefix).await;
}

async fn unknown_parcels_and_readers_are_none(store: &dyn TrackStore, prefix: &str) {
    let id = format!("{prefix}-nobody");
    assert_eq!(store.summary(&id).await.expect("summary"), None);
    assert_eq!(store.track(&id).await.expect("track"), None);
    assert_eq!(
        store
            .day(Country::Fi, &format!("{prefix}-NODEPOT"), day1(), None, 10)
            .await
            .expect("day"),
        Vec::new()
    );
    assert_eq!(
        store
            .checkpoint(&format!("{prefix}-reader"))
            .await
            .expect("checkpoint"),
        None
    );
}

async fn a_journey_reads_back_in_order(store: &dyn TrackStore, prefix: &str) {
    let id = format!("{prefix}-SE-1");
    let depot = format!("{prefix}-STO");
    let rows = journey(&id, &depot);
    store.put(&rows).await.expect("put");
    let track = store.track(&id).await.expect("track").expect("a track");
    assert_eq!(
        track.events,
        rows.iter().map(|r| r.event.clone()).collect::<Vec<_>>()
    );
    assert_eq!(track.summary, rows.last().expect("rows").summary);
    assert_eq!(track.summary.status, Milestone::Delivered);
    assert_eq!(track.summary.attempts, 2);
    assert_eq!(track.summary.day, day2());
    assert_eq!(
        store.summary(&id).await.expect("summary"),
        Some(track.summary.clone())
    );
    assert_eq!(
        ids_on(store, Country::Se, &depot, day2()).await,
        vec![id.clone()]
    );
    assert_eq!(
        ids_on(store, Country::Se, &depot, day1()).await,
        Vec::<String>::new(),
        "a rescheduled parcel stays on its old day"
    );
}

async fn rows_again_in_any_order_change_nothing(store: &dyn TrackStore, prefix: &str) {
    let id = format!("{prefix}-SE-2");
    let depot = format!("{prefix}-GBG");
    let rows = journey(&id, &depot);
    store.put(&rows).await.expect("put");
    let before = store.track(&id).await.expect("track");
    // Again, all at once; then backwards, one at a time; then the first
    // half (a reader that started over from its checkpoint).
    store.put(&rows).await.expect("put again");
    for r in rows.iter().rev() {
        store.put(std::slice::from_ref(r)).await.expect("put one");
    }
    store.put(&rows[..4]).await.expect("put a half");
    assert_eq!(
        store.track(&id).await.expect("track"),
        before,
        "the track changed"
    );
    assert_eq!(
        ids_on(store, Country::Se, &depot, day2()).await,
        vec![id.clone()]
    );
    assert_eq!(
        ids_on(store, Country::Se, &depot, day1()).await,
        Vec::<String>::new(),
        "an older row written again brought the parcel back to its old day"
    );
    let day_row = store
        .day(Country::Se, &depot, day2(), None, 10)
        .await
        .expect("day");
    assert_eq!(day_row.len(), 1);
    assert_eq!(day_row[0].status, Milestone::Delivered);
    assert_eq!(day_row[0].version, 8);

    // The newest row first, the older ones after: the newest stands.
    let late = format!("{prefix}-SE-3");
    let rows = journey(&late, &depot);
    store.put(&rows[7..]).await.expect("the newest");
    store.put(&rows[..7]).await.expect("the older");
    let s = store
        .summary(&late)
        .await
        .expect("summary")
        .expect("a summary");
    assert_eq!(
        (s.status, s.version, s.day),
        (Milestone::Delivered, 8, day2())
    );
    assert_eq!(
        store
            .track(&late)
            .await
            .expect("track")
            .expect("a track")
            .events
            .len(),
        8
    );
    assert_eq!(
        ids_on(store, Country::Se, &depot, day1()).await,
        Vec::<String>::new(),
        "rows older than the reschedule put the parcel on its old day"
    );
}

async fn a_day_pages_through_its_depot_s_parcels_only(store: &dyn TrackStore, prefix: &str) {
    let depot = format!("{prefix}-HEL");
    let mut want: Vec<String> = (0..40).map(|i| format!("{prefix}-FI-{i:03}")).collect();
    let mut rows: Vec<TrackRow> = want
        .iter()
        .map(|id| manifested(id, Country::Fi, &depot, day1()))
        .collect();
    // Near misses: another depot, another country, another day.
    rows.push(manifested(
        &format!("{prefix}-FI-x1"),
        Country::Fi,
        &format!("{depot}2"),
        day1(),
    ));
    rows.push(manifested(
        &format!("{prefix}-FI-x2"),
        Country::Se,
        &depot,
        day1(),
    ));
    rows.push(manifested(
        &format!("{prefix}-FI-x3"),
        Country::Fi,
        &depot,
        day2(),
    ));
    store.put(&rows).await.expect("put");
    want.sort();
    assert_eq!(ids_on(store, Country::Fi, &depot, day1()).await, want);
    let first = store
        .day(Country::Fi, &depot, day1(), None, 5)
        .await
        .expect("day");
    assert_eq!(
        first
            .iter()
            .map(|s| s.parcel_id.clone())
            .collect::<Vec<_>>(),
        want[..5].to_vec()
    );
    assert!(
        first
            .iter()
            .all(|s| s.status == Milestone::Manifested && s.partner == "nordshop")
    );
    assert_eq!(
        store
            .day(Country::Fi, &depot, day1(), Some(&want[39]), 5)
            .await
            .expect("day"),
        Vec::new(),
        "a page after the last parcel is empty"
    );
}

async fn checkpoints_are_per_reader_and_the_latest_wins(store: &dyn TrackStore, prefix: &str) {
    let (a, b) = (format!("{prefix}-reader-a"), format!("{prefix}-reader-b"));
    let at = |p, id: &str| Checkpoint {
        position: Position(p),
        event_id: id.to_owned(),
    };
    store.set_checkpoint(&a, &at(10, "e10")).await.expect("set");
    store.set_checkpoint(&b, &at(3, "e3")).await.expect("set");
    store.set_checkpoint(&a, &at(12, "e12")).await.expect("set");
    assert_eq!(
        store.checkpoint(&a).await.expect("get"),
        Some(at(12, "e12"))
    );
    assert_eq!(store.checkpoint(&b).await.expect("get"), Some(at(3, "e3")));
}

async fn a_feed_stores_its_rows_and_moves_its_reader(store: &dyn TrackStore, prefix: &str) {
    let (id, depot, reader) = (
        format!("{prefix}-DK-7"),
        format!("{prefix}-CPH"),
        format!("{prefix}-feeder"),
    );
    let rows = journey(&id, &depot);
    let at = |p, id: &str| Checkpoint {
        position: Position(p),
        event_id: id.to_owned(),
    };
    store
        .feed(&rows[..3], &reader, &at(3, "e3"))
        .await
        .expect("feed");
    assert_eq!(
        store.checkpoint(&reader).await.expect("get"),
        Some(at(3, "e3"))
    );
    assert_eq!(store.steps(&id).await.expect("steps").len(), 3);
    store
        .feed(&rows[3..], &reader, &at(8, "e8"))
        .await
        .expect("feed");
    assert_eq!(
        store.checkpoint(&reader).await.expect("get"),
        Some(at(8, "e8"))
    );
    let track = store.track(&id).await.expect("track").expect("a track");
    assert_eq!(
        track.events,
        rows.iter().map(|r| r.event.clone()).collect::<Vec<_>>()
    );
    assert_eq!(track.summary, rows.last().expect("rows").summary);
    // A batch that made no rows still moves its reader.
    store
        .feed(&[], &reader, &at(9, "e9"))
        .await
        .expect("feed none");
    assert_eq!(
        store.checkpoint(&reader).await.expect("get"),
        Some(at(9, "e9"))
    );
}

async fn ids_are_data_not_syntax(store: &dyn TrackStore, prefix: &str) {
    let id = format!("{prefix}-SE-'; DROP TABLE track_parcels; -- Å/ø \u{1F4E6}");
    let depot = format!("{prefix}-\"depot\"");
    let rows = journey(&id, &depot);
    store.put(&rows).await.expect("put");
    let track = store.track(&id).await.expect("track").expect("a track");
    assert_eq!(track.summary.parcel_id, id);
    assert_eq!(track.summary.depot, depot);
    assert_eq!(track.events.len(), 8);
    assert!(
        store
            .summary(&format!("{prefix}-SE-1"))
            .await
            .expect("summary")
            .is_some(),
        "another parcel went missing"
    );
}
