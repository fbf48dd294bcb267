use std::sync::{Arc, RwLock};

use chrono::{NaiveDate, Timelike, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_domain::country::{date_to_proto, local_window};
use threshold_domain::parcel::{Command, Parcel};
use threshold_domain::{
    Aggregate, DeviceId, DomainEvent, DriverId, EventId, GrantId, ParcelId, StreamId,
};
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, ExpectedVersion, NewEvent};

use super::*;
use crate::follow;

pub(crate) fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
}

pub(crate) fn manifest(id: &str, country: Country, depot: &str, service: pb::Service) -> Command {
    Command::Manifest(Box::new(pb::ParcelManifested {
        parcel_id: id.into(),
        partner_id: "nordshop".into(),
        country: country.to_proto() as i32,
        depot_id: depot.into(),
        delivery_date: Some(date_to_proto(day())),
        address: None,
        service: service as i32,
        weight_grams: 1000,
        in_home_window: (service == pb::Service::InHome).then(|| {
            local_window(
                country,
                day().and_hms_opt(9, 0, 0).unwrap(),
                day().and_hms_opt(12, 0, 0).unwrap(),
            )
            .unwrap()
        }),
        manifest_id: "m".into(),
        manifest_line: 2,
        sealed_address: None,
        address_digest: Vec::new(),
    }))
}

pub(crate) fn fail(reason: pb::FailureReason) -> Command {
    Command::FailAttempt {
        reason,
        driver_id: DriverId::new("d").unwrap(),
        device_id: DeviceId::new("h").unwrap(),
        note: String::new(),
    }
}

pub(crate) fn deliver(method: pb::DeliveryMethod) -> Command {
    Command::Deliver {
        method,
        driver_id: DriverId::new("d").unwrap(),
        device_id: DeviceId::new("h").unwrap(),
        grant_id: (method == pb::DeliveryMethod::InHome).then(|| GrantId::new("g").unwrap()),
        position: None,
    }
}

/// Runs commands on one parcel through the domain into the log, after
/// what its stream already holds.
pub(crate) async fn drive(log: &dyn EventLog, id: &str, commands: Vec<Command>) {
    let stream = StreamId::parcel(&ParcelId::new(id).unwrap());
    let mut state = Parcel::default();
    let mut version = 0;
    for e in log.read_stream(&stream, 0, 1000).await.unwrap() {
        if let Ok(DomainEvent::Parcel(p)) = e.decode() {
            state.evolve(&p);
        }
        version = e.stream_version;
    }
    for c in commands {
        let events = state.decide(&c).unwrap();
        let new: Vec<NewEvent> = events
            .iter()
            .map(|e| NewEvent::new(EventId::new(), &DomainEvent::Parcel(e.clone()), Utc::now()))
            .collect();
        version = log
            .append(&stream, ExpectedVersion::Exactly(version), new)
            .await
            .unwrap()
            .stream_version;
        for e in &events {
            state.evolve(e);
        }
    }
}

async fn rebuild(log: &dyn EventLog) -> Attempts {
    let mut model = Attempts::default();
    let mut after = Position::ORIGIN;
    loop {
        let page = log.read_all(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            model.apply(e);
        }
    }
    model
}

fn find<'a>(r: &'a Report, group: &str) -> &'a ReportRow {
    r.rows
        .iter()
        .find(|x| x.group == group)
        .unwrap_or_else(|| panic!("no {group} in {r:?}"))
}

#[tokio::test]
async fn a_small_day_reports_the_hand_computed_numbers() {
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
        "SE-2",
        vec![
            manifest("SE-2", Country::Se, "STO-1", S::InHome),
            deliver(M::InHome),
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
        "FI-2",
        vec![
            manifest("FI-2", Country::Fi, "HEL-1", S::Locker),
            deliver(M::Locker),
        ],
    )
    .await;
    drive(
        &log,
        "DK-1",
        vec![manifest("DK-1", Country::Dk, "CPH-1", S::Doorstep)],
    )
    .await;
    let model = rebuild(&log).await;
    assert_eq!(model.len(), 5);
    assert_eq!(model.parcel("SE-1").unwrap().attempts, 3);

    let by_country = model.report(Dimension::Country, &Filter::default());
    let se = find(&by_country, "SE");
    assert_eq!(
        (se.parcels, se.attempted, se.attempts, se.delivered),
        (2, 2, 4, 2)
    );
    assert_eq!(
        (
            se.attempts_per_parcel,
            se.repeat_attempt_rate,
            se.first_attempt_success_rate
        ),
        (2.0, 0.5, 0.5)
    );
    let fi = find(&by_country, "FI");
    assert_eq!(
        (
            fi.parcels,
            fi.attempts,
            fi.returned,
            fi.first_attempt_success_rate
        ),
        (2, 2, 1, 0.5)
    );
    let dk = find(&by_country, "DK");
    assert_eq!(
        (dk.parcels, dk.attempted, dk.attempts_per_parcel),
        (1, 0, 0.0)
    );
    let t = &by_country.total;
    assert_eq!(
        (t.parcels, t.attempted, t.attempts, t.delivered, t.returned),
        (5, 4, 6, 3, 1)
    );
    assert_eq!(
        (
            t.attempts_per_parcel,
            t.repeat_attempt_rate,
            t.first_attempt_success_rate
        ),
        (1.5, 0.25, 0.5)
    );

    let by_reason = model.report(Dimension::Reason, &Filter::default());
    assert_eq!(find(&by_reason, "not_home").attempts, 2);
    assert_eq!(find(&by_reason, "no_access").attempts, 1);

    let by_method = model.report(Dimension::Method, &Filter::default());
    let groups: Vec<(&str, u64)> = by_method
        .rows
        .iter()
        .map(|r| (r.group.as_str(), r.parcels))
        .collect();
    assert_eq!(
        groups,
        vec![
            ("doorstep", 1),
            ("in_home", 1),
            ("locker", 1),
            ("undelivered", 2)
        ]
    );

    let doorstep = model.report(
        Dimension::Country,
        &Filter {
            service: Some(S::Doorstep),
            ..Filter::default()
        },
    );
    assert_eq!(
        (
            doorstep.total.parcels,
            doorstep.total.attempted,
            doorstep.total.attempts
        ),
        (3, 2, 4)
    );
    let by_service = model.report(
        Dimension::Service,
        &Filter {
            country: Some(Country::Se),
            ..Filter::default()
        },
    );
    assert_eq!(find(&by_service, "in_home").first_attempt_success_rate, 1.0);
    assert_eq!(find(&by_service, "doorstep").attempts_per_parcel, 3.0);
    let by_day = model.report(
        Dimension::Day,
        &Filter {
            from: Some(day()),
            to: Some(day()),
            ..Filter::default()
        },
    );
    assert_eq!(find(&by_day, "2026-11-23").parcels, 5);
    let none = model.report(
        Dimension::Day,
        &Filter {
            from: day().succ_opt(),
            ..Filter::default()
        },
    );
    assert!(none.rows.is_empty());
    assert_eq!(none.total.parcels, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incremental_model_equals_a_rebuild_from_the_log() {
    use pb::{DeliveryMethod as M, FailureReason as F, Service as S};
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let live = Arc::new(RwLock::new(Attempts::default()));
    let follower = tokio::spawn(follow(
        Arc::clone(&log),
        Arc::clone(&live),
        Position::ORIGIN,
    ));

    // A random day, written by four writers while the model follows.
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let log = Arc::clone(&log);
        writers.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(w);
            for n in 0..60 {
                let country = Country::ALL[rng.random_range(0..4)];
                let service = [S::Doorstep, S::InHome, S::Locker][rng.random_range(0..3)];
                let id = format!("{}-{w}-{n}", country.code());
                let mut commands = vec![manifest(
                    &id,
                    country,
                    &format!("{}-1", country.code()),
                    service,
                )];
                for _ in 0..rng.random_range(0..3) {
                    commands.push(fail(
                        [F::NotHome, F::NoAccess, F::Refused][rng.random_range(0..3)],
                    ));
                }
                match rng.random_range(0..4) {
                    0 => commands.push(Command::Return { reason: "r".into() }),
                    1 => {}
                    _ if service == S::InHome => commands.push(deliver(M::InHome)),
                    _ => commands.push(deliver(M::Doorstep)),
                }
                drive(&*log, &id, commands).await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let head = log.head().await.unwrap();
    for _ in 0..500 {
        if live.read().unwrap().position() >= head {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let rebuilt = rebuild(&*log).await;
    let incremental = live.read().unwrap().clone();
    assert_eq!(incremental.position(), head);
    assert_eq!(incremental.len(), 240);
    assert_eq!(
        incremental, rebuilt,
        "guarantee 6: a rebuild gives exactly the incremental model"
    );
    for by in [
        Dimension::Country,
        Dimension::Depot,
        Dimension::Day,
        Dimension::Service,
        Dimension::Method,
        Dimension::Reason,
    ] {
        assert_eq!(
            incremental.report(by, &Filter::default()),
            rebuilt.report(by, &Filter::default())
        );
    }
    follower.abort();
}

#[tokio::test]
async fn failures_fall_in_their_local_hour_and_parcels_group_by_partner() {
    use pb::{DeliveryMethod as M, FailureReason as F, Service as S};
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let commands = |id: &str, country, depot| {
        vec![
            manifest(id, country, depot, S::Doorstep),
            fail(F::NotHome),
            fail(F::NoAccess),
            deliver(M::Doorstep),
        ]
    };
    drive(&log, "SE-1", commands("SE-1", Country::Se, "STO-1")).await;
    drive(&log, "FI-1", commands("FI-1", Country::Fi, "HEL-1")).await;
    let model = rebuild(&log).await;
    // Each failure's local hour, read back from the log.
    let mut expected = [0i64; 24];
    for e in log.read_all(Position::ORIGIN, 100).await.unwrap() {
        if e.event.event_type.ends_with("failed") {
            let country = if e.stream.id().starts_with("SE") {
                Country::Se
            } else {
                Country::Fi
            };
            expected[e.event.occurred_at.with_timezone(&country.tz()).hour() as usize] += 1;
        }
    }
    assert_eq!(expected.iter().sum::<i64>(), 4, "{expected:?}");
    assert_eq!(model.failures_by_hour(&Filter::default()), expected);
    let se = Filter {
        country: Some(Country::Se),
        ..Filter::default()
    };
    assert_eq!(model.failures_by_hour(&se).iter().sum::<i64>(), 2);
    let partners = model.report(Dimension::Partner, &Filter::default());
    assert_eq!(find(&partners, "nordshop").parcels, 2);
    assert_eq!("partner".parse::<Dimension>(), Ok(Dimension::Partner));
}
