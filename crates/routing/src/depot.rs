//! A depot's day as a routing [`Problem`], and its [`Plan`] as route
//! commands.
//!
//! The fleet comes from depot configuration ([`Fleets`], a JSON file): the
//! depot's position, its vans (capacity by weight, and volume where given),
//! the shift in the depot's local time, service times, and how many drivers
//! are cleared for in-home delivery. Local times are resolved to UTC with
//! the country's zone ([`Country::tz`]), so a shift or a window on a DST
//! night is as long as it really is; the solver sees seconds after the
//! day's earliest shift start.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use threshold_domain::country::timestamp;
use threshold_domain::{Country, pb};

use crate::matrix::{Point, TravelMatrix};
use crate::{Error, Load, Plan, Problem, Stop, Van};

/// A depot's fleet and working day.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleet {
    /// The depot's position; `None`: the middle of its parcels.
    pub latitude: Option<f64>,
    /// The depot's position; `None`: the middle of its parcels.
    pub longitude: Option<f64>,
    /// Vans available for the day.
    pub vans: u32,
    /// Of which driven by drivers cleared for in-home delivery (the first ones).
    pub in_home_cleared: u32,
    /// What a van carries, kg.
    pub capacity_kg: f64,
    /// What a van holds, litres; `None`: not limited by volume.
    pub capacity_litres: Option<f64>,
    /// Shift start, depot local time ("08:00").
    pub shift_start: String,
    /// Shift end, depot local time ("18:00").
    pub shift_end: String,
    /// Minutes at a doorstep, locker or pickup-point stop.
    pub service_minutes: f64,
    /// Minutes at an in-home stop (unlock, hand over, relock).
    pub in_home_service_minutes: f64,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            latitude: None,
            longitude: None,
            vans: 12,
            in_home_cleared: 6,
            capacity_kg: 900.0,
            capacity_litres: None,
            shift_start: "08:00".into(),
            shift_end: "18:00".into(),
            service_minutes: 3.0,
            in_home_service_minutes: 6.0,
        }
    }
}

/// Every depot's fleet: a default, and depots that differ from it.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleets {
    /// For depots not listed.
    pub default: Fleet,
    /// By depot id.
    pub depots: BTreeMap<String, Fleet>,
}

impl Fleets {
    /// Reads a fleet file; errors name the file and what is wrong.
    pub fn from_json(name: &str, json: &str) -> Result<Self, Error> {
        serde_json::from_str(json).map_err(|e| Error::Invalid {
            what: name.into(),
            detail: e.to_string(),
        })
    }

    /// The fleet of `depot`.
    pub fn of(&self, depot: &str) -> &Fleet {
        self.depots.get(depot).unwrap_or(&self.default)
    }
}

/// Van `i` of `depot`: `<depot>-van-NN`.
pub fn van_id(depot: &str, i: usize) -> String {
    format!("{depot}-van-{i:02}")
}

/// The driver of van `i` of `depot`: `<depot>-drv-NN`.
pub fn driver_id(depot: &str, i: usize) -> String {
    format!("{depot}-drv-{i:02}")
}

/// The route of van `i` of `depot` on `date`: `<depot>-<date>-NN`, the same
/// across plan versions, so a replan of the day updates the same routes.
pub fn route_id(depot: &str, date: NaiveDate, i: usize) -> String {
    format!("{depot}-{date}-{i:02}")
}

/// The index of a van from its id ([`van_id`]).
pub fn van_index(vehicle_id: &str) -> Option<usize> {
    vehicle_id.rsplit_once("-van-")?.1.parse().ok()
}

/// A parcel to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Parcel {
    /// Its id.
    pub parcel_id: String,
    /// The recipient's position.
    pub position: Point,
    /// Grams.
    pub weight_g: u32,
    /// Cubic centimetres, where known.
    pub volume_cm3: Option<u32>,
    /// For in-home parcels, the resident's window in UTC (resolved from
    /// local time when the parcel or grant was recorded).
    pub in_home: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// A depot's day to plan.
#[derive(Debug, Clone)]
pub struct DepotDay {
    /// The depot.
    pub depot_id: String,
    /// Its country, for its time zone.
    pub country: Country,
    /// The local day.
    pub date: NaiveDate,
    /// Its parcels.
    pub parcels: Vec<Parcel>,
}

/// A depot-day turned into a problem, with what it takes to read a plan
/// back in real time.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The routing problem (stop `i` is parcel `i`).
    pub problem: Problem,
    /// Second 0 of the problem.
    pub origin: DateTime<Utc>,
    /// The depot's position.
    pub depot: Point,
    /// The parcels' positions, by stop.
    positions: Vec<Point>,
}

/// `time` on `date` in `country`, in UTC; a time skipped by the spring
/// change counts from the change, a repeated one from its first occurrence.
pub fn local_instant(country: Country, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let tz = country.tz();
    let local = date.and_time(time);
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
        // In the gap: the first instant after it.
        chrono::LocalResult::None => {
            let mut probe = local;
            loop {
                probe += Duration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    break t.with_timezone(&Utc);
                }
            }
        }
    }
}

fn clock(what: &str, depot: &str, s: &str) -> Result<NaiveTime, Error> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| Error::Invalid {
        what: format!("depot {depot}: {what}"),
        detail: format!("{s:?} is not a local time HH:MM"),
    })
}

impl DepotDay {
    /// The routing problem of this depot-day with `fleet`, travel from `matrix`.
    pub fn problem(&self, fleet: &Fleet, matrix: &dyn TravelMatrix) -> Result<Planned, Error> {
        let depot = &self.depot_id;
        let start = local_instant(
            self.country,
            self.date,
            clock("shift_start", depot, &fleet.shift_start)?,
        );
        let end = local_instant(
            self.country,
            self.date,
            clock("shift_end", depot, &fleet.shift_end)?,
        );
        if end <= start {
            return Err(Error::Invalid {
                what: format!("depot {depot}"),
                detail: format!(
                    "shift {}–{} ends before it starts",
                    fleet.shift_start, fleet.shift_end
                ),
            });
        }
        if fleet.capacity_kg.is_nan()
            || fleet.capacity_kg <= 0.0
            || fleet.in_home_cleared > fleet.vans
        {
            return Err(Error::Invalid {
                what: format!("depot {depot}"),
                detail: format!(
                    "capacity {} kg, {} cleared drivers of {} vans",
                    fleet.capacity_kg, fleet.in_home_cleared, fleet.vans
                ),
            });
        }
        let positions: Vec<Point> = self.parcels.iter().map(|p| p.position).collect();
        let position = match (fleet.latitude, fleet.longitude) {
            (Some(latitude), Some(longitude)) => Point {
                latitude,
                longitude,
            },
            _ if positions.is_empty() => Point {
                latitude: 0.0,
                longitude: 0.0,
            },
            _ => Point {
                latitude: positions.iter().map(|p| p.latitude).sum::<f64>()
                    / positions.len() as f64,
                longitude: positions.iter().map(|p| p.longitude).sum::<f64>()
                    / positions.len() as f64,
            },
        };
        let points: Vec<Point> = std::iter::once(position)
            .chain(positions.iter().copied())
            .collect();
        let table = matrix.table(&points)?;
        let seconds = |t: DateTime<Utc>| (t - start).num_milliseconds() as f64 / 1000.0;
        let shift = (0.0, seconds(end));
        let capacity = Load {
            weight: (fleet.capacity_kg * 1000.0).round() as i32,
            volume: fleet
                .capacity_litres
                .map_or(i32::MAX, |l| (l * 1000.0).round() as i32),
        };
        let vans = (0..fleet.vans)
            .map(|i| Van {
                id: van_id(depot, i as usize),
                driver_id: driver_id(depot, i as usize),
                capacity,
                shift,
                in_home: i < fleet.in_home_cleared,
            })
            .collect();
        let stops = self
            .parcels
            .iter()
            .enumerate()
            .map(|(i, p)| Stop {
                id: p.parcel_id.clone(),
                location: i + 1,
                load: Load {
                    weight: p.weight_g.min(i32::MAX as u32) as i32,
                    volume: p.volume_cm3.unwrap_or(0).min(i32::MAX as u32) as i32,
                },
                window: p.in_home.map(|(a, b)| (seconds(a), seconds(b))),
                service: 60.0
                    * if p.in_home.is_some() {
                        fleet.in_home_service_minutes
                    } else {
                        fleet.service_minutes
                    },
                in_home: p.in_home.is_some(),
            })
            .collect();
        let problem = Problem {
            name: format!("{depot} {}", self.date),
            table,
            vans,
            stops,
        };
        problem.validate()?;
        Ok(Planned {
            problem,
            origin: start,
            depot: position,
            positions,
        })
    }
}

/// A route to publish: the arguments of the route aggregate's `Plan`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRoute {
    /// [`route_id`]: stable across plan versions.
    pub route_id: String,
    /// The van.
    pub vehicle_id: String,
    /// Its driver.
    pub driver_id: String,
    /// The stops in order, with planned times.
    pub stops: Vec<pb::PlannedStop>,
}

impl Planned {
    /// When second `s` of the problem is.
    pub fn at(&self, s: f64) -> DateTime<Utc> {
        self.origin + Duration::milliseconds((s * 1000.0).round() as i64)
    }

    /// `plan`'s routes, one per van used, with real times.
    pub fn routes(&self, day: &DepotDay, plan: &Plan) -> Vec<PlannedRoute> {
        plan.routes
            .iter()
            .map(|r| {
                let van = &self.problem.vans[r.van];
                PlannedRoute {
                    route_id: route_id(&day.depot_id, day.date, r.van),
                    vehicle_id: van.id.clone(),
                    driver_id: van.driver_id.clone(),
                    stops: r
                        .visits
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let p = self.positions[v.stop];
                            pb::PlannedStop {
                                index: i as u32,
                                parcel_ids: vec![self.problem.stops[v.stop].id.clone()],
                                position: Some(pb::GeoPoint {
                                    latitude: p.latitude,
                                    longitude: p.longitude,
                                }),
                                planned_arrival: Some(timestamp(self.at(v.start))),
                                planned_departure: Some(timestamp(self.at(v.departure))),
                                sealed_position: None,
                            }
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::GreatCircle;
    use crate::{Objective, Options, check, solve};

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    /// Last Sundays of March and October 2026: the 29th and the 25th.
    #[test]
    fn shifts_and_windows_follow_dst_in_all_four_zones() {
        for country in [Country::Dk, Country::No, Country::Se, Country::Fi] {
            // Finland is an hour ahead of the other three.
            let east = u32::from(country == Country::Fi);
            let spring = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
            let autumn = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
            // 08:00 local is summer time on both days (UTC+2, Finland +3).
            assert_eq!(
                local_instant(country, spring, hm(8, 0)),
                utc(2026, 3, 29, 6 - east, 0)
            );
            assert_eq!(
                local_instant(country, autumn, hm(8, 0)),
                utc(2026, 10, 25, 7 - east, 0)
            );
            // The night of the change: 01:00 to 05:00 local (Finland 02:00 to 06:00)
            // is 3 hours in spring, 5 in autumn.
            let night = hm(1 + east, 0);
            let five = hm(5 + east, 0);
            let spring_night =
                local_instant(country, spring, five) - local_instant(country, spring, night);
            let autumn_night =
                local_instant(country, autumn, five) - local_instant(country, autumn, night);
            assert_eq!(spring_night, Duration::hours(3), "{country:?}");
            assert_eq!(autumn_night, Duration::hours(5), "{country:?}");
            // A skipped local time counts from the change.
            let skipped = local_instant(country, spring, hm(2 + east, 30));
            assert_eq!(
                skipped,
                local_instant(country, spring, hm(3 + east, 0)),
                "{country:?}"
            );
        }
    }

    fn day(country: Country, date: NaiveDate, parcels: usize) -> DepotDay {
        DepotDay {
            depot_id: "OSL-1".into(),
            country,
            date,
            parcels: (0..parcels)
                .map(|i| Parcel {
                    parcel_id: format!("P{i}"),
                    position: Point {
                        latitude: 59.91 + 0.01 * ((i * 7) % 11) as f64,
                        longitude: 10.75 + 0.015 * ((i * 5) % 13) as f64,
                    },
                    weight_g: 2_000,
                    volume_cm3: None,
                    in_home: None,
                })
                .collect(),
        }
    }

    #[test]
    fn an_in_home_window_on_the_autumn_change_is_kept_in_real_time() {
        let date = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        let mut d = day(Country::No, date, 12);
        // 10:00-11:00 Oslo time on the 25th is 09:00-10:00 UTC (winter time).
        d.parcels[3].in_home = Some((utc(2026, 10, 25, 9, 0), utc(2026, 10, 25, 10, 0)));
        let fleet = Fleet {
            latitude: Some(59.913),
            longitude: Some(10.752),
            ..Fleet::default()
        };
        let planned = d.problem(&fleet, &GreatCircle::default()).unwrap();
        // 08:00 local is 07:00 UTC that day.
        assert_eq!(planned.origin, utc(2026, 10, 25, 7, 0));
        assert_eq!(planned.problem.stops[3].window, Some((7200.0, 10800.0)));
        let plan = solve(&planned.problem, Options::seconds(Objective::Business, 0.5)).unwrap();
        assert!(check(&planned.problem, &plan).is_empty());
        let routes = planned.routes(&d, &plan);
        let stop = routes
            .iter()
            .flat_map(|r| &r.stops)
            .find(|s| s.parcel_ids == ["P3"])
            .expect("P3 planned");
        let at =
            threshold_domain::country::instant(stop.planned_arrival.as_ref().unwrap()).unwrap();
        assert!(
            at >= utc(2026, 10, 25, 9, 0) && at <= utc(2026, 10, 25, 10, 0),
            "{at}"
        );
        // In-home only with a cleared driver: the first vans.
        let route = routes
            .iter()
            .find(|r| r.stops.iter().any(|s| s.parcel_ids == ["P3"]))
            .unwrap();
        let van = van_index(&route.vehicle_id).unwrap() as u32;
        assert!(van < fleet.in_home_cleared, "{}", route.vehicle_id);
    }

    #[test]
    fn a_window_that_cannot_be_met_is_reported_with_its_reason() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let mut d = day(Country::Se, date, 6);
        // 06:00-07:00 local: before the shift starts at 08:00.
        d.parcels[1].in_home = Some((utc(2026, 11, 23, 5, 0), utc(2026, 11, 23, 6, 0)));
        // Heavier than any van.
        d.parcels[2].weight_g = 2_000_000;
        let planned = d
            .problem(&Fleet::default(), &GreatCircle::default())
            .unwrap();
        let plan = solve(&planned.problem, Options::seconds(Objective::Business, 0.3)).unwrap();
        assert!(check(&planned.problem, &plan).is_empty());
        let reasons: BTreeMap<usize, &str> = plan
            .unassigned
            .iter()
            .map(|u| (u.stop, u.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[&1].contains("window"), "{}", reasons[&1]);
        assert!(reasons[&2].contains("more than any"), "{}", reasons[&2]);
        // And without cleared drivers, in-home parcels say so.
        d.parcels[1].in_home = Some((utc(2026, 11, 23, 10, 0), utc(2026, 11, 23, 12, 0)));
        let none = Fleet {
            in_home_cleared: 0,
            ..Fleet::default()
        };
        let planned = d.problem(&none, &GreatCircle::default()).unwrap();
        let plan = solve(&planned.problem, Options::seconds(Objective::Business, 0.3)).unwrap();
        assert!(
            plan.unassigned
                .iter()
                .any(|u| u.stop == 1 && u.reason.contains("cleared"))
        );
    }

    #[test]
    fn fleet_files_are_read_and_checked() {
        let f = Fleets::from_json(
            "depots.json",
            r#"{"default": {"vans": 3}, "depots": {"OSL-1": {"vans": 9, "latitude": 59.9, "longitude": 10.7}}}"#,
        )
        .unwrap();
        assert_eq!(f.of("OSL-1").vans, 9);
        assert_eq!(f.of("BGO-1").vans, 3);
        assert_eq!(f.of("BGO-1").shift_start, "08:00");
        let e = Fleets::from_json("depots.json", r#"{"default": {"vanz": 3}}"#).unwrap_err();
        assert!(
            e.to_string().contains("depots.json") && e.to_string().contains("vanz"),
            "{e}"
        );
        let d = day(
            Country::Dk,
            NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
            2,
        );
        let bad = Fleet {
            shift_start: "8am".into(),
            ..Fleet::default()
        };
        let e = d
            .problem(&bad, &GreatCircle::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("shift_start") && e.contains("8am"), "{e}");
    }
}
