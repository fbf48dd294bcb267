use chrono::Utc;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_domain::parcel::Command;
use threshold_domain::{EventId, GrantId, StreamId};
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, ExpectedVersion, NewEvent};

use super::*;
use crate::attempts::tests::{day, deliver, drive, fail, manifest};
use crate::{Attempts, Dimension, Filter};

async fn fold(log: &dyn EventLog) -> (Facts, Attempts) {
    let (mut facts, mut attempts) = (Facts::default(), Attempts::default());
    let mut after = Position::ORIGIN;
    loop {
        let page = log.read_all(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            facts.apply(e);
            attempts.apply(e);
        }
    }
    (facts, attempts)
}

/// Attempts per attempted parcel, as an analyst computes it from the rows:
/// `count(*) / count(distinct parcel_id)`.
fn per_parcel<'a>(rows: impl Iterator<Item = &'a AttemptFact>) -> f64 {
    let mut parcels = std::collections::HashSet::new();
    let mut n = 0;
    for r in rows {
        parcels.insert(&r.parcel_id);
        n += 1;
    }
    if parcels.is_empty() {
        0.0
    } else {
        f64::from(n) / parcels.len() as f64
    }
}

#[tokio::test]
async fn a_small_day_has_one_row_per_attempt_with_its_outcome() {
    use pb::{DeliveryMethod as M, FailureReason as F, Service as S};
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    drive(
        &log,
        "SE-1",
        vec![
            manifest("SE-1", Country::Se, "STO-1", S::Doorstep),
            fail(F::NotHome),
            fail(F::NoAccess),
            deliver(M::Doorstep),
        ],
    )
    .await;
    drive(
        &log,
        "FI-1",
        vec![
            manifest("FI-1", Country::Fi, "HEL-1", S::Doorstep),
            fail(F::NotHome),
            Command::Return { reason: "r".into() },
        ],
    )
    .await;
    drive(
        &log,
        "DK-1",
        vec![manifest("DK-1", Country::Dk, "CPH-1", S::Doorstep)],
    )
    .await;
    let (facts, report) = fold(&log).await;

    let se: Vec<_> = facts
        .attempts()
        .iter()
        .filter(|a| a.parcel_id == "SE-1")
        .map(|a| (a.attempt, a.outcome, a.reason, a.method))
        .collect();
    assert_eq!(
        se,
        [
            (1, AttemptOutcome::Failed, Some(F::NotHome), None),
            (2, AttemptOutcome::Failed, Some(F::NoAccess), None),
            (3, AttemptOutcome::Delivered, None, Some(M::Doorstep)),
        ]
    );
    let first = &facts.attempts()[0];
    assert_eq!(
        (
            first.country,
            first.depot.as_str(),
            first.day,
            first.partner.as_str()
        ),
        (Country::Se, "STO-1", day(), "nordshop")
    );
    let local = first.started_at.with_timezone(&Country::Se.tz());
    assert_eq!(
        (first.started_on, first.local_hour),
        (local.date_naive(), local.hour())
    );
    assert_eq!(facts.attempts().len(), 4, "DK-1 was never attempted");

    let parcels: Vec<_> = facts
        .parcels()
        .iter()
        .map(|p| {
            (
                p.parcel_id.as_str(),
                p.attempts,
                p.method,
                p.delivered_on_attempt,
                p.returned,
            )
        })
        .collect();
    assert_eq!(
        parcels,
        [
            ("SE-1", 3, Some(M::Doorstep), Some(3), false),
            ("FI-1", 1, None, None, true),
            ("DK-1", 0, None, None, false),
        ]
    );
    let total = report.report(Dimension::Country, &Filter::default()).total;
    assert_eq!(
        per_parcel(facts.attempts().iter()),
        total.attempts_per_parcel
    );
}

#[tokio::test]
async fn attempts_per_parcel_from_the_rows_equals_the_report_for_every_filter() {
    use pb::{DeliveryMethod as M, FailureReason as F, Service as S};
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let mut rng = SmallRng::seed_from_u64(17);
    for n in 0..200 {
        let country = Country::ALL[rng.random_range(0..4)];
        let service = [S::Doorstep, S::InHome, S::Locker][rng.random_range(0..3)];
        let depot = format!("{}-{}", country.code(), rng.random_range(1..3));
        let id = format!("{}-{n}", country.code());
        let mut commands = vec![manifest(&id, country, &depot, service)];
        for _ in 0..rng.random_range(0..3) {
            commands.push(fail(
                [F::NotHome, F::NoAccess, F::Refused][rng.random_range(0..3)],
            ));
        }
        if rng.random_bool(0.2) {
            commands.push(Command::Reschedule {
                date: day().succ_opt().unwrap(),
                reason: "next day".into(),
            });
        }
        match rng.random_range(0..4) {
            0 => commands.push(Command::Return { reason: "r".into() }),
            1 => {}
            _ => commands.push(deliver(M::Doorstep)),
        }
        drive(&log, &id, commands).await;
    }
    let (facts, report) = fold(&log).await;
    let next = day().succ_opt().unwrap();
    let mut filters = vec![
        Filter::default(),
        Filter {
            from: Some(next),
            ..Filter::default()
        },
        Filter {
            to: Some(day()),
            service: Some(S::InHome),
            ..Filter::default()
        },
    ];
    for c in Country::ALL {
        filters.push(Filter {
            country: Some(c),
            ..Filter::default()
        });
        filters.push(Filter {
            depot: Some(format!("{}-1", c.code())),
            ..Filter::default()
        });
    }
    let mut rescheduled = 0;
    for f in &filters {
        let rows = facts.attempts().iter().filter(|a| {
            f.country.is_none_or(|c| c == a.country)
                && f.depot.as_ref().is_none_or(|d| *d == a.depot)
                && f.from.is_none_or(|d| a.day >= d)
                && f.to.is_none_or(|d| a.day <= d)
                && f.service.is_none_or(|s| s == a.service)
        });
        let expected = report.report(Dimension::Country, f).total;
        assert_eq!(per_parcel(rows), expected.attempts_per_parcel, "{f:?}");
        if f.from == Some(next) {
            rescheduled = expected.attempted;
        }
    }
    assert!(
        rescheduled > 0,
        "some attempted parcels moved to the next day"
    );
}

#[tokio::test]
async fn a_grant_row_counts_its_unlocks_and_stays_used_after_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    drive(
        &log,
        "NO-1",
        vec![manifest("NO-1", Country::No, "OSL-1", pb::Service::InHome)],
    )
    .await;
    let window = threshold_domain::country::local_window(
        Country::No,
        day().and_hms_opt(9, 0, 0).unwrap(),
        day().and_hms_opt(12, 0, 0).unwrap(),
    )
    .unwrap();
    let grant = |e: pb::grant_event::Event| {
        NewEvent::new(EventId::new(), &DomainEvent::Grant(e), Utc::now())
    };
    let stream = StreamId::grant(&GrantId::new("g-1").unwrap());
    log.append(
        &stream,
        ExpectedVersion::Exactly(0),
        vec![
            grant(G::Issued(pb::GrantIssued {
                grant_id: "g-1".into(),
                home_id: "home-1".into(),
                parcel_ids: vec!["NO-1".into()],
                resident_ref: "resident-1".into(),
                window: Some(window.clone()),
                fallback: pb::Fallback::Doorstep as i32,
                ..Default::default()
            })),
            grant(G::UnlockDenied(pb::UnlockDenied::default())),
            grant(G::UnlockAuthorized(pb::UnlockAuthorized::default())),
            grant(G::Used(pb::GrantUsed::default())),
            grant(G::Expired(pb::GrantExpired::default())),
        ],
    )
    .await
    .unwrap();
    let (facts, _) = fold(&log).await;
    let g = &facts.grants()[0];
    assert_eq!(
        (
            g.grant_id.as_str(),
            g.country,
            g.day,
            g.parcels,
            g.fallback,
            g.unlocks_authorized,
            g.unlocks_denied,
            g.status
        ),
        (
            "g-1",
            Some(Country::No),
            Some(day()),
            1,
            pb::Fallback::Doorstep,
            1,
            1,
            GrantStatus::Used
        ),
        "an expiry after use leaves it used"
    );
    let (start, end) = threshold_domain::country::window_bounds(&window).unwrap();
    assert_eq!((g.window_start, g.window_end), (Some(start), Some(end)));
}
