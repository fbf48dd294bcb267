//! Route planning for Threshold.
//!
//! A depot's day becomes a vehicle routing problem with time windows
//! ([`Problem`]): vans with a capacity (weight, and volume where given), a
//! shift, and a skill for in-home delivery; stops with a load, a service time
//! and, for in-home parcels, the resident's window. [`solve`] hands it to
//! vrp-core's metaheuristic under one of two [`Objective`]s and reads the
//! answer back as a [`Plan`]; [`check`] verifies any plan against the problem
//! independently of the solver. [`solomon`] reads the literature's benchmark
//! files into the same model; [`depot`] builds a depot-day from parcels and
//! the depot's fleet configuration.
//!
//! Times are seconds from the problem's origin (for a depot-day, the start
//! of its earliest shift, in UTC, so DST never enters the solver); distances
//! are metres (Solomon: the instance's units). Travel comes from a [`Table`]
//! that any [`matrix::TravelMatrix`] can produce.

pub mod check;
pub mod depot;
mod hgs;
mod insert;
pub mod matrix;
pub mod solomon;
mod solve;

pub use check::{Violation, check};
pub use matrix::Table;
pub use solve::{Budget, Engine, Options, solve};

/// A load, or a capacity: weight in grams, volume in cm³ (0 when not given).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Load {
    /// Grams (Solomon: the instance's demand units).
    pub weight: i32,
    /// Cubic centimetres; 0 when not given.
    pub volume: i32,
}

impl Load {
    /// Whether `self` fits in `capacity`.
    pub fn fits(self, capacity: Load) -> bool {
        self.weight <= capacity.weight && self.volume <= capacity.volume
    }
}

impl std::ops::Add for Load {
    type Output = Load;
    fn add(self, o: Load) -> Load {
        Load {
            weight: self.weight + o.weight,
            volume: self.volume + o.volume,
        }
    }
}

/// A van for the day, with its driver.
#[derive(Debug, Clone)]
pub struct Van {
    /// The van's id.
    pub id: String,
    /// Its driver for the day.
    pub driver_id: String,
    /// What it carries at most.
    pub capacity: Load,
    /// Leaves the depot no earlier than this, is back no later than this.
    pub shift: (f64, f64),
    /// The driver is cleared for in-home delivery.
    pub in_home: bool,
}

/// A stop: one parcel (or one Solomon customer) to hand over.
#[derive(Debug, Clone)]
pub struct Stop {
    /// The parcel's id (Solomon: the customer number).
    pub id: String,
    /// Its index in the problem's [`Table`]; 0 is the depot.
    pub location: usize,
    /// What it takes out of the van.
    pub load: Load,
    /// When service may start: `(earliest, latest)`; `None`: any time in the shift.
    pub window: Option<(f64, f64)>,
    /// Seconds spent at the stop.
    pub service: f64,
    /// Only a van whose driver is cleared for in-home delivery may take it.
    pub in_home: bool,
}

/// A routing problem: one depot, its vans and the stops of the day.
#[derive(Debug, Clone)]
pub struct Problem {
    /// A name for reports (the depot and day, or the instance).
    pub name: String,
    /// Travel between every pair of locations; location 0 is the depot.
    pub table: Table,
    /// The vans available.
    pub vans: Vec<Van>,
    /// The stops to serve.
    pub stops: Vec<Stop>,
}

/// What to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// For planning: fewest vans, then total driving time, then distance.
    #[default]
    Business,
    /// Total distance only, as the literature's best-known solutions are.
    Distance,
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "business" => Ok(Objective::Business),
            "distance" => Ok(Objective::Distance),
            other => Err(format!(
                "{other:?} is not an objective (business, distance)"
            )),
        }
    }
}

/// A visit in a planned route.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Visit {
    /// The stop's index in [`Problem::stops`].
    pub stop: usize,
    /// When the van arrives.
    pub arrival: f64,
    /// When service starts (later than the arrival when it waits for a window).
    pub start: f64,
    /// When it leaves.
    pub departure: f64,
}

/// One van's route.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Route {
    /// The van's index in [`Problem::vans`].
    pub van: usize,
    /// When it leaves the depot.
    pub departure: f64,
    /// The stops in visiting order.
    pub visits: Vec<Visit>,
    /// When it is back at the depot.
    pub back: f64,
}

/// A stop no van could take, with the reason.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Unassigned {
    /// The stop's index in [`Problem::stops`].
    pub stop: usize,
    /// Why, in words.
    pub reason: String,
    /// Why, as [`check`] confirms it against the plan's routes; `None`: no
    /// reason given, which the checker refuses.
    pub cause: Option<Cause>,
}

/// Why a stop fits into no route of a plan, at any position: what
/// inserting it would break in every route of a van that may take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// An in-home stop, and no van's driver is cleared for in-home delivery.
    Skill,
    /// Every van that may take it would be over its capacity.
    Capacity,
    /// Every van that may take it has room, but at every position of its
    /// route the stop, or a stop after it, misses its window, or the van is
    /// back after its shift.
    Time,
    /// Every van that may take it is either full or late at every position.
    CapacityOrTime,
}

impl Cause {
    /// The cause in words, for a planner reading the report.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::Skill => "no van's driver is cleared for in-home delivery",
            Cause::Capacity => "no van that may take it has room left for it",
            Cause::Time => {
                "no van that may take it can fit it in anywhere on its route inside its window and back within its shift"
            }
            Cause::CapacityOrTime => {
                "every van that may take it is either full or cannot fit it in on time anywhere on its route"
            }
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// The answer to a [`Problem`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Plan {
    /// One route per van used.
    pub routes: Vec<Route>,
    /// Stops left out, each with its reason; never silently dropped.
    pub unassigned: Vec<Unassigned>,
}

impl Plan {
    /// Total distance driven, per the problem's table.
    pub fn distance(&self, problem: &Problem) -> f64 {
        self.legs(problem)
            .map(|(a, b)| problem.table.distance(a, b))
            .sum()
    }

    /// Total driving time, per the problem's table.
    pub fn driving(&self, problem: &Problem) -> f64 {
        self.legs(problem)
            .map(|(a, b)| problem.table.duration(a, b))
            .sum()
    }

    /// Every leg driven, depot to depot, as location pairs.
    fn legs<'a>(&'a self, problem: &'a Problem) -> impl Iterator<Item = (usize, usize)> + 'a {
        self.routes.iter().flat_map(move |r| {
            let path: Vec<usize> = std::iter::once(0)
                .chain(r.visits.iter().map(|v| problem.stops[v.stop].location))
                .chain(std::iter::once(0))
                .collect();
            (1..path.len())
                .map(|i| (path[i - 1], path[i]))
                .collect::<Vec<_>>()
        })
    }
}

/// A problem that cannot be planned as given.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// Something in the input is wrong; says what and where.
    #[error("{what}: {detail}")]
    Invalid {
        /// Where: the file and line, or the stop or van.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The solver refused the problem.
    #[error("the solver failed: {0}")]
    Solver(String),
}

impl Problem {
    /// Checks the problem's shape: every location in the table, windows and
    /// shifts that end after they start, loads and capacities not negative.
    pub fn validate(&self) -> Result<(), Error> {
        let n = self.table.len();
        let invalid = |what: String, detail: String| Err(Error::Invalid { what, detail });
        if n == 0 {
            return invalid(self.name.clone(), "the table has no depot".into());
        }
        for (i, v) in self.vans.iter().enumerate() {
            if v.shift.1 < v.shift.0 {
                return invalid(
                    format!("van {} ({i})", v.id),
                    format!(
                        "shift ends at {} before it starts at {}",
                        v.shift.1, v.shift.0
                    ),
                );
            }
            if v.capacity.weight < 0 || v.capacity.volume < 0 {
                return invalid(format!("van {}", v.id), "negative capacity".into());
            }
        }
        for s in &self.stops {
            if s.location == 0 || s.location >= n {
                return invalid(
                    format!("stop {}", s.id),
                    format!(
                        "location {} is not a customer in a table of {n}",
                        s.location
                    ),
                );
            }
            if s.load.weight < 0 || s.load.volume < 0 {
                return invalid(format!("stop {}", s.id), "negative load".into());
            }
            if s.service < 0.0 || !s.service.is_finite() {
                return invalid(
                    format!("stop {}", s.id),
                    format!("service time {}", s.service),
                );
            }
            if let Some((a, b)) = s.window
                && (a.is_nan() || b.is_nan() || a > b)
            {
                return invalid(
                    format!("stop {}", s.id),
                    format!("window ends at {b} before it starts at {a}"),
                );
            }
        }
        Ok(())
    }
}

impl Plan {
    /// A plan from visiting orders alone (`(van, stops)` per route), each
    /// service starting as early as the route allows from the van's shift
    /// start; stops in no route are reported left out by `who`. For reading
    /// back another solver's routes, which [`check`] then verifies.
    pub fn from_orders(problem: &Problem, orders: &[(usize, Vec<usize>)], who: &str) -> Plan {
        let t = &problem.table;
        let mut seen = vec![false; problem.stops.len()];
        let mut routes = Vec::new();
        for (van, stops) in orders {
            let departure = problem.vans.get(*van).map_or(0.0, |v| v.shift.0);
            let (mut at, mut here) = (departure, 0);
            let mut visits = Vec::new();
            for &stop in stops {
                let Some(s) = problem.stops.get(stop) else {
                    continue;
                };
                if let Some(x) = seen.get_mut(stop) {
                    *x = true;
                }
                let arrival = at + t.duration(here, s.location);
                let start = s.window.map_or(arrival, |(open, _)| arrival.max(open));
                at = start + s.service;
                here = s.location;
                visits.push(Visit {
                    stop,
                    arrival,
                    start,
                    departure: at,
                });
            }
            if !visits.is_empty() {
                routes.push(Route {
                    van: *van,
                    departure,
                    visits,
                    back: at + t.duration(here, 0),
                });
            }
        }
        let unassigned = seen
            .iter()
            .enumerate()
            .filter(|(_, s)| !**s)
            .map(|(stop, _)| Unassigned {
                stop,
                reason: format!("left out by {who}"),
                cause: None,
            })
            .collect();
        Plan { routes, unassigned }
    }
}

impl Plan {
    /// Moves whole routes between interchangeable vans (same capacity and
    /// shift, and cleared for in-home where the route needs it) so that as
    /// many stops as possible stay on the van `previous` had them on (stop
    /// id → van index). Schedules are unchanged: interchangeable vans drive
    /// a route alike. Returns (stops kept, stops moved) of those planned in
    /// both.
    pub fn keep_vans(
        &mut self,
        problem: &Problem,
        previous: &std::collections::HashMap<String, usize>,
    ) -> (usize, usize) {
        let alike = |a: &Van, b: &Van| a.capacity == b.capacity && a.shift == b.shift;
        let needs_in_home = |r: &Route| r.visits.iter().any(|v| problem.stops[v.stop].in_home);
        // Overlap of each route with each van's previous stops, largest first.
        let mut pairs = Vec::new();
        for (ri, r) in self.routes.iter().enumerate() {
            let mut on: std::collections::HashMap<usize, usize> = Default::default();
            for v in &r.visits {
                if let Some(&van) = previous.get(&problem.stops[v.stop].id) {
                    *on.entry(van).or_default() += 1;
                }
            }
            for (van, n) in on {
                pairs.push((n, ri, van));
            }
        }
        pairs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut assigned: Vec<Option<usize>> = vec![None; self.routes.len()];
        let mut taken = vec![false; problem.vans.len()];
        let fits = |ri: usize, van: usize, routes: &[Route]| {
            let r = &routes[ri];
            van < problem.vans.len()
                && alike(&problem.vans[r.van], &problem.vans[van])
                && (!needs_in_home(r) || problem.vans[van].in_home)
        };
        for (_, ri, van) in pairs {
            if assigned[ri].is_none()
                && !taken.get(van).copied().unwrap_or(true)
                && fits(ri, van, &self.routes)
            {
                assigned[ri] = Some(van);
                taken[van] = true;
            }
        }
        // The rest: their own van if free, else any free interchangeable one.
        for (ri, slot) in assigned.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let own = self.routes[ri].van;
            let pick = if !taken[own] {
                Some(own)
            } else {
                (0..problem.vans.len()).find(|&v| !taken[v] && fits(ri, v, &self.routes))
            };
            if let Some(v) = pick {
                *slot = Some(v);
                taken[v] = true;
            }
        }
        // Every route has a van: at worst its own, which no other route took
        // unless it was free — so a clash can only mean keeping the solver's.
        if assigned.iter().all(Option::is_some) {
            let mut vans: Vec<usize> = assigned.iter().flatten().copied().collect();
            vans.sort_unstable();
            vans.dedup();
            if vans.len() == self.routes.len() {
                for (r, v) in self.routes.iter_mut().zip(&assigned) {
                    r.van = v.unwrap_or(r.van);
                }
            }
        }
        self.routes.sort_by_key(|r| r.van);
        let (mut kept, mut moved) = (0, 0);
        for r in &self.routes {
            for v in &r.visits {
                match previous.get(&problem.stops[v.stop].id) {
                    Some(&van) if van == r.van => kept += 1,
                    Some(_) => moved += 1,
                    None => {}
                }
            }
        }
        (kept, moved)
    }
}

/// `f` over every item, one worker per core, results in item order: how a
/// day's depots are planned.
pub fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(items.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    done.lock().unwrap_or_else(|p| p.into_inner()).push((i, r));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}
