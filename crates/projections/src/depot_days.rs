//! Parcels by depot and local day: what the route planner plans.
//!
//! A parcel counts for in-home delivery while it was booked in-home with a
//! window, or an unrevoked grant names it (the grant's window then wins).
//! A revoked grant turns it back into a doorstep stop, a rescheduled parcel
//! moves to its new day, a returned one leaves the plan.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use threshold_domain::country::{date_from_proto, window_bounds};
use threshold_domain::{Category, Country, DomainEvent, pb};
use threshold_log::{Position, RecordedEvent};

/// A parcel as the planner needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannableParcel {
    /// Its id.
    pub parcel_id: String,
    /// Its country.
    pub country: Country,
    /// Where it goes.
    pub position: Option<pb::GeoPoint>,
    /// Grams.
    pub weight_grams: u32,
    /// The window from the manifest, for parcels booked in-home.
    booked: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Windows of unrevoked grants naming it, by grant.
    grants: BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)>,
}

impl PlannableParcel {
    /// The in-home window the plan must meet, if it is delivered in-home.
    pub fn in_home(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        // A grant's window, else the booked one.
        self.grants.values().next_back().copied().or(self.booked)
    }
}

/// Every parcel still to plan, by (depot, local day).
#[derive(Debug, Clone, Default)]
pub struct DepotDays {
    days: BTreeMap<(String, NaiveDate), BTreeMap<String, PlannableParcel>>,
    /// Where each parcel is filed.
    parcels: HashMap<String, (String, NaiveDate)>,
    /// The parcels each grant names.
    grants: HashMap<String, Vec<String>>,
    position: Position,
}

impl DepotDays {
    /// The position of the last event applied.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The depots with parcels on `date`, and their parcels in id order.
    pub fn on(&self, date: NaiveDate) -> Vec<(String, Vec<PlannableParcel>)> {
        self.days
            .iter()
            .filter(|((_, d), _)| *d == date)
            .map(|((depot, _), parcels)| (depot.clone(), parcels.values().cloned().collect()))
            .collect()
    }

    fn parcel_mut(&mut self, id: &str) -> Option<&mut PlannableParcel> {
        let key = self.parcels.get(id)?;
        self.days.get_mut(key)?.get_mut(id)
    }

    /// Applies one event, in log order; replays are ignored.
    pub fn apply(&mut self, event: &RecordedEvent) {
        if event.position <= self.position {
            return;
        }
        self.position = event.position;
        let category = event.stream.category();
        if category != Category::Parcel && category != Category::Grant {
            return;
        }
        let Ok(decoded) = event.decode() else {
            return;
        };
        let id = event.stream.id().to_owned();
        use pb::grant_event::Event as G;
        use pb::parcel_event::Event as P;
        match decoded {
            DomainEvent::Parcel(P::Manifested(m)) => {
                let (Ok(country), Some(date)) = (
                    Country::from_proto(m.country),
                    m.delivery_date
                        .as_ref()
                        .and_then(|d| date_from_proto(d).ok()),
                ) else {
                    return;
                };
                let booked = (m.service == pb::Service::InHome as i32)
                    .then(|| {
                        m.in_home_window
                            .as_ref()
                            .and_then(|w| window_bounds(w).ok())
                    })
                    .flatten();
                let parcel = PlannableParcel {
                    parcel_id: id.clone(),
                    country,
                    position: m.address.as_ref().and_then(|a| a.position),
                    weight_grams: m.weight_grams,
                    booked,
                    grants: BTreeMap::new(),
                };
                let key = (m.depot_id, date);
                self.parcels.insert(id.clone(), key.clone());
                self.days.entry(key).or_default().insert(id, parcel);
            }
            DomainEvent::Parcel(P::Rescheduled(r)) => {
                let Some(date) = r
                    .delivery_date
                    .as_ref()
                    .and_then(|d| date_from_proto(d).ok())
                else {
                    return;
                };
                let Some(old) = self.parcels.get(&id).cloned() else {
                    return;
                };
                let Some(parcel) = self.days.get_mut(&old).and_then(|d| d.remove(&id)) else {
                    return;
                };
                let key = (old.0, date);
                self.parcels.insert(id.clone(), key.clone());
                self.days.entry(key).or_default().insert(id, parcel);
            }
            DomainEvent::Parcel(P::Returned(_)) => {
                if let Some(key) = self.parcels.remove(&id)
                    && let Some(day) = self.days.get_mut(&key)
                {
                    day.remove(&id);
                    if day.is_empty() {
                        self.days.remove(&key);
                    }
                }
            }
            DomainEvent::Grant(G::Issued(g)) => {
                let Some(window) = g.window.as_ref().and_then(|w| window_bounds(w).ok()) else {
                    return;
                };
                for p in &g.parcel_ids {
                    if let Some(parcel) = self.parcel_mut(p) {
                        parcel.grants.insert(id.clone(), window);
                    }
                }
                self.grants.insert(id, g.parcel_ids);
            }
            DomainEvent::Grant(G::Revoked(_) | G::Expired(_)) => {
                for p in self.grants.remove(&id).unwrap_or_default() {
                    if let Some(parcel) = self.parcel_mut(&p) {
                        parcel.grants.remove(&id);
                        // A revoked grant ends in-home delivery for the parcel.
                        parcel.booked = None;
                    }
                }
            }
            _ => {}
        }
    }
}
