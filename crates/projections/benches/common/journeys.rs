//! Parcel journeys for the benchmarks, built in memory: each parcel
//! manifested at one of 40 depots (ten a country) for one of 30 days of
//! November 2026, then one to three attempts, each started and then
//! delivered or failed. The projection, track and console benchmarks fold
//! the same kind of day; each sets what it varies.
//!
//! Included by path (`#[path = …] mod journeys;`): it is benchmark code and
//! nothing else links it.

// Each benchmark uses part of it.
#![allow(dead_code)]

use bytes::Bytes;
use chrono::{DateTime, NaiveDate};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_domain::country::date_to_proto;
use threshold_domain::{Country, DomainEvent, EventId, StreamId, pb};
use threshold_log::{NewEvent, Position, RecordedEvent};

/// How many depots, ten a country.
pub(crate) const DEPOTS: usize = 40;
/// How many days, from 2026-11-01.
pub(crate) const DAYS: u32 = 30;

/// Depot `i`: its country and id (`SE-02`).
pub(crate) fn depot(i: usize) -> (Country, String) {
    let c = Country::ALL[i % 4];
    (c, format!("{}-{i:02}", c.code()))
}

/// Day `n` of the 30.
pub(crate) fn day(n: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1 + n).expect("day")
}

/// A seeded source of parcels, numbered from `first`, on one log whose
/// positions run from 1. A draw is made only where there is a choice (no
/// in-home draw at a share of 0, no reason drawn from one), so a
/// benchmark's parcels stay what they were before they came from here.
pub(crate) struct Journeys {
    rng: SmallRng,
    at: DateTime<chrono::Utc>,
    position: u64,
    parcels: u64,
    /// The first parcel's number.
    pub(crate) first: u64,
    /// The share of parcels delivered in the home; the rest go to the
    /// doorstep. An in-home attempt succeeds 97% of the time, a doorstep
    /// one 64%.
    pub(crate) in_home: f64,
    /// The partner every parcel is manifested for.
    pub(crate) partner: &'static str,
    /// A failed attempt's reason, drawn from these.
    pub(crate) reasons: &'static [pb::FailureReason],
}

impl Journeys {
    /// Parcels from `seed`, numbered from 1, every event recorded at `at`:
    /// a fifth in-home, partner `p`, every failure not-home.
    pub(crate) fn new(seed: u64, at: DateTime<chrono::Utc>) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            at,
            position: 0,
            parcels: 0,
            first: 1,
            in_home: 0.2,
            partner: "p",
            reasons: &[pb::FailureReason::NotHome],
        }
    }

    /// The events so far.
    pub(crate) fn events(&self) -> u64 {
        self.position
    }

    /// The parcels so far.
    pub(crate) fn parcels(&self) -> u64 {
        self.parcels
    }

    /// The next parcel's events, in order, to `emit`.
    pub(crate) fn parcel(&mut self, mut emit: impl FnMut(RecordedEvent)) {
        let n = self.first + self.parcels;
        self.parcels += 1;
        let rng = &mut self.rng;
        let (country, depot) = depot(rng.random_range(0..DEPOTS));
        let id = format!("{}-{n:09}", country.code());
        let stream: StreamId = format!("parcel/{id}").parse().expect("stream");
        let day = day(rng.random_range(0..DAYS));
        let in_home = self.in_home > 0.0 && rng.random_bool(self.in_home);
        let (at, position) = (self.at, &mut self.position);
        let mut version = 0;
        let mut push = |e: pb::parcel_event::Event| {
            *position += 1;
            version += 1;
            let d = DomainEvent::Parcel(e);
            emit(RecordedEvent {
                position: Position(*position),
                stream: stream.clone(),
                stream_version: version,
                recorded_at: at,
                event: NewEvent {
                    payload: Bytes::from(d.encode()),
                    ..NewEvent::new(EventId::new(), &d, at).country(country)
                },
            });
        };
        push(pb::parcel_event::Event::Manifested(pb::ParcelManifested {
            parcel_id: id,
            partner_id: self.partner.into(),
            country: country.to_proto() as i32,
            depot_id: depot,
            delivery_date: Some(date_to_proto(day)),
            service: if in_home {
                pb::Service::InHome
            } else {
                pb::Service::Doorstep
            } as i32,
            weight_grams: 1000,
            ..Default::default()
        }));
        for attempt in 1..=3u32 {
            push(pb::parcel_event::Event::AttemptStarted(
                pb::AttemptStarted {
                    attempt,
                    ..Default::default()
                },
            ));
            if rng.random_bool(if in_home { 0.97 } else { 0.64 }) {
                push(pb::parcel_event::Event::Delivered(pb::ParcelDelivered {
                    attempt,
                    method: pb::DeliveryMethod::Doorstep as i32,
                    ..Default::default()
                }));
                break;
            }
            let reason = match self.reasons {
                [one] => *one,
                many => many[rng.random_range(0..many.len())],
            };
            push(pb::parcel_event::Event::AttemptFailed(pb::AttemptFailed {
                attempt,
                reason: reason as i32,
                ..Default::default()
            }));
        }
    }
}
