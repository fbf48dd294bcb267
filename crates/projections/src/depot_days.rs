//! Parcels by depot and local day: what the route planner plans.
//!
//! A parcel counts for in-home delivery while it was booked in-home with a
//! window, or an unrevoked grant names it (the grant's window then wins).
//! A revoked grant turns it back into a doorstep stop, a rescheduled parcel
//! moves to its new day, a returned one leaves the plan. The windows a
//! rescheduled parcel had (booked, or granted) lie on its old day: on the
//! new day it is a doorstep stop until a grant names it again.
//!
//! The planner's reason for leaving a parcel out of its day's plan
//! (`ParcelLeftOut`) is kept with the parcel, the latest for the day it is
//! filed under; a parcel moved to another day leaves it behind. Whether the
//! latest plan placed the parcel after all is the routes' to say: a reader
//! shows the reason only for parcels on no route.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use threshold_privacy::Vault;

use chrono::{DateTime, NaiveDate, Utc};
use threshold_domain::country::window_bounds;
use threshold_domain::{Category, Country, DomainEvent, pb};
use threshold_log::{Position, RecordedEvent};

/// A parcel as the planner needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannableParcel {
    /// Its id.
    pub parcel_id: String,
    /// Its country.
    pub country: Country,
    /// Where it goes: `None` when the row had no position, or its address
    /// was erased on request.
    pub position: Option<pb::GeoPoint>,
    /// The household its address is sealed under, if sealed.
    pub household: Option<String>,
    /// Grams.
    pub weight_grams: u32,
    /// The window from the manifest, for parcels booked in-home.
    booked: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Windows of unrevoked grants naming it, by grant.
    grants: BTreeMap<String, (DateTime<Utc>, DateTime<Utc>)>,
    /// Why the latest plan of its day to leave it out did, if one did.
    pub left_out: Option<LeftOut>,
}

/// A plan's reason for leaving a parcel out of its day.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftOut {
    /// The planner's reason.
    pub reason: String,
    /// When that plan was made.
    pub planned_at: Option<DateTime<Utc>>,
}

impl PlannableParcel {
    /// The in-home window the plan must meet, if it is delivered in-home.
    pub fn in_home(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        // A grant's window, else the booked one.
        self.grants.values().next_back().copied().or(self.booked)
    }

    /// Whether a resident's unrevoked grant names it (rather than only the
    /// manifest's booking).
    pub fn granted(&self) -> bool {
        !self.grants.is_empty()
    }
}

/// Every parcel still to plan, by (depot, local day).
#[derive(Debug, Clone, Default)]
pub struct DepotDays {
    days: BTreeMap<(String, NaiveDate), BTreeMap<String, PlannableParcel>>,
    /// Where each parcel is filed.
    parcels: HashMap<String, (String, NaiveDate)>,
    /// Opens sealed addresses; without it only clear positions are known.
    vault: Option<Arc<Vault>>,
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
            .map(|((depot, _), parcels)| {
                (
                    depot.clone(),
                    parcels.values().map(|p| self.live(p)).collect(),
                )
            })
            .collect()
    }

    /// `p` as it stands now: the address was opened when the parcel was
    /// manifested, and a household forgotten since (in this process or
    /// another sharing the vault) has no position any more.
    fn live(&self, p: &PlannableParcel) -> PlannableParcel {
        let mut p = p.clone();
        if let (Some(vault), Some(household)) = (&self.vault, &p.household) {
            match vault.is_subject_forgotten(household) {
                Ok(false) => {}
                Ok(true) => p.position = None,
                Err(e) => {
                    // Unknown is not known: no position rather than an
                    // erased one.
                    tracing::warn!(parcel = %p.parcel_id, error = %e, "the vault did not answer");
                    p.position = None;
                }
            }
        }
        p
    }

    /// The local days `depot` has parcels on, with how many.
    pub fn days_of(&self, depot: &str) -> Vec<(NaiveDate, usize)> {
        let from = (depot.to_owned(), NaiveDate::MIN);
        let to = (depot.to_owned(), NaiveDate::MAX);
        self.days
            .range(from..=to)
            .map(|((_, d), parcels)| (*d, parcels.len()))
            .collect()
    }

    /// The parcels of `depot` on `date`, in id order, as they stand now
    /// (see [`DepotDays::on`]).
    pub fn parcels(&self, depot: &str, date: NaiveDate) -> Vec<PlannableParcel> {
        self.days
            .get(&(depot.to_owned(), date))
            .map(|p| p.values().map(|p| self.live(p)).collect())
            .unwrap_or_default()
    }

    /// Every depot with parcels on some day.
    pub fn depots(&self) -> Vec<String> {
        let mut depots: Vec<String> = self.days.keys().map(|(d, _)| d.clone()).collect();
        depots.dedup();
        depots
    }

    /// A projection that opens sealed addresses with `vault`.
    pub fn with_vault(vault: Arc<Vault>) -> Self {
        Self {
            vault: Some(vault),
            ..Self::default()
        }
    }

    /// The position of a manifested parcel: clear, or opened from its
    /// sealed address (none once the household was forgotten).
    fn position_of(&self, m: &pb::ParcelManifested, stream: &str) -> Option<pb::GeoPoint> {
        if let Some(p) = m.address.as_ref().and_then(|a| a.position) {
            return Some(p);
        }
        let sealed = m.sealed_address.as_ref()?;
        match self
            .vault
            .as_ref()?
            .unseal_message::<pb::Address>(sealed, stream)
        {
            Ok(address) => address.and_then(|a| a.position),
            Err(e) => {
                tracing::warn!(parcel = stream, error = %e, "a sealed address does not open");
                None
            }
        }
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
                let Some((country, date)) = crate::due(&m) else {
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
                    position: self.position_of(&m, &event.stream.to_string()),
                    household: m.sealed_address.as_ref().map(|s| s.subject.clone()),
                    weight_grams: m.weight_grams,
                    booked,
                    grants: BTreeMap::new(),
                    left_out: None,
                };
                let key = (m.depot_id, date);
                self.parcels.insert(id.clone(), key.clone());
                self.days.entry(key).or_default().insert(id, parcel);
            }
            DomainEvent::Parcel(P::Rescheduled(r)) => {
                let Some(date) = crate::day(r.delivery_date.as_ref()) else {
                    return;
                };
                let Some(old) = self.parcels.get(&id).cloned() else {
                    return;
                };
                let Some(mut parcel) = self.days.get_mut(&old).and_then(|d| d.remove(&id)) else {
                    return;
                };
                if date != old.1 {
                    parcel.booked = None;
                    parcel.grants.clear();
                    parcel.left_out = None;
                }
                if self.days.get(&old).is_some_and(BTreeMap::is_empty) {
                    self.days.remove(&old);
                }
                let key = (old.0, date);
                self.parcels.insert(id.clone(), key.clone());
                self.days.entry(key).or_default().insert(id, parcel);
            }
            DomainEvent::Parcel(P::LeftOut(l)) => {
                let Some(date) = crate::day(l.delivery_date.as_ref()) else {
                    return;
                };
                // A reason for another day than the one it is filed under
                // is an old plan's: the parcel moved since.
                if self.parcels.get(&id).is_none_or(|(_, d)| *d != date) {
                    return;
                }
                if let Some(parcel) = self.parcel_mut(&id) {
                    parcel.left_out = Some(LeftOut {
                        reason: l.reason,
                        planned_at: l
                            .planned_at
                            .as_ref()
                            .and_then(|t| threshold_domain::country::instant(t).ok()),
                    });
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use threshold_domain::country::{date_to_proto, local_window};
    use threshold_domain::{EventId, StreamId};
    use threshold_log::NewEvent;

    struct Log(Vec<RecordedEvent>);

    impl Log {
        fn push(&mut self, stream: &str, e: DomainEvent) {
            let at = Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap();
            let position = Position(self.0.len() as u64 + 1);
            self.0.push(RecordedEvent {
                position,
                stream: stream.parse::<StreamId>().unwrap(),
                stream_version: 1,
                recorded_at: at,
                event: NewEvent::new(EventId::new(), &e, at),
            });
        }
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    fn window(from: &str, to: &str) -> pb::LocalWindow {
        let t = |s: &str| {
            chrono::NaiveDateTime::parse_from_str(&format!("2026-11-23T{s}"), "%Y-%m-%dT%H:%M")
                .unwrap()
        };
        local_window(Country::Se, t(from), t(to)).unwrap()
    }

    fn manifested(id: &str, in_home: Option<pb::LocalWindow>) -> DomainEvent {
        DomainEvent::Parcel(pb::parcel_event::Event::Manifested(pb::ParcelManifested {
            parcel_id: id.into(),
            partner_id: "p".into(),
            country: pb::Country::Se as i32,
            depot_id: "STO-1".into(),
            delivery_date: Some(date_to_proto(day(23))),
            service: if in_home.is_some() {
                pb::Service::InHome
            } else {
                pb::Service::Doorstep
            } as i32,
            weight_grams: 1500,
            in_home_window: in_home,
            ..Default::default()
        }))
    }

    fn fold(log: &Log) -> DepotDays {
        let mut m = DepotDays::default();
        for e in &log.0 {
            m.apply(e);
        }
        m
    }

    fn parcel<'a>(
        m: &'a [(String, Vec<PlannableParcel>)],
        id: &str,
    ) -> Option<&'a PlannableParcel> {
        m.iter().flat_map(|(_, p)| p).find(|p| p.parcel_id == id)
    }

    #[test]
    fn a_household_forgotten_after_its_parcel_was_read_has_no_position_any_more() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Arc::new(Vault::open(dir.path()).unwrap());
        let parts = ["Sveavägen 25", "165 71", "Stockholm", "SE"];
        let hh = vault.household(&parts).unwrap();
        let address = pb::Address {
            position: Some(pb::GeoPoint {
                latitude: 59.34,
                longitude: 18.04,
            }),
            ..Default::default()
        };
        let mut log = Log(Vec::new());
        for id in ["SE-1", "SE-2"] {
            let DomainEvent::Parcel(pb::parcel_event::Event::Manifested(mut m)) =
                manifested(id, None)
            else {
                unreachable!()
            };
            let subject = if id == "SE-1" {
                hh.subject.clone()
            } else {
                vault
                    .household(&["Drottninggatan 1", "111 51", "Stockholm", "SE"])
                    .unwrap()
                    .subject
            };
            m.sealed_address = Some(
                vault
                    .seal_message(&subject, &format!("parcel/{id}"), &address)
                    .unwrap(),
            );
            log.push(
                &format!("parcel/{id}"),
                DomainEvent::Parcel(pb::parcel_event::Event::Manifested(m)),
            );
        }
        let mut m = DepotDays::with_vault(Arc::clone(&vault));
        for e in &log.0 {
            m.apply(e);
        }
        let positions = |m: &DepotDays| -> Vec<bool> {
            m.parcels("STO-1", day(23))
                .iter()
                .map(|p| p.position.is_some())
                .collect()
        };
        assert_eq!(positions(&m), [true, true]);
        // Forgotten while the projection holds the opened address.
        vault.forget(&hh.subject).unwrap();
        assert_eq!(positions(&m), [false, true]);
        assert!(parcel(&m.on(day(23)), "SE-1").unwrap().position.is_none());
        assert!(parcel(&m.on(day(23)), "SE-2").unwrap().position.is_some());
    }

    #[test]
    fn grants_set_and_revocations_end_in_home_windows() {
        let mut log = Log(Vec::new());
        log.push(
            "parcel/SE-1",
            manifested("SE-1", Some(window("09:00", "12:00"))),
        );
        log.push("parcel/SE-2", manifested("SE-2", None));
        let booked = window_bounds(&window("09:00", "12:00")).unwrap();
        let m = fold(&log);
        let on = m.on(day(23));
        assert_eq!(on.len(), 1);
        assert_eq!(on[0].0, "STO-1");
        assert_eq!(parcel(&on, "SE-1").unwrap().in_home(), Some(booked));
        assert_eq!(parcel(&on, "SE-2").unwrap().in_home(), None);
        assert_eq!(parcel(&on, "SE-1").unwrap().weight_grams, 1500);

        // A grant for the doorstep parcel makes it in-home, with the grant's window.
        let granted = window("13:00", "15:00");
        log.push(
            "grant/g-2",
            DomainEvent::Grant(pb::grant_event::Event::Issued(pb::GrantIssued {
                grant_id: "g-2".into(),
                parcel_ids: vec!["SE-2".into()],
                window: Some(granted.clone()),
                ..Default::default()
            })),
        );
        let on = fold(&log).on(day(23));
        assert_eq!(
            parcel(&on, "SE-2").unwrap().in_home(),
            Some(window_bounds(&granted).unwrap())
        );

        // Revoked: back to the door.
        log.push(
            "grant/g-2",
            DomainEvent::Grant(pb::grant_event::Event::Revoked(pb::GrantRevoked {
                revoked_by: "resident".into(),
                reason: String::new(),
            })),
        );
        let on = fold(&log).on(day(23));
        assert_eq!(parcel(&on, "SE-2").unwrap().in_home(), None);

        // Rescheduled to the 24th, SE-1 leaves the 23rd, and its booked
        // window of the 23rd with it; returned, SE-2 leaves the plan.
        log.push(
            "parcel/SE-1",
            DomainEvent::Parcel(pb::parcel_event::Event::Rescheduled(
                pb::ParcelRescheduled {
                    delivery_date: Some(date_to_proto(day(24))),
                    reason: "recipient away".into(),
                },
            )),
        );
        log.push(
            "parcel/SE-2",
            DomainEvent::Parcel(pb::parcel_event::Event::Returned(
                pb::ParcelReturned::default(),
            )),
        );
        let m = fold(&log);
        assert!(m.on(day(23)).is_empty());
        let next = m.on(day(24));
        assert_eq!(next.len(), 1);
        assert_eq!(parcel(&next, "SE-1").unwrap().in_home(), None);
        assert_eq!(m.days_of("STO-1"), vec![(day(24), 1)]);
        assert_eq!(m.position(), Position(6));
    }

    fn left_out(date: NaiveDate, reason: &str) -> DomainEvent {
        DomainEvent::Parcel(pb::parcel_event::Event::LeftOut(pb::ParcelLeftOut {
            delivery_date: Some(date_to_proto(date)),
            reason: reason.into(),
            planned_at: Some(threshold_domain::country::timestamp(
                Utc.with_ymd_and_hms(2026, 11, 22, 18, 0, 0).unwrap(),
            )),
        }))
    }

    #[test]
    fn the_latest_reason_to_leave_a_parcel_out_is_kept_for_its_day() {
        let mut log = Log(Vec::new());
        log.push("parcel/SE-1", manifested("SE-1", None));
        log.push("parcel/SE-2", manifested("SE-2", None));
        let m = fold(&log);
        assert_eq!(m.parcels("STO-1", day(23))[0].left_out, None);

        log.push("parcel/SE-1", left_out(day(23), "too heavy"));
        log.push("parcel/SE-1", left_out(day(23), "its window cannot be met"));
        // A reason for a day the parcel is not on is not its.
        log.push("parcel/SE-2", left_out(day(22), "too heavy"));
        let m = fold(&log);
        let on = m.on(day(23));
        let reason = parcel(&on, "SE-1").unwrap().left_out.clone().unwrap();
        assert_eq!(reason.reason, "its window cannot be met");
        assert_eq!(
            reason.planned_at,
            Some(Utc.with_ymd_and_hms(2026, 11, 22, 18, 0, 0).unwrap())
        );
        assert_eq!(parcel(&on, "SE-2").unwrap().left_out, None);

        // Moved to the 24th, it leaves the reason of the 23rd behind.
        log.push(
            "parcel/SE-1",
            DomainEvent::Parcel(pb::parcel_event::Event::Rescheduled(
                pb::ParcelRescheduled {
                    delivery_date: Some(date_to_proto(day(24))),
                    reason: "not delivered".into(),
                },
            )),
        );
        let m = fold(&log);
        assert_eq!(parcel(&m.on(day(24)), "SE-1").unwrap().left_out, None);
    }
}
