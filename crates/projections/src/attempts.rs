//! Attempts per parcel, and the counters reports are made of.

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, Timelike};
use threshold_domain::{Category, Country, DomainEvent, pb};
use threshold_log::{Position, RecordedEvent};

use pb::parcel_event::Event as P;

/// What is known of one parcel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelRecord {
    /// Its country.
    pub country: Country,
    /// Its depot.
    pub depot: String,
    /// The local day it is due.
    pub day: NaiveDate,
    /// The service it was booked with.
    pub service: pb::Service,
    /// The retailer it belongs to.
    pub partner: String,
    /// Attempts started.
    pub attempts: u32,
    /// How and on which attempt it was delivered.
    pub delivered: Option<(pb::DeliveryMethod, u32)>,
    /// Sent back.
    pub returned: bool,
}

/// A report dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// DK, FI, NO, SE.
    Country,
    /// The depot.
    Depot,
    /// The local delivery day.
    Day,
    /// The booked service.
    Service,
    /// How parcels were finally delivered (`undelivered` for the rest).
    Method,
    /// Why attempts failed (counts failed attempts, not parcels).
    Reason,
    /// The retailer the parcel belongs to.
    Partner,
}

impl Dimension {
    /// The word used in reports and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Country => "country",
            Dimension::Depot => "depot",
            Dimension::Day => "day",
            Dimension::Service => "service",
            Dimension::Method => "method",
            Dimension::Reason => "reason",
            Dimension::Partner => "partner",
        }
    }
}

impl std::str::FromStr for Dimension {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "country" => Dimension::Country,
            "depot" => Dimension::Depot,
            "day" => Dimension::Day,
            "service" => Dimension::Service,
            "method" => Dimension::Method,
            "reason" => Dimension::Reason,
            "partner" => Dimension::Partner,
            other => {
                return Err(format!(
                    "{other:?} is not one of country, depot, day, service, method, reason, partner"
                ));
            }
        })
    }
}

/// Which parcels a report counts; `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this country.
    pub country: Option<Country>,
    /// Only this depot.
    pub depot: Option<String>,
    /// Only days from this one on.
    pub from: Option<NaiveDate>,
    /// Only days up to this one.
    pub to: Option<NaiveDate>,
    /// Only this booked service.
    pub service: Option<pb::Service>,
}

/// One cell's key: everything a report can group or filter by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Cell {
    country: Country,
    depot: String,
    day: NaiveDate,
    service: i32,
    /// 0 while undelivered.
    method: i32,
    partner: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    parcels: i64,
    attempted: i64,
    attempts: i64,
    repeat: i64,
    first_attempt_success: i64,
    delivered: i64,
    returned: i64,
}

impl Counters {
    fn of(r: &ParcelRecord) -> Self {
        Counters {
            parcels: 1,
            attempted: i64::from(r.attempts > 0),
            attempts: i64::from(r.attempts),
            repeat: i64::from(r.attempts > 1),
            first_attempt_success: i64::from(matches!(r.delivered, Some((_, 1)))),
            delivered: i64::from(r.delivered.is_some()),
            returned: i64::from(r.returned),
        }
    }

    fn add(&mut self, o: &Counters, sign: i64) {
        self.parcels += sign * o.parcels;
        self.attempted += sign * o.attempted;
        self.attempts += sign * o.attempts;
        self.repeat += sign * o.repeat;
        self.first_attempt_success += sign * o.first_attempt_success;
        self.delivered += sign * o.delivered;
        self.returned += sign * o.returned;
    }

    fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
}

/// One row of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    /// The group's value (e.g. `SE`, `in_home`, `2026-11-23`, `not_home`).
    pub group: String,
    /// Parcels manifested.
    pub parcels: u64,
    /// Parcels with at least one attempt.
    pub attempted: u64,
    /// Attempts started (for `reason`: failed attempts with that reason).
    pub attempts: u64,
    /// Attempts per attempted parcel.
    pub attempts_per_parcel: f64,
    /// Share of attempted parcels that needed more than one attempt.
    pub repeat_attempt_rate: f64,
    /// Share of attempted parcels delivered on the first attempt.
    pub first_attempt_success_rate: f64,
    /// Parcels delivered.
    pub delivered: u64,
    /// Parcels returned.
    pub returned: u64,
}

/// A report: rows by group, and the total.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// What the rows are grouped by.
    pub by: Dimension,
    /// One row per group value, sorted by it.
    pub rows: Vec<ReportRow>,
    /// Everything the filter matched.
    pub total: ReportRow,
}

fn row(group: String, c: &Counters) -> ReportRow {
    let ratio = |a: i64, b: i64| if b <= 0 { 0.0 } else { a as f64 / b as f64 };
    ReportRow {
        group,
        parcels: c.parcels.max(0) as u64,
        attempted: c.attempted.max(0) as u64,
        attempts: c.attempts.max(0) as u64,
        attempts_per_parcel: ratio(c.attempts, c.attempted),
        repeat_attempt_rate: ratio(c.repeat, c.attempted),
        first_attempt_success_rate: ratio(c.first_attempt_success, c.attempted),
        delivered: c.delivered.max(0) as u64,
        returned: c.returned.max(0) as u64,
    }
}

/// Snake-case name of a protobuf enum value, without its type prefix.
pub(crate) fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

/// The analysts' model: every parcel's record and the cube of counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attempts {
    parcels: HashMap<String, ParcelRecord>,
    cube: HashMap<Cell, Counters>,
    /// Failed attempts by (cell without method, reason).
    reasons: HashMap<(Cell, i32), i64>,
    /// Failed attempts by (cell without method, local hour 0-23 of the
    /// failure in the parcel's country).
    hours: HashMap<(Cell, u32), i64>,
    position: Position,
}

impl Attempts {
    /// The position of the last event applied.
    pub fn position(&self) -> Position {
        self.position
    }

    /// One parcel's record.
    pub fn parcel(&self, id: &str) -> Option<&ParcelRecord> {
        self.parcels.get(id)
    }

    /// Parcels known.
    pub fn len(&self) -> usize {
        self.parcels.len()
    }

    /// Whether no parcel is known.
    pub fn is_empty(&self) -> bool {
        self.parcels.is_empty()
    }

    fn cell(r: &ParcelRecord) -> Cell {
        Cell {
            country: r.country,
            depot: r.depot.clone(),
            day: r.day,
            service: r.service as i32,
            method: r.delivered.map_or(0, |(m, _)| m as i32),
            partner: r.partner.clone(),
        }
    }

    /// Applies one event, in log order. Events already applied (at or before
    /// [`Attempts::position`]) are ignored, so replays are harmless.
    pub fn apply(&mut self, event: &RecordedEvent) {
        if event.position <= self.position {
            return;
        }
        self.position = event.position;
        if event.stream.category() != Category::Parcel {
            return;
        }
        let Ok(DomainEvent::Parcel(e)) = event.decode() else {
            return;
        };
        let id = event.stream.id().to_owned();
        if let P::Manifested(m) = &e {
            let Some((country, day)) = crate::due(m) else {
                return;
            };
            let record = ParcelRecord {
                country,
                depot: m.depot_id.clone(),
                day,
                service: pb::Service::try_from(m.service).unwrap_or(pb::Service::Unspecified),
                partner: m.partner_id.clone(),
                attempts: 0,
                delivered: None,
                returned: false,
            };
            self.replace(&id, Some(record));
            return;
        }
        let Some(before) = self.parcels.get(&id).cloned() else {
            return;
        };
        let mut after = before.clone();
        match &e {
            P::AttemptStarted(a) => after.attempts = after.attempts.max(a.attempt),
            P::Delivered(d) => {
                after.delivered = Some((
                    pb::DeliveryMethod::try_from(d.method)
                        .unwrap_or(pb::DeliveryMethod::Unspecified),
                    d.attempt,
                ));
            }
            P::AttemptFailed(f) => {
                let key = (
                    Cell {
                        method: 0,
                        ..Self::cell(&before)
                    },
                    f.reason,
                );
                let hour = event
                    .event
                    .occurred_at
                    .with_timezone(&before.country.tz())
                    .hour();
                *self.hours.entry((key.0.clone(), hour)).or_default() += 1;
                *self.reasons.entry(key).or_default() += 1;
            }
            P::Returned(_) => after.returned = true,
            P::Rescheduled(r) => {
                if let Some(day) = crate::day(r.delivery_date.as_ref()) {
                    after.day = day;
                }
            }
            // A plan's reason for leaving a parcel out is no attempt.
            P::Manifested(_) | P::AssignedToRoute(_) | P::OutForDelivery(_) | P::LeftOut(_) => {}
        }
        if after != before {
            self.replace(&id, Some(after));
        }
    }

    /// Swaps a parcel's record, moving its contribution between cells.
    fn replace(&mut self, id: &str, record: Option<ParcelRecord>) {
        if let Some(old) = self.parcels.remove(id) {
            let cell = Self::cell(&old);
            let counters = self.cube.entry(cell.clone()).or_default();
            counters.add(&Counters::of(&old), -1);
            if counters.is_zero() {
                self.cube.remove(&cell);
            }
        }
        if let Some(new) = record {
            self.cube
                .entry(Self::cell(&new))
                .or_default()
                .add(&Counters::of(&new), 1);
            self.parcels.insert(id.to_owned(), new);
        }
    }

    fn matches(f: &Filter, c: &Cell) -> bool {
        f.country.is_none_or(|x| x == c.country)
            && f.depot.as_ref().is_none_or(|x| *x == c.depot)
            && f.from.is_none_or(|x| c.day >= x)
            && f.to.is_none_or(|x| c.day <= x)
            && f.service.is_none_or(|x| x as i32 == c.service)
    }

    fn group_of(by: Dimension, c: &Cell) -> String {
        match by {
            Dimension::Country => c.country.code().to_owned(),
            Dimension::Depot => c.depot.clone(),
            Dimension::Day => c.day.to_string(),
            Dimension::Service => pb::Service::try_from(c.service).map_or_else(
                |_| c.service.to_string(),
                |s| enum_name(s.as_str_name(), "SERVICE_"),
            ),
            Dimension::Method => match pb::DeliveryMethod::try_from(c.method) {
                Ok(pb::DeliveryMethod::Unspecified) => "undelivered".to_owned(),
                Ok(m) => enum_name(m.as_str_name(), "DELIVERY_METHOD_"),
                Err(_) => c.method.to_string(),
            },
            Dimension::Partner => c.partner.clone(),
            Dimension::Reason => String::new(),
        }
    }

    /// Attempts per parcel and the rates, grouped by `by`, over the parcels
    /// `filter` matches. Reads the cube, not the parcels.
    pub fn report(&self, by: Dimension, filter: &Filter) -> Report {
        let mut total = Counters::default();
        for (cell, c) in &self.cube {
            if Self::matches(filter, cell) {
                total.add(c, 1);
            }
        }
        let mut groups: BTreeMap<String, Counters> = BTreeMap::new();
        if by == Dimension::Reason {
            for ((cell, reason), n) in &self.reasons {
                if Self::matches(filter, cell) {
                    let name = pb::FailureReason::try_from(*reason).map_or_else(
                        |_| reason.to_string(),
                        |r| enum_name(r.as_str_name(), "FAILURE_REASON_"),
                    );
                    groups.entry(name).or_default().attempts += n;
                }
            }
        } else {
            for (cell, c) in &self.cube {
                if Self::matches(filter, cell) {
                    groups
                        .entry(Self::group_of(by, cell))
                        .or_default()
                        .add(c, 1);
                }
            }
        }
        Report {
            by,
            rows: groups.into_iter().map(|(g, c)| row(g, &c)).collect(),
            total: row("total".into(), &total),
        }
    }
}

impl Attempts {
    /// Failed attempts by the local hour (0-23, in the parcel's country)
    /// they failed at, over the parcels `filter` matches.
    pub fn failures_by_hour(&self, filter: &Filter) -> [i64; 24] {
        let mut hours = [0i64; 24];
        for ((cell, hour), n) in &self.hours {
            if Self::matches(filter, cell)
                && let Some(h) = hours.get_mut(*hour as usize)
            {
                *h += n;
            }
        }
        hours
    }

    /// One row per local day for each value of `by` (country, depot, service
    /// or method), over the parcels `filter` matches: time series, read from
    /// the cube in one pass. Each row's `group` is its day; the series are
    /// sorted by value, the days ascending. `by` = day or reason gives one
    /// series, `total`.
    pub fn daily(&self, by: Dimension, filter: &Filter) -> Vec<(String, Vec<ReportRow>)> {
        let mut series: BTreeMap<String, BTreeMap<NaiveDate, Counters>> = BTreeMap::new();
        for (cell, c) in &self.cube {
            if Self::matches(filter, cell) {
                let name = match by {
                    Dimension::Day | Dimension::Reason => "total".to_owned(),
                    by => Self::group_of(by, cell),
                };
                series
                    .entry(name)
                    .or_default()
                    .entry(cell.day)
                    .or_default()
                    .add(c, 1);
            }
        }
        series
            .into_iter()
            .map(|(name, days)| {
                let rows = days
                    .into_iter()
                    .map(|(day, c)| row(day.to_string(), &c))
                    .collect();
                (name, rows)
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
