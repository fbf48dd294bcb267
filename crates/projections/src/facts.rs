//! Flat fact tables for analysts' own SQL tools: one row per attempt, per
//! parcel, per grant, folded from the log like any read model.
//!
//! The tables carry identifiers the carrier made (parcel, grant, depot,
//! partner) and what happened, never personal data: no address, position,
//! resident, household, home, driver or note, sealed or not. A parcel's
//! `day` is the local day it is due, the day [`crate::Attempts`] reports
//! group and filter by, so attempts per parcel computed from these rows equal
//! the report's for the same filter.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use threshold_domain::{Category, Country, DomainEvent, pb};
use threshold_log::{Position, RecordedEvent};

use pb::grant_event::Event as G;
use pb::parcel_event::Event as P;

/// A service as reports and exports spell it (`in_home`).
pub fn service_name(s: pb::Service) -> String {
    crate::attempts::enum_name(s.as_str_name(), "SERVICE_")
}

/// A delivery method as reports and exports spell it (`doorstep`).
pub fn method_name(m: pb::DeliveryMethod) -> String {
    crate::attempts::enum_name(m.as_str_name(), "DELIVERY_METHOD_")
}

/// A failure reason as reports and exports spell it (`not_home`).
pub fn reason_name(r: pb::FailureReason) -> String {
    crate::attempts::enum_name(r.as_str_name(), "FAILURE_REASON_")
}

/// A grant's fallback as exports spell it (`doorstep`).
pub fn fallback_name(f: pb::Fallback) -> String {
    crate::attempts::enum_name(f.as_str_name(), "FALLBACK_")
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Started, nothing recorded after it yet.
    Open,
    /// The parcel was delivered on it.
    Delivered,
    /// It failed, for a reason.
    Failed,
}

impl AttemptOutcome {
    /// The word in exports.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Open => "open",
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Failed => "failed",
        }
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFact {
    /// The parcel.
    pub parcel_id: String,
    /// The retailer it belongs to.
    pub partner: String,
    /// Its country.
    pub country: Country,
    /// Its depot.
    pub depot: String,
    /// The local day the parcel is due (as reports group it).
    pub day: NaiveDate,
    /// The service it was booked with.
    pub service: pb::Service,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the attempt started (UTC).
    pub started_at: DateTime<Utc>,
    /// The local day it started on, in the parcel's country.
    pub started_on: NaiveDate,
    /// The local hour it started in (0–23).
    pub local_hour: u32,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// How the parcel was delivered, when it was.
    pub method: Option<pb::DeliveryMethod>,
    /// Why it failed, when it did.
    pub reason: Option<pb::FailureReason>,
}

/// One parcel, as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ParcelFact {
    /// The parcel.
    pub parcel_id: String,
    /// The retailer it belongs to.
    pub partner: String,
    /// Its country.
    pub country: Country,
    /// Its depot.
    pub depot: String,
    /// The local day it is due.
    pub day: NaiveDate,
    /// The service it was booked with.
    pub service: pb::Service,
    /// Attempts started.
    pub attempts: u32,
    /// How it was delivered, when it was.
    pub method: Option<pb::DeliveryMethod>,
    /// The attempt it was delivered on.
    pub delivered_on_attempt: Option<u32>,
    /// Sent back to the retailer.
    pub returned: bool,
}

/// Where a grant ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStatus {
    /// Issued, not yet used, revoked or expired.
    Open,
    /// A courier entered under it.
    Used,
    /// The resident revoked it.
    Revoked,
    /// Its window passed unused.
    Expired,
}

impl GrantStatus {
    /// The word in exports.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Open => "open",
            GrantStatus::Used => "used",
            GrantStatus::Revoked => "revoked",
            GrantStatus::Expired => "expired",
        }
    }
}

/// One in-home access grant, without who issued it or for which home.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantFact {
    /// The grant.
    pub grant_id: String,
    /// The country of its parcels (of the first one known).
    pub country: Option<Country>,
    /// The local day of its window's start, in the window's zone.
    pub day: Option<NaiveDate>,
    /// Its window (UTC).
    pub window_start: Option<DateTime<Utc>>,
    /// Its window's end (UTC).
    pub window_end: Option<DateTime<Utc>>,
    /// Parcels it covers.
    pub parcels: u32,
    /// What the courier does when entry is not possible.
    pub fallback: pb::Fallback,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// Unlocks authorized under it.
    pub unlocks_authorized: u32,
    /// Unlocks denied under it.
    pub unlocks_denied: u32,
    /// Where it ended up.
    pub status: GrantStatus,
}

/// The three tables, folded from the log in order.
#[derive(Debug, Default)]
pub struct Facts {
    parcels: Vec<ParcelFact>,
    parcel_index: HashMap<String, usize>,
    attempts: Vec<AttemptFact>,
    /// (parcel, attempt number) → row in `attempts`.
    attempt_index: HashMap<(usize, u32), usize>,
    grants: Vec<GrantFact>,
    grant_index: HashMap<String, usize>,
    position: Position,
}

fn ts(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    threshold_domain::country::instant(t?).ok()
}

impl Facts {
    /// The position of the last event applied.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Every parcel, in the order they were manifested.
    pub fn parcels(&self) -> &[ParcelFact] {
        &self.parcels
    }

    /// Every attempt, in the order they started.
    pub fn attempts(&self) -> &[AttemptFact] {
        &self.attempts
    }

    /// Every grant, in the order they were issued.
    pub fn grants(&self) -> &[GrantFact] {
        &self.grants
    }

    /// The attempt row of a parcel, made when its attempt is first heard of.
    fn attempt_row(&mut self, parcel: usize, attempt: u32, at: DateTime<Utc>) -> usize {
        if let Some(&row) = self.attempt_index.get(&(parcel, attempt)) {
            return row;
        }
        let p = &self.parcels[parcel];
        let local = at.with_timezone(&p.country.tz());
        self.attempts.push(AttemptFact {
            parcel_id: p.parcel_id.clone(),
            partner: p.partner.clone(),
            country: p.country,
            depot: p.depot.clone(),
            day: p.day,
            service: p.service,
            attempt,
            started_at: at,
            started_on: local.date_naive(),
            local_hour: local.hour(),
            outcome: AttemptOutcome::Open,
            method: None,
            reason: None,
        });
        let row = self.attempts.len() - 1;
        self.attempt_index.insert((parcel, attempt), row);
        row
    }

    /// Applies one event, in log order; events at or before
    /// [`Facts::position`] are ignored.
    pub fn apply(&mut self, event: &RecordedEvent) {
        if event.position <= self.position {
            return;
        }
        self.position = event.position;
        match event.stream.category() {
            Category::Parcel => self.parcel(event),
            Category::Grant => self.grant(event),
            _ => {}
        }
    }

    fn parcel(&mut self, event: &RecordedEvent) {
        let Ok(DomainEvent::Parcel(e)) = event.decode() else {
            return;
        };
        let id = event.stream.id();
        if let P::Manifested(m) = &e {
            let Some((country, day)) = crate::due(m) else {
                return;
            };
            if self.parcel_index.contains_key(id) {
                return;
            }
            self.parcels.push(ParcelFact {
                parcel_id: id.to_owned(),
                partner: m.partner_id.clone(),
                country,
                depot: m.depot_id.clone(),
                day,
                service: pb::Service::try_from(m.service).unwrap_or(pb::Service::Unspecified),
                attempts: 0,
                method: None,
                delivered_on_attempt: None,
                returned: false,
            });
            self.parcel_index
                .insert(id.to_owned(), self.parcels.len() - 1);
            return;
        }
        let Some(&p) = self.parcel_index.get(id) else {
            return;
        };
        let at = event.event.occurred_at;
        match &e {
            P::AttemptStarted(a) => {
                let parcel = &mut self.parcels[p];
                parcel.attempts = parcel.attempts.max(a.attempt);
                self.attempt_row(p, a.attempt, at);
            }
            P::Delivered(d) => {
                let method = pb::DeliveryMethod::try_from(d.method)
                    .unwrap_or(pb::DeliveryMethod::Unspecified);
                let parcel = &mut self.parcels[p];
                parcel.method = Some(method);
                parcel.delivered_on_attempt = Some(d.attempt);
                let row = self.attempt_row(p, d.attempt, at);
                let a = &mut self.attempts[row];
                a.outcome = AttemptOutcome::Delivered;
                a.method = Some(method);
                a.reason = None;
            }
            P::AttemptFailed(f) => {
                let reason =
                    pb::FailureReason::try_from(f.reason).unwrap_or(pb::FailureReason::Unspecified);
                let row = self.attempt_row(p, f.attempt, at);
                let a = &mut self.attempts[row];
                a.outcome = AttemptOutcome::Failed;
                a.reason = Some(reason);
            }
            P::Returned(_) => self.parcels[p].returned = true,
            P::Rescheduled(r) => {
                if let Some(day) = crate::day(r.delivery_date.as_ref()) {
                    self.parcels[p].day = day;
                    // The attempts move with their parcel, as in reports.
                    for n in 1..=self.parcels[p].attempts {
                        if let Some(&row) = self.attempt_index.get(&(p, n)) {
                            self.attempts[row].day = day;
                        }
                    }
                }
            }
            // A plan's reason for leaving a parcel out is no attempt.
            P::Manifested(_) | P::AssignedToRoute(_) | P::OutForDelivery(_) | P::LeftOut(_) => {}
        }
    }

    fn grant(&mut self, event: &RecordedEvent) {
        let Ok(DomainEvent::Grant(e)) = event.decode() else {
            return;
        };
        let id = event.stream.id();
        if let G::Issued(g) = &e {
            if self.grant_index.contains_key(id) {
                return;
            }
            let window = g.window.as_ref();
            let window_start = ts(window.and_then(|w| w.start_utc.as_ref()));
            // The window as the resident entered it, in its own zone.
            let day = window.and_then(|w| {
                threshold_domain::country::parse_local("window", &w.start_local)
                    .ok()
                    .map(|t| t.date())
            });
            let country = g
                .parcel_ids
                .iter()
                .find_map(|p| self.parcel_index.get(p))
                .map(|&p| self.parcels[p].country);
            self.grants.push(GrantFact {
                grant_id: id.to_owned(),
                country,
                day,
                window_start,
                window_end: ts(window.and_then(|w| w.end_utc.as_ref())),
                parcels: u32::try_from(g.parcel_ids.len()).unwrap_or(u32::MAX),
                fallback: pb::Fallback::try_from(g.fallback).unwrap_or(pb::Fallback::Unspecified),
                issued_at: event.event.occurred_at,
                unlocks_authorized: 0,
                unlocks_denied: 0,
                status: GrantStatus::Open,
            });
            self.grant_index
                .insert(id.to_owned(), self.grants.len() - 1);
            return;
        }
        let Some(&g) = self.grant_index.get(id) else {
            return;
        };
        let grant = &mut self.grants[g];
        match &e {
            G::UnlockAuthorized(_) => grant.unlocks_authorized += 1,
            G::UnlockDenied(_) => grant.unlocks_denied += 1,
            G::Used(_) => grant.status = GrantStatus::Used,
            G::Revoked(_) => grant.status = GrantStatus::Revoked,
            G::Expired(_) => {
                if grant.status == GrantStatus::Open {
                    grant.status = GrantStatus::Expired;
                }
            }
            G::Issued(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
